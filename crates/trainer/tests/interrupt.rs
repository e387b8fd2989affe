//! Interrupt and resume, in a test binary of its own: the interrupt flag is
//! process-wide.

use greentrain_trainer::checkpoint::Checkpoint;
use greentrain_trainer::train::{clear_interrupt, request_interrupt};
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
    let cut_dir = out.path().join("cut");
    let running = std::thread::spawn(move || train(cut_req));
    let t0 = std::time::Instant::now();
    while !std::fs::read_dir(&cut_dir)
        .map(|d| {
            d.flatten()
                .any(|e| e.path().join("checkpoint.bin").exists())
        })
        .unwrap_or(false)
    {
        assert!(t0.elapsed().as_secs() < 120, "no checkpoint appeared");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // Past the epoch end's record writing, into epoch 2's steps.
    std::thread::sleep(std::time::Duration::from_millis(30));
    request_interrupt();
    let cut = running.join().unwrap().unwrap();
    clear_interrupt();
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
