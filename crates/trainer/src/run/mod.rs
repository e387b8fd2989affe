//! One run of training, in named phases: [`Run::new`] sets it up (fresh or
//! from a checkpoint), [`Run::train_epoch`] trains, [`Run::evaluate`]
//! measures, [`Run::end_epoch`] records and decides whether to go on, and
//! every exit goes through [`Run::finish`], which writes the same things
//! whatever the [`RunStatus`]: status, end time, schedule, energy, carbon,
//! `emissions.csv` and `run.json`.

mod batches;
mod progress;
mod segment;

use crate::checkpoint::{PartialEpoch, TrainState};
use crate::config::Config;
use crate::data::{self, Dataset};
use crate::energy::Account;
use crate::follow::{Follower, Next};
use crate::model::Model;
use crate::record::{self, sig, EpochRecord, FinalRecord, RunRecord};
use crate::status::RunStatus;
use crate::train::{
    interrupted, load_model, load_optim, lr_at, optimizer_spec, AfterEpoch, Failure, Outcome, Setup,
};
use anyhow::Context;
use batches::{evaluate, Batches};
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use greentrain_amp::{grads, readback, Autocast, DeviceOptimizer, DeviceScaler, ScalerSnapshot};
use progress::Progress;
use segment::{save_checkpoint, Cadence, Segment};
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

/// Trains the run `setup` describes on `device`; a run-time error is
/// recorded (`failed`, with the energy used so far) before it is returned.
pub(crate) fn run_on<B: AutodiffBackend>(
    setup: Setup,
    device: B::Device,
) -> Result<Outcome, Failure> {
    let (run_dir, mut fallback) = (setup.run_dir.clone(), setup.record.clone());
    let mut run = match Run::<B>::new(setup, device) {
        Ok(r) => r,
        Err(e) => {
            fallback.status = RunStatus::Failed;
            fallback.finished_at = Some(record::rfc3339(SystemTime::now()));
            fallback.error = Some(format!("{e:#}"));
            let _ = fallback.save(&run_dir);
            return Err(Failure::Runtime(e));
        }
    };
    match run.run() {
        Ok(o) => Ok(o),
        Err(e) => {
            let _ = run.finish(RunStatus::Failed, Some(format!("{e:#}")));
            Err(Failure::Runtime(e))
        }
    }
}

/// The sizes that fix an epoch's steps.
struct Shape {
    features: usize,
    batch: usize,
    /// Micro-batches per optimizer step.
    accum: usize,
    /// Micro-batches per epoch.
    steps: usize,
    total_opt_steps: u64,
}

impl Shape {
    fn new(c: &Config, dataset: &Dataset) -> Self {
        let n_train = dataset.train.len();
        let batch = c.data.batch_size;
        let steps = c
            .train
            .steps_per_epoch
            .unwrap_or_else(|| n_train.div_ceil(batch));
        let accum = c.train.accumulate;
        Self {
            features: dataset.features(),
            batch,
            accum,
            steps,
            total_opt_steps: steps.div_ceil(accum) as u64 * c.train.epochs as u64,
        }
    }
}

/// An epoch in progress.
struct EpochRun<B: AutodiffBackend> {
    epoch: usize,
    chunks: Vec<Vec<usize>>,
    loss_sum: Tensor<B::InnerBackend, 1>,
    partial: PartialEpoch,
    acc: Option<GradientsParams>,
    lr: f64,
    window: String,
    started_unix: f64,
    seg: Segment,
    since_log: Instant,
    samples_since_log: u64,
}

/// An epoch whose training steps are done.
struct Trained {
    partial: PartialEpoch,
    train_loss: f64,
    snap: Option<ScalerSnapshot>,
    lr: f64,
    started_unix: f64,
}

/// Everything a run holds while it trains.
pub(crate) struct Run<B: AutodiffBackend> {
    /// Held for the whole run: no second process trains it.
    _lock: std::fs::File,
    c: Config,
    dataset: Dataset,
    run_dir: PathBuf,
    record: RunRecord,
    after_epoch: Option<AfterEpoch>,
    follower: Option<Follower>,
    device: B::Device,
    ac: Autocast,
    /// Taken out for the optimizer step, which consumes it.
    model: Option<Model<B>>,
    optim: DeviceOptimizer<B>,
    scaler: DeviceScaler<B::InnerBackend>,
    state: TrainState,
    account: Option<Account>,
    progress: Progress,
    batches: Batches<B>,
    ckpt: Cadence,
    shape: Shape,
    process_start: Instant,
    warmed_up: bool,
    announced_prediction: bool,
    quiet: bool,
}

impl<B: AutodiffBackend> Run<B> {
    /// Builds the model, optimizer and scaler, restores a checkpoint when
    /// resuming, and starts metering.
    fn new(setup: Setup, device: B::Device) -> anyhow::Result<Self> {
        let Setup {
            lock,
            intensity,
            precision,
            config: c,
            config_dir,
            dataset,
            run_dir,
            mut record,
            resume,
            quiet,
            hooks,
            killed,
        } = setup;
        let prior = resume.is_some().then(|| crate::energy::Prior {
            energy: record.energy.clone(),
            co2_g: record
                .carbon
                .as_ref()
                .map_or(0.0, |cb| cb.operational.co2_g),
            killed,
        });
        let shape = Shape::new(&c, &dataset);
        let mut model = Model::<B>::new(
            &c.model,
            &dataset.sample_shape,
            dataset.num_classes,
            c.run.seed,
            &device,
        );
        let mut optim = DeviceOptimizer::<B>::new(optimizer_spec(&c), &device);
        let scaler_state =
            greentrain_amp::GradScaler::for_precision(precision, c.precision.scaler())
                .state()
                .clone();
        let mut scaler = DeviceScaler::<B::InnerBackend>::from_state(&scaler_state, &device);
        let mut state = TrainState {
            epoch: 0,
            step: 0,
            optimizer_steps: 0,
            partial: PartialEpoch::default(),
            scaler: scaler_state,
            epochs: vec![],
            config_dir,
        };
        if let Some(ck) = resume {
            model =
                load_model(model, ck.model, &device).context("loading model from checkpoint")?;
            optim = load_optim(optim, ck.optim, &device)
                .context("loading optimizer from checkpoint")?;
            scaler = DeviceScaler::from_state(&ck.state.scaler, &device);
            state = ck.state;
            // A checkpoint's own seconds and joules are known only after it
            // is written: take them from run.json.
            for e in state.epochs.iter_mut() {
                if let Some(r) = record.epochs.iter().find(|r| r.epoch == e.epoch) {
                    e.checkpoint_s = e.checkpoint_s.or(r.checkpoint_s);
                    e.checkpoint_j = e.checkpoint_j.or(r.checkpoint_j);
                }
            }
            record.epochs = state.epochs.clone();
        }
        let progress = Progress::new(quiet);
        let account = c.energy.enabled.then(|| {
            let spec = record
                .device
                .spec
                .parse()
                .unwrap_or(crate::device::DeviceSpec::Cpu);
            let gpus = crate::device::gpu_select(spec);
            let mut a = Account::start(&c, intensity, prior, &run_dir, gpus);
            progress.line(&a.summary_line(&record.device.backend));
            let dev = device.clone();
            a.set_sync(move || {
                let _ = B::sync(&dev);
            });
            a
        });
        let on_gpu = record.device.backend != "flex";
        let batches = Batches::<B>::new(&dataset.train, shape.features, &device, on_gpu);
        let run = Self {
            _lock: lock,
            ac: Autocast::new(precision),
            follower: hooks.schedule.map(Follower::new),
            after_epoch: hooks.after_epoch,
            c,
            dataset,
            run_dir,
            record,
            device,
            model: Some(model),
            optim,
            scaler,
            state,
            account,
            progress,
            batches,
            ckpt: Cadence::new(),
            shape,
            process_start: Instant::now(),
            warmed_up: false,
            announced_prediction: false,
            quiet,
        };
        run.announce();
        Ok(run)
    }

    fn model(&self) -> &Model<B> {
        self.model
            .as_ref()
            .expect("the model is back after each step")
    }

    fn announce(&self) {
        let (c, r) = (&self.c, &self.record);
        if self.state.epoch == 0 && self.state.step == 0 {
            self.progress.line(&format!(
                "training {} on {} ({} {}), {} train / {} test samples, {} epochs, precision {}{}",
                c.run.name,
                r.device.name,
                r.device.backend,
                r.device.spec,
                self.dataset.train.len(),
                self.dataset.test.len(),
                c.train.epochs,
                r.precision,
                if r.precision_requested.as_deref() == Some("auto") {
                    " (auto)"
                } else {
                    ""
                }
            ));
        } else {
            self.progress.line(&format!(
                "resuming {} at epoch {} step {}",
                c.run.name,
                self.state.epoch + 1,
                self.state.step
            ));
        }
    }

    /// Trains epochs until the last one, or until something stops the run.
    fn run(&mut self) -> anyhow::Result<Outcome> {
        while self.state.epoch < self.c.train.epochs {
            let trained = match self.train_epoch()? {
                Ok(t) => t,
                Err(status) => return self.finish(status, None),
            };
            let snap = trained.snap;
            let e = self.evaluate(trained);
            if let Some(status) = self.end_epoch(e, snap)? {
                return self.finish(status, None);
            }
        }
        self.finish(RunStatus::Completed, None)
    }

    fn open_epoch(&mut self) -> EpochRun<B> {
        let epoch = self.state.epoch;
        let c = &self.c;
        let n_train = self.dataset.train.len();
        let chunks = data::epoch_batches(
            n_train,
            self.shape.batch,
            c.run.seed,
            epoch,
            c.train.steps_per_epoch,
        );
        let partial = self.state.partial.clone();
        let loss_sum =
            Tensor::from_data(TensorData::new(vec![partial.loss_sum], [1]), &self.device);
        let lr = lr_at(
            c,
            self.state.optimizer_steps,
            self.shape.total_opt_steps,
            epoch,
        );
        self.progress
            .start_epoch(epoch, c.train.epochs, self.shape.steps, self.state.step);
        let window = format!("train/epoch-{}", epoch + 1);
        let started_unix = greentrain_energy::tracker::unix_now();
        if let Some(a) = self.account.as_mut() {
            a.begin(&window);
        }
        self.scaler.reset_skipped();
        EpochRun {
            epoch,
            chunks,
            loss_sum,
            seg: Segment::start(&partial),
            partial,
            acc: None,
            lr,
            window,
            started_unix,
            since_log: Instant::now(),
            samples_since_log: 0,
        }
    }

    /// Trains the current epoch's remaining steps. `Err(status)` when the
    /// run stopped inside the epoch (after checkpointing there).
    fn train_epoch(&mut self) -> anyhow::Result<Result<Trained, RunStatus>> {
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
        self.progress.finish();
        let snap = ep
            .seg
            .settle::<B>(&mut ep.partial, &self.device, &self.scaler);
        if let Some(a) = self.account.as_mut() {
            ep.partial.energy_j += a.end(&ep.window);
        }
        let train_loss =
            readback::read_f32(ep.loss_sum)[0] as f64 / ep.partial.samples.max(1) as f64;
        Ok(Ok(Trained {
            partial: ep.partial,
            train_loss,
            snap,
            lr: ep.lr,
            started_unix: ep.started_unix,
        }))
    }

    /// One micro-batch: forward, scaled backward, and at the end of its
    /// group the optimizer step. No read back.
    fn train_step(&mut self, ep: &mut EpochRun<B>, bi: usize) {
        let (accum, steps) = (self.shape.accum, self.shape.steps);
        let t0 = Instant::now();
        let group_start = bi - bi % accum;
        let group_end = (group_start + accum).min(steps);
        let group_samples: usize = ep.chunks[group_start..group_end]
            .iter()
            .map(|c| c.len())
            .sum();
        let ids = &ep.chunks[bi][..];
        let (x, y) = self
            .batches
            .get(&self.dataset.train, self.shape.features, ids, &self.device);
        let t_data = t0.elapsed().as_secs_f64();

        let model = self
            .model
            .take()
            .expect("the model is back after each step");
        let logits = model.forward(x, &self.ac);
        let loss = self.ac.cross_entropy(logits, y);
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
        ep.acc = Some(grads::accumulate::<B, Model<B>>(&model, ep.acc.take(), g));
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

    fn optimizer_step(&mut self, ep: &mut EpochRun<B>, model: Model<B>) -> Model<B> {
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
    fn log_step(&mut self, ep: &mut EpochRun<B>, bi: usize) {
        let (epochs, steps) = (self.c.train.epochs, self.shape.steps);
        if !(bi.is_multiple_of(self.c.train.log_every) || bi == steps) {
            self.progress.step(ep.epoch, epochs, bi, steps, None);
            return;
        }
        let loss =
            readback::read_f32(ep.loss_sum.clone())[0] as f64 / ep.partial.samples.max(1) as f64;
        let rate = ep.samples_since_log as f64 / ep.since_log.elapsed().as_secs_f64().max(1e-9);
        let mut msg = format!("loss {loss:.4} {rate:.0} samples/s");
        if let Some(snap) = ep.seg.scaler_counts(&mut ep.partial, &self.scaler) {
            msg.push_str(&format!(
                " scale {} skipped {}",
                snap.scale, ep.partial.skipped
            ));
        }
        self.progress.step(ep.epoch, epochs, bi, steps, Some(msg));
        ep.since_log = Instant::now();
        ep.samples_since_log = 0;
    }

    /// Settles the device, closes the epoch's training window and writes a
    /// checkpoint at step `bi` of the epoch (for Ctrl-C and pauses).
    fn checkpoint_inside(&mut self, ep: &mut EpochRun<B>, bi: usize) -> anyhow::Result<()> {
        self.progress.finish();
        let snap = ep
            .seg
            .settle::<B>(&mut ep.partial, &self.device, &self.scaler);
        if let Some(a) = self.account.as_mut() {
            ep.partial.energy_j += a.end(&ep.window);
        }
        self.state.step = bi;
        self.state.partial = PartialEpoch {
            loss_sum: readback::read_f32(ep.loss_sum.clone())[0],
            ..ep.partial.clone()
        };
        self.state.scaler = self.scaler.state_at(snap);
        save_checkpoint(&self.run_dir, &self.state, self.model(), &self.optim)
    }

    /// The unix time to pause until, when a plan says so now.
    fn pause_due(&mut self) -> Option<f64> {
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
    fn pause(&mut self, ep: &mut EpochRun<B>, bi: usize, until: f64) -> anyhow::Result<()> {
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
        let wait_window = format!("wait/epoch-{}-step-{bi}", ep.epoch + 1);
        if let Some(a) = self.account.as_mut() {
            a.begin(&wait_window);
        }
        let show = !self.quiet;
        if let Some(f) = self.follower.as_mut() {
            f.wait(
                until,
                |left| {
                    if show {
                        eprint!("\rschedule: {} left   ", crate::follow::hms(left));
                    }
                },
                interrupted,
            );
        }
        if show {
            eprintln!();
        }
        if let Some(a) = self.account.as_mut() {
            a.end_waiting(&wait_window);
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

    /// Writes run.json as of now with `status`, energy and schedule
    /// included, without ending the run.
    fn save_progress(&mut self, status: RunStatus) -> anyhow::Result<()> {
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
    fn fill_energy(&mut self) {
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
    fn evaluate(&mut self, t: Trained) -> EpochRecord {
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
        };
        self.progress.line(&self.epoch_line(&e));
        e
    }

    fn epoch_line(&self, e: &EpochRecord) -> String {
        let mut line = format!(
            "epoch {}/{}: train_loss {:.4} test_loss {:.4} test_acc {:.2}% ",
            e.epoch,
            self.c.train.epochs,
            e.train_loss,
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
    fn end_epoch(
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
        self.record.save(&self.run_dir)?;
        let stop = if diverged {
            self.progress.line(&format!(
                "stopped after epoch {epoch}: the training loss is not finite ({}); the run diverged",
                self.state.epochs[epoch - 1].train_loss
            ));
            Some(RunStatus::Diverged)
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

    fn save_checkpoint_now(&mut self) -> anyhow::Result<()> {
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
    fn account_epoch(&mut self) -> greentrain_energy::budget::BudgetVerdict {
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
        let verdict = a.check_budget(&self.c, &secs, &joules, e.total_j, cb.operational.co2_g);
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
    fn finish(&mut self, status: RunStatus, error: Option<String>) -> anyhow::Result<Outcome> {
        self.progress.finish();
        if status.is_final() {
            self.record.finished_at = Some(record::rfc3339(SystemTime::now()));
        }
        if let Some(f) = self.follower.as_mut() {
            self.record.schedule = Some(f.finish());
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
        self.summary(status);
        Ok(Outcome {
            run_dir: self.run_dir.clone(),
            status,
            record: self.record.clone(),
        })
    }

    fn summary(&self, status: RunStatus) {
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
