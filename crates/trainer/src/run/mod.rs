//! One run of training, in named phases: [`Run::new`] sets it up (fresh or
//! from a checkpoint), [`Run::train_epoch`] trains, [`Run::evaluate`]
//! measures, [`Run::end_epoch`] records and decides whether to go on, and
//! every exit goes through [`Run::finish`], which writes the same things
//! whatever the [`RunStatus`]: status, end time, schedule, energy, carbon,
//! `emissions.csv` and `run.json`.

mod batches;
mod end;
mod epoch;
mod progress;
mod segment;
mod setup;
mod state;
mod stop;

pub(crate) use setup::Setup;
pub use setup::{
    clear_interrupt, install_interrupt_handler, request_interrupt, AfterEpoch, Failure, Hooks,
    Outcome,
};
pub(crate) use state::{load_model, load_optim, optimizer_spec};
pub use state::{lr_at, model_bytes};

use crate::checkpoint::{PartialEpoch, TrainState};
use crate::config::Config;
use crate::data::{self, Dataset};
use crate::device::DeviceSpec;
use crate::energy::RunTracker;
use crate::files::Reserve;
use crate::follow::Follower;
use crate::network::Trainable;
use crate::record::RunRecord;
use crate::status::RunStatus;
use anyhow::Context;
use batches::Batches;
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use greentrain_amp::AmpBackend;
use greentrain_amp::{Autocast, DeviceOptimizer, DeviceScaler, ScalerSnapshot};
use greentrain_energy::Window;
use progress::{words, Progress};
use segment::{Cadence, Segment};
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

/// Trains the run `setup` describes on `device`; a run-time error is
/// recorded (`failed`, with the energy used so far) before it is returned.
pub(crate) fn run_on<B: AmpBackend, M: Trainable<B>>(
    setup: Setup,
    device: B::Device,
    build: impl FnOnce(&Config, &Dataset, &B::Device) -> M,
) -> Result<Outcome, Failure> {
    let (run_dir, mut fallback) = (setup.run_dir.clone(), setup.record.clone());
    let mut run = match Run::<B, M>::new(setup, device, build) {
        Ok(r) => r,
        // A checkpoint that cannot be this run's: run.json untouched.
        Err(Failure::Usage(e)) => return Err(Failure::Usage(e)),
        Err(Failure::Runtime(e)) => {
            fallback.status = RunStatus::Failed;
            fallback.finished_at = Some(crate::files::rfc3339(SystemTime::now()));
            fallback.error = Some(format!("{e:#}"));
            let _ = crate::ledger::Ledger::new(&run_dir).record(&fallback);
            return Err(Failure::Runtime(e));
        }
    };
    match run.run() {
        Ok(o) => Ok(o),
        Err(e) => {
            // A full disk is a likely cause: the reserve's space first.
            run.reserve.release();
            let _ = run.finish(RunStatus::Failed, Some(format!("{e:#}")));
            Err(Failure::Runtime(e))
        }
    }
}

/// The sizes that fix an epoch's steps.
struct Shape {
    features: usize,
    /// Labels per sample.
    targets: usize,
    batch: usize,
    /// Micro-batches per optimizer step.
    accum: usize,
    /// Micro-batches per epoch.
    steps: usize,
    total_opt_steps: u64,
}

impl Shape {
    /// What a restored state is checked against.
    fn extent(&self, c: &Config) -> crate::checkpoint::Extent {
        crate::checkpoint::Extent {
            epochs: c.train.epochs,
            steps: self.steps,
            optimizer_steps: self.total_opt_steps,
            batch: self.batch,
            targets: self.targets,
        }
    }

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
            targets: dataset.train.targets,
            batch,
            accum,
            steps,
            total_opt_steps: steps.div_ceil(accum) as u64 * c.train.epochs as u64,
        }
    }
}

/// An epoch in progress.
struct EpochRun<B: AmpBackend> {
    epoch: usize,
    chunks: Vec<Vec<usize>>,
    loss_sum: Tensor<B::InnerBackend, 1>,
    /// Correct training predictions, counted before each step's update.
    correct: Tensor<B::InnerBackend, 1>,
    partial: PartialEpoch,
    acc: Option<GradientsParams>,
    lr: f64,
    window: Window,
    started_unix: f64,
    seg: Segment,
    since_log: Instant,
    samples_since_log: u64,
}

/// An epoch whose training steps are done.
struct Trained {
    partial: PartialEpoch,
    train_loss: f64,
    train_accuracy: f64,
    snap: Option<ScalerSnapshot>,
    lr: f64,
    started_unix: f64,
}

/// Everything a run holds while it trains.
pub(crate) struct Run<B: AmpBackend, M: Trainable<B>> {
    /// Held for the whole run: no second process trains it.
    _lock: std::fs::File,
    /// Disk space the failure path can use ([`crate::files::Reserve`]).
    reserve: Reserve,
    /// TensorBoard event file (`[log] tensorboard`).
    board: Option<crate::board::Board>,
    c: Config,
    dataset: Dataset,
    run_dir: PathBuf,
    /// The one writer of run.json, metrics.csv and emissions.csv.
    ledger: crate::ledger::Ledger,
    record: RunRecord,
    after_epoch: Option<AfterEpoch>,
    follower: Option<Follower>,
    device: B::Device,
    ac: Autocast,
    /// Taken out for the optimizer step, which consumes it.
    model: Option<M>,
    optim: DeviceOptimizer<B>,
    scaler: DeviceScaler<B::InnerBackend>,
    state: TrainState,
    account: Option<RunTracker>,
    progress: Progress,
    batches: Batches<B>,
    ckpt: Cadence,
    shape: Shape,
    process_start: Instant,
    warmed_up: bool,
    announced_prediction: bool,
    quiet: bool,
}

impl<B: AmpBackend, M: Trainable<B>> Run<B, M> {
    /// Builds the model, optimizer and scaler, restores a checkpoint when
    /// resuming (a checkpoint that does not fit the config is a usage
    /// error, found before run.json or config.toml is touched), and starts
    /// metering.
    fn new(
        setup: Setup,
        device: B::Device,
        build: impl FnOnce(&Config, &Dataset, &B::Device) -> M,
    ) -> Result<Self, Failure> {
        let Setup {
            lock,
            spec,
            intensity,
            precision,
            config: c,
            config_dir,
            dataset,
            run_dir,
            mut record,
            resume,
            resumed,
            config_text,
            quiet,
            hooks,
            killed,
        } = setup;
        let prior = resumed.then(|| crate::energy::Prior {
            energy: record.energy.clone(),
            co2_g: record
                .carbon
                .as_ref()
                .map_or(0.0, |cb| cb.operational.co2_g),
            killed,
        });
        let shape = Shape::new(&c, &dataset);
        let mut model = build(&c, &dataset, &device);
        record.parameters = Some(crate::network::trainable_params::<B, M>(&model) as u64);
        let mut optim =
            DeviceOptimizer::<B>::new(optimizer_spec(&c), &device).with_foreach(c.kernels.foreach);
        let scaler_state =
            greentrain_amp::GradScaler::for_precision(precision, c.precision.scaler.clone())
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
            let bad = |e: anyhow::Error| {
                Failure::Usage(anyhow::anyhow!(
                    "{}: {e:#}",
                    run_dir.join(crate::checkpoint::FILE).display()
                ))
            };
            ck.state
                .check_fits(shape.extent(&c))
                .map_err(|e| bad(anyhow::anyhow!(e)))?;
            model = load_model(model, &ck.model, &device).map_err(bad)?;
            optim = load_optim(optim, &ck.optim, &model, &device).map_err(bad)?;
            scaler = DeviceScaler::from_state(&ck.state.scaler, &device);
            state = ck.state;
            with_checkpoint_costs(&mut state, &mut record);
        }
        if resumed {
            // Only now that the checkpoint has loaded: the config change
            // (resume --set), then the record of this process.
            if let Some(text) = config_text {
                crate::files::write_atomic(&run_dir.join("config.toml"), text.as_bytes())
                    .context("writing config.toml")
                    .map_err(Failure::Runtime)?;
            }
            crate::ledger::Ledger::new(&run_dir)
                .record(&record)
                .map_err(Failure::Runtime)?;
        }
        let reserve = Reserve::make(&run_dir)
            .ok_or_else(|| anyhow::anyhow!("{}: no room for 1 MiB on its disk", run_dir.display()))
            .map_err(Failure::Runtime)?;
        let progress = Progress::new(quiet);
        let account = c
            .energy
            .enabled
            .then(|| start_tracker::<B>(&c, spec, &run_dir, intensity, prior, &progress, &device));
        let limit = crate::device::resident_split_limit(spec);
        let batches = Batches::<B>::new(
            &dataset.train,
            shape.features,
            &device,
            limit,
            dataset.augment.clone(),
        );
        let run = Self {
            _lock: lock,
            reserve,
            board: c
                .log
                .tensorboard
                .then(|| crate::board::Board::open(&run_dir)),
            ac: Autocast::new(precision)
                .with_conv(c.model.conv.unwrap_or_default())
                .with_matmul(c.kernels.matmul)
                .with_split_sums(c.kernels.sums == crate::config::Sums::TwoStage),
            follower: hooks.schedule.map(Follower::new),
            after_epoch: hooks.after_epoch,
            c,
            dataset,
            ledger: crate::ledger::Ledger::new(&run_dir),
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
        run.announce(spec);
        Ok(run)
    }

    fn model(&self) -> &M {
        self.model
            .as_ref()
            .expect("the model is back after each step")
    }

    fn announce(&self, spec: DeviceSpec) {
        let r = &self.record;
        self.progress
            .line(&if self.state.epoch == 0 && self.state.step == 0 {
                words::start(r, self.dataset.train.len(), self.dataset.test.len())
            } else {
                words::resuming(&self.c.run.name, self.state.epoch, self.state.step)
            });
        if spec == DeviceSpec::Cpu && r.precision != greentrain_amp::Precision::Fp32 {
            self.progress.line(&words::cpu_precision_note(r.precision));
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
        let correct = Tensor::from_data(
            TensorData::new(vec![partial.correct as f32], [1]),
            &self.device,
        );
        let lr = lr_at(
            c,
            self.state.optimizer_steps,
            self.shape.total_opt_steps,
            epoch,
        );
        self.progress
            .start_epoch(epoch, c.train.epochs, self.shape.steps, self.state.step);
        let window = Window::Train { epoch: epoch + 1 };
        let started_unix = greentrain_energy::tracker::unix_now();
        if let Some(a) = self.account.as_mut() {
            a.begin(&window);
        }
        self.scaler.reset_skipped();
        EpochRun {
            epoch,
            chunks,
            loss_sum,
            correct,
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
}

/// A checkpoint's own seconds and joules are known only after it is
/// written: a restored state takes them from run.json, and the record's
/// epochs are the state's from then on.
fn with_checkpoint_costs(state: &mut TrainState, record: &mut RunRecord) {
    for e in state.epochs.iter_mut() {
        if let Some(r) = record.epochs.iter().find(|r| r.epoch == e.epoch) {
            e.checkpoint_s = e.checkpoint_s.or(r.checkpoint_s);
            e.checkpoint_j = e.checkpoint_j.or(r.checkpoint_j);
        }
    }
    record.epochs = state.epochs.clone();
}

/// Starts the run's energy tracker (announcing its meters), synchronising
/// `device` at each window edge.
fn start_tracker<B: AmpBackend>(
    c: &Config,
    spec: DeviceSpec,
    run_dir: &std::path::Path,
    intensity: greentrain_energy::carbon::Intensity,
    prior: Option<crate::energy::Prior>,
    progress: &Progress,
    device: &B::Device,
) -> RunTracker {
    let gpus = crate::device::gpu_select(spec);
    let opts = crate::energy::options(c, run_dir, gpus);
    let mut a = RunTracker::start(&opts, intensity, prior);
    progress.line(&a.summary_line(matches!(spec, DeviceSpec::Cuda(_))));
    progress.energy_warnings(a.take_warnings());
    let dev = device.clone();
    a.set_sync(move || {
        let _ = B::sync(&dev);
    });
    a
}
