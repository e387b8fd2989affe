//! The state a run saves and restores: the optimizer it builds from the
//! config, model and optimizer records as bytes, and the learning rate at
//! each step.

use crate::config::{Config, OptimizerKind, Schedule};
use crate::model::Model;
use anyhow::anyhow;
use burn::module::Module;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use greentrain_amp::{DeviceOptimizer, OptimizerSpec};

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

pub(crate) fn load_optim<B: AutodiffBackend>(
    o: DeviceOptimizer<B>,
    bytes: Vec<u8>,
    device: &B::Device,
) -> anyhow::Result<DeviceOptimizer<B>> {
    let rec = Recorder::<B::InnerBackend>::load(&Rec::default(), bytes, device)?;
    o.load_record(rec).map_err(|e| anyhow!(e))
}

/// Model weights as bytes (the checkpoint's model part).
pub fn model_bytes<B: Backend>(m: &Model<B>) -> Vec<u8> {
    Recorder::<B>::record(&Rec::default(), m.clone().into_record(), ()).expect("in-memory record")
}

pub(crate) fn load_model<B: Backend>(
    m: Model<B>,
    bytes: Vec<u8>,
    device: &B::Device,
) -> anyhow::Result<Model<B>> {
    let rec = Recorder::<B>::load(&Rec::default(), bytes, device)?;
    Ok(m.load_record(rec))
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
    }
}
