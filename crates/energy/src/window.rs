//! The measurement windows of a training run, as a type: built in one
//! place, printed with the names run.json has always recorded
//! (`train/epoch-3`), and read back from them, so that a report matches on
//! the kind of window rather than on a string it formats itself.

use std::fmt;
use std::str::FromStr;

/// One window of a run. Epochs count from 1.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Window {
    /// The training steps of an epoch.
    Train {
        /// The epoch.
        epoch: usize,
    },
    /// Evaluation after an epoch.
    Eval {
        /// The epoch.
        epoch: usize,
    },
    /// Writing a checkpoint: after `epoch` epochs (0 when interrupted in
    /// the first).
    Checkpoint {
        /// Epochs finished.
        epoch: usize,
    },
    /// Waiting for a carbon-aware slot before `step` of an epoch: recorded,
    /// kept out of the run's totals.
    Wait {
        /// The epoch.
        epoch: usize,
        /// The step (from 0).
        step: usize,
    },
    /// A window a library user names.
    Named(String),
}

impl Window {
    /// Whether this window waits for a slot rather than works.
    pub fn is_wait(&self) -> bool {
        matches!(self, Window::Wait { .. })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Window::Train { epoch } => write!(f, "train/epoch-{epoch}"),
            Window::Eval { epoch } => write!(f, "eval/epoch-{epoch}"),
            Window::Checkpoint { epoch } => write!(f, "checkpoint/epoch-{epoch}"),
            Window::Wait { epoch, step } => write!(f, "wait/epoch-{epoch}-step-{step}"),
            Window::Named(name) => f.write_str(name),
        }
    }
}

impl FromStr for Window {
    type Err = std::convert::Infallible;

    /// The window a recorded name stands for; a name of no known form is
    /// [`Window::Named`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let num = |v: &str| v.parse::<usize>().ok();
        let parsed = match s.split_once("/epoch-") {
            Some(("train", e)) => num(e).map(|epoch| Window::Train { epoch }),
            Some(("eval", e)) => num(e).map(|epoch| Window::Eval { epoch }),
            Some(("checkpoint", e)) => num(e).map(|epoch| Window::Checkpoint { epoch }),
            Some(("wait", rest)) => rest.split_once("-step-").and_then(|(e, st)| {
                Some(Window::Wait {
                    epoch: num(e)?,
                    step: num(st)?,
                })
            }),
            _ => None,
        };
        Ok(parsed.unwrap_or_else(|| Window::Named(s.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_as_the_window_they_print() {
        for w in [
            Window::Train { epoch: 3 },
            Window::Eval { epoch: 1 },
            Window::Checkpoint { epoch: 0 },
            Window::Wait { epoch: 2, step: 17 },
            Window::Named("warm-up".into()),
        ] {
            assert_eq!(w.to_string().parse::<Window>(), Ok(w.clone()));
        }
        assert_eq!(Window::Train { epoch: 12 }.to_string(), "train/epoch-12");
        assert_eq!(
            "train/epoch-x".parse::<Window>(),
            Ok(Window::Named("train/epoch-x".into()))
        );
    }
}
