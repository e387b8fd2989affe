//! `[kernels]`: which of greentrain's own GPU kernels a run uses. Each is a
//! switch so that a GPU benchmark can measure what it gains alone; flex
//! computes the same arithmetic in tensor ops either way.

use greentrain_amp::MatmulKernel;
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
    /// Matrix products (matmul, linear, forward and both gradients):
    /// `"auto"` (greentrain-matmul's table: a measured faster cubek kernel
    /// where the device and dtype have one, Burn's product elsewhere),
    /// `"burn"` (Burn's product everywhere), or a kernel of
    /// `greentrain matmul --kernels` by name.
    #[serde(default, with = "kernel_name")]
    pub matmul: MatmulKernel,
    /// Long sums on cuda and wgpu (bias gradients over the batch, layer and
    /// batch norm statistics and parameter gradients, the loss's mean, each
    /// of 512 values or more): `"two-stage"` sums about `sqrt(len)` values
    /// per thread twice; `"burn"`, Burn's one reduction with one thread per
    /// output looping over all of them.
    #[serde(default)]
    pub sums: Sums,
}

/// How long sums run on the CubeCL backends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sums {
    #[default]
    TwoStage,
    Burn,
}

/// `MatmulKernel` as its name.
mod kernel_name {
    use greentrain_amp::MatmulKernel;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(k: &MatmulKernel, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(k)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MatmulKernel, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

fn on() -> bool {
    true
}

impl Default for KernelsSection {
    fn default() -> Self {
        Self {
            foreach: on(),
            matmul: MatmulKernel::Auto,
            sums: Sums::TwoStage,
        }
    }
}
