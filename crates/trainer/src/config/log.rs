//! `[log]`: where a run's curves go besides run.json and metrics.csv.

use serde::{Deserialize, Serialize};

/// `[log]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// TensorBoard event files in `<run>/tensorboard/`: the training loss,
    /// samples/s and loss scale at each log step; per epoch the losses,
    /// accuracies, energy (J and mean W, described with their provenance)
    /// and CO2 (g). `tensorboard --logdir runs` shows every run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tensorboard: bool,
}

impl LogSection {
    /// Nothing asked for: the section is left out of a run's config.toml.
    pub fn is_default(&self) -> bool {
        self == &Self::default()
    }
}
