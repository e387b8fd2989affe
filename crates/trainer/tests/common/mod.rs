//! What the interrupt-and-resume tests share (interrupt.rs, own_model.rs).

use greentrain_trainer::record::RunRecord;
use greentrain_trainer::train::{clear_interrupt, request_interrupt};
use std::path::Path;

/// Runs `train` (which writes one run folder under `parent`) on a thread
/// and interrupts it as Ctrl-C does once its first checkpoint exists, 30 ms
/// later: past the epoch end's record writing, into the next epoch's steps.
/// Returns what `train` returned.
pub fn interrupted_once_checkpointed<T: Send + 'static>(
    parent: &Path,
    train: impl FnOnce() -> T + Send + 'static,
) -> T {
    let running = std::thread::spawn(train);
    let t0 = std::time::Instant::now();
    while !std::fs::read_dir(parent)
        .map(|d| {
            d.flatten()
                .any(|e| e.path().join("checkpoint.bin").exists())
        })
        .unwrap_or(false)
    {
        assert!(t0.elapsed().as_secs() < 120, "no checkpoint appeared");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    std::thread::sleep(std::time::Duration::from_millis(30));
    request_interrupt();
    let out = running.join().unwrap();
    clear_interrupt();
    out
}

/// What a resumed run must repeat exactly, epoch by epoch: train loss, test
/// loss, test accuracy and loss scale.
pub fn epoch_figures(r: &RunRecord) -> Vec<(f64, f64, f64, f64)> {
    r.epochs
        .iter()
        .map(|e| (e.train_loss, e.test_loss, e.test_accuracy, e.loss_scale))
        .collect()
}
