//! A run's closing phases: evaluation, the end of an epoch (records,
//! checkpoint cadence, budgets, divergence) and [`Run::finish`], the one way
//! out.

use super::{Run, Trained};
use crate::checkpoint::PartialEpoch;
use crate::record::{self, sig, EpochRecord, FinalRecord};
use crate::run::batches::evaluate;
use crate::run::setup::Outcome;
use crate::status::RunStatus;
use anyhow::Context;
use burn::module::AutodiffModule;
use greentrain_amp::AmpBackend;
use greentrain_amp::ScalerSnapshot;
use std::time::{Instant, SystemTime};

impl<B: AmpBackend> Run<B> {
    /// Writes run.json as of now with `status`, energy and schedule
    /// included, without ending the run.
    pub(super) fn save_progress(&mut self, status: RunStatus) -> anyhow::Result<()> {
        self.record.status = status;
        self.record.epochs = self.state.epochs.clone();
        if let Some(f) = self.follower.as_ref() {
            self.record.schedule = Some(f.record());
        }
        self.fill_energy();
        self.record.save(&self.run_dir).context("writing run.json")
    }

    /// Puts the energy and carbon so far (finished epochs and the partial
    /// one) into the record.
    pub(super) fn fill_energy(&mut self) {
        let Some(a) = self.account.as_mut() else {
            return;
        };
        let samples = total_samples(&self.state.epochs) + self.state.partial.samples;
        let wall = total_wall(&self.state.epochs) + self.state.partial.wall_s;
        let (e, cb) = a.record(samples, wall);
        if let Some(f) = self.record.final_.as_mut() {
            f.energy_kwh = Some(e.total_kwh);
            f.co2_g = Some(cb.operational.co2_g);
            f.j_per_sample = (f.samples > 0).then(|| e.total_j / f.samples as f64);
        }
        self.record.energy = Some(e);
        self.record.carbon = Some(cb);
    }

    /// Test (and validation) metrics after an epoch's training, in the
    /// epoch's evaluation window; prints the epoch's line.
    pub(super) fn evaluate(&mut self, t: Trained) -> EpochRecord {
        let eval_window = format!("eval/epoch-{}", self.state.epoch + 1);
        if let Some(a) = self.account.as_mut() {
            a.begin(&eval_window);
        }
        let t_eval = Instant::now();
        let valid = self.model().valid();
        let (eb, features, dev) = (
            self.c.data.eval_batch_size,
            self.shape.features,
            &self.device,
        );
        let test = &self.dataset.test;
        let (test_loss, test_acc) =
            evaluate::<B::InnerBackend>(&valid, &self.ac, test, features, eb, dev);
        let (val_loss, val_acc) = match &self.dataset.val {
            Some(v) => {
                let (l, a) = evaluate::<B::InnerBackend>(&valid, &self.ac, v, features, eb, dev);
                (Some(l), Some(a))
            }
            None => (None, None),
        };
        let eval_s = t_eval.elapsed().as_secs_f64();
        let per_token = self.shape.targets > 1;
        let epoch_j = self
            .account
            .as_mut()
            .map(|a| a.end(&eval_window) + t.partial.energy_j);
        let now = greentrain_energy::tracker::unix_now();
        let epoch_g = match (&self.account, epoch_j) {
            (Some(a), Some(j)) => Some(a.co2_g(j, t.started_unix, now)),
            _ => None,
        };
        let p = &t.partial;
        let e = EpochRecord {
            epoch: self.state.epoch + 1,
            train_loss: t.train_loss,
            train_accuracy: Some(t.train_accuracy),
            test_loss,
            test_accuracy: test_acc,
            val_loss,
            val_accuracy: val_acc,
            wall_s: p.wall_s,
            eval_s,
            samples: p.samples,
            samples_per_s: p.samples as f64 / p.wall_s.max(1e-9),
            lr: t.lr,
            loss_scale: t.snap.map_or(1.0, |s| s.scale as f64),
            skipped_steps: p.skipped,
            data_s: p.data_s,
            energy_j: epoch_j,
            co2_g: epoch_g,
            checkpoint_s: None,
            checkpoint_j: None,
            test_perplexity: per_token.then(|| test_loss.exp()),
            val_perplexity: val_loss.filter(|_| per_token).map(f64::exp),
        };
        self.progress.line(&self.epoch_line(&e));
        e
    }

    pub(super) fn epoch_line(&self, e: &EpochRecord) -> String {
        let mut line = format!(
            "epoch {}/{}: train_loss {:.4} train_acc {:.2}% test_loss {:.4} test_acc {:.2}% ",
            e.epoch,
            self.c.train.epochs,
            e.train_loss,
            100.0 * e.train_accuracy.unwrap_or(f64::NAN),
            e.test_loss,
            100.0 * e.test_accuracy
        );
        if let Some(a) = e.val_accuracy {
            line.push_str(&format!("val_acc {:.2}% ", 100.0 * a));
        }
        line.push_str(&format!(
            "{:.1}s {:.0} samples/s",
            e.wall_s, e.samples_per_s
        ));
        if self.scaler.is_enabled() {
            line.push_str(&format!(
                " scale {} skipped {}",
                e.loss_scale, e.skipped_steps
            ));
        }
        if let (Some(j), Some(g), Some(a)) = (e.energy_j, e.co2_g, &self.account) {
            line.push_str(&format!(
                " {} J [{}] {} gCO2eq",
                sig(j),
                a.provenance(),
                sig(g)
            ));
        }
        line
    }

    /// Records a finished epoch (checkpoint when due, metrics, energy,
    /// prediction) and decides whether the run stops here: a non-finite
    /// training loss, a budget, or the after-epoch hook.
    pub(super) fn end_epoch(
        &mut self,
        e: EpochRecord,
        snap: Option<ScalerSnapshot>,
    ) -> anyhow::Result<Option<RunStatus>> {
        let diverged = !e.train_loss.is_finite();
        self.state.epochs.push(e);
        self.state.epoch += 1;
        self.state.step = 0;
        self.state.partial = PartialEpoch::default();
        self.state.scaler = self.scaler.state_at(snap);
        let epoch = self.state.epoch;
        let last = epoch == self.c.train.epochs;
        if last || diverged || self.ckpt.due(self.c.train.checkpoint_every, epoch) {
            self.save_checkpoint_now()?;
        }
        self.record.epochs = self.state.epochs.clone();
        self.record.final_ = Some(final_of(&self.state.epochs));
        record::save_metrics(&self.run_dir, &self.record.epochs)?;
        let verdict = self.account_epoch();
        let reached = self.check_target();
        self.record.save(&self.run_dir)?;
        if let Some(b) = self.board.as_mut() {
            let provenance = self.account.as_ref().map(|a| a.provenance().to_string());
            b.epoch(&self.state.epochs[epoch - 1], provenance.as_deref());
        }
        let stop = if diverged {
            self.progress.line(&format!(
                "stopped after epoch {epoch}: the training loss is not finite ({}); the run diverged",
                self.state.epochs[epoch - 1].train_loss
            ));
            Some(RunStatus::Diverged)
        } else if reached && self.c.train.stop_at_target {
            let what = match (self.c.train.target_accuracy, self.c.train.target_loss) {
                (Some(a), _) => format!("target accuracy {a}"),
                (None, l) => format!("target loss {}", l.unwrap_or_default()),
            };
            self.progress
                .line(&format!("stopped after epoch {epoch}: {what} reached"));
            Some(RunStatus::ReachedTarget)
        } else if last {
            None
        } else if let greentrain_energy::budget::BudgetVerdict::Stop(why) = verdict {
            self.progress
                .line(&format!("stopped: {why}; checkpointed after epoch {epoch}"));
            Some(RunStatus::StoppedBudget)
        } else {
            let hook = self.after_epoch.clone();
            let status = hook.and_then(|h| h(&self.record));
            if let Some(s) = status {
                self.progress
                    .line(&format!("stopped after epoch {epoch}: {s}"));
            }
            status
        };
        if stop.is_some() && !self.ckpt.saved(epoch) {
            self.save_checkpoint_now()?;
        }
        Ok(stop)
    }

    /// Records the first epoch that meets `train.target_accuracy` (on the
    /// validation split when there is one), with the training time, energy
    /// and grams up to its end; true at that epoch.
    pub(super) fn check_target(&mut self) -> bool {
        let t = &self.c.train;
        let (accuracy, loss) = (t.target_accuracy, t.target_loss);
        if accuracy.is_none() && loss.is_none() {
            return false;
        }
        if self.record.target.as_ref().is_some_and(|t| t.reached) {
            return false;
        }
        let e = self.state.epochs.last().expect("an epoch just ended");
        let (metric, value, reached) = match (accuracy, loss) {
            (Some(goal), _) => match e.val_accuracy {
                Some(v) => ("val_accuracy", v, v >= goal),
                None => ("test_accuracy", e.test_accuracy, e.test_accuracy >= goal),
            },
            (None, Some(goal)) => match e.val_loss {
                Some(v) => ("val_loss", v, v <= goal),
                None => ("test_loss", e.test_loss, e.test_loss <= goal),
            },
            (None, None) => unreachable!("checked above"),
        };
        let energy = self.record.energy.as_ref().filter(|_| reached);
        self.record.target = Some(crate::record::TargetRecord {
            accuracy,
            loss,
            metric: metric.to_string(),
            reached,
            epoch: reached.then_some(e.epoch),
            wall_s: reached.then(|| total_wall(&self.state.epochs)),
            energy_j: energy.map(|en| en.total_j),
            co2_g: self
                .record
                .carbon
                .as_ref()
                .filter(|_| reached)
                .map(|c| c.operational.co2_g),
            provenance: energy.map(|en| en.provenance),
        });
        if reached {
            let (cmp, goal) = match accuracy {
                Some(a) => (">=", a),
                None => ("<=", loss.unwrap_or_default()),
            };
            self.progress.line(&format!(
                "target: {metric} {value:.4} {cmp} {goal} at epoch {}",
                e.epoch
            ));
        }
        reached
    }

    pub(super) fn save_checkpoint_now(&mut self) -> anyhow::Result<()> {
        let model = self
            .model
            .as_ref()
            .expect("the model is back after each step");
        self.ckpt.save(
            &self.run_dir,
            &mut self.state,
            model,
            &self.optim,
            self.account.as_mut(),
        )
    }

    /// The energy record after an epoch, the run's prediction (announced
    /// once) and the budgets' verdict.
    pub(super) fn account_epoch(&mut self) -> greentrain_energy::budget::BudgetVerdict {
        use greentrain_energy::budget::BudgetVerdict;
        self.fill_energy();
        let (Some(a), Some(e), Some(cb)) = (
            self.account.as_mut(),
            self.record.energy.as_mut(),
            &self.record.carbon,
        ) else {
            return BudgetVerdict::Ok;
        };
        let epochs = &self.state.epochs;
        let secs: Vec<f64> = epochs.iter().map(|e| e.wall_s + e.eval_s).collect();
        let joules: Vec<f64> = epochs.iter().map(|e| e.energy_j.unwrap_or(0.0)).collect();
        let verdict = a.check_budget(
            &crate::energy::budget(&self.c),
            &secs,
            &joules,
            e.total_j,
            cb.operational.co2_g,
        );
        e.prediction = a.prediction().cloned();
        if let (Some(p), false) = (a.prediction(), self.announced_prediction) {
            if self.state.epoch < self.c.train.epochs {
                self.progress.line(&format!(
                    "prediction after {} epoch(s): {} s ({}-{}), {} kWh ({}-{}), {} gCO2eq ({}-{}) [{}]",
                    p.after_epochs,
                    sig(p.time_s.mean),
                    sig(p.time_s.low),
                    sig(p.time_s.high),
                    sig(p.energy_kwh.mean),
                    sig(p.energy_kwh.low),
                    sig(p.energy_kwh.high),
                    sig(p.co2_g.mean),
                    sig(p.co2_g.low),
                    sig(p.co2_g.high),
                    e.provenance
                ));
            }
            self.announced_prediction = true;
        }
        verdict
    }

    /// The one way a run ends (or stops for now): the status, end time,
    /// schedule, totals, energy and carbon, `emissions.csv` and run.json,
    /// then the summary lines.
    pub(super) fn finish(
        &mut self,
        status: RunStatus,
        error: Option<String>,
    ) -> anyhow::Result<Outcome> {
        self.progress.finish();
        if status.is_final() {
            self.record.finished_at = Some(crate::files::rfc3339(SystemTime::now()));
        }
        if let Some(f) = self.follower.as_mut() {
            // Closes the running span; save_progress records the schedule.
            f.finish();
        }
        if !self.state.epochs.is_empty() {
            self.record.final_ = Some(final_of(&self.state.epochs));
        }
        self.record.error = error;
        self.save_progress(status)?;
        if let (Some(e), Some(cb)) = (&self.record.energy, &self.record.carbon) {
            let run_id = self
                .run_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let row = crate::energy::emissions_row(
                &self.c.run.name,
                &run_id,
                e,
                cb,
                self.c.carbon.zone.as_deref(),
                &crate::device::cpu_name(),
            );
            row.write(&self.run_dir).context("writing emissions.csv")?;
        }
        if status.is_final() {
            self.reserve.release();
        }
        self.summary(status);
        Ok(Outcome {
            run_dir: self.run_dir.clone(),
            status,
            record: self.record.clone(),
        })
    }

    pub(super) fn summary(&self, status: RunStatus) {
        let Some(f) = &self.record.final_ else {
            return;
        };
        if status == RunStatus::Completed {
            self.progress.line(&format!(
                "done: test accuracy {:.2}% in {:.1}s of training ({} samples, {:.0} samples/s), precision {}{}",
                100.0 * f.test_accuracy,
                f.wall_s,
                f.samples,
                f.samples as f64 / f.wall_s.max(1e-9),
                self.record.precision,
                if self.scaler.is_enabled() {
                    format!(", {} skipped steps", f.skipped_steps)
                } else {
                    String::new()
                }
            ));
        }
        if let (Some(e), Some(cb), Some(kwh), Some(g), Some(jps)) = (
            &self.record.energy,
            &self.record.carbon,
            f.energy_kwh,
            f.co2_g,
            f.j_per_sample,
        ) {
            let parts: Vec<String> = e
                .components
                .iter()
                .map(|c| format!("{} {} J {}", c.name, sig(c.joules), c.provenance))
                .collect();
            self.progress.line(&format!(
                "energy: {} J = {} kWh [{}] ({}); {} gCO2eq at {} g/kWh ({}), PUE {}; {} J/sample",
                sig(e.total_j),
                sig(kwh),
                e.provenance,
                parts.join(", "),
                sig(g),
                sig(cb.operational.intensity_g_per_kwh),
                cb.operational.source,
                cb.operational.pue,
                sig(jps)
            ));
            if let Some(w) = &e.waiting {
                self.progress.line(&format!(
                    "waiting for slots: {} J [{}] over {} s, not counted above",
                    sig(w.joules),
                    w.provenance,
                    sig(w.seconds)
                ));
            }
        }
    }
}

fn total_samples(epochs: &[EpochRecord]) -> u64 {
    epochs.iter().map(|e| e.samples).sum()
}

fn total_wall(epochs: &[EpochRecord]) -> f64 {
    epochs.iter().map(|e| e.wall_s).sum()
}

fn final_of(epochs: &[EpochRecord]) -> FinalRecord {
    let last = epochs.last().expect("at least one epoch");
    FinalRecord {
        test_accuracy: last.test_accuracy,
        test_loss: last.test_loss,
        wall_s: epochs.iter().map(|e| e.wall_s).sum(),
        samples: epochs.iter().map(|e| e.samples).sum(),
        skipped_steps: epochs.iter().map(|e| e.skipped_steps).sum(),
        energy_kwh: None,
        co2_g: None,
        j_per_sample: None,
    }
}
