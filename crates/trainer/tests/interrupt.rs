//! Interrupt and resume, in a test binary of its own: the interrupt flag is
//! process-wide.

use greentrain_trainer::checkpoint::Checkpoint;
mod common;
use common::{epoch_figures, interrupted_once_checkpointed};
use greentrain_trainer::{config, resume, train, DeviceSpec, TrainRequest};
use std::path::PathBuf;

/// One test, so that no other run shares the process-wide flag: UCI digits
/// under fp16 (the loss scaler's state), and the digits as image files
/// with crops and flips (drawn per epoch and step, so mid-epoch resume
/// needs no augmentation state).
#[test]
fn interrupted_run_resumes_to_the_same_result() {
    interrupted_run_resumes("digits_mlp.toml", &["precision.mode=fp16"]);
    interrupted_run_resumes("image_folder_digits.toml", &["data.augment=true"]);
}

fn interrupted_run_resumes(file: &str, sets: &[&str]) {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs")).join(file);
    // Long epochs (600 steps), so that an interrupt sent once the first
    // checkpoint exists lands in the middle of epoch 2.
    let mut sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    sets.extend([
        "train.epochs=3".into(),
        "train.steps_per_epoch=600".into(),
        "train.checkpoint_every=1".into(),
    ]);
    let cfg = config::load(&path, &sets).unwrap();
    let out = tempfile::tempdir().unwrap();
    let req = |dir: &str| TrainRequest {
        config: cfg.clone(),
        device: DeviceSpec::Cpu,
        out_dir: out.path().join(dir),
        quiet: true,
    };
    let whole = train(req("whole")).unwrap();

    let cut_req = req("cut");
    let cut =
        interrupted_once_checkpointed(&out.path().join("cut"), move || train(cut_req)).unwrap();
    assert_eq!(cut.status, "interrupted");
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cut.run_dir.join("run.json")).unwrap())
            .unwrap();
    assert_eq!(rec["status"], "interrupted");
    let state = Checkpoint::load(&cut.run_dir).unwrap().state;
    assert!(
        state.epoch >= 1 && state.step > 0,
        "the interrupt must land mid-epoch, after the first epoch (epoch {}, step {})",
        state.epoch,
        state.step
    );

    let done = resume(&cut.run_dir, None, true).unwrap();
    assert_eq!(done.status, "completed");
    assert_eq!(done.record.resumed, 1);
    assert_eq!(epoch_figures(&done.record), epoch_figures(&whole.record));
    assert_eq!(
        Checkpoint::load(&done.run_dir).unwrap().model,
        Checkpoint::load(&whole.run_dir).unwrap().model
    );

    // A completed run is not resumed again.
    assert!(resume(&done.run_dir, None, true).is_err());
}
