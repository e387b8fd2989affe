//! Host read-backs per training step. A read makes the host wait for the
//! GPU, so only log steps and epoch ends may read: the count must not grow
//! with the number of non-log steps. (One test in its own process: the
//! read counter is global.)

use greentrain_amp::readback;
use greentrain_trainer::{config, train, DeviceSpec, TrainRequest};
use std::path::PathBuf;

fn reads(steps: usize, log_every: usize, precision: &str, clip: bool) -> u64 {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/digits_mlp.toml"
    ));
    let mut o = vec![
        "train.epochs=1".to_string(),
        format!("train.steps_per_epoch={steps}"),
        format!("train.log_every={log_every}"),
        format!("precision.mode={precision}"),
        "energy.enabled=false".into(),
    ];
    if clip {
        o.push("train.clip_grad_norm=1.0".into());
    }
    let out = tempfile::tempdir().unwrap();
    let before = readback::count();
    train(TrainRequest {
        config: config::load(&path, &o).unwrap(),
        device: DeviceSpec::Cpu,
        out_dir: out.path().to_path_buf(),
        quiet: true,
    })
    .unwrap();
    readback::count() - before
}

#[test]
fn non_log_steps_read_nothing_back() {
    for (precision, clip) in [
        ("fp16", false),
        ("fp16", true),
        ("fp32", true),
        ("fp32", false),
    ] {
        // No log step before the epoch's end: 10 or 40 steps, same reads.
        let short = reads(10, 1000, precision, clip);
        let long = reads(40, 1000, precision, clip);
        assert!(short > 0, "the epoch end reads its loss and accuracy");
        assert_eq!(
            short, long,
            "{precision} clip={clip}: non-log steps read back"
        );
        // A log step every 10 steps: three more log steps, a fixed number
        // of reads each (the loss sum, and the scaler's counters in fp16).
        let logged = reads(40, 10, precision, clip);
        let per_log = if precision == "fp16" { 2 } else { 1 };
        assert_eq!(logged - long, 3 * per_log, "{precision} clip={clip}");
    }
}
