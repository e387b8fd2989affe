//! Sweeps on the shipped digits data: determinism, resume, pruning,
//! parallel trials, bad sweep files and the Slurm export.

use greentrain_studies::sweep::{self, SweepReport, SweepRequest};
use greentrain_trainer::DeviceSpec;
use std::path::{Path, PathBuf};

fn base() -> String {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/digits_mlp.toml"
    ));
    std::fs::canonicalize(p).unwrap().display().to_string()
}

fn sweep_file(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!("[sweep]\nname = \"{name}\"\nbase = {:?}\n{body}", base()),
    )
    .unwrap();
    p
}

const SPACE: &str = "[space]\n\"train.lr\" = { log_uniform = [1e-4, 3e-1] }\n\"model.hidden\" = { choice = [[16], [48]] }\n";

fn run(file: &Path, out: &Path, parallel: usize) -> SweepReport {
    sweep::run(SweepRequest {
        sweep: sweep::load(file).unwrap(),
        out_dir: out.to_path_buf(),
        parallel,
        device: DeviceSpec::Cpu,
        quiet: true,
    })
    .unwrap()
}

fn outcome(r: &SweepReport) -> Vec<(String, Option<u64>)> {
    r.trials
        .iter()
        .map(|t| (format!("{:?}", t.params), t.metric.map(|m| m.to_bits())))
        .collect()
}

#[test]
fn the_same_seed_gives_the_same_sweep_and_tpe_uses_the_history() {
    let d = tempfile::tempdir().unwrap();
    let f = sweep_file(
        d.path(),
        "tpe",
        &format!("strategy = \"tpe\"\ntrials = 6\nseed = 7\ntpe_startup = 3\n\n{SPACE}"),
    );
    // Fewer epochs keep the test short.
    let text = std::fs::read_to_string(&f).unwrap();
    std::fs::write(
        &f,
        text.replace("[space]", "[space]\n\"train.epochs\" = { int = [3, 3] }"),
    )
    .unwrap();
    let a = run(&f, &d.path().join("a"), 1);
    let b = run(&f, &d.path().join("b"), 1);
    assert_eq!(a.trials.len(), 6);
    assert_eq!(outcome(&a), outcome(&b), "same seed, same sweep");
    assert!(a.trials.iter().all(|t| t.status == "completed"));
    assert!(a.best.is_some() && a.total_energy_j > 0.0);
    // The sweep's provenance is the weakest of its trials' run records
    // (estimated on a VM, measured with RAPL or NVML), read from run.json.
    let recorded: Vec<greentrain_energy::Provenance> = a
        .trials
        .iter()
        .map(|t| {
            let dir = t.run_dir.as_ref().expect("a trial's run folder");
            let r: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap())
                    .unwrap();
            r["energy"]["provenance"]
                .as_str()
                .unwrap()
                .parse::<greentrain_energy::Provenance>()
                .unwrap()
        })
        .collect();
    let weakest = greentrain_trainer::energy::weakest_provenance(recorded.iter().copied());
    assert!(weakest.is_some());
    assert_eq!(a.provenance, weakest);
    for f in [
        "sweep.json",
        "sweep.csv",
        "sweep.md",
        "sweep.svg",
        "sweep.png",
    ] {
        assert!(d.path().join("a").join(f).exists(), "{f}");
    }
    let csv = std::fs::read_to_string(d.path().join("a/sweep.csv")).unwrap();
    assert_eq!(csv.lines().count(), 7);
    assert!(csv.lines().next().unwrap().contains("\"train.lr\""));
    // Each trial is a normal run directory with its energy record.
    let r =
        greentrain_trainer::record::RunRecord::load(a.trials[0].run_dir.as_ref().unwrap()).unwrap();
    assert!(r.energy.is_some() && r.name == "tpe-t000");
}

#[test]
fn a_resumed_sweep_keeps_finished_trials_and_reruns_the_cut_off_one() {
    let d = tempfile::tempdir().unwrap();
    let f = sweep_file(
        d.path(),
        "res",
        &format!("strategy = \"random\"\ntrials = 4\nseed = 3\n\n{SPACE}\"train.epochs\" = {{ int = [2, 2] }}\n"),
    );
    let out = d.path().join("out");
    let full = run(&f, &out, 1);
    // Simulate a crash during trial 2 ("running") after trial 3 was
    // stopped by Ctrl-C ("interrupted"): both run again.
    let mut cut = full.clone();
    cut.trials[2].status = greentrain_trainer::status::RunStatus::Running;
    cut.trials[3].status = greentrain_trainer::status::RunStatus::Interrupted;
    std::fs::write(out.join("sweep.json"), serde_json::to_string(&cut).unwrap()).unwrap();
    let again = run(&f, &out, 1);
    // Kept trials come back through sweep.json, whose float parsing may
    // differ from the computed value in the last bit.
    for (a, b) in again.trials.iter().zip(&full.trials) {
        assert_eq!(a.params, b.params);
        let (x, y) = (a.metric.unwrap(), b.metric.unwrap());
        assert!((x - y).abs() <= 1e-15 * y.abs(), "{x} vs {y}");
    }
    assert_eq!(
        again.trials[0].run_dir, full.trials[0].run_dir,
        "trial 0 not rerun"
    );
    assert_eq!(
        again.trials[1].run_dir, full.trials[1].run_dir,
        "trial 1 not rerun"
    );
    assert_ne!(
        again.trials[2].run_dir, full.trials[2].run_dir,
        "trial 2 rerun"
    );
    assert_eq!(std::fs::read_dir(out.join("trials")).unwrap().count(), 6);
    // A changed sweep file is not resumed into the old folder.
    std::fs::write(
        &f,
        std::fs::read_to_string(&f)
            .unwrap()
            .replace("seed = 3", "seed = 4"),
    )
    .unwrap();
    let e = sweep::run(SweepRequest {
        sweep: sweep::load(&f).unwrap(),
        out_dir: out.clone(),
        parallel: 1,
        device: DeviceSpec::Cpu,
        quiet: true,
    })
    .unwrap_err();
    assert!(e.to_string().contains("different sweep"), "{e}");
}

#[test]
fn asha_prunes_at_rungs_and_counts_the_saving() {
    let d = tempfile::tempdir().unwrap();
    let f = sweep_file(
        d.path(),
        "asha",
        &format!("strategy = \"random\"\ntrials = 6\nseed = 1\n\n[asha]\nmin_epochs = 1\nreduction = 3\n\n{SPACE}\"train.epochs\" = {{ int = [9, 9] }}\n"),
    );
    let r = run(&f, &d.path().join("out"), 1);
    let a = r.asha.clone().unwrap();
    assert_eq!(a.rungs, vec![1, 3]);
    let pruned: Vec<_> = r.trials.iter().filter(|t| t.status == "pruned").collect();
    assert!(!pruned.is_empty(), "{:?}", r.trials);
    assert_eq!(a.pruned, pruned.len());
    for t in &pruned {
        assert!(
            t.epochs == 1 || t.epochs == 3,
            "pruned at a rung: {}",
            t.epochs
        );
    }
    assert_eq!(
        a.epochs_saved,
        pruned.iter().map(|t| 9 - t.epochs).sum::<usize>()
    );
    assert!(a.energy_saved_j > 0.0);
    // Trial 0 is alone at every rung, so it always goes on.
    assert_eq!(r.trials[0].status, "completed");
    let best = r.trials.iter().find(|t| Some(t.id) == r.best).unwrap();
    assert_eq!(best.status, "completed");
}

#[test]
fn a_two_objective_sweep_keeps_exactly_the_non_dominated_trials() {
    use greentrain_studies::sweep::pareto::dominates;
    use greentrain_studies::sweep::Objective;
    let d = tempfile::tempdir().unwrap();
    let f = sweep_file(
        d.path(),
        "pareto",
        &format!(
            "strategy = \"tpe\"\ntrials = 7\nseed = 5\ntpe_startup = 3\nobjectives = [\"test_accuracy\", \"energy_j\"]\n\n{SPACE}\"train.epochs\" = {{ int = [1, 4] }}\n"
        ),
    );
    let r = run(&f, &d.path().join("out"), 1);
    assert_eq!(
        r.objectives,
        vec![Objective::TestAccuracy, Objective::EnergyJ]
    );
    let value = |id: usize| {
        let t = r.trials.iter().find(|t| t.id == id).unwrap();
        vec![t.test_accuracy.unwrap(), t.energy_j.unwrap()]
    };
    let finished: Vec<usize> = r
        .trials
        .iter()
        .filter(|t| t.finished())
        .map(|t| t.id)
        .collect();
    assert_eq!(finished.len(), 7, "{:?}", r.trials);
    assert!(!r.pareto.is_empty());
    let max = [true, false];
    for &i in &finished {
        let dominated = finished
            .iter()
            .any(|&j| dominates(&value(j), &value(i), &max));
        // On the front exactly when no finished trial dominates it.
        assert_eq!(
            r.pareto.contains(&i),
            !dominated,
            "trial {i}: {:?}",
            value(i)
        );
    }
    // Objective order: accuracy falls along the front while energy falls too.
    for w in r.pareto.windows(2) {
        let (a, b) = (value(w[0]), value(w[1]));
        assert!(a[0] >= b[0] && a[1] >= b[1], "{a:?} then {b:?}");
    }
    // The primary objective's best heads the front.
    assert_eq!(r.best, r.pareto.first().copied());
    let md = std::fs::read_to_string(d.path().join("out/sweep.md")).unwrap();
    assert!(
        md.contains(
            "## Pareto front: test_accuracy (higher is better) against energy_j (lower is better)"
        ),
        "{md}"
    );
    let csv = std::fs::read_to_string(d.path().join("out/sweep.csv")).unwrap();
    let on_front = csv.lines().skip(1).filter(|l| l.contains(",true,")).count();
    assert_eq!(on_front, r.pareto.len(), "{csv}");
    let svg = std::fs::read_to_string(d.path().join("out/sweep.svg")).unwrap();
    assert!(svg.contains(&format!("Pareto front ({})", r.pareto.len())));
    // sweep.json reads back with the same front.
    let back: SweepReport =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("out/sweep.json")).unwrap())
            .unwrap();
    assert_eq!(back.pareto, r.pareto);
}

#[test]
fn energy_to_target_as_an_objective_leaves_trials_that_missed_it_off_the_front() {
    let d = tempfile::tempdir().unwrap();
    // A base config with the target: the digits MLP, 8 epochs.
    let text = std::fs::read_to_string(base()).unwrap().replace(
        "epochs = 30",
        "epochs = 8\ntarget_accuracy = 0.9\nstop_at_target = true",
    );
    let b = d.path().join("base.toml");
    std::fs::write(&b, text).unwrap();
    let f = d.path().join("e2t.toml");
    std::fs::write(
        &f,
        format!("[sweep]\nname = \"e2t\"\nbase = {b:?}\nstrategy = \"random\"\ntrials = 6\nseed = 2\nobjectives = [\"energy_to_target\", \"test_accuracy\"]\n\n[space]\n\"train.lr\" = {{ log_uniform = [1e-5, 3e-2] }}\n"),
    )
    .unwrap();
    let r = run(&f, &d.path().join("out"), 1);
    let reached: Vec<usize> = r
        .trials
        .iter()
        .filter(|t| t.status == "reached_target")
        .map(|t| t.id)
        .collect();
    // The range of learning rates makes some trials miss 90% in 8 epochs.
    assert!(!reached.is_empty() && reached.len() < 6, "{:?}", r.trials);
    for t in &r.trials {
        assert_eq!(
            t.target_energy_j.is_some(),
            reached.contains(&t.id),
            "{t:?}"
        );
    }
    assert!(!r.pareto.is_empty());
    assert!(
        r.pareto.iter().all(|id| reached.contains(id)),
        "{:?}",
        r.pareto
    );
    // Fewest joules to the target first; the best trial is the cheapest.
    let e2t = |id: usize| r.trials[id].target_energy_j.unwrap();
    assert!(r.pareto.windows(2).all(|w| e2t(w[0]) <= e2t(w[1])));
    let cheapest = reached
        .iter()
        .copied()
        .min_by(|&a, &b| e2t(a).total_cmp(&e2t(b)))
        .unwrap();
    assert_eq!(r.best, Some(cheapest));
}

#[test]
fn parallel_trials_all_finish() {
    let d = tempfile::tempdir().unwrap();
    let f = sweep_file(
        d.path(),
        "par",
        &format!(
            "strategy = \"grid\"\ntrials = 4\n\n{SPACE}\"train.epochs\" = {{ int = [2, 2] }}\n"
        ),
    );
    let r = run(&f, &d.path().join("out"), 2);
    assert_eq!(r.trials.len(), 4);
    assert!(
        r.trials.iter().all(|t| t.status == "completed"),
        "{:?}",
        r.trials
    );
    assert!(r.notes.iter().any(|n| n.contains("at once")));
    let ids: Vec<usize> = r.trials.iter().map(|t| t.id).collect();
    assert_eq!(ids, vec![0, 1, 2, 3]);
}

#[test]
fn bad_sweep_files_are_refused_before_any_trial() {
    let d = tempfile::tempdir().unwrap();
    let cases = [
        ("unknown", "strategy = \"random\"\ntrials = 2\n[space]\n\"train.lrr\" = { uniform = [0.1, 0.2] }\n", "train.lrr"),
        ("empty", "strategy = \"random\"\ntrials = 2\n[space]\n\"train.lr\" = { uniform = [0.2, 0.1] }\n", "empty"),
        ("nochoice", "strategy = \"random\"\ntrials = 2\n[space]\n\"model.hidden\" = { choice = [] }\n", "at least one value"),
        ("badlog", "strategy = \"random\"\ntrials = 2\n[space]\n\"train.lr\" = { log_uniform = [0.0, 0.1] }\n", "0 < low"),
        ("strategy", "strategy = \"bayes\"\ntrials = 2\n[space]\n\"train.lr\" = { uniform = [0.1, 0.2] }\n", "sweep.strategy"),
        ("typo", "strategy = \"random\"\ntrails = 2\n[space]\n\"train.lr\" = { uniform = [0.1, 0.2] }\n", "trails"),
        ("both", "trials = 2\nmetric = \"test_accuracy\"\nobjectives = [\"test_accuracy\", \"energy_j\"]\n[space]\n\"train.lr\" = { uniform = [0.1, 0.2] }\n", "give one of them"),
        ("twice", "trials = 2\nobjectives = [\"energy_j\", \"energy_j\"]\n[space]\n\"train.lr\" = { uniform = [0.1, 0.2] }\n", "named twice"),
        ("notarget", "trials = 2\nobjectives = [\"test_accuracy\", \"energy_to_target\"]\n[space]\n\"train.lr\" = { uniform = [0.1, 0.2] }\n", "train.target_accuracy"),
        ("ashaenergy", "trials = 2\nobjectives = [\"energy_j\", \"test_accuracy\"]\n[asha]\n[space]\n\"train.lr\" = { uniform = [0.1, 0.2] }\n", "ASHA prunes on the first objective"),
        ("noval", "trials = 2\nmetric = \"val_accuracy\"\n[space]\n\"train.lr\" = { uniform = [0.1, 0.2] }\n", "data.val_fraction"),
        ("unknownobj", "trials = 2\nobjectives = [\"accuracy\"]\n[space]\n\"train.lr\" = { uniform = [0.1, 0.2] }\n", "sweep.objectives"),
    ];
    for (name, body, needle) in cases {
        let f = sweep_file(d.path(), name, body);
        let e = format!("{:#}", sweep::load(&f).unwrap_err());
        assert!(
            e.contains(needle) && e.contains(&format!("{name}.toml")),
            "{name}: {e}"
        );
        // A sweep file's key is the sweep file's error, not a `--set`'s.
        assert!(!e.contains("--set"), "{name}: {e}");
    }
}

#[test]
fn slurm_export_writes_an_array_job_and_refuses_tpe() {
    let d = tempfile::tempdir().unwrap();
    let f = sweep_file(
        d.path(),
        "sl",
        &format!("strategy = \"random\"\ntrials = 5\n\n{SPACE}"),
    );
    let out = d.path().join("slurm");
    let p = sweep::emit_slurm(&sweep::load(&f).unwrap(), &out, &d.path().join("runs")).unwrap();
    let script = std::fs::read_to_string(&p).unwrap();
    assert!(
        script.contains("#SBATCH --array=0-4") && script.contains("SLURM_ARRAY_TASK_ID"),
        "{script}"
    );
    let lines = std::fs::read_to_string(out.join("trials.txt")).unwrap();
    assert_eq!(lines.lines().count(), 5);
    assert!(
        lines.contains("'--set' 'train.lr=") && lines.contains("run.name=\"sl-t004\""),
        "{lines}"
    );
    let t = sweep_file(
        d.path(),
        "tp",
        &format!("strategy = \"tpe\"\ntrials = 5\n\n{SPACE}"),
    );
    let e = sweep::emit_slurm(&sweep::load(&t).unwrap(), &out, &d.path().join("runs")).unwrap_err();
    assert!(e.to_string().contains("tpe"), "{e}");
}
