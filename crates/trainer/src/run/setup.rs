//! What a run starts from and how it ends: the [`Setup`] that the entry
//! points in `train.rs` build, the [`Outcome`] or [`Failure`] a run
//! returns, the [`Hooks`] that programs embedding the trainer pass in, and
//! the interrupt flag that Ctrl-C (and SIGTERM and SIGHUP: ctrlc's `termination` feature) sets.

use crate::checkpoint::Checkpoint;
use crate::config::Config;
use crate::data::Dataset;
use crate::record::RunRecord;
use crate::status::RunStatus;
use greentrain_amp::Precision;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// How it ended (or stopped for now).
    pub status: RunStatus,
    /// The record as last written.
    pub record: RunRecord,
}

/// Decides after each epoch whether a run goes on: `Some(status)` stops it
/// there with that status (a sweep prunes trials this way).
pub type AfterEpoch = Arc<dyn Fn(&RunRecord) -> Option<RunStatus> + Send + Sync>;

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
/// When the pending interrupt arrived by signal (None: none, or asked for in-process).
static FIRST_SIGNAL: Mutex<Option<Instant>> = Mutex::new(None);
/// A repeat this soon is the same interrupt delivered twice, not a second
/// Ctrl-C: `timeout -s INT` signals the process and then its process group,
/// and a shell's Ctrl-C reaches every process of the foreground group.
const SAME_INTERRUPT: Duration = Duration::from_secs(1);

/// Whether a repeated interrupt, `since` the first one, aborts the run.
fn repeat_aborts(since: Option<Duration>) -> bool {
    since.is_none_or(|d| d >= SAME_INTERRUPT)
}

/// Asks a running training loop (in this process) to checkpoint at its next
/// step boundary and stop, as Ctrl-C does. For programs embedding the
/// trainer.
pub fn request_interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Whether an interrupt is pending.
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Clears a pending interrupt request.
pub fn clear_interrupt() {
    INTERRUPTED.store(false, Ordering::SeqCst);
    *FIRST_SIGNAL.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Installs the Ctrl-C handler: the loop checkpoints at the next step
/// boundary and the record says `interrupted`.
pub fn install_interrupt_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            let mut first = FIRST_SIGNAL.lock().unwrap_or_else(|e| e.into_inner());
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                if !repeat_aborts(first.map(|t| t.elapsed())) {
                    return;
                }
                eprintln!("second interrupt: exiting without checkpoint");
                std::process::exit(130);
            }
            *first = Some(Instant::now());
            eprintln!(
                "\ninterrupt: checkpointing at the next step boundary (Ctrl-C again, a second later, to abort)"
            );
        });
    });
}

/// Everything a run needs before the backend is chosen.
pub(crate) struct Setup {
    /// Held for the whole run: no second process trains it.
    pub(crate) lock: std::fs::File,
    /// The device it trains on (run.json keeps it as text).
    pub(crate) spec: crate::device::DeviceSpec,
    pub(crate) intensity: greentrain_energy::carbon::Intensity,
    /// The mode that runs (`config.precision.mode` resolved on the device).
    pub(crate) precision: Precision,
    pub(crate) config: Config,
    pub(crate) config_dir: PathBuf,
    pub(crate) dataset: Dataset,
    pub(crate) run_dir: PathBuf,
    pub(crate) record: RunRecord,
    /// The checkpoint to continue from (none: from step 0).
    pub(crate) resume: Option<Checkpoint>,
    /// A later process of an existing run: its energy so far is kept, and
    /// run.json is rewritten once the checkpoint has loaded.
    pub(crate) resumed: bool,
    /// A changed config.toml to write with it (`resume --set`).
    pub(crate) config_text: Option<String>,
    pub(crate) quiet: bool,
    pub(crate) hooks: Hooks,
    /// The previous process of a resumed run ended without recording an
    /// end (killed while running or paused).
    pub(crate) killed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_within_a_second_is_the_same_interrupt() {
        assert!(!repeat_aborts(Some(Duration::from_millis(5))));
        assert!(!repeat_aborts(Some(Duration::from_millis(999))));
        assert!(repeat_aborts(Some(SAME_INTERRUPT)));
        assert!(repeat_aborts(Some(Duration::from_secs(3))));
        // Asked for in-process (request_interrupt), then a signal: aborts.
        assert!(repeat_aborts(None));
    }
}
