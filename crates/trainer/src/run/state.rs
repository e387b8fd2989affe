//! The state a run saves and restores: the optimizer it builds from the
//! config, model and optimizer records as bytes, and the learning rate at
//! each step.

use crate::config::{Config, OptimizerKind, Schedule};

use anyhow::anyhow;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::record::{BinBytesRecorder, BurnRecord, FullPrecisionSettings, Record, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor};
use greentrain_amp::{DeviceOptimizer, OptimizerSpec};
use serde::de::DeserializeOwned;
use std::panic::{catch_unwind, AssertUnwindSafe};

type Rec = BinBytesRecorder<FullPrecisionSettings>;

/// The configured optimizer, with its state on the device.
pub(crate) fn optimizer_spec(c: &Config) -> OptimizerSpec {
    let t = &c.train;
    let [beta1, beta2] = t.betas.unwrap_or([0.9, 0.999]);
    match t.optimizer {
        OptimizerKind::Sgd => OptimizerSpec::Sgd {
            momentum: None,
            weight_decay: t.weight_decay,
        },
        OptimizerKind::Momentum => OptimizerSpec::Sgd {
            momentum: Some(t.momentum),
            weight_decay: t.weight_decay,
        },
        // PyTorch's epsilon (1e-8), not Burn's default (1e-5).
        OptimizerKind::Adam => OptimizerSpec::Adam {
            beta1,
            beta2,
            epsilon: 1e-8,
            weight_decay: t.weight_decay,
        },
        OptimizerKind::Adamw => OptimizerSpec::AdamW {
            beta1,
            beta2,
            epsilon: 1e-8,
            weight_decay: t.weight_decay,
        },
    }
}

pub(crate) fn optim_bytes<B: AutodiffBackend>(o: &DeviceOptimizer<B>) -> Vec<u8> {
    Recorder::<B::InnerBackend>::record(&Rec::default(), o.to_record(), ())
        .expect("in-memory record")
}

/// Restores the optimizer from checkpoint bytes, refusing state that does
/// not fit `model` (already restored).
pub(crate) fn load_optim<B: AutodiffBackend, M: AutodiffModule<B>>(
    o: DeviceOptimizer<B>,
    bytes: &[u8],
    model: &M,
    device: &B::Device,
) -> anyhow::Result<DeviceOptimizer<B>> {
    let rec = decode_record::<B::InnerBackend, _>(bytes, device)?;
    let o = o.load_record(rec).map_err(|e| anyhow!(e))?;
    o.check_for(model).map_err(|e| anyhow!(e))?;
    Ok(o)
}

/// Model weights as bytes (the checkpoint's model part).
pub fn model_bytes<B: Backend, M: Module<B>>(m: &M) -> Vec<u8> {
    Recorder::<B>::record(&Rec::default(), m.clone().into_record(), ()).expect("in-memory record")
}

/// Restores `m` (built from the config) from checkpoint bytes: every tensor
/// must come back with the shape and dtype the config's model has.
pub(crate) fn load_model<B: Backend, M: Module<B>>(
    m: M,
    bytes: &[u8],
    device: &B::Device,
) -> anyhow::Result<M> {
    let rec = decode_record::<B, _>(bytes, device)?;
    let want = shapes::<B, M>(&m);
    let loaded = quietly(|| m.load_record(rec))
        .ok_or_else(|| anyhow!("its tensors do not fit the model the config builds"))?;
    let got = shapes::<B, M>(&loaded);
    if got.len() != want.len() {
        return Err(anyhow!(
            "it holds {} tensors, the model the config builds has {}",
            got.len(),
            want.len()
        ));
    }
    if let Some((i, (g, w))) = got.iter().zip(&want).enumerate().find(|(_, (g, w))| g != w) {
        return Err(anyhow!(
            "its tensor {i} is {:?} {:?}, the model the config builds has {:?} {:?}",
            g.0,
            g.1,
            w.0,
            w.1
        ));
    }
    Ok(loaded)
}

/// Every float tensor's shape and dtype, in the module's order.
fn shapes<B: Backend, M: Module<B>>(m: &M) -> Vec<(Vec<usize>, DType)> {
    struct Shapes(Vec<(Vec<usize>, DType)>);
    impl<B: Backend> ModuleVisitor<B> for Shapes {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            let t = p.val();
            self.0.push((t.dims().to_vec(), t.dtype()));
        }
    }
    let mut v = Shapes(Vec::new());
    m.visit(&mut v);
    v.0
}

/// Decodes a record written by `BinBytesRecorder` (full precision) as Burn
/// would, but as untrusted input: bincode's allocation limit scaled to the
/// bytes at hand (a length field claiming a terabyte is an error, not an
/// abort), every byte consumed, and a malformed tensor an error, not a panic.
fn decode_record<B: Backend, R: Record<B>>(bytes: &[u8], device: &B::Device) -> anyhow::Result<R> {
    type Item<B, R> = BurnRecord<<R as Record<B>>::Item<FullPrecisionSettings>, B>;
    // Burn's tensor deserialisation panics on bytes that do not fit their
    // dtype: caught, as a decoding error.
    let (rec, used) = quietly(|| decode_limited::<Item<B, R>>(bytes))
        .ok_or_else(|| {
            anyhow!("its record cannot be decoded: a tensor's bytes do not fit its type")
        })?
        .map_err(|e| anyhow!("its record cannot be decoded: {e}"))?;
    if used != bytes.len() {
        return Err(anyhow!(
            "its record has {} bytes after its end",
            bytes.len() - used
        ));
    }
    quietly(|| R::from_item(rec.item, device))
        .ok_or_else(|| anyhow!("its record holds a malformed tensor"))
}

/// `f`, with a panic inside it (Burn's record code panics on malformed
/// input) turned into `None` and kept off the terminal: the caller reports
/// it as the file's error.
fn quietly<T>(f: impl FnOnce() -> T) -> Option<T> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let out = catch_unwind(AssertUnwindSafe(f)).ok();
    std::panic::set_hook(hook);
    out
}

/// bincode's standard decoding (Burn's `bin_config`) with a limit on what
/// length fields may make it allocate: at least 64 times the input, so no
/// valid record is refused and no crafted one allocates more than that.
fn decode_limited<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    use bincode::config::standard;
    use bincode::serde::decode_from_slice;
    const MIB: usize = 1 << 20;
    match bytes.len() {
        n if n <= MIB => decode_from_slice(bytes, standard().with_limit::<{ 64 * MIB }>()),
        n if n <= 64 * MIB => decode_from_slice(bytes, standard().with_limit::<{ 4096 * MIB }>()),
        n if n <= 1024 * MIB => {
            decode_from_slice(bytes, standard().with_limit::<{ 65536 * MIB }>())
        }
        _ => decode_from_slice(bytes, standard().with_limit::<{ 1 << 40 }>()),
    }
}

/// Learning rate at optimizer step `step` (0-based) in epoch `epoch`.
pub fn lr_at(c: &Config, step: u64, total_steps: u64, epoch: usize) -> f64 {
    let t = &c.train;
    let warm = t.warmup_steps;
    if step < warm {
        // The factor first, as LambdaLR multiplies: the same rounding.
        return t.lr * (step as f64 / warm as f64);
    }
    match t.schedule {
        Schedule::Constant => t.lr,
        Schedule::Cosine => {
            let after = (step - warm) as f64 / total_steps.saturating_sub(warm).max(1) as f64;
            t.lr * 0.5 * (1.0 + (std::f64::consts::PI * after.min(1.0)).cos())
        }
        Schedule::Step => t.lr * t.gamma.powi((epoch / t.step_epochs) as i32),
        Schedule::Milestones => {
            let passed = t.milestones.iter().filter(|&&m| step >= m).count();
            t.lr * t.gamma.powi(passed as i32)
        }
    }
}
