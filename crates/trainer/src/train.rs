//! The training loop, generic over Burn's `AutodiffBackend`, and the
//! entry points that pick a backend from a [`DeviceSpec`].

use crate::checkpoint::{Checkpoint, PartialEpoch, TrainState};
use crate::config::{self, Config, LoadedConfig, OptimizerKind, Schedule};
use crate::data::{self, Dataset, Split};
use crate::device::{self, DeviceSpec};
use crate::model::{self, Model};
use crate::record::{
    self, sig, DatasetRecord, DeviceRecord, EpochRecord, FinalRecord, RunRecord, Versions,
};
use anyhow::{anyhow, Context};
use burn::module::{AutodiffModule, Module};
use burn::optim::GradientsParams;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use greentrain_amp::{
    grads, readback, Autocast, DeviceOptimizer, DeviceScaler, OptimizerSpec, Precision,
    PrecisionChoice, ScalerSnapshot,
};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// Why a run did not complete: a usage/config problem (exit 2) or a
/// failure at run time (exit 1).
#[derive(Debug)]
pub enum Failure {
    /// Bad config, bad device choice, bad data: found before training.
    Usage(anyhow::Error),
    /// Something broke while running.
    Runtime(anyhow::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Usage(e) | Failure::Runtime(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for Failure {}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The run directory.
    pub run_dir: PathBuf,
    /// `completed` or `interrupted`.
    pub status: String,
    /// The record as last written.
    pub record: RunRecord,
}

/// What to train.
#[derive(Clone, Debug)]
pub struct TrainRequest {
    /// The config (already validated).
    pub config: LoadedConfig,
    /// Where.
    pub device: DeviceSpec,
    /// Parent folder of run directories.
    pub out_dir: PathBuf,
    /// Suppress progress output (tests).
    pub quiet: bool,
}

/// Decides after each epoch whether a run goes on: `Some(status)` stops it
/// there with that status (a sweep prunes trials this way).
pub type AfterEpoch = Arc<dyn Fn(&RunRecord) -> Option<String> + Send + Sync>;

/// Optional behaviour for programs embedding the trainer.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Called after each epoch, once its record is saved.
    pub after_epoch: Option<AfterEpoch>,
    /// A carbon-aware plan to follow.
    pub schedule: Option<crate::follow::FollowPlan>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("after_epoch", &self.after_epoch.is_some())
            .field("schedule", &self.schedule)
            .finish()
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Asks a running training loop (in this process) to checkpoint at its next
/// step boundary and stop, as Ctrl-C does. For programs embedding the
/// trainer.
pub fn request_interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Clears a pending interrupt request.
pub fn clear_interrupt() {
    INTERRUPTED.store(false, Ordering::SeqCst);
}

/// Installs the Ctrl-C handler: the loop checkpoints at the next step
/// boundary and the record says `interrupted`.
pub fn install_interrupt_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                eprintln!("second interrupt: exiting without checkpoint");
                std::process::exit(130);
            }
            eprintln!(
                "\ninterrupt: checkpointing at the next step boundary (Ctrl-C again to abort)"
            );
        });
    });
}

/// Everything a run needs before the backend is chosen.
struct Setup {
    /// Held for the whole run: no second process trains it.
    _lock: std::fs::File,
    intensity: greentrain_energy::carbon::Intensity,
    /// The mode that runs (`config.precision.mode` resolved on the device).
    precision: Precision,
    config: Config,
    config_dir: PathBuf,
    dataset: Dataset,
    run_dir: PathBuf,
    record: RunRecord,
    resume: Option<Checkpoint>,
    quiet: bool,
    hooks: Hooks,
}

fn prepare_data(config: &Config, config_dir: &Path) -> Result<Dataset, Failure> {
    let dataset = data::load(config, config_dir).map_err(|e| Failure::Usage(e.into()))?;
    model::check_fit(&config.model, &dataset.name, &dataset.sample_shape)
        .map_err(|e| Failure::Usage(e.into()))?;
    Ok(dataset)
}

/// Checks the device, and resolves and checks the precision on it.
fn check_device(spec: DeviceSpec, config: &Config) -> Result<(DeviceRecord, Precision), Failure> {
    let name = device::check(spec).map_err(|e| Failure::Usage(e.into()))?;
    let record = DeviceRecord {
        backend: spec.backend().to_string(),
        name,
        spec: spec.to_string(),
    };
    let precision = resolve_precision(spec, config.precision.mode)?;
    Ok((record, precision))
}

/// Starts a new run.
pub fn train(req: TrainRequest) -> Result<Outcome, Failure> {
    train_with(req, Hooks::default())
}

/// [`train`] with hooks: an after-epoch decision and a plan to follow.
pub fn train_with(req: TrainRequest, hooks: Hooks) -> Result<Outcome, Failure> {
    let mut config = req.config.config.clone();
    let config_dir =
        std::fs::canonicalize(req.config.base_dir()).unwrap_or_else(|_| req.config.base_dir());
    let (device, precision) = check_device(req.device, &config)?;
    // The run folder's config pins the mode that ran, so that resume and
    // reproduce use it on any device; run.json keeps what was asked.
    let requested = config.precision.mode;
    config.precision.mode = PrecisionChoice::Fixed(precision);
    let dataset = prepare_data(&config, &config_dir)?;
    let intensity =
        crate::energy::intensity(&config, &config_dir).map_err(|e| Failure::Usage(e.into()))?;

    let started = SystemTime::now();
    std::fs::create_dir_all(&req.out_dir)
        .with_context(|| format!("cannot create output folder {}", req.out_dir.display()))
        .map_err(Failure::Runtime)?;
    let run_dir = unique_dir(
        &req.out_dir,
        &format!("{}-{}", config.run.name, record::stamp(started)),
    )
    .map_err(Failure::Runtime)?;
    let lock = record::lock_run(&run_dir).map_err(Failure::Runtime)?;
    let toml_text = config.to_toml();
    record::write_atomic(&run_dir.join("config.toml"), toml_text.as_bytes())
        .context("writing config.toml")
        .map_err(Failure::Runtime)?;
    let record = RunRecord {
        schema: record::SCHEMA.into(),
        name: config.run.name.clone(),
        status: "running".into(),
        started_at: record::rfc3339(started),
        finished_at: None,
        config: serde_json::to_value(&config).expect("config to json"),
        config_sha256: data::sha256_hex(toml_text.as_bytes()),
        seed: config.run.seed,
        versions: Versions::current(),
        device,
        precision: precision.to_string(),
        precision_requested: Some(requested.to_string()),
        dataset: dataset_record(&dataset),
        epochs: vec![],
        final_: None,
        error: None,
        resumed: 0,
        energy: None,
        carbon: None,
        schedule: None,
        warmup_s: None,
    };
    record
        .save(&run_dir)
        .context("writing run.json")
        .map_err(Failure::Runtime)?;
    let setup = Setup {
        _lock: lock,
        intensity,
        precision,
        config,
        config_dir,
        dataset,
        run_dir,
        record,
        resume: None,
        quiet: req.quiet,
        hooks,
    };
    run(req.device, setup)
}

/// Continues a run from its checkpoint. `device` defaults to the one the
/// run used.
pub fn resume(run_dir: &Path, device: Option<DeviceSpec>, quiet: bool) -> Result<Outcome, Failure> {
    let usage = |e: anyhow::Error| Failure::Usage(e);
    let mut record = RunRecord::load(run_dir).map_err(usage)?;
    if record.status == "completed" {
        return Err(Failure::Usage(anyhow!(
            "{} is already completed",
            run_dir.display()
        )));
    }
    let config_path = run_dir.join("config.toml");
    let loaded = config::load(&config_path, &[]).map_err(|e| Failure::Usage(e.into()))?;
    let lock = record::lock_run(run_dir).map_err(usage)?;
    let ckpt = Checkpoint::load(run_dir).map_err(usage)?;
    let spec = match device {
        Some(d) => d,
        None => record
            .device
            .spec
            .parse()
            .map_err(|e: String| Failure::Usage(anyhow!(e)))?,
    };
    let config = loaded.config;
    let (device_record, precision) = check_device(spec, &config)?;
    record.device = device_record;
    let dataset = prepare_data(&config, &ckpt.state.config_dir)?;
    let intensity = crate::energy::intensity(&config, &ckpt.state.config_dir)
        .map_err(|e| Failure::Usage(e.into()))?;
    record.status = "running".into();
    record.resumed += 1;
    record.error = None;
    record
        .save(run_dir)
        .context("writing run.json")
        .map_err(Failure::Runtime)?;
    let setup = Setup {
        _lock: lock,
        intensity,
        precision,
        config,
        config_dir: ckpt.state.config_dir.clone(),
        dataset,
        run_dir: run_dir.to_path_buf(),
        record,
        resume: Some(ckpt),
        quiet,
        hooks: Hooks::default(),
    };
    run(spec, setup)
}

fn unique_dir(parent: &Path, base: &str) -> anyhow::Result<PathBuf> {
    for i in 0..1000 {
        let name = if i == 0 {
            base.to_string()
        } else {
            format!("{base}-{i}")
        };
        let p = parent.join(name);
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(anyhow!("cannot create run directory {}: {e}", p.display())),
        }
    }
    Err(anyhow!(
        "too many run directories named {base} in {}",
        parent.display()
    ))
}

fn dataset_record(d: &Dataset) -> DatasetRecord {
    DatasetRecord {
        name: d.name.clone(),
        train_samples: d.train.len(),
        val_samples: d.val.as_ref().map_or(0, Split::len),
        test_samples: d.test.len(),
        sample_shape: d.sample_shape.clone(),
    }
}

/// A piece of work to run with the backend a [`DeviceSpec`] names.
pub(crate) trait BackendTask {
    type Out;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Out;
}

struct ResolvePrecision {
    choice: PrecisionChoice,
    gpu: bool,
}
impl BackendTask for ResolvePrecision {
    type Out = anyhow::Result<Precision>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Out {
        let p = self
            .choice
            .resolve(self.gpu, |d| B::supports_dtype(&device, d));
        p.check_supported::<B>(&device).map_err(|e| anyhow!(e))?;
        Ok(p)
    }
}

/// Checks, before any work, that `spec` can run `precision`; returns the
/// mode that `auto` resolves to there.
pub fn check_precision(spec: DeviceSpec, precision: PrecisionChoice) -> Result<Precision, Failure> {
    device::check(spec).map_err(|e| Failure::Usage(e.into()))?;
    resolve_precision(spec, precision)
}

/// The mode `choice` runs in on `spec`, refused if the device cannot run it.
fn resolve_precision(spec: DeviceSpec, choice: PrecisionChoice) -> Result<Precision, Failure> {
    let task = ResolvePrecision {
        choice,
        gpu: device::is_hardware_gpu(spec),
    };
    dispatch(spec, task).map_err(Failure::Usage)
}

/// The one place where a backend type is chosen at run time.
pub(crate) fn dispatch<T: BackendTask>(spec: DeviceSpec, task: T) -> T::Out {
    match spec {
        DeviceSpec::Cpu => {
            task.run::<burn::backend::Autodiff<burn::backend::Flex>>(Default::default())
        }
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(n) => {
            crate::kernel_cache::install();
            task.run::<burn::backend::Autodiff<burn::backend::Cuda>>(
                burn::backend::cuda::CudaDevice::new(n),
            )
        }
        #[cfg(feature = "wgpu")]
        DeviceSpec::Wgpu => {
            crate::kernel_cache::install();
            task.run::<burn::backend::Autodiff<burn::backend::Wgpu>>(Default::default())
        }
        #[allow(unreachable_patterns)]
        other => unreachable!("device {other} passed its check in a build without its backend"),
    }
}

struct RunTask(Setup);
impl BackendTask for RunTask {
    type Out = Result<Outcome, Failure>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Out {
        run_on::<B>(self.0, device)
    }
}

fn run(spec: DeviceSpec, setup: Setup) -> Result<Outcome, Failure> {
    install_interrupt_handler();
    dispatch(spec, RunTask(setup))
}

// ---- optimizers ----------------------------------------------------------

type Rec = BinBytesRecorder<FullPrecisionSettings>;

/// The configured optimizer, with its state on the device.
fn optimizer_spec(c: &Config) -> OptimizerSpec {
    let t = &c.train;
    match t.optimizer {
        OptimizerKind::Sgd => OptimizerSpec::Sgd {
            momentum: None,
            weight_decay: t.weight_decay,
        },
        OptimizerKind::Momentum => OptimizerSpec::Sgd {
            momentum: Some(t.momentum),
            weight_decay: t.weight_decay,
        },
        // PyTorch's epsilon (1e-8), not Burn's default (1e-5).
        OptimizerKind::Adam => OptimizerSpec::Adam {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            weight_decay: t.weight_decay,
        },
        OptimizerKind::Adamw => OptimizerSpec::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            weight_decay: t.weight_decay,
        },
    }
}

fn optim_bytes<B: AutodiffBackend>(o: &DeviceOptimizer<B>) -> Vec<u8> {
    Recorder::<B::InnerBackend>::record(&Rec::default(), o.to_record(), ())
        .expect("in-memory record")
}

fn load_optim<B: AutodiffBackend>(
    o: DeviceOptimizer<B>,
    bytes: Vec<u8>,
    device: &B::Device,
) -> anyhow::Result<DeviceOptimizer<B>> {
    let rec = Recorder::<B::InnerBackend>::load(&Rec::default(), bytes, device)?;
    o.load_record(rec).map_err(|e| anyhow!(e))
}

/// Model weights as bytes (the checkpoint's model part).
pub fn model_bytes<B: Backend>(m: &Model<B>) -> Vec<u8> {
    Recorder::<B>::record(&Rec::default(), m.clone().into_record(), ()).expect("in-memory record")
}

fn load_model<B: Backend>(
    m: Model<B>,
    bytes: Vec<u8>,
    device: &B::Device,
) -> anyhow::Result<Model<B>> {
    let rec = Recorder::<B>::load(&Rec::default(), bytes, device)?;
    Ok(m.load_record(rec))
}

/// Learning rate at optimizer step `step` (0-based) in epoch `epoch`.
pub fn lr_at(c: &Config, step: u64, total_steps: u64, epoch: usize) -> f64 {
    let t = &c.train;
    match t.schedule {
        Schedule::Constant => t.lr,
        Schedule::Cosine => {
            let p = (step as f64 / total_steps.max(1) as f64).min(1.0);
            t.lr * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
        }
        Schedule::Step => t.lr * t.gamma.powi((epoch / t.step_epochs) as i32),
    }
}

// ---- the loop ------------------------------------------------------------

/// Where training batches come from. On a GPU the whole training split is
/// uploaded once and each batch is selected on the device: gathering 4096
/// MNIST rows on the host and copying them over costs milliseconds a step,
/// as much as the step itself. On the CPU (and for splits over 1 GiB) rows
/// are gathered on the host.
enum Batches<B: Backend> {
    Host,
    Device {
        x: Tensor<B, 2>,
        y: Tensor<B, 1, Int>,
    },
}

impl<B: Backend> Batches<B> {
    fn new(split: &Split, features: usize, device: &B::Device, on_gpu: bool) -> Self {
        if !on_gpu || split.x.len() * 4 > 1 << 30 {
            return Batches::Host;
        }
        let n = split.len();
        let y: Vec<i64> = split.y.iter().map(|&v| v as i64).collect();
        Batches::Device {
            x: Tensor::from_data(TensorData::new(split.x.clone(), [n, features]), device),
            y: Tensor::from_data(TensorData::new(y, [n]), device),
        }
    }

    fn get(
        &self,
        split: &Split,
        features: usize,
        ids: &[usize],
        device: &B::Device,
    ) -> (Tensor<B, 2>, Tensor<B, 1, Int>) {
        match self {
            Batches::Host => batch_tensors::<B>(split, features, ids, device),
            Batches::Device { x, y } => {
                let idx: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
                let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [ids.len()]), device);
                (x.clone().select(0, idx.clone()), y.clone().select(0, idx))
            }
        }
    }
}

fn batch_tensors<B: Backend>(
    split: &Split,
    features: usize,
    ids: &[usize],
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 1, Int>) {
    let (x, y) = data::gather(split, features, ids);
    let n = ids.len();
    let x = Tensor::from_data(TensorData::new(x, [n, features]), device);
    let y = Tensor::from_data(TensorData::new(y, [n]), device);
    (x, y)
}

/// Mean loss and accuracy of `model` on `split`, read back once.
fn evaluate<B: Backend>(
    model: &Model<B>,
    ac: &Autocast,
    split: &Split,
    features: usize,
    batch: usize,
    device: &B::Device,
) -> (f64, f64) {
    let ids: Vec<usize> = (0..split.len()).collect();
    let mut loss_sum: Option<Tensor<B, 1>> = None;
    let mut correct: Option<Tensor<B, 1, Int>> = None;
    for chunk in ids.chunks(batch) {
        let (x, y) = batch_tensors::<B>(split, features, chunk, device);
        let logits = model.forward(x, ac);
        let n = chunk.len();
        let pred = logits.clone().argmax(1).reshape([n]);
        let hits = pred.equal(y.clone()).int().sum();
        let l = ac.cross_entropy_per_sample(logits, y).sum();
        loss_sum = Some(match loss_sum {
            Some(s) => s + l,
            None => l,
        });
        correct = Some(match correct {
            Some(c) => c + hits,
            None => hits,
        });
    }
    let n = split.len().max(1) as f64;
    let loss: f32 = loss_sum.map(|t| readback::read_f32(t)[0]).unwrap_or(0.0);
    let hits: i64 = correct.map(|t| readback::read_i64(t)[0]).unwrap_or(0);
    (loss as f64 / n, hits as f64 / n)
}

struct Progress {
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        Self { bar: None, quiet }
    }
    fn start_epoch(&mut self, epoch: usize, epochs: usize, steps: usize, done: usize) {
        if self.quiet || !std::io::stdout().is_terminal() {
            return;
        }
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(steps as u64),
            indicatif::ProgressDrawTarget::stdout(),
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
        bar.set_position(done as u64);
        self.bar = Some(bar);
    }
    fn step(&self, epoch: usize, epochs: usize, step: usize, steps: usize, msg: Option<String>) {
        if self.quiet {
            return;
        }
        match (&self.bar, msg) {
            (Some(b), Some(m)) => {
                b.set_position(step as u64);
                b.set_message(m);
            }
            (Some(b), None) => b.set_position(step as u64),
            (None, Some(m)) => println!(
                "epoch {}/{} step {}/{} {}",
                epoch + 1,
                epochs,
                step,
                steps,
                m
            ),
            (None, None) => {}
        }
    }
    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
    fn line(&self, s: &str) {
        if !self.quiet {
            println!("{s}");
        }
    }
}

fn run_on<B: AutodiffBackend>(setup: Setup, device: B::Device) -> Result<Outcome, Failure> {
    let run_dir = setup.run_dir.clone();
    let mut record = setup.record.clone();
    match train_loop::<B>(setup, device, &mut record) {
        Ok(o) => Ok(o),
        Err(e) => {
            record.status = "failed".into();
            record.finished_at = Some(record::rfc3339(SystemTime::now()));
            record.error = Some(format!("{e:#}"));
            let _ = record.save(&run_dir);
            Err(Failure::Runtime(e))
        }
    }
}

fn train_loop<B: AutodiffBackend>(
    setup: Setup,
    device: B::Device,
    record: &mut RunRecord,
) -> anyhow::Result<Outcome> {
    let Setup {
        config: c,
        config_dir,
        dataset,
        run_dir,
        resume,
        quiet,
        intensity,
        hooks,
        precision,
        ..
    } = setup;
    let mut follower = hooks.schedule.clone().map(crate::follow::Follower::new);
    let prior = match (&record.energy, &record.carbon) {
        (Some(e), Some(cb)) => Some((e.clone(), cb.operational.co2_g)),
        _ => None,
    };
    let ac = Autocast::new(precision);
    let features = dataset.features();
    let n_train = dataset.train.len();
    let bs = c.data.batch_size;
    let accum = c.train.accumulate;
    let batches = c
        .train
        .steps_per_epoch
        .unwrap_or_else(|| n_train.div_ceil(bs));
    let opt_steps_per_epoch = batches.div_ceil(accum) as u64;
    let total_opt_steps = opt_steps_per_epoch * c.train.epochs as u64;

    let mut model = Model::<B>::new(
        &c.model,
        &dataset.sample_shape,
        dataset.num_classes,
        c.run.seed,
        &device,
    );
    let mut optim = DeviceOptimizer::<B>::new(optimizer_spec(&c), &device);
    let scaler_state = greentrain_amp::GradScaler::for_precision(precision, c.precision.scaler())
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
        model = load_model(model, ck.model, &device).context("loading model from checkpoint")?;
        optim =
            load_optim(optim, ck.optim, &device).context("loading optimizer from checkpoint")?;
        scaler = DeviceScaler::from_state(&ck.state.scaler, &device);
        state = ck.state;
        // A checkpoint's own seconds and joules are known only after it is
        // written: take them from run.json.
        for e in state.epochs.iter_mut() {
            if let Some(r) = record.epochs.iter().find(|r| r.epoch == e.epoch) {
                e.checkpoint_s = e.checkpoint_s.or(r.checkpoint_s);
                e.checkpoint_j = e.checkpoint_j.or(r.checkpoint_j);
            }
        }
        record.epochs = state.epochs.clone();
    }

    let mut progress = Progress::new(quiet);
    let mut account = c
        .energy
        .enabled
        .then(|| crate::energy::Account::start(&c, intensity, prior));
    if let Some(a) = account.as_mut() {
        for w in a.warnings() {
            eprintln!("energy: {w}");
        }
        for line in a.describe() {
            progress.line(&format!("energy meter {line}"));
        }
        let dev = device.clone();
        a.set_sync(move || {
            let _ = B::sync(&dev);
        });
    }
    let mut announced_prediction = false;
    let batches_src = Batches::<B>::new(
        &dataset.train,
        features,
        &device,
        record.device.backend != "flex",
    );
    let process_start = Instant::now();
    let mut warmup: Option<f64> = None;
    let mut ckpt = Cadence::new();
    if state.epoch == 0 && state.step == 0 {
        progress.line(&format!(
            "training {} on {} ({} {}), {} train / {} test samples, {} epochs, precision {}{}",
            c.run.name,
            record.device.name,
            record.device.backend,
            record.device.spec,
            n_train,
            dataset.test.len(),
            c.train.epochs,
            precision,
            if record.precision_requested.as_deref() == Some("auto") {
                " (auto)"
            } else {
                ""
            }
        ));
    } else {
        progress.line(&format!(
            "resuming {} at epoch {} step {}",
            c.run.name,
            state.epoch + 1,
            state.step
        ));
    }

    while state.epoch < c.train.epochs {
        let epoch = state.epoch;
        let chunks = data::epoch_batches(n_train, bs, c.run.seed, epoch, c.train.steps_per_epoch);
        let mut loss_sum: Tensor<B::InnerBackend, 1> =
            Tensor::from_data(TensorData::new(vec![state.partial.loss_sum], [1]), &device);
        let mut partial = state.partial.clone();
        let mut acc: Option<GradientsParams> = None;
        let mut lr = lr_at(&c, state.optimizer_steps, total_opt_steps, epoch);
        progress.start_epoch(epoch, c.train.epochs, batches, state.step);
        let train_window = format!("train/epoch-{}", epoch + 1);
        let epoch_started = greentrain_energy::tracker::unix_now();
        if let Some(a) = account.as_mut() {
            a.begin(&train_window);
        }
        let mut train_j = state.partial.energy_j;
        let mut since_log = Instant::now();
        let mut samples_since_log = 0u64;
        scaler.reset_skipped();
        let mut seg = Segment::start(&partial);

        let mut bi = state.step;
        while bi < batches {
            // Checkpoint on Ctrl-C only between optimizer steps, so no
            // accumulated gradient is lost.
            if bi.is_multiple_of(accum) && INTERRUPTED.load(Ordering::SeqCst) {
                progress.finish();
                let snap = seg.settle::<B>(&mut partial, &device, &scaler);
                if let Some(a) = account.as_mut() {
                    partial.energy_j += a.end(&train_window);
                }
                state.step = bi;
                state.partial = PartialEpoch {
                    loss_sum: readback::read_f32(loss_sum.clone())[0],
                    ..partial
                };
                state.scaler = scaler.state_at(snap);
                save_checkpoint(&run_dir, &state, &model, &optim)?;
                record.status = "interrupted".into();
                if let Some(f) = follower.as_mut() {
                    record.schedule = Some(f.finish());
                }
                record.finished_at = Some(record::rfc3339(SystemTime::now()));
                if let Some(a) = account.as_mut() {
                    let (e, cb) = a.record(
                        total_samples(&state.epochs) + partial.samples,
                        total_wall(&state.epochs) + partial.wall_s,
                    );
                    record.energy = Some(e);
                    record.carbon = Some(cb);
                }
                record.save(&run_dir)?;
                progress.line(&format!(
                    "interrupted at epoch {} step {}; continue with: greentrain resume {}",
                    epoch + 1,
                    bi,
                    run_dir.display()
                ));
                return Ok(Outcome {
                    run_dir,
                    status: "interrupted".into(),
                    record: record.clone(),
                });
            }
            if bi.is_multiple_of(accum) {
                if let Some(f) = follower.as_mut() {
                    match f.before_step() {
                        crate::follow::Next::Go => {}
                        crate::follow::Next::Overrun => progress.line(
                            "schedule: the plan's last slot is over; training on until the run ends",
                        ),
                        crate::follow::Next::PauseUntil(until) => {
                            // Checkpoint first: a pause can be long, and the
                            // machine may go away meanwhile.
                            progress.finish();
                            let snap = seg.settle::<B>(&mut partial, &device, &scaler);
                            if let Some(a) = account.as_mut() {
                                train_j += a.end(&train_window);
                            }
                            state.step = bi;
                            state.partial = PartialEpoch {
                                loss_sum: readback::read_f32(loss_sum.clone())[0],
                                energy_j: train_j,
                                ..partial.clone()
                            };
                            state.scaler = scaler.state_at(snap);
                            save_checkpoint(&run_dir, &state, &model, &optim)?;
                            record.status = "paused".into();
                            record.schedule = Some(f.record());
                            record.save(&run_dir)?;
                            let show = !quiet;
                            let what = if state.epoch == 0 && bi == 0 && f.record().ran.is_empty() {
                                "waiting for the plan's first slot"
                            } else {
                                "paused (checkpointed) until the next slot"
                            };
                            progress.line(&format!(
                                "schedule: {what} at {}",
                                greentrain_energy::carbon::format_time(until)
                            ));
                            f.wait(
                                until,
                                |left| {
                                    if show {
                                        eprint!("\rschedule: {} left   ", crate::follow::hms(left));
                                    }
                                },
                                || INTERRUPTED.load(Ordering::SeqCst),
                            );
                            if show {
                                eprintln!();
                            }
                            record.status = "running".into();
                            if let Some(a) = account.as_mut() {
                                a.begin(&train_window);
                            }
                            progress.start_epoch(epoch, c.train.epochs, batches, bi);
                            seg = Segment::resume(&partial, seg);
                            // Back to the top: Ctrl-C during the wait is handled there.
                            continue;
                        }
                    }
                }
            }
            let t0 = Instant::now();
            let group_start = bi - bi % accum;
            let group_end = (group_start + accum).min(batches);
            let group_samples: usize = chunks[group_start..group_end].iter().map(|c| c.len()).sum();
            let ids = &chunks[bi][..];
            let (x, y) = batches_src.get(&dataset.train, features, ids, &device);
            let t_data = t0.elapsed().as_secs_f64();

            let logits = model.forward(x, &ac);
            let loss = ac.cross_entropy(logits, y);
            loss_sum = loss_sum + loss.clone().inner().mul_scalar(ids.len() as f32);
            // Weight each micro-batch by its share of the group's samples, so
            // the accumulated gradient is the group's mean gradient.
            let weighted = if group_end - group_start > 1 {
                loss.mul_scalar(ids.len() as f32 / group_samples as f32)
            } else {
                loss
            };
            let g = scaler.scale_loss(weighted).backward();
            let g = GradientsParams::from_grads(g, &model);
            acc = Some(grads::accumulate::<B, Model<B>>(&model, acc.take(), g));

            if bi + 1 == group_end {
                lr = lr_at(&c, state.optimizer_steps, total_opt_steps, epoch);
                let g = acc.take().expect("accumulated gradients");
                model = scaler.step(&mut optim, lr, model, g, c.train.clip_grad_norm);
                state.optimizer_steps += 1;
                if warmup.is_none() {
                    // Once per process: the first step compiles (and
                    // autotunes) the step's kernels.
                    let _ = B::sync(&device);
                    let w = process_start.elapsed().as_secs_f64();
                    warmup = Some(w);
                    record.warmup_s = Some(record.warmup_s.unwrap_or(0.0) + w);
                }
            }
            partial.samples += ids.len() as u64;
            samples_since_log += ids.len() as u64;
            partial.data_s += t_data;
            bi += 1;

            if bi.is_multiple_of(c.train.log_every) || bi == batches {
                // A log step: the only step that reads back (the loss sum and
                // the scaler's counters), so the rate below is synchronised.
                let show_loss =
                    readback::read_f32(loss_sum.clone())[0] as f64 / partial.samples.max(1) as f64;
                let rate = samples_since_log as f64 / since_log.elapsed().as_secs_f64().max(1e-9);
                let mut msg = format!("loss {show_loss:.4} {rate:.0} samples/s");
                if let Some(snap) = seg.scaler_counts(&mut partial, &scaler) {
                    msg.push_str(&format!(
                        " scale {} skipped {}",
                        snap.scale, partial.skipped
                    ));
                }
                progress.step(epoch, c.train.epochs, bi, batches, Some(msg));
                since_log = Instant::now();
                samples_since_log = 0;
            } else {
                progress.step(epoch, c.train.epochs, bi, batches, None);
            }
        }
        progress.finish();
        let snap = seg.settle::<B>(&mut partial, &device, &scaler);
        if let Some(a) = account.as_mut() {
            train_j += a.end(&train_window);
        }

        let train_loss = readback::read_f32(loss_sum)[0] as f64 / partial.samples.max(1) as f64;
        let eval_window = format!("eval/epoch-{}", epoch + 1);
        if let Some(a) = account.as_mut() {
            a.begin(&eval_window);
        }
        let t_eval = Instant::now();
        let valid = model.valid();
        let eb = c.data.eval_batch_size;
        let (test_loss, test_acc) =
            evaluate::<B::InnerBackend>(&valid, &ac, &dataset.test, features, eb, &device);
        let (val_loss, val_acc) = match &dataset.val {
            Some(v) => {
                let (l, a) = evaluate::<B::InnerBackend>(&valid, &ac, v, features, eb, &device);
                (Some(l), Some(a))
            }
            None => (None, None),
        };
        let eval_s = t_eval.elapsed().as_secs_f64();
        let eval_j = account.as_mut().map(|a| a.end(&eval_window));
        let epoch_j = eval_j.map(|e| e + train_j);
        let epoch_g = match (&account, epoch_j) {
            (Some(a), Some(j)) => {
                Some(a.co2_g(j, epoch_started, greentrain_energy::tracker::unix_now()))
            }
            _ => None,
        };
        let e = EpochRecord {
            epoch: epoch + 1,
            train_loss,
            test_loss,
            test_accuracy: test_acc,
            val_loss,
            val_accuracy: val_acc,
            wall_s: partial.wall_s,
            eval_s,
            samples: partial.samples,
            samples_per_s: partial.samples as f64 / partial.wall_s.max(1e-9),
            lr,
            loss_scale: snap.map_or(1.0, |s| s.scale as f64),
            skipped_steps: partial.skipped,
            data_s: partial.data_s,
            energy_j: epoch_j,
            co2_g: epoch_g,
            checkpoint_s: None,
            checkpoint_j: None,
        };
        let mut line = format!(
            "epoch {}/{}: train_loss {:.4} test_loss {:.4} test_acc {:.2}% ",
            e.epoch,
            c.train.epochs,
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
        if scaler.is_enabled() {
            line.push_str(&format!(
                " scale {} skipped {}",
                e.loss_scale, e.skipped_steps
            ));
        }
        if let (Some(j), Some(g), Some(a)) = (e.energy_j, e.co2_g, &account) {
            line.push_str(&format!(
                " {} J [{}] {} gCO2eq",
                sig(j),
                a.provenance(),
                sig(g)
            ));
        }
        progress.line(&line);

        state.epochs.push(e);
        state.epoch += 1;
        state.step = 0;
        state.partial = PartialEpoch::default();
        state.scaler = scaler.state_at(snap);
        let last = state.epoch == c.train.epochs;
        let due = c.train.checkpoint_every.due(
            state.epoch,
            ckpt.since.elapsed().as_secs_f64(),
            ckpt.cost_s,
        );
        if last || due {
            ckpt.save(&run_dir, &mut state, &model, &optim, account.as_mut())?;
        }
        record.epochs = state.epochs.clone();
        record.final_ = Some(final_of(&state.epochs));
        record::save_metrics(&run_dir, &record.epochs)?;
        let mut verdict = greentrain_energy::budget::BudgetVerdict::Ok;
        if let Some(a) = account.as_mut() {
            let (mut e, cb) = a.record(total_samples(&state.epochs), total_wall(&state.epochs));
            let secs: Vec<f64> = state.epochs.iter().map(|e| e.wall_s + e.eval_s).collect();
            let joules: Vec<f64> = state
                .epochs
                .iter()
                .map(|e| e.energy_j.unwrap_or(0.0))
                .collect();
            verdict = a.check_budget(&c, &secs, &joules, e.total_j, cb.operational.co2_g);
            e.prediction = a.prediction().cloned();
            if let (Some(p), false) = (a.prediction(), announced_prediction) {
                if state.epoch < c.train.epochs {
                    progress.line(&format!(
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
                announced_prediction = true;
            }
            fill_energy(record, e, cb);
        }
        record.save(&run_dir)?;
        if let greentrain_energy::budget::BudgetVerdict::Stop(why) = verdict {
            if state.epoch < c.train.epochs {
                if !ckpt.saved(state.epoch) {
                    ckpt.save(&run_dir, &mut state, &model, &optim, account.as_mut())?;
                }
                record.epochs = state.epochs.clone();
                record.status = "stopped_budget".into();
                if let Some(f) = follower.as_mut() {
                    record.schedule = Some(f.finish());
                }
                record.finished_at = Some(record::rfc3339(SystemTime::now()));
                record.save(&run_dir)?;
                progress.line(&format!(
                    "stopped: {why}; checkpointed after epoch {}",
                    state.epoch
                ));
                return Ok(Outcome {
                    run_dir,
                    status: "stopped_budget".into(),
                    record: record.clone(),
                });
            }
        }
        if let Some(h) = &hooks.after_epoch {
            if let Some(status) = h(record) {
                if state.epoch < c.train.epochs {
                    if !ckpt.saved(state.epoch) {
                        ckpt.save(&run_dir, &mut state, &model, &optim, account.as_mut())?;
                    }
                    record.epochs = state.epochs.clone();
                    record.status = status.clone();
                    record.finished_at = Some(record::rfc3339(SystemTime::now()));
                    if let Some(f) = follower.as_mut() {
                        record.schedule = Some(f.finish());
                    }
                    record.save(&run_dir)?;
                    progress.line(&format!("stopped after epoch {}: {status}", state.epoch));
                    return Ok(Outcome {
                        run_dir,
                        status,
                        record: record.clone(),
                    });
                }
            }
        }
    }

    record.status = "completed".into();
    record.finished_at = Some(record::rfc3339(SystemTime::now()));
    if let Some(f) = follower.as_mut() {
        record.schedule = Some(f.finish());
    }
    record.final_ = Some(final_of(&state.epochs));
    if let Some(a) = account.as_mut() {
        let (e, cb) = a.record(total_samples(&state.epochs), total_wall(&state.epochs));
        fill_energy(record, e, cb);
        if let (Some(e), Some(cb)) = (&record.energy, &record.carbon) {
            let run_id = run_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let row = crate::energy::emissions_row(
                &c.run.name,
                &run_id,
                e,
                cb,
                c.carbon.zone.as_deref(),
                &device::cpu_name(),
            );
            row.write(&run_dir).context("writing emissions.csv")?;
        }
    }
    record.save(&run_dir)?;
    if let Some(f) = &record.final_ {
        progress.line(&format!(
            "done: test accuracy {:.2}% in {:.1}s of training ({} samples, {:.0} samples/s), precision {}{}",
            100.0 * f.test_accuracy,
            f.wall_s,
            f.samples,
            f.samples as f64 / f.wall_s.max(1e-9),
            precision,
            if scaler.is_enabled() {
                format!(", {} skipped steps", f.skipped_steps)
            } else {
                                String::new()
            }
        ));
        if let (Some(e), Some(cb), Some(kwh), Some(g), Some(jps)) = (
            &record.energy,
            &record.carbon,
            f.energy_kwh,
            f.co2_g,
            f.j_per_sample,
        ) {
            let parts: Vec<String> = e
                .components
                .iter()
                .map(|c| format!("{} {} J {}", c.name, sig(c.joules), c.provenance))
                .collect();
            progress.line(&format!(
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
        }
    }
    Ok(Outcome {
        run_dir,
        status: "completed".into(),
        record: record.clone(),
    })
}

fn total_samples(epochs: &[EpochRecord]) -> u64 {
    epochs.iter().map(|e| e.samples).sum()
}

fn total_wall(epochs: &[EpochRecord]) -> f64 {
    epochs.iter().map(|e| e.wall_s).sum()
}

/// Puts the energy and carbon parts into the record, and the totals into `final`.
fn fill_energy(
    record: &mut RunRecord,
    e: crate::energy::EnergyRecord,
    cb: crate::energy::CarbonOut,
) {
    if let Some(f) = record.final_.as_mut() {
        f.energy_kwh = Some(e.total_kwh);
        f.co2_g = Some(cb.operational.co2_g);
        f.j_per_sample = (f.samples > 0).then(|| e.total_j / f.samples as f64);
    }
    record.energy = Some(e);
    record.carbon = Some(cb);
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

fn save_checkpoint<B: AutodiffBackend>(
    dir: &Path,
    state: &TrainState,
    model: &Model<B>,
    optim: &DeviceOptimizer<B>,
) -> anyhow::Result<()> {
    Checkpoint {
        state: state.clone(),
        model: model_bytes(model),
        optim: optim_bytes(optim),
    }
    .save(dir)
    .with_context(|| format!("writing checkpoint in {}", dir.display()))
}

/// The stretch of an epoch trained since its start, a resume or a pause: its
/// wall clock and skip count continue the checkpoint's partial sums.
struct Segment {
    started: Instant,
    wall_base: f64,
    skipped_base: u64,
}

impl Segment {
    fn start(p: &PartialEpoch) -> Self {
        Self {
            started: Instant::now(),
            wall_base: p.wall_s,
            skipped_base: p.skipped,
        }
    }

    /// After a pause: a new clock, the same scaler counter.
    fn resume(p: &PartialEpoch, old: Segment) -> Self {
        Self {
            started: Instant::now(),
            wall_base: p.wall_s,
            skipped_base: old.skipped_base,
        }
    }

    /// Reads the scaler's counters (one read; none without scaling).
    fn scaler_counts<B: Backend>(
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
    fn settle<B: AutodiffBackend>(
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
struct Cadence {
    since: Instant,
    cost_s: Option<f64>,
    saved_epoch: Option<usize>,
}

impl Cadence {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            cost_s: None,
            saved_epoch: None,
        }
    }

    /// Writes the checkpoint in its own energy window and records its
    /// seconds and joules on the last finished epoch.
    fn save<B: AutodiffBackend>(
        &mut self,
        dir: &Path,
        state: &mut TrainState,
        model: &Model<B>,
        optim: &DeviceOptimizer<B>,
        account: Option<&mut crate::energy::Account>,
    ) -> anyhow::Result<()> {
        let window = format!("checkpoint/epoch-{}", state.epoch);
        let mut account = account;
        if let Some(a) = account.as_deref_mut() {
            a.begin(&window);
        }
        let t = Instant::now();
        save_checkpoint(dir, state, model, optim)?;
        let secs = t.elapsed().as_secs_f64();
        let joules = account.map(|a| a.end(&window));
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

    /// Whether the checkpoint of (1-based) epoch `epoch` is written.
    fn saved(&self, epoch: usize) -> bool {
        self.saved_epoch == Some(epoch)
    }
}
