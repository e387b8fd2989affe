//! `greentrain`: a thin command line over `greentrain-trainer`.
//!
//! Exit status: 0 success, 1 failure at run time or a diverged run (non-finite
//! training loss), 2 usage or config error,
//! 3 stopped by an energy or carbon budget (checkpointed), 130 interrupted
//! (checkpointed; `greentrain resume` continues).

use clap::{Args, Parser, Subcommand};
use greentrain_trainer::config::PrecisionChoice;
use greentrain_trainer::{config, device, DeviceSpec, Failure, Outcome, TrainRequest};
use std::path::PathBuf;
use std::process::ExitCode;

mod alloc;
mod args;
mod schedule;
mod tune;

#[derive(Parser, Debug)]
#[command(
    name = "greentrain",
    version,
    about = "Train with automatic mixed precision and report accuracy next to energy",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a model from a config file (the default command).
    Train(TrainArgs),
    /// Continue an interrupted or killed run from its checkpoint.
    Resume {
        /// The run directory.
        run_dir: PathBuf,
        /// Device to continue on (default: the one the run used).
        #[arg(long)]
        device: Option<String>,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
        /// Change the run's config as it resumes, recorded in run.json
        /// (train.epochs up, budget.max_kwh, budget.max_co2_g); repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Compare precisions on one config: interleaved repeats, warm-up
    /// excluded, ratios against fp32 with 95% intervals.
    Bench(BenchArgs),
    /// Re-run a recorded run from its own run.json and compare every
    /// metric (exit 0 when all match, 1 when any differs).
    Reproduce {
        /// The run directory.
        run_dir: PathBuf,
        /// Device (default: the one the run used).
        #[arg(long)]
        device: Option<String>,
        /// Parent folder of the new run directory.
        #[arg(long, default_value = "runs")]
        out: PathBuf,
        /// No progress output from the run.
        #[arg(long, short)]
        quiet: bool,
    },
    /// A table of runs and a carbon impact statement (Markdown and LaTeX)
    /// from run directories or folders holding them.
    Report {
        /// Run directories, or folders holding them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Output folder for report.md, report.tex and the plots (SVG and PNG).
        #[arg(long, default_value = "report")]
        out: PathBuf,
    },
    /// List the devices this machine can train on.
    Devices,
    /// List the energy meters this machine offers, with their provenance;
    /// with --idle, measure idle power first.
    Meters {
        /// Seconds of idle power to measure.
        #[arg(long)]
        idle: Option<f64>,
    },
    /// Plan a job on a carbon-intensity forecast: Flexible Start (default)
    /// or Pause-and-Resume, against starting now.
    Schedule(schedule::ScheduleArgs),
    /// Search hyperparameters (random, TPE or grid; ASHA pruning), counting
    /// each trial's energy and CO2.
    Sweep {
        /// Sweep file (TOML, see docs/sweeps.md).
        #[arg(long, short)]
        config: PathBuf,
        /// Output folder (sweep.json, sweep.csv, plots, trials/); an existing
        /// one is resumed without rerunning finished trials.
        #[arg(long, default_value = "sweeps")]
        out: PathBuf,
        /// Trials run at once on this machine.
        #[arg(long, default_value_t = 1)]
        parallel: usize,
        /// auto, cpu, cuda, cuda:N or wgpu.
        #[arg(long, default_value = "auto")]
        device: String,
        /// Write a Slurm array job (one trial per task) into DIR instead of running.
        #[arg(long, value_name = "DIR")]
        emit_slurm: Option<PathBuf>,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
    },
    /// The batch size and precision that reach a target accuracy on the
    /// fewest joules: short runs that stop at the target, a table of
    /// joules-to-target, the saving against the config's own setting, and
    /// the chosen setting written as chosen.toml.
    Tune(tune::TuneArgs),
    /// Burn's matrix-product rate per dtype on a device, in TFLOP/s (one
    /// JSON line per dtype), for the GPU benchmark.
    Matmul {
        /// auto, cpu, cuda, cuda:N or wgpu.
        #[arg(long, default_value = "auto")]
        device: String,
        /// Square matrices of this size.
        #[arg(long, default_value_t = 4096)]
        size: usize,
        /// Comma-separated dtypes: f32, f16, bf16.
        #[arg(long, default_value = "f32,f16,bf16")]
        dtypes: String,
        /// Seconds to time each dtype (each kernel with --kernels).
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Time CubeCL's matmul kernels one by one instead of Burn's choice
        /// (GPU backends only): `all`, or names such as
        /// `auto,double-tma-mma` (a wrong name lists them). Each line says
        /// whether the kernel ran, its TFLOP/s and its error against Burn's.
        #[arg(long)]
        kernels: Option<String>,
    },
    /// List the carbon zones of the shipped table (for `[carbon] zone`).
    Zones {
        /// Only zones whose code, name or provider contains this text.
        filter: Option<String>,
    },
}

#[derive(Args, Debug, Default)]
struct TrainArgs {
    /// Config file (TOML).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Override one config value: section.key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// auto (a usable NVIDIA GPU, else a hardware GPU through wgpu, else
    /// the CPU), cpu, cuda, cuda:N or wgpu.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Precision (shorthand for --set precision.mode=MODE): auto (fp16 on a
    /// GPU, fp32 on the CPU), fp32, fp16, bf16.
    #[arg(long, value_parser = parse_precision)]
    precision: Option<PrecisionChoice>,
    /// Parent folder of run directories.
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// Follow a plan from `greentrain schedule --json`: wait for its slots,
    /// pause (checkpointed) between them.
    #[arg(long, value_name = "PLAN")]
    schedule: Option<PathBuf>,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

/// `greentrain bench`'s arguments.
#[derive(Args, Debug)]
struct BenchArgs {
    /// Config file (TOML).
    #[arg(long, short)]
    config: PathBuf,
    /// Comma-separated precisions.
    #[arg(long, default_value = "fp32,fp16,bf16")]
    precisions: String,
    /// Repeats of each precision.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Epochs at the start of each run excluded from time and energy.
    #[arg(long, default_value_t = 1)]
    warmup_epochs: usize,
    /// Shortest measurement (e.g. 5s, 2m): a metered run whose timed
    /// epochs together are shorter is flagged as unreliable in energy; the
    /// config is measured as written.
    #[arg(long, default_value = "5s")]
    min_window: String,
    /// Override one config value: section.key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// auto, cpu, cuda, cuda:N or wgpu.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Output folder.
    #[arg(long, default_value = "bench")]
    out: PathBuf,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

fn sweep(
    config: PathBuf,
    out: PathBuf,
    parallel: usize,
    device: String,
    emit_slurm: Option<PathBuf>,
    quiet: bool,
) -> ExitCode {
    use greentrain_studies::sweep;
    let sw = match sweep::load(&config) {
        Ok(s) => s,
        Err(e) => return usage(format!("{e:#}")),
    };
    if let Some(dir) = emit_slurm {
        return match sweep::emit_slurm(&sw, &dir, &out.join("trials")) {
            Ok(p) => {
                println!(
                    "slurm: {} (submit with: sbatch {})",
                    p.display(),
                    p.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => usage(format!("--emit-slurm: {e:#}")),
        };
    }
    let spec: DeviceSpec = match device.parse() {
        Ok(d) => d,
        Err(e) => return usage(e),
    };
    if parallel == 0 {
        return usage("--parallel must be at least 1");
    }
    match sweep::run(sweep::SweepRequest {
        sweep: sw,
        out_dir: out.clone(),
        parallel,
        device: spec,
        quiet,
    }) {
        Ok(r) => {
            println!("{}", r.markdown());
            println!("sweep: {}", out.display());
            let interrupted = greentrain_trainer::status::RunStatus::Interrupted;
            if r.trials.iter().any(|t| t.status == interrupted) {
                ExitCode::from(interrupted.exit_code())
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(f) => failed(f, "sweep"),
    }
}

fn matmul(
    device: String,
    size: usize,
    dtypes: String,
    seconds: f64,
    kernels: Option<String>,
) -> ExitCode {
    use greentrain_studies::burn_dtype;
    let spec: DeviceSpec = match device.parse() {
        Ok(d) => d,
        Err(e) => return usage(e),
    };
    if let Err(e) = device::check(spec) {
        return usage(e);
    }
    let dtypes = match args::list("--dtypes", &dtypes, burn_dtype) {
        Ok(d) => d,
        Err(e) => return usage(e),
    };
    if size == 0 || seconds.is_nan() || seconds <= 0.0 {
        return usage("--size and --seconds must be positive");
    }
    if let Some(names) = kernels {
        return matmul_kernels(spec, size, &dtypes, seconds, &names);
    }
    for r in greentrain_studies::matmul_bench::run(spec, size, &dtypes, seconds) {
        println!("{}", serde_json::to_string(&r).expect("result serialises"));
    }
    ExitCode::SUCCESS
}

#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn matmul_kernels(
    spec: DeviceSpec,
    size: usize,
    dtypes: &[greentrain_trainer::FloatDType],
    seconds: f64,
    names: &str,
) -> ExitCode {
    use greentrain_studies::matmul_kernels::{run, select};
    let kernels = match select(names) {
        Ok(k) => k,
        Err(e) => return usage(format!("--kernels: {e}")),
    };
    for &dtype in dtypes {
        let mut print = |r: greentrain_studies::matmul_kernels::KernelResult| {
            println!("{}", serde_json::to_string(&r).expect("result serialises"));
        };
        if let Err(e) = run(spec, size, dtype, seconds, &kernels, &mut print) {
            return usage(e);
        }
    }
    ExitCode::SUCCESS
}

#[cfg(not(any(feature = "cuda", feature = "wgpu")))]
fn matmul_kernels(
    _: DeviceSpec,
    _: usize,
    _: &[greentrain_trainer::FloatDType],
    _: f64,
    _: &str,
) -> ExitCode {
    usage("--kernels needs a build with the cuda or wgpu feature")
}

/// An own-model run resumes in its own program, started again.
fn resume_own(
    own: &greentrain_trainer::record::OwnRecord,
    run_dir: &std::path::Path,
    device: Option<&str>,
    set: &[String],
) -> ExitCode {
    if !set.is_empty() {
        return usage(format!(
            "{}: --set changes greentrain's configs; a run of your own model ({:?}) takes its \
             config from its program",
            run_dir.display(),
            own.model
        ));
    }
    #[cfg(unix)]
    {
        let e = greentrain_trainer::own::rerun(own, run_dir, device);
        usage(format!("{e:#}"))
    }
    #[cfg(not(unix))]
    {
        let _ = device;
        usage(format!(
            "{}: resume it by running {} again",
            run_dir.display(),
            own.program.display()
        ))
    }
}

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("greentrain: {msg}");
    ExitCode::from(2)
}

/// Exit status for a failure: 2 for usage, 1 at run time.
fn failed(f: Failure, what: &str) -> ExitCode {
    match f {
        Failure::Usage(e) => usage(format!("{e:#}")),
        Failure::Runtime(e) => {
            eprintln!("greentrain: {what} failed: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn finish(result: Result<Outcome, Failure>) -> ExitCode {
    match result {
        Ok(o) => {
            println!("run: {}", o.run_dir.display());
            ExitCode::from(o.status.exit_code())
        }
        Err(f) => failed(f, "run"),
    }
}

/// `--precision`: the parser the config's `precision.mode` uses, so the two
/// accept the same words.
fn parse_precision(s: &str) -> Result<PrecisionChoice, String> {
    s.parse()
}

fn train(args: TrainArgs) -> ExitCode {
    let Some(path) = args.config else {
        return usage("no config given: use --config FILE (see configs/ and docs/config.md)");
    };
    let spec: DeviceSpec = match args.device.parse() {
        Ok(d) => d,
        Err(e) => return usage(e),
    };
    let mut loaded = match config::load(&path, &args.set) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    // `--precision` wins over the file and `--set`, as the typed value.
    if let Some(p) = args.precision {
        loaded.config.precision.mode = p;
    }
    let mut hooks = greentrain_trainer::train::Hooks::default();
    if let Some(p) = &args.schedule {
        let clock = std::sync::Arc::new(greentrain_energy::schedule::SystemClock);
        match greentrain_trainer::follow::FollowPlan::load(p, clock) {
            Ok((fp, warning)) => {
                if let Some(w) = warning {
                    eprintln!("schedule: {w}");
                }
                hooks.schedule = Some(fp);
            }
            Err(e) => return usage(format!("--schedule: {e:#}")),
        }
    }
    finish(greentrain_trainer::train::train_with(
        TrainRequest {
            config: loaded,
            device: spec,
            out_dir: args.out,
            quiet: args.quiet,
        },
        hooks,
    ))
}

/// `greentrain meters`: each meter, its provenance and facts, and idle power.
fn meters(idle: Option<f64>) -> ExitCode {
    use greentrain_energy::tracker::{detect, DetectOptions};
    let mut t = detect(&DetectOptions::default(), None);
    for w in &t.warnings {
        println!("warning: {w}");
    }
    for c in t.components() {
        println!("{} [{}]: {}", c.name, c.provenance, c.method);
        for (k, v) in &c.details {
            println!("    {k}: {v}");
        }
    }
    if let Some(secs) = idle {
        if !(secs > 0.0 && secs <= 3600.0) {
            return usage("--idle takes seconds in (0, 3600]");
        }
        let w = t.idle_baseline(secs);
        for c in &w.components {
            println!(
                "idle {}: {:.2} W over {:.1} s [{}]{}",
                c.name,
                c.joules / w.duration_s.max(1e-9),
                w.duration_s,
                c.provenance,
                c.integrated_j
                    .map(|j| format!(" (integrated power: {:.2} W)", j / w.duration_s.max(1e-9)))
                    .unwrap_or_default()
            );
        }
        println!(
            "idle total: {:.2} W [{}]",
            w.total_j / w.duration_s.max(1e-9),
            w.provenance
        );
    }
    ExitCode::SUCCESS
}

/// `greentrain zones`: the carbon-intensity zones, filtered.
fn zones(filter: Option<String>) -> ExitCode {
    let f = filter.unwrap_or_default().to_lowercase();
    for z in greentrain_energy::carbon::zones() {
        let code = if z.kind == "country" {
            z.code.clone()
        } else {
            format!("{}:{}", z.kind, z.code)
        };
        if !f.is_empty()
            && !format!("{code} {} {}", z.name, z.kind)
                .to_lowercase()
                .contains(&f)
        {
            continue;
        }
        let year = z.year.map(|y| format!(" ({y})")).unwrap_or_default();
        println!("{code:28} {:8.1} g/kWh{year:7}  {}", z.g_per_kwh, z.name);
    }
    ExitCode::SUCCESS
}

/// `greentrain bench`.
fn bench(a: BenchArgs) -> ExitCode {
    let BenchArgs {
        config: path,
        precisions,
        repeats,
        warmup_epochs,
        min_window,
        set,
        device,
        out,
        quiet,
    } = a;
    let min_window_s = match greentrain_energy::schedule::parse_duration(&min_window) {
        Ok(s) => s,
        Err(e) => return usage(format!("--min-window: {e}")),
    };
    let spec: DeviceSpec = match device.parse() {
        Ok(d) => d,
        Err(e) => return usage(e),
    };
    let fixed = |p: &str| {
        p.parse::<PrecisionChoice>()?
            .fixed()
            .ok_or_else(|| "auto is not a mode to compare: name fp32, fp16 or bf16".to_string())
    };
    let precisions = match args::list("--precisions", &precisions, fixed) {
        Ok(p) => p,
        Err(e) => return usage(e),
    };
    let loaded = match config::load(&path, &set) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let req = greentrain_studies::bench::BenchRequest {
        config: loaded,
        precisions,
        repeats,
        device: spec,
        out_dir: out.clone(),
        warmup_epochs,
        min_window_s,
        quiet,
    };
    match greentrain_studies::bench::bench(req) {
        Ok(report) => {
            println!("{}", report.markdown());
            println!("bench: {}", out.display());
            ExitCode::SUCCESS
        }
        Err(f) => failed(f, "bench"),
    }
}

/// `greentrain reproduce`.
fn reproduce(run_dir: PathBuf, device: Option<String>, out: PathBuf, quiet: bool) -> ExitCode {
    let spec = match device.map(|d| d.parse::<DeviceSpec>()).transpose() {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    match greentrain_studies::reproduce::reproduce(&run_dir, spec, &out, quiet) {
        Ok((outcome, cmp, tol)) => {
            print!("{}", greentrain_studies::reproduce::table(&cmp));
            let bad = cmp.iter().filter(|c| !c.matches).count();
            println!(
                "tolerance: {}; {} of {} values match",
                tol.describe(),
                cmp.len() - bad,
                cmp.len()
            );
            println!("run: {}", outcome.run_dir.display());
            if bad == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(f) => failed(f, "reproduce"),
    }
}

/// `greentrain report`.
fn report(paths: Vec<PathBuf>, out: PathBuf) -> ExitCode {
    let found = greentrain_studies::report::collect(&paths);
    for e in &found.errors {
        eprintln!("greentrain: report: {e}");
    }
    if found.runs.is_empty() {
        eprintln!("greentrain: report: no readable runs");
        return ExitCode::from(1);
    }
    match greentrain_studies::report::write(&found, &out) {
        Ok(md) => {
            println!("{md}");
            println!("report: {}", out.display());
            if found.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("greentrain: report: cannot write {}: {e}", out.display());
            ExitCode::from(1)
        }
    }
}

/// `greentrain devices`.
fn devices() -> ExitCode {
    for (name, status) in device::list() {
        match status {
            Ok(desc) => println!("{name:5} available    {desc}"),
            Err(why) => println!("{name:5} unavailable  {why}"),
        }
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    alloc::keep_freed_memory();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Train(a)) => train(a),
        None => train(cli.train),
        Some(Command::Resume {
            run_dir,
            device,
            quiet,
            set,
        }) => {
            let spec = match device.as_ref().map(|d| d.parse::<DeviceSpec>()).transpose() {
                Ok(s) => s,
                Err(e) => return usage(e),
            };
            if let Ok(record) = greentrain_trainer::record::RunRecord::load(&run_dir) {
                if let Some(own) = record.own {
                    return resume_own(&own, &run_dir, device.as_deref(), &set);
                }
            }
            finish(greentrain_trainer::resume_with(&run_dir, spec, quiet, &set))
        }
        Some(Command::Meters { idle }) => meters(idle),
        Some(Command::Matmul {
            device,
            size,
            dtypes,
            seconds,
            kernels,
        }) => matmul(device, size, dtypes, seconds, kernels),
        Some(Command::Zones { filter }) => zones(filter),
        Some(Command::Bench(a)) => bench(a),
        Some(Command::Reproduce {
            run_dir,
            device,
            out,
            quiet,
        }) => reproduce(run_dir, device, out, quiet),
        Some(Command::Report { paths, out }) => report(paths, out),
        Some(Command::Schedule(a)) => schedule::schedule(a),
        Some(Command::Sweep {
            config,
            out,
            parallel,
            device,
            emit_slurm,
            quiet,
        }) => sweep(config, out, parallel, device, emit_slurm, quiet),
        Some(Command::Devices) => devices(),
        Some(Command::Tune(a)) => tune::tune(a),
    }
}
