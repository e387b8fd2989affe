//! Automatic mixed precision for Burn 0.21: an autocast op policy and a
//! dynamic loss scaler with PyTorch `torch.amp` semantics.
//!
//! Burn has neither. This crate depends on Burn only and works with any
//! `AutodiffBackend`:
//!
//! ```
//! use burn::backend::{Autodiff, Flex};
//! use burn::nn::LinearConfig;
//! use burn::optim::{AdamConfig, GradientsParams};
//! use burn::tensor::{DType, Int, Tensor};
//! use greentrain_amp::{Autocast, GradScaler, Precision, ScalerConfig};
//!
//! type B = Autodiff<Flex>;
//! let device = Default::default();
//! let precision = Precision::Fp16;
//! precision.check_supported::<B>(&device).unwrap();
//!
//! let model = LinearConfig::new(4, 3).init::<B>(&device);
//! let mut optim = AdamConfig::new().init();
//! let mut scaler = GradScaler::for_precision(precision, ScalerConfig::default());
//! let ac = Autocast::new(precision);
//!
//! let x = Tensor::<B, 2>::ones([2, 4], &device);
//! let y = Tensor::<B, 1, Int>::from_ints([0, 2], &device);
//! let logits = ac.linear(&model, x);            // runs in f16
//! assert_eq!(logits.dtype(), DType::F16);
//! let loss = ac.cross_entropy(logits, y);       // runs in f32
//! assert_eq!(loss.dtype(), DType::F32);
//! let grads = scaler.scale_loss(loss).backward();
//! let grads = GradientsParams::from_grads(grads, &model);
//! let (model, report) = scaler.step(&mut optim, 1e-3, model, grads, Some(1.0));
//! assert!(!report.skipped);
//! # let _ = model;
//! ```

mod backend;
mod device_scaler;
pub mod grads;
mod norm;
mod optim;
mod policy;
mod products;
pub mod readback;
mod scaler;
mod sums;

pub use backend::{autocast, autocast_dtype, rule, rules, use_kernels, Amp, AutocastGuard, Rule};
pub use device_scaler::{DeviceScaler, ScalerSnapshot};
/// How [`Autocast::conv2d`] computes a convolution.
pub use greentrain_flexconv::ConvPath;
pub use norm::{batch_norm, batch_norm_add_relu, batch_norm_relu};
pub use optim::{DeviceOptimizer, OptimizerRecord, OptimizerSpec};
pub use policy::{wider, Autocast, Precision, PrecisionChoice, UnsupportedPrecision};
pub use scaler::{GradScaler, ScalerConfig, ScalerConfigError, ScalerState, StepReport};

/// The foreach operations the device scaler and optimizer run on.
pub use greentrain_foreach::ForeachBackend;

/// Matrix products through a chosen kernel ([`Autocast::matmul`] and
/// [`Autocast::linear`] run through them).
pub use greentrain_matmul::{matmul, MatmulBackend, MatmulKernel};

/// An autodiff backend whose inner backend has the foreach operations
/// ([`DeviceScaler`] and [`DeviceOptimizer`] step through them) and whose
/// products can go through greentrain-matmul's kernels: Burn's `Autodiff`
/// over Flex, cuda or wgpu (with or without fusion), or over any backend
/// with an `impl ForeachBackend` and an `impl MatmulBackend`.
pub trait AmpBackend:
    burn::tensor::backend::AutodiffBackend<InnerBackend: ForeachBackend + MatmulBackend> + MatmulBackend
{
}

impl<B> AmpBackend for B where
    B: burn::tensor::backend::AutodiffBackend<InnerBackend: ForeachBackend + MatmulBackend>
        + MatmulBackend
{
}

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
