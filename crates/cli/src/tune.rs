//! `greentrain tune`: its arguments and exit status.

use crate::{args, failed, usage};
use clap::Args;
use greentrain_studies::tune::{self, TuneRequest};
use greentrain_trainer::config::Override;
use greentrain_trainer::config::PrecisionChoice;
use greentrain_trainer::status::RunStatus;
use greentrain_trainer::DeviceSpec;
use std::path::PathBuf;
use std::process::ExitCode;

/// `greentrain tune`'s arguments.
#[derive(Args, Debug)]
pub struct TuneArgs {
    /// Config file (TOML).
    #[arg(long, short)]
    config: PathBuf,
    /// The accuracy to reach, in (0, 1] (validation accuracy when the
    /// config holds out a validation split, else test accuracy).
    #[arg(long)]
    target_accuracy: f64,
    /// Comma-separated batch sizes (default: half, the config's own, double).
    #[arg(long, value_name = "B,B,..")]
    batch_sizes: Option<String>,
    /// Comma-separated precisions: auto, fp32, fp16, bf16 (default: the
    /// config's own, fp32, and what auto picks on the device).
    #[arg(long, value_name = "P,P,..")]
    precisions: Option<String>,
    /// Runs per setting, seeds run.seed, run.seed+1, ...: from 2 on, the
    /// saving has a 95% interval.
    #[arg(long, default_value_t = 1)]
    repeats: usize,
    /// Epoch limit per run (default: the config's train.epochs).
    #[arg(long)]
    max_epochs: Option<usize>,
    /// Stop starting runs once the tune has used this many kWh (runs stop
    /// at the remainder too).
    #[arg(long)]
    max_kwh: Option<f64>,
    /// Override one config value: section.key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// auto, cpu, cuda, cuda:N or wgpu.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Output folder (tune.json, tune.md, tune.csv, chosen.toml, runs/).
    #[arg(long, default_value = "tune")]
    out: PathBuf,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

fn request(a: TuneArgs) -> Result<TuneRequest, String> {
    let batch = |x: &str| match x.parse::<usize>().map_err(|e| e.to_string())? {
        0 => Err("must be at least 1".to_string()),
        b => Ok(b),
    };
    let batch_sizes = match &a.batch_sizes {
        Some(t) => args::list("--batch-sizes", t, batch)?,
        None => vec![],
    };
    let precisions = match &a.precisions {
        Some(t) => args::list("--precisions", t, |x| x.parse::<PrecisionChoice>())?,
        None => vec![],
    };
    let overrides = a
        .set
        .iter()
        .map(|s| Override::parse(s).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(k) = a.max_kwh.filter(|k| !(k.is_finite() && *k > 0.0)) {
        return Err(format!("--max-kwh must be positive, not {k}"));
    }
    Ok(TuneRequest {
        config_path: a.config,
        overrides,
        target_accuracy: a.target_accuracy,
        batch_sizes,
        precisions,
        repeats: a.repeats,
        max_epochs: a.max_epochs,
        max_kwh: a.max_kwh,
        device: a.device.parse::<DeviceSpec>()?,
        out_dir: a.out,
        quiet: a.quiet,
    })
}

/// Exit status: 0 when a setting was chosen, 1 when none reached the
/// target in every repeat, 130 when interrupted, 2 for bad input.
pub fn tune(a: TuneArgs) -> ExitCode {
    let out = a.out.clone();
    let req = match request(a) {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    match tune::run(req) {
        Ok(r) => {
            println!("{}", r.markdown());
            println!("tune: {}", out.display());
            if r.runs.iter().any(|x| x.status == RunStatus::Interrupted) {
                ExitCode::from(RunStatus::Interrupted.exit_code())
            } else if r.chosen.is_none() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(f) => failed(f, "tune"),
    }
}
