//! `[kernels]`: which of greentrain's own GPU kernels a run uses. Each is a
//! switch so that a GPU benchmark can measure what it gains alone; flex
//! computes the same arithmetic in tensor ops either way.

use serde::{Deserialize, Serialize};

/// `[kernels]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelsSection {
    /// The loss scaler's unscale and inf/NaN check and the optimizer step
    /// over all parameters at once (greentrain-foreach: one launch per group
    /// of tensors on cuda and wgpu). `false`: one set of tensor ops per
    /// parameter, as before.
    #[serde(default = "on")]
    pub foreach: bool,
}

fn on() -> bool {
    true
}

impl Default for KernelsSection {
    fn default() -> Self {
        Self { foreach: on() }
    }
}
