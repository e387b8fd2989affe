//! The entry points of training (a new run, a resumed one), the set-up they
//! share, and the one place a backend is picked from a [`DeviceSpec`]; the
//! run itself is in the `run` module.

use crate::config::{Config, LoadedConfig};
use crate::data::{self, Dataset, Split};
use crate::device::{self, DeviceSpec};
use crate::files;
use crate::model;
use crate::record::{DatasetRecord, DeviceRecord, RunRecord};
use crate::run::Setup;
use crate::status::RunStatus;
use anyhow::{anyhow, Context};
use greentrain_amp::{Amp, AmpBackend};
use greentrain_amp::{Precision, PrecisionChoice};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use crate::run::{
    clear_interrupt, install_interrupt_handler, lr_at, model_bytes, request_interrupt, AfterEpoch,
    Failure, Hooks, Outcome,
};

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

fn prepare_data(config: &Config, config_dir: &Path) -> Result<Dataset, Failure> {
    let dataset = data::load(config, config_dir).map_err(|e| Failure::Usage(e.into()))?;
    model::check_fit(
        &config.model,
        &dataset.name,
        &dataset.sample_shape,
        dataset.vocab,
    )
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

/// What a run needs that both a new run and a resumed one check before
/// any work: the device, the precision it resolves to, the data and the
/// carbon intensity.
pub(crate) struct Prepared {
    pub(crate) device: DeviceRecord,
    pub(crate) precision: Precision,
    pub(crate) dataset: Dataset,
    pub(crate) intensity: greentrain_energy::carbon::Intensity,
}

pub(crate) fn prepare(
    spec: DeviceSpec,
    config: &Config,
    config_dir: &Path,
) -> Result<Prepared, Failure> {
    let (device, precision) = check_device(spec, config)?;
    let dataset = prepare_data(config, config_dir)?;
    crate::memory::check(
        &config.model,
        &dataset.sample_shape,
        dataset.num_classes,
        dataset.vocab,
        config.data.batch_size,
        spec,
    )
    .map_err(|e| Failure::Usage(anyhow!(e)))?;
    let intensity =
        crate::energy::intensity(config, config_dir).map_err(|e| Failure::Usage(e.into()))?;
    Ok(Prepared {
        device,
        precision,
        dataset,
        intensity,
    })
}

/// Starts a new run.
pub fn train(req: TrainRequest) -> Result<Outcome, Failure> {
    train_with(req, Hooks::default())
}

/// [`train`] with hooks: an after-epoch decision and a plan to follow.
pub fn train_with(req: TrainRequest, hooks: Hooks) -> Result<Outcome, Failure> {
    refuse_own(&req.config.config)?;
    let spec = req.device;
    run(spec, start(req, hooks, None)?)
}

/// `model.kind = "own"` needs the program that builds the model.
fn refuse_own(config: &Config) -> Result<(), Failure> {
    if config.model.kind == crate::config::ModelKind::Own {
        return Err(Failure::Usage(anyhow!(
            "model.kind = \"own\" is a model of your own program: train it through \
             greentrain_trainer::own (see the own_model example)"
        )));
    }
    Ok(())
}

/// Creates the run folder and its first record; the [`Setup`] to train.
pub(crate) fn start(
    req: TrainRequest,
    hooks: Hooks,
    own: Option<crate::record::OwnRecord>,
) -> Result<Setup, Failure> {
    let mut config = req.config.config.clone();
    let config_dir =
        std::fs::canonicalize(req.config.base_dir()).unwrap_or_else(|_| req.config.base_dir());
    let Prepared {
        device,
        precision,
        dataset,
        intensity,
    } = prepare(req.device, &config, &config_dir)?;
    // The run folder's config pins the mode that ran, so that resume and
    // reproduce use it on any device; run.json keeps what was asked.
    let requested = config.precision.mode;
    config.precision.mode = PrecisionChoice::Fixed(precision);

    let started = SystemTime::now();
    std::fs::create_dir_all(&req.out_dir)
        .with_context(|| format!("cannot create output folder {}", req.out_dir.display()))
        .map_err(Failure::Runtime)?;
    let run_dir = unique_dir(
        &req.out_dir,
        &format!("{}-{}", config.run.name, files::stamp(started)),
    )
    .map_err(Failure::Runtime)?;
    let lock = files::lock_run(&run_dir).map_err(Failure::Runtime)?;
    let toml_text = config.to_toml();
    files::write_atomic(&run_dir.join("config.toml"), toml_text.as_bytes())
        .context("writing config.toml")
        .map_err(Failure::Runtime)?;
    let mut record = RunRecord::started(
        &config,
        config_dir.clone(),
        &toml_text,
        started,
        device,
        (precision, requested),
        dataset_record(&dataset),
    );
    record.own = own;
    crate::ledger::Ledger::new(&run_dir)
        .record(&record)
        .map_err(Failure::Runtime)?;
    if let Some(w) = &record.dataset.label_warning {
        eprintln!("warning: {w}");
    }
    let setup = Setup {
        lock,
        spec: req.device,
        intensity,
        precision,
        config,
        config_dir,
        dataset,
        run_dir,
        record,
        resume: None,
        resumed: false,
        config_text: None,
        quiet: req.quiet,
        hooks,
        killed: false,
    };
    Ok(setup)
}

/// Continues a run from its checkpoint. `device` defaults to the one the
/// run used.
pub fn resume(run_dir: &Path, device: Option<DeviceSpec>, quiet: bool) -> Result<Outcome, Failure> {
    resume_with(run_dir, device, quiet, &[])
}

/// [`resume`] with `--set` changes (the keys of [`crate::resume::SETTABLE`]).
pub fn resume_with(
    run_dir: &Path,
    device: Option<DeviceSpec>,
    quiet: bool,
    sets: &[String],
) -> Result<Outcome, Failure> {
    if let Some(own) = RunRecord::load(run_dir).ok().and_then(|r| r.own) {
        return Err(Failure::Usage(anyhow!(
            "{}: a run of {}'s own model {:?}: its program resumes it (`greentrain resume` runs \
             it again)",
            run_dir.display(),
            own.program.display(),
            own.model
        )));
    }
    let (spec, setup) = reopen(run_dir, device, quiet, sets)?;
    refuse_own(&setup.config)?;
    run(spec, setup)
}

/// Opens a run folder to continue it: the [`Setup`] and the device.
pub(crate) fn reopen(
    run_dir: &Path,
    device: Option<DeviceSpec>,
    quiet: bool,
    sets: &[String],
) -> Result<(DeviceSpec, Setup), Failure> {
    let usage = |e: anyhow::Error| Failure::Usage(e);
    let r = crate::resume::open(run_dir, quiet, sets).map_err(usage)?;
    let mut record = r.record;
    let spec = match device {
        Some(d) => d,
        None => record
            .device
            .spec
            .parse()
            .map_err(|e: String| usage(anyhow!(e)))?,
    };
    let config_dir = r
        .checkpoint
        .as_ref()
        .map_or_else(|| record.config_dir.clone(), |c| c.state.config_dir.clone());
    let p = prepare(spec, &r.config, &config_dir)?;
    let config_text = r.change.map(|ch| {
        let text = r.config.to_toml();
        record.config_sha256 = data::sha256_hex(text.as_bytes());
        record.config = r.config.clone();
        record.config_changes.push(ch);
        text
    });
    record.device = p.device;
    let killed = matches!(record.status, RunStatus::Running | RunStatus::Paused);
    record.status = RunStatus::Running;
    record.resumed += 1;
    record.error = None;
    let setup = Setup {
        lock: r.lock,
        spec,
        intensity: p.intensity,
        precision: p.precision,
        config: r.config,
        config_dir,
        dataset: p.dataset,
        run_dir: run_dir.to_path_buf(),
        record,
        resume: r.checkpoint,
        resumed: true,
        config_text,
        quiet,
        hooks: Hooks::default(),
        killed,
    };
    Ok((spec, setup))
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
        num_classes: Some(d.num_classes),
        label_warning: d.label_warning(),
        class_names: d.class_names.clone(),
        targets_per_sample: (d.train.targets > 1).then_some(d.train.targets),
        augment: d.augment.is_some().then_some(true),
        skipped_images: (d.skipped > 0).then_some(d.skipped),
    }
}

/// A piece of work to run with the backend a [`DeviceSpec`] names: the
/// way code generic over the backend (a run, a kernel benchmark) is called
/// with the backend chosen at run time, through [`dispatch`].
pub trait BackendTask {
    /// What the work returns.
    type Out;
    /// Runs the work on backend `B` and `device`.
    fn run<B: AmpBackend>(self, device: B::Device) -> Self::Out;
}

struct ResolvePrecision {
    choice: PrecisionChoice,
    gpu: bool,
}
impl BackendTask for ResolvePrecision {
    type Out = anyhow::Result<Precision>;
    fn run<B: AmpBackend>(self, device: B::Device) -> Self::Out {
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
pub fn dispatch<T: BackendTask>(spec: DeviceSpec, task: T) -> T::Out {
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

/// Lets `Amp<B>` run greentrain's kernels on `B` and on its inner backend
/// (evaluation), as every model in a run is trained on `Amp<B>`.
pub(crate) fn use_kernels<B: AmpBackend>() {
    greentrain_amp::use_kernels::<B>();
    greentrain_amp::use_kernels::<B::InnerBackend>();
}

struct RunTask(Setup);
impl BackendTask for RunTask {
    type Out = Result<Outcome, Failure>;
    fn run<B: AmpBackend>(self, device: B::Device) -> Self::Out {
        use_kernels::<B>();
        crate::run::run_on::<Amp<B>, _>(self.0, device, |c, d, device| {
            crate::model::Model::<Amp<B>>::new(
                &c.model,
                &d.sample_shape,
                d.num_classes,
                d.train.targets,
                d.vocab,
                c.run.seed,
                device,
            )
        })
    }
}

pub(crate) fn run(spec: DeviceSpec, setup: Setup) -> Result<Outcome, Failure> {
    install_interrupt_handler();
    dispatch(spec, RunTask(setup))
}
