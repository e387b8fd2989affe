//! A run's closing phases: evaluation, the end of an epoch (records,
//! checkpoint cadence, budgets, divergence) and [`Run::finish`], the one way
//! out.

use super::progress::words;
use super::{stop, Run, Trained};
use crate::checkpoint::PartialEpoch;
use crate::network::Trainable;
use crate::record::{EpochRecord, FinalRecord, Metric};
use crate::run::batches::evaluate;
use crate::run::setup::Outcome;
use crate::status::RunStatus;
use greentrain_amp::AmpBackend;
use greentrain_amp::ScalerSnapshot;
use greentrain_energy::Window;
use std::time::{Instant, SystemTime};

impl<B: AmpBackend, M: Trainable<B>> Run<B, M> {
    /// Writes run.json as of now with `status`, energy and schedule
    /// included, without ending the run.
    pub(super) fn save_progress(&mut self, status: RunStatus) -> anyhow::Result<()> {
        self.record.status = status;
        self.record.epochs = self.state.epochs.clone();
        if let Some(f) = self.follower.as_ref() {
            self.record.schedule = Some(f.record());
        }
        self.fill_energy();
        self.ledger.record(&self.record)
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
        let eval_window = Window::Eval {
            epoch: self.state.epoch + 1,
        };
        if let Some(a) = self.account.as_mut() {
            a.begin(&eval_window);
        }
        let t_eval = Instant::now();
        let valid = self.model().eval_copy();
        let (eb, features, dev) = (
            self.c.data.eval_batch_size,
            self.shape.features,
            &self.device,
        );
        let test = &self.dataset.test;
        let (test_loss, test_acc) =
            evaluate::<B::InnerBackend, _>(&valid, &self.ac, test, features, eb, dev);
        let (val_loss, val_acc) = match &self.dataset.val {
            Some(v) => {
                let (l, a) = evaluate::<B::InnerBackend, _>(&valid, &self.ac, v, features, eb, dev);
                (Some(l), Some(a))
            }
            None => (None, None),
        };
        let eval_s = t_eval.elapsed().as_secs_f64();
        let per_token = self.shape.targets > 1;
        let epoch_j = self
            .account
            .as_mut()
            .map(|a| a.end(&eval_window).map_or(0.0, |w| w.total_j) + t.partial.energy_j);
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
        let provenance = self.account.as_ref().map(|a| a.provenance());
        let scaled = self.scaler.is_enabled();
        let line = words::epoch(&e, self.c.train.epochs, scaled, provenance);
        self.progress.line(&line);
        e
    }

    /// Records a finished epoch (checkpoint when due, metrics, energy,
    /// prediction) and decides whether the run stops here: a non-finite
    /// training loss, a budget, or the after-epoch hook.
    pub(super) fn end_epoch(
        &mut self,
        e: EpochRecord,
        snap: Option<ScalerSnapshot>,
    ) -> anyhow::Result<Option<RunStatus>> {
        if let Some(a) = self.account.as_mut() {
            self.progress.energy_warnings(a.take_warnings());
        }
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
        let verdict = self.account_epoch();
        self.check_target();
        self.ledger.epoch(&self.record)?;
        if let Some(b) = self.board.as_mut() {
            let provenance = self.account.as_ref().map(|a| a.provenance().to_string());
            b.epoch(&self.state.epochs[epoch - 1], provenance.as_deref());
        }
        let hook = self.after_epoch.clone();
        let record = &self.record;
        let end = stop::EpochEnd {
            epoch: &self.state.epochs[epoch - 1],
            last,
            target: record.target.as_ref(),
            stop_at_target: self.c.train.stop_at_target,
            budget: verdict,
        };
        let stop = stop::stop_rule(end, || hook.and_then(|h| h(record)));
        if let Some(s) = &stop {
            self.progress.line(&s.line(epoch));
        }
        let stop = stop.map(|s| s.status());
        if stop.is_some() && !self.ckpt.saved(epoch) {
            self.save_checkpoint_now()?;
        }
        Ok(stop)
    }

    /// Records the first epoch that meets `train.target_accuracy` or
    /// `train.target_loss` (on the validation split when there is one),
    /// with the training time, energy and grams up to its end.
    pub(super) fn check_target(&mut self) {
        let t = &self.c.train;
        let (accuracy, loss) = (t.target_accuracy, t.target_loss);
        if accuracy.is_none() && loss.is_none() {
            return;
        }
        if self.record.target.as_ref().is_some_and(|t| t.reached) {
            return;
        }
        let e = self.state.epochs.last().expect("an epoch just ended");
        let has_val = e.val_loss.is_some();
        let (metric, goal) = match (accuracy, loss, has_val) {
            (Some(a), _, true) => (Metric::ValAccuracy, a),
            (Some(a), _, false) => (Metric::TestAccuracy, a),
            (None, l, true) => (Metric::ValLoss, l.unwrap_or_default()),
            (None, l, false) => (Metric::TestLoss, l.unwrap_or_default()),
        };
        let value = metric.of(e).unwrap_or(f64::NAN);
        let reached = metric.meets(value, goal);
        let energy = self.record.energy.as_ref().filter(|_| reached);
        self.record.target = Some(crate::record::TargetRecord {
            accuracy,
            loss,
            metric,
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
            let cmp = if metric.is_accuracy() { ">=" } else { "<=" };
            self.progress.line(&format!(
                "target: {metric} {value:.4} {cmp} {goal} at epoch {}",
                e.epoch
            ));
        }
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
                self.progress.line(&words::prediction(p, e.provenance));
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
        if let Some(a) = self.account.as_mut() {
            self.progress.energy_warnings(a.take_warnings());
        }
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
            self.ledger.emissions(&row)?;
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
        for line in words::summary(&self.record, status, self.scaler.is_enabled()) {
            self.progress.line(&line);
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
