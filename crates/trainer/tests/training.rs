//! Whole training runs in-process on the shipped digits data (CPU).

use greentrain_trainer::checkpoint::Checkpoint;
use greentrain_trainer::record::EpochRecord;
use greentrain_trainer::{config, train, DeviceSpec, TrainRequest};
use std::path::{Path, PathBuf};

fn digits_config(overrides: &[&str]) -> config::LoadedConfig {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/digits_mlp.toml"
    ));
    let mut o: Vec<String> = vec!["train.epochs=4".into()];
    o.extend(overrides.iter().map(|s| s.to_string()));
    config::load(&path, &o).unwrap()
}

fn run(out: &Path, overrides: &[&str]) -> greentrain_trainer::Outcome {
    train(TrainRequest {
        config: digits_config(overrides),
        device: DeviceSpec::Cpu,
        out_dir: out.to_path_buf(),
        quiet: true,
    })
    .unwrap()
}

/// Metrics without the wall-clock fields.
fn metrics(e: &[EpochRecord]) -> Vec<(u64, u64, u64, u64, u64)> {
    e.iter()
        .map(|e| {
            (
                e.train_loss.to_bits(),
                e.test_loss.to_bits(),
                e.test_accuracy.to_bits(),
                e.loss_scale.to_bits(),
                e.skipped_steps,
            )
        })
        .collect()
}

fn weights(dir: &Path) -> Vec<u8> {
    Checkpoint::load(dir).unwrap().model
}

#[test]
fn same_seed_gives_bit_identical_metrics_and_weights() {
    let out = tempfile::tempdir().unwrap();
    for p in ["fp32", "fp16"] {
        let mode = format!("precision.mode={p}");
        let a = run(out.path(), &[&mode]);
        let b = run(out.path(), &[&mode]);
        assert_ne!(a.run_dir, b.run_dir, "each run gets its own directory");
        assert_eq!(metrics(&a.record.epochs), metrics(&b.record.epochs), "{p}");
        assert_eq!(weights(&a.run_dir), weights(&b.run_dir), "{p}");
        // A different seed really changes the run.
        let c = run(out.path(), &[&mode, "run.seed=7"]);
        assert_ne!(weights(&a.run_dir), weights(&c.run_dir));
    }
}

#[test]
fn run_record_is_complete() {
    let out = tempfile::tempdir().unwrap();
    let o = run(out.path(), &["data.val_fraction=0.1"]);
    let dir = &o.run_dir;
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with("digits_mlp-") && name.ends_with('Z'),
        "{name}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(v["schema"], "greentrain.run/1");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["precision"], "fp32");
    assert_eq!(v["device"]["backend"], "flex");
    assert_eq!(v["versions"]["burn"], "0.21.0");
    assert!(v["versions"]["rustc"]
        .as_str()
        .unwrap()
        .starts_with("rustc "));
    assert_eq!(v["config_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(v["epochs"].as_array().unwrap().len(), 4);
    assert_eq!(v["dataset"]["val_samples"], 90);
    for key in [
        "epoch",
        "train_loss",
        "train_accuracy",
        "test_loss",
        "test_accuracy",
        "wall_s",
        "samples_per_s",
        "loss_scale",
        "skipped_steps",
        "val_accuracy",
    ] {
        assert!(!v["epochs"][0][key].is_null(), "epochs[].{key} missing");
    }
    let acc = v["final"]["test_accuracy"].as_f64().unwrap();
    assert!((0.5..=1.0).contains(&acc), "accuracy is a fraction: {acc}");
    assert_eq!(v["final"]["samples"], 4 * 808);
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5);
    assert!(csv.starts_with("epoch,train_loss,train_accuracy,test_loss,test_accuracy"));
    // Training accuracy is counted per sample: a fraction with denominator
    // the epoch's samples, and the model learns (digits, 4 epochs).
    let train_acc: Vec<f64> = (0..4)
        .map(|i| v["epochs"][i]["train_accuracy"].as_f64().unwrap())
        .collect();
    for a in &train_acc {
        let count = a * 808.0;
        assert!((count - count.round()).abs() < 1e-6, "{a} is not k/808");
    }
    assert!(
        train_acc[3] > train_acc[0] && train_acc[3] > 0.5,
        "{train_acc:?}"
    );
    let cfg = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(cfg.contains("val_fraction = 0.1"));
    // No temporary files left behind.
    for e in std::fs::read_dir(dir).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(!n.ends_with(".tmp"), "{n}");
    }
}

#[test]
fn fp16_and_bf16_train_and_record_the_scaler() {
    let out = tempfile::tempdir().unwrap();
    let f32run = run(out.path(), &["train.epochs=10"]);
    for p in ["fp16", "bf16"] {
        let o = run(
            out.path(),
            &["train.epochs=10", &format!("precision.mode={p}")],
        );
        assert_eq!(o.record.precision.to_string(), p);
        let a = o.record.final_.as_ref().unwrap().test_accuracy;
        let b = f32run.record.final_.as_ref().unwrap().test_accuracy;
        assert!((a - b).abs() < 0.02, "{p} accuracy {a} vs fp32 {b}");
        let scale = o.record.epochs.last().unwrap().loss_scale;
        if p == "fp16" {
            assert_eq!(scale, 65536.0);
        } else {
            assert_eq!(scale, 1.0);
        }
    }
}

#[test]
fn huge_initial_scale_backs_off_and_still_converges() {
    let out = tempfile::tempdir().unwrap();
    let o = run(
        out.path(),
        &[
            "train.epochs=10",
            "precision.mode=fp16",
            "precision.init_scale=1e30",
        ],
    );
    let f = o.record.final_.as_ref().unwrap();
    assert!(f.skipped_steps > 0, "a scale of 1e30 must overflow f16");
    assert!(o.record.epochs[0].skipped_steps > 0);
    assert!(o.record.epochs.last().unwrap().loss_scale < 1e30);
    assert!(f.test_accuracy > 0.85, "accuracy {}", f.test_accuracy);
}

#[test]
fn accumulation_and_clipping_and_schedules_run() {
    let out = tempfile::tempdir().unwrap();
    for o in [
        vec![
            "train.accumulate=4",
            "precision.mode=fp16",
            "train.lr=0.004",
        ],
        vec!["train.clip_grad_norm=0.5", "precision.mode=fp16"],
        vec![
            "train.schedule=cosine",
            "train.optimizer=momentum",
            "train.lr=0.05",
        ],
        vec![
            "train.schedule=step",
            "train.optimizer=adamw",
            "train.weight_decay=0.01",
        ],
        vec!["train.optimizer=sgd", "train.lr=0.1", "model.hidden=[]"],
    ] {
        let r = run(out.path(), &o);
        let acc = r.record.final_.as_ref().unwrap().test_accuracy;
        assert!(acc > 0.7, "{o:?}: accuracy {acc}");
    }
}

#[test]
fn missing_driver_is_a_usage_error_not_a_panic() {
    // Without a driver, CUDA device 0; with one (a GPU machine), a device
    // index no machine has: either way a usage error before any folder.
    let driver = Path::new("/proc/driver/nvidia/version").exists();
    let device = DeviceSpec::Cuda(if driver { 1_000_000 } else { 0 });
    let out = tempfile::tempdir().unwrap();
    let e = train(TrainRequest {
        config: digits_config(&[]),
        device,
        out_dir: out.path().to_path_buf(),
        quiet: true,
    })
    .unwrap_err();
    assert!(matches!(e, greentrain_trainer::Failure::Usage(_)));
    assert!(
        e.to_string().contains("NVIDIA driver")
            || e.to_string().contains("without the `cuda` feature")
            || (driver && e.to_string().contains("CUDA device(s) visible")),
        "{e}"
    );
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "no run directory for a run that never started"
    );
}

#[test]
fn a_run_being_trained_cannot_be_resumed_by_a_second_process() {
    use greentrain_trainer::files::lock_run;
    let out = tempfile::tempdir().unwrap();
    let o = run(out.path(), &["train.epochs=1"]);
    // The finished run's lock was released with its training.
    let held = lock_run(&o.run_dir).unwrap();
    let e = lock_run(&o.run_dir).unwrap_err().to_string();
    assert!(e.contains("another greentrain process"), "{e}");
    // As if killed mid-run while another process still trains it.
    let path = o.run_dir.join("run.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"completed\"", "\"running\"")).unwrap();
    match greentrain_trainer::resume(&o.run_dir, None, true) {
        Err(greentrain_trainer::Failure::Usage(e)) => {
            assert!(
                format!("{e:#}").contains("another greentrain process"),
                "{e:#}"
            )
        }
        Err(greentrain_trainer::Failure::Runtime(e)) => panic!("runtime failure: {e:#}"),
        Ok(o) => panic!("resumed while locked: {}", o.status),
    }
    drop(held);
    assert!(lock_run(&o.run_dir).is_ok());
}
