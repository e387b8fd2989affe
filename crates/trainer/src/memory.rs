//! A size check before the run folder exists: a config whose model cannot
//! fit the machine is refused (exit 2) instead of aborting on allocation
//! and leaving a `running` folder behind (`hidden = [1000000000]`).
//!
//! The estimate is a lower bound from the config alone (nothing is
//! allocated): parameters with their gradient, two Adam moments and a
//! 16-bit copy (18 bytes each), and one f32 activation per unit and sample
//! of a batch, kept for backward. It refuses what is certainly too large,
//! not what might be.

use crate::config::{ModelKind, ModelSection};
use crate::device::DeviceSpec;

/// Bytes per parameter: f32 weight and gradient, two f32 moments, a 16-bit copy.
const PER_PARAM: u128 = 18;

/// Parameters and activations (values per sample) the config's model has
/// at least; `None` for the fixed small models.
fn counts(
    spec: &ModelSection,
    shape: &[usize],
    classes: usize,
    vocab: Option<usize>,
) -> Option<(u128, u128)> {
    let features: u128 = shape.iter().map(|&d| d as u128).product();
    let classes = classes as u128;
    match spec.kind {
        ModelKind::Mlp => {
            let widths: Vec<u128> = std::iter::once(features)
                .chain(spec.hidden.iter().map(|&h| h as u128))
                .chain(std::iter::once(classes))
                .collect();
            let params = widths.windows(2).map(|w| w[0] * w[1] + w[1]).sum();
            Some((params, widths.iter().sum()))
        }
        ModelKind::Transformer => {
            let t = spec.transformer();
            let (d, f, l) = (t.d_model as u128, t.d_mlp as u128, t.layers as u128);
            let v = spec.vocab.or(vocab).unwrap_or(0) as u128;
            let seq = spec
                .context
                .unwrap_or(0)
                .max(shape.first().copied().unwrap_or(0)) as u128;
            let params = v * d + seq * d + l * (4 * d * d + 2 * d * f) + d * classes;
            let heads = t.heads as u128;
            Some((params, seq * (l * (4 * d + f + heads * seq) + d)))
        }
        ModelKind::Resnet => {
            let w = spec.width.unwrap_or(16) as u128;
            let depth = spec.depth.unwrap_or(20) as u128;
            // Stage widths w, 2w, 4w over thirds of the layers, 3x3 kernels.
            let params = depth / 3 * 9 * (w * w + 4 * w * w + 16 * w * w) + 4 * w * classes;
            Some((params, features * w * depth))
        }
        ModelKind::Lenet5 | ModelKind::Mnist1dCnn | ModelKind::Own => None,
    }
}

/// The bytes training `spec` at `batch` needs at least.
pub fn estimate(
    spec: &ModelSection,
    shape: &[usize],
    classes: usize,
    vocab: Option<usize>,
    batch: usize,
) -> u128 {
    counts(spec, shape, classes, vocab).map_or(0, |(params, acts)| {
        params * PER_PARAM + acts * batch as u128 * 4
    })
}

/// Memory the device can give a run, when known: the CPU's available
/// memory (`MemAvailable`), a CUDA device's total memory (the driver's
/// `cuDeviceTotalMem`); wgpu does not say.
fn available(spec: DeviceSpec) -> Option<u128> {
    match spec {
        DeviceSpec::Cpu => {
            let text = std::fs::read_to_string("/proc/meminfo").ok()?;
            let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
            let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        }
        DeviceSpec::Cuda(n) => {
            let probe = crate::device::probe_cuda().ok()?;
            probe.gpus.get(n)?.total_memory.map(u128::from)
        }
        DeviceSpec::Wgpu => None,
    }
}

/// The host memory available now (`MemAvailable`), or no bound where the
/// system does not say: what a data file may make greentrain allocate.
pub fn available_bytes() -> u64 {
    available(DeviceSpec::Cpu).map_or(u64::MAX, |b| b.min(u64::MAX as u128) as u64)
}

/// Refuses a model that cannot fit: what the estimate says, and what the
/// device has. On devices whose memory is not known (wgpu), only a model
/// past any device's memory (4 TiB) is refused.
pub fn check(
    spec: &ModelSection,
    shape: &[usize],
    classes: usize,
    vocab: Option<usize>,
    batch: usize,
    device: DeviceSpec,
) -> Result<(), String> {
    // More than any one accelerator holds (the largest: under 300 GB).
    const TIB4: u128 = 4 << 40;
    let need = estimate(spec, shape, classes, vocab, batch);
    let (have, which) = match available(device) {
        Some(b) => (b, format!("{device} has {}", gib(b))),
        None => (TIB4, "4 TiB is more than any device has".to_string()),
    };
    if need > have {
        return Err(format!(
            "model.{}: training it at batch {batch} needs at least {} (parameters with gradients \
             and optimizer state, and activations), and {which}: make it smaller",
            match spec.kind {
                ModelKind::Mlp => "hidden",
                _ => "kind",
            },
            gib(need)
        ));
    }
    Ok(())
}

fn gib(b: u128) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mlp(hidden: Vec<usize>) -> ModelSection {
        let mut s: ModelSection = toml::from_str("kind = \"mlp\"").unwrap();
        s.hidden = hidden;
        s
    }

    #[test]
    fn a_billion_wide_layer_is_refused_and_a_small_one_is_not() {
        // 784 -> 10^9 -> 10: 7.9e11 parameters, 14 TB with their state.
        let e = check(
            &mlp(vec![1_000_000_000]),
            &[28, 28],
            10,
            None,
            64,
            DeviceSpec::Cpu,
        );
        assert!(e.unwrap_err().contains("model.hidden"));
        let e = check(
            &mlp(vec![1_000_000_000]),
            &[28, 28],
            10,
            None,
            64,
            DeviceSpec::Wgpu,
        );
        assert!(e.is_err(), "past any machine's memory on every device");
        assert!(check(&mlp(vec![800]), &[28, 28], 10, None, 64, DeviceSpec::Cpu).is_ok());
        // 784*800+800 + 800*10+10 parameters, 18 bytes each, and 1594 units x 64 x 4.
        assert_eq!(
            estimate(&mlp(vec![800]), &[28, 28], 10, None, 64),
            (784 * 800 + 800 + 800 * 10 + 10) * 18 + (784 + 800 + 10) * 64 * 4
        );
    }
}
