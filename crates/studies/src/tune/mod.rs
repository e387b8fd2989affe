//! `greentrain tune`: the batch size and precision that reach a target
//! accuracy on the fewest joules.
//!
//! Every setting (batch size x precision, the config's own included as the
//! baseline) trains from the same seeds until the target is met or an epoch
//! limit is reached, as Zeus (NSDI'23) does for batch sizes, but over the
//! trainer's own settings and with each figure's provenance. The setting
//! with the lowest mean joules-to-target among those that reached the target
//! in every repeat is chosen and written as a config to reuse; its saving
//! against the baseline is a paired ratio over the seeds with a 95% interval.
//!
//! [`report`] holds the records, the summary and the files.

pub mod report;

use greentrain_amp::{Precision, PrecisionChoice};
use greentrain_trainer::config::{self, Override};
use greentrain_trainer::device::DeviceSpec;
use greentrain_trainer::status::RunStatus;
use greentrain_trainer::train::{check_precision, train_with, TrainRequest};
use greentrain_trainer::train::{Failure, Hooks};
use greentrain_trainer::LoadedConfig;
pub use report::{SettingSummary, TuneReport, TuneRun};
use std::path::PathBuf;

/// How to tune.
#[derive(Clone, Debug)]
pub struct TuneRequest {
    /// The config file.
    pub config_path: PathBuf,
    /// `--set` overrides, applied to every run and to the written config.
    pub overrides: Vec<Override>,
    /// Accuracy to reach (on the validation split when the config has one).
    pub target_accuracy: f64,
    /// Batch sizes to try (empty: half, the config's own, double).
    pub batch_sizes: Vec<usize>,
    /// Precisions to try (empty: the config's own, fp32, and what `auto`
    /// picks on the device).
    pub precisions: Vec<PrecisionChoice>,
    /// Runs per setting, seeds `run.seed`, `run.seed + 1`, ...
    pub repeats: usize,
    /// Epoch limit per run (default: the config's `train.epochs`).
    pub max_epochs: Option<usize>,
    /// Stop launching runs once the tune has used this much energy.
    pub max_kwh: Option<f64>,
    /// Device.
    pub device: DeviceSpec,
    /// Output folder.
    pub out_dir: PathBuf,
    /// No progress output.
    pub quiet: bool,
}

/// One setting to try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    /// Training batch size.
    pub batch_size: usize,
    /// The precision as it runs on the device.
    pub precision: Precision,
}

fn usage(msg: impl std::fmt::Display) -> Failure {
    Failure::Usage(anyhow::anyhow!("{msg}"))
}

/// The base config text and the checked base config.
fn load_base(req: &TuneRequest) -> Result<(String, LoadedConfig), Failure> {
    let file = req.config_path.display().to_string();
    let src = std::fs::read_to_string(&req.config_path)
        .map_err(|e| usage(format!("{file}: cannot read: {e}")))?;
    let cfg = config::parse_with(&src, &file, &req.overrides).map_err(usage)?;
    if !cfg.energy.enabled {
        return Err(usage(format!(
            "{file}: key 'energy.enabled': tune compares joules, so energy metering must be on"
        )));
    }
    if !(req.target_accuracy > 0.0 && req.target_accuracy <= 1.0) {
        return Err(usage(format!(
            "--target-accuracy must be in (0, 1], not {}",
            req.target_accuracy
        )));
    }
    if req.repeats == 0 || req.max_epochs == Some(0) || req.batch_sizes.contains(&0) {
        return Err(usage(
            "--repeats, --max-epochs and every batch size must be at least 1",
        ));
    }
    let loaded = LoadedConfig {
        config: cfg,
        path: req.config_path.clone(),
    };
    Ok((src, loaded))
}

/// A precision the device refused, with the reason.
type RefusedPrecision = (PrecisionChoice, String);

/// The settings, the baseline first; a precision the device refuses is
/// kept with its reason, so that the table shows it instead of hiding it.
fn plan(
    req: &TuneRequest,
    base: &LoadedConfig,
) -> Result<(Vec<Setting>, Vec<RefusedPrecision>), Failure> {
    let c = &base.config;
    let own = check_precision(req.device, c.precision.mode)?;
    let b = c.data.batch_size;
    let sizes = if req.batch_sizes.is_empty() {
        vec![b, (b / 2).max(1), b * 2]
    } else {
        req.batch_sizes.clone()
    };
    let choices = if req.precisions.is_empty() {
        vec![
            c.precision.mode,
            Precision::Fp32.into(),
            PrecisionChoice::Auto,
        ]
    } else {
        req.precisions.clone()
    };
    let mut precisions = vec![own];
    let mut refused = vec![];
    for ch in choices {
        match check_precision(req.device, ch) {
            Ok(p) if !precisions.contains(&p) => precisions.push(p),
            Ok(_) => {}
            Err(e) => refused.push((ch, e.to_string())),
        }
    }
    let mut settings = vec![Setting {
        batch_size: b,
        precision: own,
    }];
    for &p in &precisions {
        for &bs in &sizes {
            let s = Setting {
                batch_size: bs,
                precision: p,
            };
            if !settings.contains(&s) {
                settings.push(s);
            }
        }
    }
    Ok((settings, refused))
}

/// One override.
fn ov(key: &str, value: toml::Value) -> Override {
    Override {
        key: key.into(),
        value,
    }
}

/// What makes the base config run a setting towards the target: the
/// `--set` overrides, the batch size, the precision and the target. The
/// runs and `chosen.toml` both start from these.
fn setting_overrides(req: &TuneRequest, s: Setting) -> Vec<Override> {
    let mut o = req.overrides.clone();
    o.push(ov(
        "data.batch_size",
        toml::Value::Integer(s.batch_size as i64),
    ));
    o.push(ov(
        "precision.mode",
        toml::Value::String(s.precision.to_string()),
    ));
    o.push(ov(
        "train.target_accuracy",
        toml::Value::Float(req.target_accuracy),
    ));
    o
}

/// The overrides of one run: the setting's, stopping at the target, the
/// seed, the run's name and the epoch limit.
fn run_overrides(req: &TuneRequest, name: &str, s: Setting, seed: u64) -> Vec<Override> {
    let mut o = setting_overrides(req, s);
    o.push(ov("train.stop_at_target", toml::Value::Boolean(true)));
    o.push(ov("run.seed", toml::Value::Integer(seed as i64)));
    o.push(ov(
        "run.name",
        toml::Value::String(format!("{name}-b{}-{}-s{seed}", s.batch_size, s.precision)),
    ));
    if let Some(e) = req.max_epochs {
        o.push(ov("train.epochs", toml::Value::Integer(e as i64)));
    }
    o
}

/// Runs the tune: every setting once per repeat (repeat by repeat, so that
/// a budget stop leaves the settings with equal counts), then the summary,
/// the choice and the files.
pub fn run(req: TuneRequest) -> Result<TuneReport, Failure> {
    let (src, base) = load_base(&req)?;
    if req.out_dir.join("tune.json").exists() {
        return Err(usage(format!(
            "{} holds an earlier tune: use another --out",
            req.out_dir.display()
        )));
    }
    let (settings, refused) = plan(&req, &base)?;
    let mut report = TuneReport::new(&req, &src, &base, &settings, &refused);
    let runs_dir = req.out_dir.join("runs");
    std::fs::create_dir_all(&runs_dir)
        .map_err(|e| usage(format!("cannot create {}: {e}", runs_dir.display())))?;
    let file = req.config_path.display().to_string();
    'repeats: for r in 0..req.repeats {
        let seed = base.config.run.seed + r as u64;
        for &s in &settings {
            if let Some(why) = report.budget_reached(req.max_kwh) {
                report.stopped = Some(why);
                break 'repeats;
            }
            let mut overrides = run_overrides(&req, &base.config.run.name, s, seed);
            if let Some(k) = req.max_kwh {
                let left = (k - report.total_energy_j / 3.6e6).max(1e-12);
                overrides.push(Override {
                    key: "budget.max_kwh".into(),
                    value: toml::Value::Float(left),
                });
            }
            let config = config::parse_with(&src, &file, &overrides).map_err(usage)?;
            if !req.quiet {
                eprintln!(
                    "tune: batch {} {} seed {seed} (repeat {}/{})",
                    s.batch_size,
                    s.precision,
                    r + 1,
                    req.repeats
                );
            }
            let request = TrainRequest {
                config: LoadedConfig {
                    config,
                    path: req.config_path.clone(),
                },
                device: req.device,
                out_dir: runs_dir.clone(),
                quiet: true,
            };
            let outcome = train_with(request, Hooks::default());
            if let Err(Failure::Usage(e)) = &outcome {
                return Err(usage(format!("{e:#}")));
            }
            // What the target is checked on, from the record in memory.
            let metric = outcome
                .as_ref()
                .ok()
                .and_then(|o| o.record.target.as_ref().map(|t| t.metric.to_string()));
            let run = TuneRun::from_outcome(s, seed, outcome);
            let end = match run.status {
                RunStatus::Interrupted => Some("interrupted (Ctrl-C)".to_string()),
                RunStatus::StoppedBudget => Some(format!(
                    "a run stopped at what was left of the {} kWh budget",
                    req.max_kwh.unwrap_or(0.0)
                )),
                _ => None,
            };
            if !req.quiet {
                eprintln!("tune:   {}", run.line());
            }
            report.add(run, metric);
            report
                .write(&req.out_dir)
                .map_err(|e| Failure::Runtime(e.context("writing the tune's files")))?;
            if end.is_some() {
                report.stopped = end;
                break 'repeats;
            }
        }
    }
    report.finish(&src, &base, &req);
    report
        .write(&req.out_dir)
        .map_err(|e| Failure::Runtime(e.context("writing the tune's files")))?;
    Ok(report)
}
