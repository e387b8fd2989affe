//! `greentrain`: a thin command line over `greentrain-trainer`.
//!
//! Exit status: 0 success, 1 failure at run time, 2 usage or config error,
//! 3 stopped by an energy or carbon budget (checkpointed), 130 interrupted
//! (checkpointed; `greentrain resume` continues).

use clap::{Args, Parser, Subcommand};
use greentrain_trainer::{config, device, DeviceSpec, Failure, Outcome, TrainRequest};
use std::path::PathBuf;
use std::process::ExitCode;

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
    },
    /// Compare precisions on one config: interleaved repeats, warm-up
    /// excluded, ratios against fp32 with 95% intervals.
    Bench {
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
        /// Override one config value: section.key=value (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// cpu, cuda, cuda:N or wgpu.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Output folder.
        #[arg(long, default_value = "bench")]
        out: PathBuf,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
    },
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
    /// cpu, cuda, cuda:N or wgpu.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Precision (shorthand for --set precision.mode=MODE): fp32, fp16, bf16.
    #[arg(long)]
    precision: Option<String>,
    /// Parent folder of run directories.
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
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
            match o.status.as_str() {
                "interrupted" => ExitCode::from(130),
                "stopped_budget" => ExitCode::from(3),
                _ => ExitCode::SUCCESS,
            }
        }
        Err(f) => failed(f, "run"),
    }
}

fn train(args: TrainArgs) -> ExitCode {
    let Some(path) = args.config else {
        return usage("no config given: use --config FILE (see configs/ and docs/config.md)");
    };
    let spec: DeviceSpec = match args.device.parse() {
        Ok(d) => d,
        Err(e) => return usage(e),
    };
    let mut overrides = args.set;
    if let Some(p) = args.precision {
        if let Err(e) = p.parse::<greentrain_trainer::config::PrecisionMode>() {
            return usage(format!("--precision: {e}"));
        }
        overrides.push(format!("precision.mode={p}"));
    }
    let loaded = match config::load(&path, &overrides) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    finish(greentrain_trainer::train(TrainRequest {
        config: loaded,
        device: spec,
        out_dir: args.out,
        quiet: args.quiet,
    }))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Train(a)) => train(a),
        None => train(cli.train),
        Some(Command::Resume {
            run_dir,
            device,
            quiet,
        }) => {
            let spec = match device.map(|d| d.parse::<DeviceSpec>()).transpose() {
                Ok(s) => s,
                Err(e) => return usage(e),
            };
            finish(greentrain_trainer::resume(&run_dir, spec, quiet))
        }
        Some(Command::Meters { idle }) => {
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
                            .map(|j| format!(
                                " (integrated power: {:.2} W)",
                                j / w.duration_s.max(1e-9)
                            ))
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
        Some(Command::Zones { filter }) => {
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
        Some(Command::Bench {
            config: path,
            precisions,
            repeats,
            warmup_epochs,
            set,
            device,
            out,
            quiet,
        }) => {
            let spec: DeviceSpec = match device.parse() {
                Ok(d) => d,
                Err(e) => return usage(e),
            };
            let precisions: Result<Vec<_>, _> = precisions
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<greentrain_trainer::config::PrecisionMode>()
                })
                .collect();
            let precisions = match precisions {
                Ok(p) => p,
                Err(e) => return usage(format!("--precisions: {e}")),
            };
            let loaded = match config::load(&path, &set) {
                Ok(c) => c,
                Err(e) => return usage(e),
            };
            let req = greentrain_trainer::bench::BenchRequest {
                config: loaded,
                precisions,
                repeats,
                device: spec,
                out_dir: out.clone(),
                warmup_epochs,
                quiet,
            };
            match greentrain_trainer::bench::bench(req) {
                Ok(report) => {
                    println!("{}", report.markdown());
                    println!("bench: {}", out.display());
                    ExitCode::SUCCESS
                }
                Err(f) => failed(f, "bench"),
            }
        }
        Some(Command::Reproduce {
            run_dir,
            device,
            out,
            quiet,
        }) => {
            let spec = match device.map(|d| d.parse::<DeviceSpec>()).transpose() {
                Ok(s) => s,
                Err(e) => return usage(e),
            };
            match greentrain_trainer::reproduce::reproduce(&run_dir, spec, &out, quiet) {
                Ok((outcome, cmp, tol)) => {
                    print!("{}", greentrain_trainer::reproduce::table(&cmp));
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
        Some(Command::Report { paths, out }) => {
            let found = greentrain_trainer::report::collect(&paths);
            for e in &found.errors {
                eprintln!("greentrain: report: {e}");
            }
            if found.runs.is_empty() {
                eprintln!("greentrain: report: no readable runs");
                return ExitCode::from(1);
            }
            match greentrain_trainer::report::write(&found, &out) {
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
        Some(Command::Devices) => {
            for (name, status) in device::list() {
                match status {
                    Ok(desc) => println!("{name:5} available    {desc}"),
                    Err(why) => println!("{name:5} unavailable  {why}"),
                }
            }
            ExitCode::SUCCESS
        }
    }
}
