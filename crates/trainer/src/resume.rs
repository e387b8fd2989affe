//! `greentrain resume`: continuing a run from a folder that someone may
//! have edited or crafted since it was written.
//!
//! The config must be the one the run started with (run.json keeps its
//! sha256); a resumed run honours only the changes listed in
//! [`SETTABLE`], made explicitly with `resume --set key=value` and kept in
//! run.json's `config_changes` ([`ConfigChange`]). A run killed before its first checkpoint
//! starts again from step 0 with the same seed, keeping the energy already
//! spent. Nothing in the folder is rewritten until the checkpoint has
//! loaded (`Run::new`). `train::resume_with` continues what
//! `open` accepts.

use crate::checkpoint::{Checkpoint, FILE};
use crate::config::{self, Config};
use crate::files;
use crate::record::{ConfigChange, RunRecord};
use crate::status::RunStatus;
use anyhow::anyhow;
use std::path::Path;
use std::time::SystemTime;

/// The keys `resume --set` may change: what a run can take on midway
/// without training something other than what run.json describes.
pub const SETTABLE: [&str; 3] = ["train.epochs", "budget.max_kwh", "budget.max_co2_g"];

/// A run folder that passed every check `resume` makes before any work,
/// locked: what `train::resume_with` continues.
pub(crate) struct Resumable {
    pub(crate) lock: std::fs::File,
    /// run.json as read, not yet rewritten.
    pub(crate) record: RunRecord,
    /// The config to train on (`--set` applied).
    pub(crate) config: Config,
    /// The `--set` change to record, if any.
    pub(crate) change: Option<ConfigChange>,
    /// None: no checkpoint yet; the run starts again from step 0.
    pub(crate) checkpoint: Option<Checkpoint>,
}

/// Checks `run_dir` for resuming with `sets`: the record, the config
/// against its sha256, the changes asked for, the budget, the lock and the
/// checkpoint (its sealed bytes; its contents are checked when it loads).
pub(crate) fn open(run_dir: &Path, quiet: bool, sets: &[String]) -> anyhow::Result<Resumable> {
    let record = RunRecord::load(run_dir)?;
    if !record.status.resumable() {
        return Err(anyhow!(
            "{} is {}: there is nothing to resume{}",
            run_dir.display(),
            record.status,
            if record.status == RunStatus::Diverged {
                " (its weights are not finite; start again with a lower learning rate or another precision)"
            } else {
                ""
            }
        ));
    }
    let (config, change) = checked_config(run_dir, &record, sets)?;
    if record.status == RunStatus::StoppedBudget && config.budget == record.config.budget {
        return Err(anyhow!(
            "{} stopped at its budget; resuming it as it is would train past it. Raise the budget: greentrain resume {} --set budget.max_kwh=<kWh> (or budget.max_co2_g)",
            run_dir.display(),
            run_dir.display()
        ));
    }
    let lock = files::lock_run(run_dir)?;
    let checkpoint = checkpoint_or_restart(run_dir, &record, quiet)?;
    Ok(Resumable {
        lock,
        record,
        config,
        change,
        checkpoint,
    })
}

/// The run's config.toml, refused if it is not the file the run started
/// with, and with `sets` applied (the change to record, if any).
fn checked_config(
    run_dir: &Path,
    record: &RunRecord,
    sets: &[String],
) -> anyhow::Result<(Config, Option<ConfigChange>)> {
    let path = run_dir.join("config.toml");
    let text = std::fs::read(&path).map_err(|e| anyhow!("{}: cannot read: {e}", path.display()))?;
    let sha = crate::data::sha256_hex(&text);
    if sha != record.config_sha256 {
        return Err(anyhow!(
            "{}: changed since the run started (sha256 {sha}, run.json has {}): a resumed run \
             trains the config it started with. Restore the file (run.json's `config` holds it); \
             to change {} use `greentrain resume {} --set key=value`",
            path.display(),
            record.config_sha256,
            SETTABLE.join(", "),
            run_dir.display()
        ));
    }
    let base = config::load(&path, &[])?.config;
    if sets.is_empty() {
        return Ok((base, None));
    }
    for s in sets {
        let key = s.split_once('=').map_or(s.as_str(), |(k, _)| k).trim();
        if !SETTABLE.contains(&key) {
            return Err(anyhow!(
                "--set {s}: a resumed run can change only {}",
                SETTABLE.join(", ")
            ));
        }
    }
    let new = config::load(&path, sets)?.config;
    if new.train.epochs < base.train.epochs {
        return Err(anyhow!(
            "--set train.epochs={}: a resumed run can train more epochs, not fewer (it has {})",
            new.train.epochs,
            base.train.epochs
        ));
    }
    let change = ConfigChange {
        at: files::rfc3339(SystemTime::now()),
        set: sets.to_vec(),
        after_epochs: record.epochs.len(),
        config_sha256_before: sha,
    };
    Ok((new, Some(change)))
}

/// The run's checkpoint; `None` (start again from step 0) when the previous
/// process was killed before writing its first one.
fn checkpoint_or_restart(
    run_dir: &Path,
    record: &RunRecord,
    quiet: bool,
) -> anyhow::Result<Option<Checkpoint>> {
    let path = run_dir.join(FILE);
    let missing = matches!(std::fs::symlink_metadata(&path), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
    if missing && record.epochs.is_empty() {
        if !quiet {
            eprintln!(
                "{}: no checkpoint (the previous process ended before its first): training again \
                 from step 0 with the same seed; the energy it used is kept",
                run_dir.display()
            );
        }
        return Ok(None);
    }
    Checkpoint::load(run_dir).map(Some)
}
