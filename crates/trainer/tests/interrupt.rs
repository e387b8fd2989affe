//! Interrupt and resume, in a test binary of its own: the interrupt flag is
//! process-wide.

use greentrain_trainer::checkpoint::Checkpoint;
use greentrain_trainer::train::{clear_interrupt, request_interrupt};
use greentrain_trainer::{config, resume, train, DeviceSpec, TrainRequest};
use std::path::PathBuf;

#[test]
fn interrupted_run_resumes_to_the_same_result() {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/digits_mlp.toml"
    ));
    let cfg = config::load(
        &path,
        &["train.epochs=3".into(), "precision.mode=fp16".into()],
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let req = || TrainRequest {
        config: cfg.clone(),
        device: DeviceSpec::Cpu,
        out_dir: out.path().to_path_buf(),
        quiet: true,
    };
    let whole = train(req()).unwrap();

    request_interrupt();
    let cut = train(req()).unwrap();
    clear_interrupt();
    assert_eq!(cut.status, "interrupted");
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cut.run_dir.join("run.json")).unwrap())
            .unwrap();
    assert_eq!(rec["status"], "interrupted");
    assert!(cut.run_dir.join("checkpoint.bin").exists());

    let done = resume(&cut.run_dir, None, true).unwrap();
    assert_eq!(done.status, "completed");
    assert_eq!(done.record.resumed, 1);
    let strip = |r: &greentrain_trainer::record::RunRecord| {
        r.epochs
            .iter()
            .map(|e| (e.train_loss, e.test_loss, e.test_accuracy, e.loss_scale))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&done.record), strip(&whole.record));
    assert_eq!(
        Checkpoint::load(&done.run_dir).unwrap().model,
        Checkpoint::load(&whole.run_dir).unwrap().model
    );

    // A completed run is not resumed again.
    assert!(resume(&done.run_dir, None, true).is_err());
}
