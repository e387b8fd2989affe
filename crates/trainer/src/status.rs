//! How a run stands: one enum for run.json's `status`, sweeps' trials and
//! the CLI's exit codes, instead of string literals in every file.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A run's (or a sweep trial's) state. Serialised in snake case, as
/// `docs/run-record.md` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Training (or crashed while training: nothing updated the record).
    Running,
    /// Checkpointed and waiting for the next slot of a carbon-aware plan.
    Paused,
    /// Every epoch trained.
    Completed,
    /// Stopped by Ctrl-C (or a request) at a step boundary, checkpointed.
    Interrupted,
    /// Stopped at an epoch end by an energy or carbon budget.
    StoppedBudget,
    /// Stopped at an epoch end because the training loss was not finite.
    Diverged,
    /// Stopped at an epoch end by a sweep's pruner.
    Pruned,
    /// A run-time error ended it (`error` says which).
    Failed,
    /// Ended at the epoch where `train.target_accuracy` was met, as
    /// `train.stop_at_target` asks.
    ReachedTarget,
}

impl RunStatus {
    /// All states, in declaration order.
    pub const ALL: [RunStatus; 9] = [
        RunStatus::Running,
        RunStatus::Paused,
        RunStatus::Completed,
        RunStatus::Interrupted,
        RunStatus::StoppedBudget,
        RunStatus::Diverged,
        RunStatus::Pruned,
        RunStatus::Failed,
        RunStatus::ReachedTarget,
    ];

    /// The name in run.json.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Paused => "paused",
            RunStatus::Completed => "completed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::StoppedBudget => "stopped_budget",
            RunStatus::Diverged => "diverged",
            RunStatus::Pruned => "pruned",
            RunStatus::Failed => "failed",
            RunStatus::ReachedTarget => "reached_target",
        }
    }

    /// Whether `greentrain resume` can continue it from its checkpoint:
    /// not a finished run, nor one whose weights are no longer finite.
    pub fn resumable(self) -> bool {
        !matches!(
            self,
            RunStatus::Completed | RunStatus::Diverged | RunStatus::ReachedTarget
        )
    }

    /// Whether the process that set it is done with the run (it writes
    /// `finished_at`); a paused run is only waiting.
    pub fn is_final(self) -> bool {
        !matches!(self, RunStatus::Running | RunStatus::Paused)
    }

    /// The CLI's exit status for a run that ended so: 0 completed, 1
    /// diverged or failed, 3 stopped by a budget, 130 interrupted (as a
    /// shell reports SIGINT).
    pub fn exit_code(self) -> u8 {
        match self {
            RunStatus::Completed | RunStatus::Pruned | RunStatus::ReachedTarget => 0,
            RunStatus::Diverged | RunStatus::Failed | RunStatus::Running => 1,
            RunStatus::StoppedBudget => 3,
            RunStatus::Interrupted | RunStatus::Paused => 130,
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        RunStatus::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = RunStatus::ALL.iter().map(|v| v.as_str()).collect();
                format!("'{s}' is not a run status ({})", names.join(", "))
            })
    }
}

/// Lets records be compared with the names users read in run.json.
impl PartialEq<&str> for RunStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_match_serde() {
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>(), Ok(s));
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<RunStatus>(&json).unwrap(), s);
        }
        assert!("done"
            .parse::<RunStatus>()
            .unwrap_err()
            .contains("stopped_budget"));
        assert!(!RunStatus::Diverged.resumable() && RunStatus::Interrupted.resumable());
        assert_eq!(RunStatus::Diverged.exit_code(), 1);
    }
}
