//! End-to-end tests of the `greentrain` binary: exit codes, output, run
//! directories, and resuming after SIGKILL and Ctrl-C (SIGINT).

use greentrain_trainer::checkpoint::Checkpoint;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod harness;
use harness::{gt, root, text};
use std::time::Duration;

fn run_dir_of(out: &Output) -> PathBuf {
    let stdout = text(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    PathBuf::from(
        last.strip_prefix("run: ")
            .unwrap_or_else(|| panic!("last line is not 'run: ...': {stdout}")),
    )
}

fn record(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap()
}

#[test]
fn digits_run_end_to_end() {
    let out = tempfile::tempdir().unwrap();
    let o = gt()
        .args([
            "--config",
            "configs/digits_mlp.toml",
            "--set",
            "train.epochs=3",
        ])
        .out(out.path())
        .ok();
    let stdout = text(&o.stdout);
    assert!(stdout.contains("epoch 3/3: train_loss"), "{stdout}");
    assert!(stdout.contains("done: test accuracy"), "{stdout}");
    let dir = run_dir_of(&o);
    assert!(dir.starts_with(out.path()));
    let r = record(&dir);
    assert_eq!(r["status"], "completed");
    assert_eq!(r["epochs"].as_array().unwrap().len(), 3);
    assert!(dir.join("metrics.csv").exists() && dir.join("config.toml").exists());

    // `train --config` is the same command.
    let o2 = gt()
        .args([
            "train",
            "--config",
            "configs/digits_mlp.toml",
            "--set",
            "train.epochs=3",
        ])
        .out(out.path())
        .run();
    assert!(o2.status.success());
    let r2 = record(&run_dir_of(&o2));
    assert_eq!(r2["final"]["test_accuracy"], r["final"]["test_accuracy"]);

    // 16 bits on the CPU cost more, not less: the run says so, fp32 does not.
    assert!(!stdout.contains("note: "), "{stdout}");
    let o3 = gt()
        .args(["--config", "configs/digits_mlp.toml", "--precision", "fp16"])
        .args(["--set", "train.epochs=1"])
        .out(out.path())
        .ok();
    let s3 = text(&o3.stdout);
    assert!(
        s3.contains("note: fp16 on the CPU (flex) widens 16-bit values to f32"),
        "{s3}"
    );
}

#[test]
fn config_errors_exit_2_naming_file_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    let src = std::fs::read_to_string(root().join("configs/digits_mlp.toml")).unwrap();
    std::fs::write(&cfg, src.replace("lr = 1e-3", "lr = 0")).unwrap();
    let out = dir.path().join("runs");
    let o = gt().arg("--config").arg(&cfg).out(&out).code(2);
    let err = text(&o.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("train.lr") && err.contains("line "),
        "{err}"
    );
    assert!(!out.exists(), "no run directory for a config error");

    let o = gt()
        .args([
            "--config",
            "configs/digits_mlp.toml",
            "--set",
            "model.kind=transformer",
        ])
        .code(2);
    assert!(
        text(&o.stderr).contains("model.kind"),
        "{}",
        text(&o.stderr)
    );

    gt().args(["--config", "configs/digits_mlp.toml", "--precision", "fp8"])
        .code(2);

    let o = gt()
        .args([
            "--config",
            "configs/digits_mlp.toml",
            "--set",
            "model.kind=lenet5",
        ])
        .code(2);
    assert!(text(&o.stderr).contains("28x28"), "{}", text(&o.stderr));

    gt().args(["--config", "no/such.toml"]).code(2);
    gt().code(2);
}

#[test]
fn corrupt_dataset_exits_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("images.idx");
    std::fs::write(
        &bad,
        [0u8, 0, 8, 3, 0, 0, 0, 10, 0, 0, 0, 28, 0, 0, 0, 28, 1, 2, 3],
    )
    .unwrap();
    let labels = dir.path().join("labels.idx");
    std::fs::write(&labels, [0u8, 0, 8, 1, 0, 0, 0, 1, 0]).unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[run]\nname = \"c\"\n[data]\ndataset = \"idx\"\nbatch_size = 2\ntrain_images = \"images.idx\"\ntrain_labels = \"labels.idx\"\ntest_images = \"images.idx\"\ntest_labels = \"labels.idx\"\n[model]\nkind = \"mlp\"\n[train]\nepochs = 1\noptimizer = \"sgd\"\nlr = 0.1\n",
    )
    .unwrap();
    let o = gt()
        .arg("--config")
        .arg(&cfg)
        .out(dir.path().join("runs"))
        .code(2);
    let err = text(&o.stderr);
    assert!(
        err.contains("images.idx") && err.contains("truncated"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn unavailable_devices_are_one_line_errors() {
    let o = gt().arg("devices").run();
    assert!(o.status.success());
    let s = text(&o.stdout);
    assert!(
        s.lines()
            .any(|l| l.starts_with("cpu") && l.contains("available")),
        "{s}"
    );
    assert!(s.contains("cuda") && s.contains("wgpu"), "{s}");

    if !Path::new("/proc/driver/nvidia/version").exists() {
        let out = tempfile::tempdir().unwrap();
        let o = gt()
            .args(["--config", "configs/digits_mlp.toml", "--device", "cuda"])
            .out(out.path())
            .code(2);
        let err = text(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains("device cuda") && !err.contains("panicked"),
            "{err}"
        );
    }
    gt().args(["--config", "configs/digits_mlp.toml", "--device", "tpu"])
        .code(2);
}

#[test]
fn matmul_kernels_refuse_the_cpu_and_unknown_names() {
    // Only the CubeCL backends have kernels to pick.
    let o = gt()
        .args([
            "matmul",
            "--device",
            "cpu",
            "--size",
            "8",
            "--kernels",
            "all",
        ])
        .code(2);
    let err = text(&o.stderr);
    assert!(
        err.contains("GPU backend") && !err.contains("panicked"),
        "{err}"
    );
    // A wrong name lists the right ones before any device is touched.
    let o = gt()
        .args(["matmul", "--device", "cpu", "--kernels", "auto,fastest"])
        .code(2);
    let err = text(&o.stderr);
    assert!(
        err.contains("--kernels: unknown kernel 'fastest'") && err.contains("double-tma-mma"),
        "{err}"
    );
}

fn metrics(r: &Value) -> Vec<(String, String, String, String, String)> {
    r["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["train_loss"].to_string(),
                e["test_loss"].to_string(),
                e["test_accuracy"].to_string(),
                e["loss_scale"].to_string(),
                e["skipped_steps"].to_string(),
            )
        })
        .collect()
}

const MNIST_SMALL: [&str; 8] = [
    "--config",
    "configs/mnist_mlp.toml",
    "--set",
    "model.hidden=[64]",
    "--set",
    "train.epochs=4",
    "--precision",
    "fp16",
];

/// Starts a run, waits for its first checkpoint, then sends `signal` `times`
/// times back to back.
fn start_and_signal(
    out: &Path,
    signal: &str,
    times: usize,
    delay: Duration,
) -> (std::process::ExitStatus, PathBuf) {
    let mut child = gt().args(MNIST_SMALL).out(out).spawn_quiet();
    let ckpt = harness::wait_for_run_file(out, "checkpoint.bin");
    std::thread::sleep(delay);
    for _ in 0..times {
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    (child.wait().unwrap(), ckpt)
}

#[test]
fn killed_or_interrupted_runs_resume_to_the_uninterrupted_result() {
    let base = tempfile::tempdir().unwrap();
    let whole = gt().args(MNIST_SMALL).out(base.path().join("whole")).ok();
    let whole_dir = run_dir_of(&whole);
    let want = metrics(&record(&whole_dir));
    let want_weights = Checkpoint::load(&whole_dir).unwrap().model;

    // SIGKILL: no chance to clean up; resume from the last epoch checkpoint.
    let out = base.path().join("killed");
    let (status, dir) = start_and_signal(&out, "-KILL", 1, Duration::from_millis(0));
    assert!(!status.success());
    assert_eq!(
        record(&dir)["status"],
        "running",
        "the kill must land before the run ends"
    );
    // The killed process journalled its energy; make the journal's last
    // entry say 1000 J more, as if it had trained on after its last save,
    // and check that resume takes the totals from there.
    let journal = dir.join("energy.journal");
    let text_j = std::fs::read_to_string(&journal).expect("the run journals its energy");
    let last: Value = serde_json::from_str(text_j.lines().last().unwrap()).unwrap();
    let mut comps = last["components"].clone();
    let n = comps.as_array().unwrap().len() as f64;
    let mut journalled = 0.0;
    for c in comps.as_array_mut().unwrap() {
        let j = c["joules"].as_f64().unwrap() + 1000.0 / n;
        journalled += j;
        c["joules"] = j.into();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let entry = serde_json::json!({
        "unix": now,
        "components": comps,
        "duration_s": last["duration_s"],
        "co2_g": last["co2_g"],
    });
    std::fs::write(&journal, format!("{text_j}{entry}\n")).unwrap();
    gt().arg("resume").arg(&dir).ok();
    let r = record(&dir);
    assert_eq!(r["status"], "completed");
    assert_eq!(r["resumed"], 1);
    let e = &r["energy"];
    assert!(e["total_j"].as_f64().unwrap() > journalled, "{e}");
    assert_eq!(
        e["unmetered_s"], 5.0,
        "one killed process, one journal interval"
    );
    let warned = |what: &str| {
        e["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains(what))
    };
    assert!(warned("energy.journal") && warned("killed"), "{e}");
    assert_eq!(metrics(&r), want);
    assert_eq!(
        Checkpoint::load(&dir).unwrap().model,
        want_weights,
        "weights differ after resume"
    );

    // SIGINT (Ctrl-C): checkpoint mid-epoch, exit 130, resume. Sent twice at
    // once, as `timeout -s INT` does (to the process, then to its group): the
    // repeat is the same interrupt, not an abort without checkpoint. SIGTERM
    // (Slurm's time limit, `scancel`, `docker stop`) and SIGHUP (a closed
    // terminal) are the same interrupt.
    for (name, signal, times) in [("int", "-INT", 2), ("term", "-TERM", 1), ("hup", "-HUP", 1)] {
        let out = base.path().join(format!("interrupted-{name}"));
        let (status, dir) = start_and_signal(&out, signal, times, Duration::from_millis(300));
        assert_eq!(status.code(), Some(130), "{signal}");
        let r = record(&dir);
        assert_eq!(r["status"], "interrupted", "{signal}");
        let o = gt().arg("resume").arg(&dir).ok();
        assert_eq!(run_dir_of(&o), dir);
        let r = record(&dir);
        assert_eq!(r["status"], "completed", "{signal}");
        assert_eq!(metrics(&r), want, "{signal}");
        assert_eq!(
            Checkpoint::load(&dir).unwrap().model,
            want_weights,
            "weights differ after resume ({signal})"
        );
    }
}

#[test]
fn budget_stop_exits_3_and_bad_intensity_file_exits_2() {
    let out = tempfile::tempdir().unwrap();
    let o = gt()
        .args([
            "--config",
            "configs/digits_mlp.toml",
            "--set",
            "budget.max_kwh=1e-15",
        ])
        .out(out.path())
        .run();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("stopped: energy budget"),
        "{}",
        text(&o.stdout)
    );
    assert_eq!(record(&run_dir_of(&o))["status"], "stopped_budget");

    let f = out.path().join("uk.json");
    std::fs::write(&f, "{\"data\": []}").unwrap();
    let o = gt()
        .args(["--config", "configs/digits_mlp.toml", "--set"])
        .arg(format!("carbon.intensity_file=\"{}\"", f.display()))
        .code(2);
    assert!(text(&o.stderr).contains("uk.json"), "{}", text(&o.stderr));
}

#[test]
fn zones_and_meters_list() {
    let o = gt().args(["zones", "france"]).run();
    assert!(o.status.success());
    let s = text(&o.stdout);
    assert!(
        s.lines()
            .any(|l| l.starts_with("FRA ") && l.contains("g/kWh") && l.contains("(2023)")),
        "{s}"
    );
    let o = gt().args(["zones", "gcp:europe-west1"]).run();
    assert!(text(&o.stdout).contains("gcp:europe-west1"));
    let o = gt().args(["meters"]).run();
    assert!(o.status.success());
    let s = text(&o.stdout);
    assert!(s.lines().any(|l| l.starts_with("cpu [")), "{s}");
}

/// One repeat: no interval, a readable bench.json, and `report` takes it.
/// The config is measured as written (digits: 2 epochs of 29 batches, each
/// well under a second): no steps added, the accuracy the config gives, and
/// runs shorter than --min-window flagged only where a meter is not an
/// estimate (this machine has no RAPL: all estimates, so none).
#[test]
fn bench_measures_the_config_as_written() {
    let out = tempfile::tempdir().unwrap();
    let o = gt()
        .args([
            "bench",
            "--config",
            "configs/digits_mlp.toml",
            "--set",
            "train.epochs=2",
            "--precisions",
            "fp32,bf16",
            "--repeats",
            "1",
            "--min-window",
            "1h",
        ])
        .out(out.path())
        .ok();
    assert!(
        !text(&o.stdout).contains("starting again"),
        "{}",
        text(&o.stdout)
    );
    let raw = std::fs::read_to_string(out.path().join("bench.json")).unwrap();
    assert!(!raw.contains("NaN") && !raw.contains("\"low\""), "{raw}");
    let b: greentrain_studies::bench::BenchReport = serde_json::from_str(&raw).unwrap();
    assert_eq!(b.steps_per_epoch, None, "the config was changed");
    assert_eq!(b.runs.len(), 2);
    for r in &b.runs {
        let rec = greentrain_trainer::record::RunRecord::load(&r.run_dir).unwrap();
        assert_eq!(rec.config.train.steps_per_epoch, None);
        assert_eq!(rec.epochs.len(), 2);
        assert!(r.wall_s < 3600.0);
    }
    // Every run is shorter than an hour: flagged where a meter is real.
    let metered = b.runs.iter().filter(|r| !r.estimated_only).count();
    assert_eq!(b.short_windows, metered, "{raw}");
    let v = b.results[1].vs_fp32.as_ref().unwrap();
    assert_eq!(v.samples_per_s.low, None);
    let rep = out.path().join("rep");
    gt().arg("report").arg(out.path()).out(&rep).ok();
}

/// A learning rate far too large makes the loss non-finite: the run stops
/// at that epoch's end with status diverged and exit 1, and its files stay
/// readable: run.json, metrics.csv, the checkpoint, `report` and
/// `reproduce` all read them.
#[test]
fn a_diverged_run_stops_and_stays_readable() {
    let out = tempfile::tempdir().unwrap();
    let o = gt()
        .args([
            "--config",
            "configs/digits_mlp.toml",
            "--set",
            "train.epochs=4",
            "--set",
            "train.lr=1e30",
        ])
        .out(out.path())
        .run();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    assert!(text(&o.stdout).contains("diverged"), "{}", text(&o.stdout));
    let dir = run_dir_of(&o);
    let r = greentrain_trainer::record::RunRecord::load(&dir).unwrap();
    assert_eq!(r.status, "diverged");
    assert!(r.finished_at.is_some());
    assert!(
        r.epochs.len() < 4,
        "stopped early: {} epochs",
        r.epochs.len()
    );
    assert!(!r.epochs.last().unwrap().train_loss.is_finite());
    let raw = std::fs::read_to_string(dir.join("run.json")).unwrap();
    assert!(
        raw.contains("\"train_loss\": \"NaN\"") || raw.contains("inf\""),
        "{raw}"
    );
    let ck = Checkpoint::load(&dir).unwrap();
    assert_eq!(ck.state.epochs.len(), r.epochs.len());
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert!(csv.lines().count() == r.epochs.len() + 1, "{csv}");
    assert!(dir.join("emissions.csv").exists());
    let o = gt().arg("resume").arg(&dir).code(2);
    assert!(text(&o.stderr).contains("diverged"), "{}", text(&o.stderr));
    gt().arg("report")
        .arg(&dir)
        .out(out.path().join("rep"))
        .ok();
    let md = std::fs::read_to_string(out.path().join("rep/report.md")).unwrap();
    assert!(md.contains("diverged"), "{md}");
}

#[test]
fn bench_on_digits_writes_all_files() {
    let out = tempfile::tempdir().unwrap();
    let o = gt()
        .args([
            "bench",
            "--config",
            "configs/digits_mlp.toml",
            "--set",
            "train.epochs=3",
            "--repeats",
            "2",
            "--min-window",
            "0.001s",
            "--quiet",
        ])
        .out(out.path())
        .ok();
    let stdout = text(&o.stdout);
    assert!(
        stdout.contains("| fp16 |") && stdout.contains("| bf16 |") && stdout.contains("vs fp32"),
        "{stdout}"
    );
    assert!(stdout
        .trim_end()
        .lines()
        .last()
        .unwrap()
        .starts_with("bench: "));
    for f in [
        "bench.json",
        "bench.csv",
        "bench.md",
        "bench.tex",
        "bench.svg",
        "bench.png",
    ] {
        assert!(out.path().join(f).exists(), "{f}");
    }
    let svg = std::fs::read_to_string(out.path().join("bench.svg")).unwrap();
    for label in [
        "test accuracy (%)",
        "training samples/s",
        "mJ/sample",
        "bf16",
    ] {
        assert!(svg.contains(label), "bench.svg lacks {label}");
    }
    // `report` on the bench folder draws its bars too.
    let rep = out.path().join("rep");
    gt().arg("report").arg(out.path()).out(&rep).ok();
    let names: Vec<String> = std::fs::read_dir(&rep)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("bench-1-") && n.ends_with(".png")),
        "{names:?}"
    );
    let b: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("bench.json")).unwrap())
            .unwrap();
    assert_eq!(b["runs"].as_array().unwrap().len(), 6);
    let order: Vec<&str> = b["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["precision"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        ["fp32", "fp16", "bf16", "fp32", "fp16", "bf16"],
        "interleaved"
    );
    assert_eq!(
        std::fs::read_dir(out.path().join("runs")).unwrap().count(),
        6,
        "every run directory is kept"
    );
    assert_eq!(
        std::fs::read_to_string(out.path().join("bench.csv"))
            .unwrap()
            .lines()
            .count(),
        7
    );

    gt().args([
        "bench",
        "--config",
        "configs/digits_mlp.toml",
        "--precisions",
        "fp32,fp8",
    ])
    .code(2);
    let o = gt()
        .args([
            "bench",
            "--config",
            "configs/digits_mlp.toml",
            "--warmup-epochs",
            "99",
        ])
        .out(out.path().join("x"))
        .code(2);
    assert!(text(&o.stderr).contains("warmup"), "{}", text(&o.stderr));
}

#[test]
fn reproduce_matches_exactly_and_catches_a_difference() {
    let out = tempfile::tempdir().unwrap();
    let reproduce = |dir: &Path| {
        gt().arg("reproduce")
            .arg(dir)
            .arg("--quiet")
            .out(out.path().join("again"))
            .run()
    };
    // The whole digits config in fp32 (30 epochs: values whose last digit a
    // best-effort float parser gets wrong), and two epochs in fp16.
    let mut dir = PathBuf::new();
    for (extra, values) in [
        (vec!["--precision", "fp32"], 180),
        (vec!["--set", "train.epochs=2", "--precision", "fp16"], 12),
    ] {
        let o = gt()
            .args(["--config", "configs/digits_mlp.toml", "--quiet"])
            .out(out.path())
            .args(&extra)
            .run();
        assert!(o.status.success());
        dir = run_dir_of(&o);
        let r = reproduce(&dir);
        let s = text(&r.stdout);
        assert_eq!(r.status.code(), Some(0), "{s}{}", text(&r.stderr));
        assert!(
            s.contains(&format!("{values} of {values} values match")),
            "{s}"
        );
    }

    // A record that no longer matches what the config produces: exit 1.
    let mut v = record(&dir);
    v["epochs"][1]["test_loss"] = serde_json::json!(0.123);
    std::fs::write(dir.join("run.json"), serde_json::to_string(&v).unwrap()).unwrap();
    let r = reproduce(&dir);
    assert_eq!(r.status.code(), Some(1));
    assert!(text(&r.stdout).contains("NO"));
}

#[test]
fn report_tables_runs_and_names_the_unreadable_ones() {
    let out = tempfile::tempdir().unwrap();
    let runs = out.path().join("runs");
    let o = gt()
        .args([
            "--config",
            "configs/digits_mlp.toml",
            "--set",
            "train.epochs=2",
            "--quiet",
            "--set",
            "carbon.zone=FRA",
        ])
        .out(&runs)
        .run();
    assert!(o.status.success());
    let broken = runs.join("broken-run");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("run.json"), "{ not json").unwrap();
    let rep = out.path().join("rep");
    let o = gt().arg("report").arg(&runs).out(&rep).run();
    assert_eq!(
        o.status.code(),
        Some(1),
        "an unreadable run is reported as an error"
    );
    assert!(
        text(&o.stderr).contains("broken-run/run.json"),
        "{}",
        text(&o.stderr)
    );
    let md = std::fs::read_to_string(rep.join("report.md")).unwrap();
    assert!(
        md.contains("| digits_mlp-") && md.contains("Carbon impact statement"),
        "{md}"
    );
    assert!(
        md.contains("zone:FRA") && md.contains("kWh") && md.contains("Burn 0.21.0"),
        "{md}"
    );
    assert!(
        md.contains("Not included") && md.contains("broken-run"),
        "{md}"
    );
    let tex = std::fs::read_to_string(rep.join("report.tex")).unwrap();
    assert!(
        tex.contains("\\begin{tabular}") && tex.contains("gCO$_2$eq"),
        "{tex}"
    );
    // The plots: SVG and PNG, labelled with units, linked from report.md.
    for stem in ["accuracy_vs_energy", "energy_per_epoch"] {
        let png = std::fs::read(rep.join(format!("{stem}.png"))).unwrap();
        assert_eq!(&png[..4], b"\x89PNG", "{stem}.png");
        assert!(md.contains(&format!("({stem}.svg)")), "{md}");
    }
    let svg = std::fs::read_to_string(rep.join("accuracy_vs_energy.svg")).unwrap();
    assert!(
        svg.contains("cumulative energy (J)")
            && svg.contains("test accuracy (%)")
            && svg.contains("digits_mlp fp32 s42")
            && svg.contains("energy: estimated"),
        "{svg}"
    );
    gt().arg("report")
        .arg(out.path().join("nothing-here"))
        .code(1);
}

#[test]
fn schedule_prints_plans_and_refuses_bad_requests() {
    let o = gt()
        .args([
            "schedule",
            "--forecast",
            "configs/forecasts/synthetic_48h_daily.csv",
            "--duration",
            "3h",
            "--window",
            "24h",
            "--from",
            "2026-12-01T00:00:00Z",
            "--json",
        ])
        .ok();
    let p: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(p["mode"], "flexible_start");
    let slots = p["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 1);
    let (e, now) = (
        p["expected_g_per_kwh"].as_f64().unwrap(),
        p["run_now_g_per_kwh"].as_f64().unwrap(),
    );
    assert!(e < now, "{p}");
    let o = gt()
        .args([
            "schedule",
            "--forecast",
            "configs/forecasts/synthetic_48h_daily.csv",
            "--duration",
            "3h",
            "--from",
            "2026-12-01T00:00:00Z",
            "--pause-resume",
            "--deadline",
            "36h",
            "--energy-kwh",
            "1",
        ])
        .run();
    let s = text(&o.stdout);
    assert!(
        o.status.success() && s.contains("pause_resume") && s.contains("gCO2eq saved"),
        "{s}"
    );
    for (args, needle) in [
        (
            vec!["--duration", "3h", "--pause-resume", "--deadline", "2h"],
            "shorter than the job",
        ),
        (vec!["--duration", "3h", "--window", "72h"], "covers"),
        (vec!["--duration", "3 hours"], "not a duration"),
        (
            vec!["--duration", "3h", "--energy-kwh=-1"],
            "--energy-kwh -1",
        ),
        (
            vec!["--duration", "3h", "--energy-kwh", "NaN"],
            "--energy-kwh NaN",
        ),
        (
            vec!["--duration", "3h", "--energy-kwh", "inf"],
            "--energy-kwh inf",
        ),
    ] {
        let o = gt()
            .args([
                "schedule",
                "--forecast",
                "configs/forecasts/synthetic_48h_daily.csv",
                "--from",
                "2026-12-01T00:00:00Z",
            ])
            .args(&args)
            .run();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(text(&o.stderr).contains(needle), "{}", text(&o.stderr));
    }
}

#[test]
fn train_follows_a_plan_whose_slot_is_open_now_and_records_it() {
    let out = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let fc = out.path().join("fc.csv");
    std::fs::write(
        &fc,
        "timestamp,g_per_kwh\n2020-01-01T00:00:00Z,123\n2020-01-01T01:00:00Z,123\n",
    )
    .unwrap();
    let fmt = greentrain_energy::carbon::format_time;
    let plan = serde_json::json!({
        "mode": "flexible_start",
        "slots": [{"start": fmt(now - 60.0), "end": fmt(now + 3600.0)}],
        "expected_g_per_kwh": 123.0, "run_now_g_per_kwh": 123.0, "duration_s": 60.0,
        "earliest_start": fmt(now - 60.0), "finish_by": fmt(now + 3600.0),
        "forecast": "fc.csv"
    });
    let pp = out.path().join("plan.json");
    std::fs::write(&pp, plan.to_string()).unwrap();
    let o = gt()
        .args([
            "--config",
            "configs/digits_mlp.toml",
            "--set",
            "train.epochs=2",
            "--quiet",
            "--schedule",
        ])
        .arg(&pp)
        .out(out.path().join("runs"))
        .ok();
    let r = record(&run_dir_of(&o));
    assert_eq!(r["status"], "completed");
    assert_eq!(r["schedule"]["mode"], "flexible_start");
    assert_eq!(r["schedule"]["pauses"], 0);
    assert_eq!(r["schedule"]["forecast_g_per_kwh"], 123.0);
    assert_eq!(r["schedule"]["ran"].as_array().unwrap().len(), 1);
    // A plan that is not a plan: exit 2.
    std::fs::write(&pp, "{}").unwrap();
    let o = gt()
        .args(["--config", "configs/digits_mlp.toml", "--schedule"])
        .arg(&pp)
        .code(2);
    assert!(text(&o.stderr).contains("plan.json"), "{}", text(&o.stderr));
}

#[test]
fn sweep_runs_from_the_command_line_and_refuses_an_unknown_key() {
    let out = tempfile::tempdir().unwrap();
    let o = gt()
        .args([
            "sweep",
            "--config",
            "configs/sweeps/digits_grid.toml",
            "--quiet",
        ])
        .out(out.path().join("grid"))
        .ok();
    assert!(text(&o.stdout).contains("Best: trial"));
    let bad = out.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "[sweep]\nname = \"bad\"\nbase = {:?}\ntrials = 2\n[space]\n\"train.nope\" = {{ uniform = [0.1, 0.2] }}\n",
            std::fs::canonicalize(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/digits_mlp.toml")).unwrap()
        ),
    )
    .unwrap();
    let o = gt()
        .args(["sweep", "--config"])
        .arg(&bad)
        .out(out.path().join("b"))
        .code(2);
    assert!(text(&o.stderr).contains("train.nope") && text(&o.stderr).contains("bad.toml"));
    assert!(!out.path().join("b").exists(), "no trial ran");
}

#[test]
fn tune_exits_0_with_a_choice_1_without_one_and_2_on_bad_flags() {
    let out = tempfile::tempdir().unwrap();
    let tune = |args: &[&str], dir: &str| {
        gt().args([
            "tune",
            "--config",
            "configs/digits_mlp.toml",
            "--device",
            "cpu",
            "--quiet",
        ])
        .args(args)
        .out(out.path().join(dir))
    };
    let o = tune(
        &[
            "--target-accuracy",
            "0.9",
            "--batch-sizes",
            "16,32",
            "--precisions",
            "fp32",
        ],
        "a",
    )
    .ok();
    let stdout = text(&o.stdout);
    assert!(
        stdout.contains("**chosen**") && stdout.contains("Chosen:"),
        "{stdout}"
    );
    assert!(out.path().join("a/chosen.toml").is_file());
    let o = tune(
        &[
            "--target-accuracy",
            "0.999",
            "--batch-sizes",
            "32",
            "--max-epochs",
            "1",
        ],
        "b",
    )
    .code(1);
    assert!(text(&o.stdout).contains("Nothing was chosen"));
    for (args, needle) in [
        (
            &["--target-accuracy", "0.9", "--batch-sizes", "32,x"][..],
            "--batch-sizes: 'x'",
        ),
        (
            &["--target-accuracy", "0.9", "--precisions", "fp8"][..],
            "--precisions: 'fp8'",
        ),
        (&["--target-accuracy", "0"][..], "--target-accuracy"),
        (
            &["--target-accuracy", "0.9", "--max-kwh=-1"][..],
            "--max-kwh",
        ),
    ] {
        let o = tune(args, "c").code(2);
        assert!(
            text(&o.stderr).contains(needle),
            "{needle}: {}",
            text(&o.stderr)
        );
    }
    assert!(
        !out.path().join("c").exists(),
        "a refused tune writes nothing"
    );
}

#[test]
fn epoch_lines_give_joules_with_their_provenance() {
    let out = tempfile::tempdir().unwrap();
    let o = gt()
        .args([
            "--config",
            "configs/digits_mlp.toml",
            "--set",
            "train.epochs=1",
        ])
        .out(out.path())
        .ok();
    let s = text(&o.stdout);
    let line = s
        .lines()
        .find(|l| l.starts_with("epoch 1/1:"))
        .unwrap_or_else(|| panic!("no epoch line in {s}"));
    assert!(
        ["J [measured]", "J [integrated]", "J [estimated]"]
            .iter()
            .any(|p| line.contains(p)),
        "{line}"
    );
}

/// `--precision` and the config's `precision.mode` share one parser: a
/// word one accepts, the other does too; an unknown key in `[precision]`
/// is named.
#[test]
fn precision_words_are_the_same_on_the_command_line_and_in_a_config() {
    let out = tempfile::tempdir().unwrap();
    for word in [["--precision", "half"], ["--set", "precision.mode=half"]] {
        let o = gt()
            .args(["--config", "configs/digits_mlp.toml"])
            .args(word)
            .args(["--set", "train.epochs=1"])
            .out(out.path())
            .ok();
        assert_eq!(record(&run_dir_of(&o))["precision"], "fp16", "{word:?}");
    }
    let o = gt()
        .args([
            "--config",
            "configs/digits_mlp.toml",
            "--set",
            "precision.scale=2",
        ])
        .code(2);
    assert!(text(&o.stderr).contains("scale"), "{}", text(&o.stderr));
    let o = gt()
        .args([
            "--config",
            "configs/digits_mlp.toml",
            "--set",
            "precision.growth_interval=0",
        ])
        .code(2);
    assert!(
        text(&o.stderr).contains("precision.growth_interval"),
        "{}",
        text(&o.stderr)
    );
}
