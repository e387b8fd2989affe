//! `[log] tensorboard = true`: the run's scalars as TensorBoard event files
//! in `<run>/tensorboard/`, from the same figures run.json records. Per log
//! step (x: optimizer steps): `train/loss`, `train/samples_per_s`,
//! `train/loss_scale`. Per epoch (x: epoch number): `epoch/train_loss`,
//! `epoch/test_loss`, `epoch/test_accuracy` (and training and validation
//! accuracy where recorded), `energy/joules`, `energy/mean_watts` (the
//! epoch's joules, training and evaluation, over their seconds) and
//! `carbon/co2_g`, each energy tag described with its provenance. A resumed
//! run adds a file; TensorBoard reads them together.

use crate::record::EpochRecord;
use greentrain_tensorboard::EventWriter;
use std::path::Path;

/// The run's event file; a write that fails is said once and the run goes on.
pub(crate) struct Board {
    w: Option<EventWriter>,
}

impl Board {
    /// Opens a new event file in `run_dir/tensorboard/`.
    pub(crate) fn open(run_dir: &Path) -> Self {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        let w = EventWriter::create(&run_dir.join("tensorboard"), &host)
            .map_err(|e| eprintln!("warning: tensorboard: cannot create an event file: {e}"))
            .ok();
        Self { w }
    }

    fn put(&mut self, tag: &str, step: i64, v: f64, description: Option<&str>) {
        let Some(w) = self.w.as_mut() else {
            return;
        };
        if let Err(e) = w.scalar(tag, step, v as f32, description) {
            eprintln!("warning: tensorboard: {e}; no more events this run");
            self.w = None;
        }
    }

    fn flush(&mut self) {
        if let Some(w) = self.w.as_mut() {
            let _ = w.flush();
        }
    }

    /// A log step's figures at optimizer step `step`.
    pub(crate) fn step(&mut self, step: u64, loss: f64, samples_per_s: f64, scale: Option<f64>) {
        let s = step as i64;
        self.put("train/loss", s, loss, None);
        self.put("train/samples_per_s", s, samples_per_s, None);
        if let Some(scale) = scale {
            self.put("train/loss_scale", s, scale, None);
        }
        self.flush();
    }

    /// An epoch's record; `provenance` describes its energy figures.
    pub(crate) fn epoch(&mut self, e: &EpochRecord, provenance: Option<&str>) {
        let s = e.epoch as i64;
        self.put("epoch/train_loss", s, e.train_loss, None);
        self.put("epoch/test_loss", s, e.test_loss, None);
        self.put("epoch/test_accuracy", s, e.test_accuracy, None);
        for (tag, v) in [
            ("epoch/train_accuracy", e.train_accuracy),
            ("epoch/val_loss", e.val_loss),
            ("epoch/val_accuracy", e.val_accuracy),
            ("epoch/test_perplexity", e.test_perplexity),
            ("epoch/val_perplexity", e.val_perplexity),
        ] {
            if let Some(v) = v {
                self.put(tag, s, v, None);
            }
        }
        if let Some(j) = e.energy_j {
            let about = provenance.map(|p| format!("energy of the epoch in J, {p}"));
            self.put("energy/joules", s, j, about.as_deref());
            let secs = e.wall_s + e.eval_s;
            if secs > 0.0 {
                let about = provenance.map(|p| format!("mean power over the epoch in W, {p}"));
                self.put("energy/mean_watts", s, j / secs, about.as_deref());
            }
        }
        if let Some(g) = e.co2_g {
            let about = provenance.map(|p| format!("gCO2eq of the epoch, from energy {p}"));
            self.put("carbon/co2_g", s, g, about.as_deref());
        }
        self.flush();
    }
}
