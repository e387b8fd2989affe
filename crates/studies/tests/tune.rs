//! `tune` on the shipped digits data: stop-at-target runs per setting, the
//! choice, its saving and the written config; a target no setting reaches.

use greentrain_amp::{Precision, PrecisionChoice};
use greentrain_studies::tune::{self, TuneReport, TuneRequest};
use greentrain_trainer::status::RunStatus;
use greentrain_trainer::DeviceSpec;
use std::path::{Path, PathBuf};

fn digits() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/digits_mlp.toml"
    ))
}

fn request(out: &Path, target: f64, sizes: &[usize], repeats: usize) -> TuneRequest {
    TuneRequest {
        config_path: digits(),
        overrides: vec![],
        target_accuracy: target,
        batch_sizes: sizes.to_vec(),
        precisions: vec![PrecisionChoice::Fixed(Precision::Fp32)],
        repeats,
        max_epochs: None,
        max_kwh: None,
        device: DeviceSpec::Cpu,
        out_dir: out.to_path_buf(),
        quiet: true,
    }
}

#[test]
fn tune_chooses_the_batch_size_with_the_fewest_joules_to_the_target() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("tune");
    // The config's own batch size (32) and 16, two seeds each.
    let r = tune::run(request(&out, 0.9, &[32, 16], 2)).unwrap();
    assert_eq!(r.settings.len(), 2, "{:?}", r.settings);
    assert!(r.settings[0].baseline && r.settings[0].batch_size == 32);
    assert_eq!(r.settings[1].batch_size, 16);
    assert_eq!(r.runs.len(), 4);
    assert_eq!(r.seeds, vec![42, 43]);
    for run in &r.runs {
        // Every run stopped at the epoch that met the target.
        assert!(run.reached, "{run:?}");
        assert_eq!(run.status, RunStatus::ReachedTarget);
        assert_eq!(Some(run.epochs), run.target_epoch);
        let rec =
            greentrain_trainer::record::RunRecord::load(run.run_dir.as_ref().unwrap()).unwrap();
        let t = rec.target.unwrap();
        assert!(t.reached && t.accuracy == Some(0.9) && t.metric == "test_accuracy");
        assert_eq!(rec.config.data.batch_size, run.batch_size);
        assert_eq!(rec.seed, run.seed);
        assert_eq!(t.energy_j, run.energy_to_target_j);
    }
    // The choice is the lowest mean of joules to the target.
    let means: Vec<f64> = r
        .settings
        .iter()
        .map(|s| s.energy_to_target_j.unwrap().mean)
        .collect();
    let want = if means[1] < means[0] { 1 } else { 0 };
    assert_eq!(r.chosen, Some(want), "{means:?}");
    let mean_of = |bs: usize| {
        let v: Vec<f64> = r
            .runs
            .iter()
            .filter(|x| x.batch_size == bs)
            .map(|x| x.energy_to_target_j.unwrap())
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    assert!((means[1] - mean_of(16)).abs() <= 1e-9 * means[1]);
    // The saving: per-seed ratios against batch 32, with an interval.
    let s = r.saving.clone().unwrap();
    assert_eq!(s.ratio.n, 2);
    let per_seed: Vec<f64> = [42, 43]
        .iter()
        .map(|&seed| {
            let j = |bs: usize| {
                r.runs
                    .iter()
                    .find(|x| x.batch_size == bs && x.seed == seed)
                    .unwrap()
                    .energy_to_target_j
                    .unwrap()
            };
            j(r.settings[want].batch_size) / j(32)
        })
        .collect();
    let geo = (per_seed[0] * per_seed[1]).sqrt();
    assert!(
        (s.ratio.mean - geo).abs() < 1e-9,
        "{} vs {geo}",
        s.ratio.mean
    );
    assert!(s.ratio.low.unwrap() > 0.0 && s.ratio.low.unwrap() <= geo);
    assert!((s.saved_percent - 100.0 * (1.0 - geo)).abs() < 1e-6);
    // The written config loads, with the chosen setting and the target,
    // and keeps the base file's comments.
    let text = std::fs::read_to_string(out.join("chosen.toml")).unwrap();
    assert!(text.contains("UCI digits") && text.starts_with("# Written by `greentrain tune`"));
    let c = greentrain_trainer::config::load(&out.join("chosen.toml"), &[]).unwrap();
    assert_eq!(c.config.data.batch_size, r.settings[want].batch_size);
    assert_eq!(
        c.config.precision.mode,
        PrecisionChoice::Fixed(Precision::Fp32)
    );
    assert_eq!(c.config.train.target_accuracy, Some(0.9));
    assert_eq!(c.config.run.name, "digits_mlp-tuned");
    // The files, and tune.json reads back as written.
    let md = std::fs::read_to_string(out.join("tune.md")).unwrap();
    assert!(
        md.contains("**chosen**") && md.contains("| 32 (config"),
        "{md}"
    );
    let csv = std::fs::read_to_string(out.join("tune.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5);
    let back: TuneReport =
        serde_json::from_str(&std::fs::read_to_string(out.join("tune.json")).unwrap()).unwrap();
    assert_eq!(
        back,
        TuneReport {
            chosen_toml: None,
            ..r
        }
    );
    assert!(out.join("tune.svg").exists());
    // A second tune into the same folder is refused, not mixed in.
    let e = tune::run(request(&out, 0.9, &[32], 1)).unwrap_err();
    assert!(e.to_string().contains("earlier tune"), "{e}");
}

#[test]
fn settings_that_miss_the_target_are_reported_and_nothing_is_chosen() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("tune");
    let mut req = request(&out, 0.999, &[32, 64], 1);
    req.max_epochs = Some(1);
    let r = tune::run(req).unwrap();
    assert_eq!(r.runs.len(), 2);
    assert!(r
        .runs
        .iter()
        .all(|x| !x.reached && x.status == RunStatus::Completed && x.epochs == 1));
    assert_eq!(r.chosen, None);
    assert!(r.saving.is_none() && !out.join("chosen.toml").exists());
    let md = std::fs::read_to_string(out.join("tune.md")).unwrap();
    assert!(md.contains("0/1 (missed: epoch limit"), "{md}");
    assert!(md.contains("Nothing was chosen"), "{md}");
}

#[test]
fn bad_requests_name_what_is_wrong() {
    let d = tempfile::tempdir().unwrap();
    let mut bad_target = request(&d.path().join("a"), 1.5, &[32], 1);
    let e = tune::run(bad_target.clone()).unwrap_err().to_string();
    assert!(e.contains("--target-accuracy"), "{e}");
    bad_target.target_accuracy = 0.9;
    bad_target.overrides =
        vec![greentrain_trainer::config::Override::parse("energy.enabled=false").unwrap()];
    let e = tune::run(bad_target).unwrap_err().to_string();
    assert!(
        e.contains("energy.enabled") && e.contains("digits_mlp.toml"),
        "{e}"
    );
    assert!(
        !d.path().join("a").exists(),
        "nothing written for a refused request"
    );
}

#[test]
fn an_energy_budget_stops_the_tune_and_says_so() {
    let d = tempfile::tempdir().unwrap();
    let mut req = request(&d.path().join("t"), 0.9, &[32, 16], 2);
    // Far less than one run needs (digits runs use about 1-4 J here).
    req.max_kwh = Some(1e-8);
    let r = tune::run(req).unwrap();
    assert_eq!(r.runs.len(), 1, "{:?}", r.runs);
    assert_eq!(r.runs[0].status, RunStatus::StoppedBudget);
    assert!(
        r.stopped.as_deref().unwrap_or("").contains("budget"),
        "{:?}",
        r.stopped
    );
    assert_eq!(r.chosen, None);
    let md = std::fs::read_to_string(d.path().join("t/tune.md")).unwrap();
    assert!(
        md.contains("Stopped early") && md.contains("stopped_budget"),
        "{md}"
    );
}
