//! The bookkeeping of an epoch's time ([`Segment`]) and of checkpoints
//! ([`Cadence`]).

use crate::checkpoint::{Checkpoint, PartialEpoch, TrainState};
use crate::energy::RunTracker;
use anyhow::Context;
use burn::tensor::backend::{AutodiffBackend, Backend};
use greentrain_amp::{DeviceOptimizer, DeviceScaler, ScalerSnapshot};
use greentrain_energy::Window;
use std::path::Path;
use std::time::Instant;

/// Writes the checkpoint (model, optimizer and loop state) atomically.
pub(crate) fn save_checkpoint<B: AutodiffBackend, M: burn::module::Module<B>>(
    dir: &Path,
    state: &TrainState,
    model: &M,
    optim: &DeviceOptimizer<B>,
) -> anyhow::Result<()> {
    Checkpoint {
        state: state.clone(),
        model: super::state::model_bytes::<B, M>(model),
        optim: super::state::optim_bytes(optim),
    }
    .save(dir)
    .with_context(|| format!("writing checkpoint in {}", dir.display()))
}

/// The stretch of an epoch trained since its start, a resume or a pause: its
/// wall clock and skip count continue the checkpoint's partial sums.
pub(crate) struct Segment {
    started: Instant,
    wall_base: f64,
    skipped_base: u64,
}

impl Segment {
    pub(crate) fn start(p: &PartialEpoch) -> Self {
        Self {
            started: Instant::now(),
            wall_base: p.wall_s,
            skipped_base: p.skipped,
        }
    }

    /// After a pause: a new clock, the same scaler counter.
    pub(crate) fn resume(p: &PartialEpoch, old: Segment) -> Self {
        Self {
            started: Instant::now(),
            wall_base: p.wall_s,
            skipped_base: old.skipped_base,
        }
    }

    /// Reads the scaler's counters (one read; none without scaling).
    pub(crate) fn scaler_counts<B: Backend>(
        &self,
        p: &mut PartialEpoch,
        scaler: &DeviceScaler<B>,
    ) -> Option<ScalerSnapshot> {
        let snap = scaler.is_enabled().then(|| scaler.sync())?;
        p.skipped = self.skipped_base + snap.skipped;
        Some(snap)
    }

    /// Waits for the device's queued work, so the epoch's time covers it,
    /// then brings the partial sums up to date.
    pub(crate) fn settle<B: AutodiffBackend>(
        &self,
        p: &mut PartialEpoch,
        device: &B::Device,
        scaler: &DeviceScaler<B::InnerBackend>,
    ) -> Option<ScalerSnapshot> {
        let _ = B::sync(device);
        p.wall_s = self.wall_base + self.started.elapsed().as_secs_f64();
        self.scaler_counts(p, scaler)
    }
}

/// When checkpoints are written at epoch ends, and what they cost.
pub(crate) struct Cadence {
    since: Instant,
    cost_s: Option<f64>,
    saved_epoch: Option<usize>,
}

impl Cadence {
    pub(crate) fn new() -> Self {
        Self {
            since: Instant::now(),
            cost_s: None,
            saved_epoch: None,
        }
    }

    /// Writes the checkpoint in its own energy window and records its
    /// seconds and joules on the last finished epoch.
    pub(crate) fn save<B: AutodiffBackend, M: burn::module::Module<B>>(
        &mut self,
        dir: &Path,
        state: &mut TrainState,
        model: &M,
        optim: &DeviceOptimizer<B>,
        account: Option<&mut RunTracker>,
    ) -> anyhow::Result<()> {
        let window = Window::Checkpoint { epoch: state.epoch };
        let mut account = account;
        if let Some(a) = account.as_deref_mut() {
            a.begin(&window);
        }
        let t = Instant::now();
        save_checkpoint(dir, state, model, optim)?;
        let secs = t.elapsed().as_secs_f64();
        let joules = account.and_then(|a| a.end(&window)).map(|w| w.total_j);
        if let Some(e) = state.epochs.last_mut() {
            e.checkpoint_s = Some(secs);
            e.checkpoint_j = joules;
        }
        // The epoch records inside the file lack this checkpoint's own
        // figures; the run record and the next checkpoint carry them.
        self.cost_s = Some(secs);
        self.since = Instant::now();
        self.saved_epoch = Some(state.epoch);
        Ok(())
    }

    /// Whether `every` asks for a checkpoint at the end of (1-based) epoch
    /// `epoch`.
    pub(crate) fn due(&self, every: crate::config::CheckpointEvery, epoch: usize) -> bool {
        every.due(epoch, self.since.elapsed().as_secs_f64(), self.cost_s)
    }

    /// Whether the checkpoint of (1-based) epoch `epoch` is written.
    pub(crate) fn saved(&self, epoch: usize) -> bool {
        self.saved_epoch == Some(epoch)
    }
}
