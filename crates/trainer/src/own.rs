//! Your own Burn model inside greentrain's run: the same run folder as
//! `greentrain --config` (run.json, metrics.csv, emissions.csv,
//! checkpoints, energy and CO2 with provenance, budgets, targets, signals
//! checkpointing), around a model written with `burn::nn`.
//!
//! You implement [`OwnModel`]: a name and how to build the network on a
//! backend. greentrain picks the backend from the config's device, wraps
//! it in [`greentrain_amp::Amp`] (autocast as a backend, so the network
//! needs no change for fp16 or bf16), seeds it with `run.seed`, and trains
//! it on the config's dataset with the config's optimizer, schedule and
//! stop rules. The config says `[model] kind = "own"`.
//!
//! `greentrain resume DIR` on such a run starts the recorded program again
//! (same executable, arguments and folder) with `GREENTRAIN_RESUME=DIR` in
//! its environment, and [`train`] then resumes DIR instead of starting a
//! new run: the program must build the same model.
//!
//! ```no_run
//! use burn::nn::{Linear, LinearConfig, Relu};
//! use burn::prelude::*;
//! use greentrain_amp::AmpBackend;
//! use greentrain_trainer::network::Network;
//! use greentrain_trainer::own::{self, OwnModel};
//!
//! #[derive(Module, Debug)]
//! struct Net<B: Backend> {
//!     hidden: Linear<B>,
//!     out: Linear<B>,
//! }
//!
//! impl<B: Backend> Network<B> for Net<B> {
//!     fn logits(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
//!         self.out.forward(Relu::new().forward(self.hidden.forward(x)))
//!     }
//! }
//!
//! struct Mine;
//! impl OwnModel for Mine {
//!     type Net<B: AmpBackend> = Net<B>;
//!     fn name(&self) -> String {
//!         "mlp-784-256-10".into()
//!     }
//!     fn build<B: AmpBackend>(&self, device: &B::Device) -> Net<B> {
//!         Net::<B> {
//!             hidden: LinearConfig::new(784, 256).init(device),
//!             out: LinearConfig::new(256, 10).init(device),
//!         }
//!     }
//! }
//!
//! let config = greentrain_trainer::config::load("my_run.toml".as_ref(), &[]).unwrap();
//! let request = greentrain_trainer::TrainRequest {
//!     config,
//!     device: greentrain_trainer::DeviceSpec::Cpu,
//!     out_dir: "runs".into(),
//!     quiet: false,
//! };
//! let outcome = own::train(&Mine, request).unwrap();
//! println!("{}", outcome.run_dir.display());
//! ```

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use greentrain_amp::{Amp, AmpBackend};

use crate::config::ModelKind;
use crate::device::DeviceSpec;
use crate::network::Trainable;
use crate::record::OwnRecord;
use crate::run::{install_interrupt_handler, Failure, Hooks, Outcome, Setup};
use crate::train::{dispatch, reopen, start, BackendTask, TrainRequest};

/// Set by `greentrain resume` for the program it starts again: the run
/// folder [`train`] resumes.
pub const RESUME_ENV: &str = "GREENTRAIN_RESUME";
/// With [`RESUME_ENV`]: the device `greentrain resume --device` asked for.
pub const DEVICE_ENV: &str = "GREENTRAIN_RESUME_DEVICE";

/// A model of your own, built on whichever backend the run needs.
pub trait OwnModel {
    /// A name for it, recorded in run.json; resuming checks it.
    fn name(&self) -> String;

    /// The network on backend `B`: your `burn::nn` module, with a
    /// [`Network`](crate::network::Network) impl for every backend.
    type Net<B: AmpBackend>: Trainable<B>;

    /// Builds the network on `B` (`Amp<Autodiff<..>>` of the run's device,
    /// already seeded with `run.seed`: Burn's initializers draw from the
    /// backend's one generator, so the same seed gives the same weights
    /// while no other thread draws from it). Its inputs are `[batch, features]`
    /// with each sample flattened as the dataset's `sample_shape` lays it
    /// out; its logits `[batch, classes]`.
    fn build<B: AmpBackend>(&self, device: &B::Device) -> Self::Net<B>;
}

/// Starts a run of `model` as `req` says, or, when [`RESUME_ENV`] is set
/// (by `greentrain resume`), resumes that run folder instead.
pub fn train<O: OwnModel>(model: &O, req: TrainRequest) -> Result<Outcome, Failure> {
    if let Some(dir) = std::env::var_os(RESUME_ENV) {
        let device = match std::env::var(DEVICE_ENV) {
            Ok(d) => Some(d.parse().map_err(|e: String| Failure::Usage(anyhow!(e)))?),
            Err(_) => None,
        };
        return resume(model, Path::new(&dir), device, req.quiet);
    }
    if req.config.config.model.kind != ModelKind::Own {
        return Err(Failure::Usage(anyhow!(
            "{}: an own model's config says [model] kind = \"own\"",
            req.config.path.display()
        )));
    }
    let program = std::env::current_exe()
        .map_err(|e| Failure::Runtime(anyhow!("cannot name this program: {e}")))?;
    let cwd = std::env::current_dir()
        .map_err(|e| Failure::Runtime(anyhow!("cannot name the current folder: {e}")))?;
    // run.json holds them as text: a non-UTF-8 argument is refused, not
    // recorded altered (`env::args` would panic on it).
    let args = std::env::args_os()
        .skip(1)
        .map(|a| {
            a.into_string().map_err(|a| {
                Failure::Usage(anyhow!(
                    "the argument {a:?} is not UTF-8: run.json could not record it for resume"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let own = OwnRecord {
        model: model.name(),
        program,
        args,
        cwd,
    };
    let spec = req.device;
    let setup = start(req, Hooks::default(), Some(own))?;
    run(spec, setup, model)
}

/// Continues a run of `model` from its checkpoint (`device` defaults to the
/// one it used).
pub fn resume<O: OwnModel>(
    model: &O,
    run_dir: &Path,
    device: Option<DeviceSpec>,
    quiet: bool,
) -> Result<Outcome, Failure> {
    let name = model.name();
    let mismatch = |own: &OwnRecord| {
        (own.model != name).then(|| {
            Failure::Usage(anyhow!(
                "{}: a run of the model {:?}, and this program trains {name:?}",
                run_dir.display(),
                own.model
            ))
        })
    };
    // Named before reopening, which refuses a finished run first.
    if let Some(own) = crate::record::RunRecord::load(run_dir)
        .ok()
        .and_then(|r| r.own)
    {
        if let Some(e) = mismatch(&own) {
            return Err(e);
        }
    }
    let (spec, setup) = reopen(run_dir, device, quiet, &[])?;
    let refused = match &setup.record.own {
        Some(own) => mismatch(own),
        None => Some(Failure::Usage(anyhow!(
            "{}: a run of greentrain's own {:?} model: `greentrain resume` continues it",
            run_dir.display(),
            setup.config.model.kind
        ))),
    };
    match refused {
        Some(e) => Err(e),
        None => run(spec, setup, model),
    }
}

/// The command that starts the program recorded in `own` again to resume
/// `run_dir` (`greentrain resume` runs it in its own place).
pub fn rerun_command(
    own: &OwnRecord,
    run_dir: &Path,
    device: Option<&str>,
) -> std::process::Command {
    let dir: PathBuf = std::fs::canonicalize(run_dir).unwrap_or_else(|_| run_dir.to_path_buf());
    let mut cmd = std::process::Command::new(&own.program);
    cmd.args(&own.args)
        .current_dir(&own.cwd)
        .env(RESUME_ENV, dir);
    match device {
        Some(d) => cmd.env(DEVICE_ENV, d),
        None => cmd.env_remove(DEVICE_ENV),
    };
    cmd
}

/// Replaces this process with [`rerun_command`]; returns only on failure.
#[cfg(unix)]
pub fn rerun(own: &OwnRecord, run_dir: &Path, device: Option<&str>) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let e = rerun_command(own, run_dir, device).exec();
    anyhow!(
        "cannot start {} again in {} to resume this run of {:?}: {e}",
        own.program.display(),
        own.cwd.display(),
        own.model
    )
}

fn run<O: OwnModel>(spec: DeviceSpec, setup: Setup, model: &O) -> Result<Outcome, Failure> {
    install_interrupt_handler();
    dispatch(spec, OwnTask { setup, model })
}

struct OwnTask<'a, O> {
    setup: Setup,
    model: &'a O,
}

impl<O: OwnModel> BackendTask for OwnTask<'_, O> {
    type Out = Result<Outcome, Failure>;
    fn run<B: AmpBackend>(self, device: B::Device) -> Self::Out {
        let model = self.model;
        crate::train::use_kernels::<B>();
        crate::run::run_on::<Amp<B>, _>(self.setup, device, |c, _, device| {
            <Amp<B> as burn::tensor::backend::Backend>::seed(device, c.run.seed);
            burn::module::Module::map(model.build::<Amp<B>>(device), &mut Renumber(0))
        })
    }
}

/// Numbers the parameters in visiting order, as greentrain's models are
/// numbered: Burn draws random ids, and the same seed should give a
/// byte-identical checkpoint.
struct Renumber(u64);

impl<B: burn::tensor::backend::Backend> burn::module::ModuleMapper<B> for Renumber {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<burn::tensor::Tensor<B, D>>,
    ) -> burn::module::Param<burn::tensor::Tensor<B, D>> {
        let (_, tensor, mapper) = param.consume();
        self.0 += 1;
        burn::module::Param::from_mapped_value(burn::module::ParamId::from(self.0), tensor, mapper)
    }
}
