//! A run's training phase: the steps of an epoch, Ctrl-C and pauses
//! inside it.

use super::progress::words;
use super::{EpochRun, Run, Trained};
use crate::checkpoint::PartialEpoch;
use crate::follow::Next;
use crate::network::Trainable;
use crate::run::segment::{save_checkpoint, Segment};
use crate::run::setup::interrupted;
use crate::run::state::lr_at;
use crate::status::RunStatus;
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use greentrain_amp::AmpBackend;
use greentrain_amp::{grads, readback, ScalerSnapshot};
use greentrain_energy::Window;
use std::time::Instant;

impl<B: AmpBackend, M: Trainable<B>> Run<B, M> {
    /// Trains the current epoch's remaining steps. `Err(status)` when the
    /// run stopped inside the epoch (after checkpointing there).
    pub(super) fn train_epoch(&mut self) -> anyhow::Result<Result<Trained, RunStatus>> {
        let mut ep = self.open_epoch();
        let (steps, accum) = (self.shape.steps, self.shape.accum);
        let mut bi = self.state.step;
        while bi < steps {
            // Stop or pause only between optimizer steps, so no accumulated
            // gradient is lost.
            if bi.is_multiple_of(accum) {
                if interrupted() {
                    self.checkpoint_inside(&mut ep, bi)?;
                    self.progress.line(&format!(
                        "interrupted at epoch {} step {bi}; continue with: greentrain resume {}",
                        ep.epoch + 1,
                        self.run_dir.display()
                    ));
                    return Ok(Err(RunStatus::Interrupted));
                }
                if let Some(until) = self.pause_due() {
                    self.pause(&mut ep, bi, until)?;
                    // Back to the top: Ctrl-C during the wait is handled there.
                    continue;
                }
            }
            self.train_step(&mut ep, bi);
            bi += 1;
            self.log_step(&mut ep, bi);
            if let Some(a) = self.account.as_mut() {
                a.journal_if_due();
            }
        }
        let snap = self.close_segment(&mut ep);
        let (loss_sum, correct) = read_sums(&ep);
        let n = ep.partial.samples.max(1) as f64;
        let labels = n * self.shape.targets as f64;
        Ok(Ok(Trained {
            partial: ep.partial,
            train_loss: loss_sum as f64 / n,
            train_accuracy: correct as f64 / labels,
            snap,
            lr: ep.lr,
            started_unix: ep.started_unix,
        }))
    }

    /// One micro-batch: forward, scaled backward, and at the end of its
    /// group the optimizer step. No read back.
    pub(super) fn train_step(&mut self, ep: &mut EpochRun<B>, bi: usize) {
        let (accum, steps) = (self.shape.accum, self.shape.steps);
        let t0 = Instant::now();
        let group_start = bi - bi % accum;
        let group_end = (group_start + accum).min(steps);
        let group_samples: usize = ep.chunks[group_start..group_end]
            .iter()
            .map(|c| c.len())
            .sum();
        let ids = &ep.chunks[bi][..];
        let (x, y) = self.batches.get(
            &self.dataset.train,
            self.shape.features,
            ids,
            (ep.epoch, bi),
            &self.device,
        );
        let t_data = t0.elapsed().as_secs_f64();

        let model = self
            .model
            .take()
            .expect("the model is back after each step");
        // The run's policy for the model on `Amp<B>` (its precision and
        // kernels), for the forward and the loss; the backward and the
        // step run outside.
        let autocast = self.ac.enter();
        let logits = model.logits(x);
        let hits = logits
            .clone()
            .inner()
            .argmax(1)
            .reshape([ids.len() * self.shape.targets])
            .equal(y.clone().inner())
            .int()
            .sum()
            .float();
        ep.correct = ep.correct.clone() + hits;
        let loss = self.ac.cross_entropy(logits, y);
        drop(autocast);
        ep.loss_sum = ep.loss_sum.clone() + loss.clone().inner().mul_scalar(ids.len() as f32);
        // Weight each micro-batch by its share of the group's samples, so
        // the accumulated gradient is the group's mean gradient.
        let weighted = if group_end - group_start > 1 {
            loss.mul_scalar(ids.len() as f32 / group_samples as f32)
        } else {
            loss
        };
        let g = self.scaler.scale_loss(weighted).backward();
        let g = GradientsParams::from_grads(g, &model);
        ep.acc = Some(grads::accumulate::<B, M>(&model, ep.acc.take(), g));
        let n = ids.len() as u64;
        let model = if bi + 1 == group_end {
            self.optimizer_step(ep, model)
        } else {
            model
        };
        self.model = Some(model);
        ep.partial.samples += n;
        ep.samples_since_log += n;
        ep.partial.data_s += t_data;
    }

    pub(super) fn optimizer_step(&mut self, ep: &mut EpochRun<B>, model: M) -> M {
        let c = &self.c;
        ep.lr = lr_at(
            c,
            self.state.optimizer_steps,
            self.shape.total_opt_steps,
            ep.epoch,
        );
        let g = ep.acc.take().expect("accumulated gradients");
        let model = self
            .scaler
            .step(&mut self.optim, ep.lr, model, g, c.train.clip_grad_norm);
        self.state.optimizer_steps += 1;
        if !self.warmed_up {
            // Once per process: the first step compiles (and autotunes) the
            // step's kernels.
            let _ = B::sync(&self.device);
            let w = self.process_start.elapsed().as_secs_f64();
            self.warmed_up = true;
            self.record.warmup_s = Some(self.record.warmup_s.unwrap_or(0.0) + w);
        }
        model
    }

    /// Progress after step `bi` (1-based count); a log step is the only step
    /// that reads back (the loss sum and the scaler's counters), so the rate
    /// it prints is synchronised.
    pub(super) fn log_step(&mut self, ep: &mut EpochRun<B>, bi: usize) {
        let (epochs, steps) = (self.c.train.epochs, self.shape.steps);
        if !(bi.is_multiple_of(self.c.train.log_every) || bi == steps) {
            self.progress.step(ep.epoch, epochs, bi, steps, None);
            return;
        }
        if let Some(a) = self.account.as_mut() {
            self.progress.energy_warnings(a.take_warnings());
        }
        let loss =
            readback::read_f32(ep.loss_sum.clone())[0] as f64 / ep.partial.samples.max(1) as f64;
        let rate = ep.samples_since_log as f64 / ep.since_log.elapsed().as_secs_f64().max(1e-9);
        let mut msg = format!("loss {loss:.4} {rate:.0} samples/s");
        let snap = ep.seg.scaler_counts(&mut ep.partial, &self.scaler);
        if let Some(snap) = &snap {
            msg.push_str(&format!(
                " scale {} skipped {}",
                snap.scale, ep.partial.skipped
            ));
        }
        if let Some(b) = self.board.as_mut() {
            let scale = snap.map(|s| f64::from(s.scale));
            b.step(self.state.optimizer_steps, loss, rate, scale);
        }
        self.progress.step(ep.epoch, epochs, bi, steps, Some(msg));
        ep.since_log = Instant::now();
        ep.samples_since_log = 0;
    }

    /// Ends a stretch of training (the epoch's end, Ctrl-C or a pause):
    /// waits for the device, brings the partial sums up to date and closes
    /// the training window into the epoch's energy.
    fn close_segment(&mut self, ep: &mut EpochRun<B>) -> Option<ScalerSnapshot> {
        self.progress.finish();
        let snap = ep
            .seg
            .settle::<B>(&mut ep.partial, &self.device, &self.scaler);
        if let Some(a) = self.account.as_mut() {
            ep.partial.energy_j += a.end(&ep.window).map_or(0.0, |w| w.total_j);
        }
        snap
    }

    /// Settles the device, closes the epoch's training window and writes a
    /// checkpoint at step `bi` of the epoch (for Ctrl-C and pauses).
    pub(super) fn checkpoint_inside(
        &mut self,
        ep: &mut EpochRun<B>,
        bi: usize,
    ) -> anyhow::Result<()> {
        let snap = self.close_segment(ep);
        self.state.step = bi;
        let (loss_sum, correct) = read_sums(ep);
        self.state.partial = PartialEpoch {
            loss_sum,
            correct: correct as u64,
            ..ep.partial.clone()
        };
        self.state.scaler = self.scaler.state_at(snap);
        save_checkpoint(&self.run_dir, &self.state, self.model(), &self.optim)
    }

    /// The unix time to pause until, when a plan says so now.
    pub(super) fn pause_due(&mut self) -> Option<f64> {
        match self.follower.as_mut()?.before_step() {
            Next::Go => None,
            Next::Overrun => {
                self.progress
                    .line("schedule: the plan's last slot is over; training on until the run ends");
                None
            }
            Next::PauseUntil(until) => Some(until),
        }
    }

    /// Checkpoints (a pause can be long, and the machine may go away
    /// meanwhile), records the run as paused with its energy so far, and
    /// waits in a window of its own that counts in neither the epoch's
    /// energy nor the budgets.
    pub(super) fn pause(
        &mut self,
        ep: &mut EpochRun<B>,
        bi: usize,
        until: f64,
    ) -> anyhow::Result<()> {
        self.checkpoint_inside(ep, bi)?;
        let first = self.state.epoch == 0
            && bi == 0
            && self
                .follower
                .as_ref()
                .is_some_and(|f| f.record().ran.is_empty());
        self.save_progress(RunStatus::Paused)?;
        let what = if first {
            "waiting for the plan's first slot"
        } else {
            "paused (checkpointed) until the next slot"
        };
        self.progress.line(&format!(
            "schedule: {what} at {}",
            greentrain_energy::carbon::format_time(until)
        ));
        let wait_window = Window::Wait {
            epoch: ep.epoch + 1,
            step: bi,
        };
        if let Some(a) = self.account.as_mut() {
            a.begin(&wait_window);
        }
        let show = !self.quiet;
        if let Some(f) = self.follower.as_mut() {
            f.wait(
                until,
                |left| {
                    if show {
                        eprint!("{}", words::countdown(left));
                    }
                },
                interrupted,
            );
        }
        if show {
            eprintln!();
        }
        if let Some(a) = self.account.as_mut() {
            a.end(&wait_window);
            a.begin(&ep.window);
        }
        self.record.status = RunStatus::Running;
        self.progress
            .start_epoch(ep.epoch, self.c.train.epochs, self.shape.steps, bi);
        ep.seg = Segment::resume(
            &ep.partial,
            std::mem::replace(&mut ep.seg, Segment::start(&ep.partial)),
        );
        Ok(())
    }
}

/// The epoch's loss sum and correct count, in one read back.
fn read_sums<B: AmpBackend>(ep: &EpochRun<B>) -> (f32, f32) {
    let both = Tensor::cat(vec![ep.loss_sum.clone(), ep.correct.clone()], 0);
    let v = readback::read_f32(both);
    (v[0], v[1])
}
