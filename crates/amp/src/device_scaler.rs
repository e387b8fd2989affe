//! The dynamic loss scaler with its state on the device: no host read inside
//! a step.
//!
//! [`crate::GradScaler`] reads the overflow flag back every step to decide
//! whether to step, which makes the host wait for the GPU. Here the flag, the
//! unscale, the scale update and the skip all stay on the device (as
//! PyTorch's `_amp_foreach_non_finite_check_and_unscale_` and
//! `_amp_update_scale_` do), and the host reads the scale, the growth
//! tracker, the skip count and the last gradient norm only when it asks,
//! with one read ([`DeviceScaler::sync`]): at log steps and epoch ends.

use crate::grads;
use crate::optim::DeviceOptimizer;
use crate::policy::float_dtype;
use crate::readback;
use crate::scaler::{ScalerConfig, ScalerState};
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, DType, Tensor};
use greentrain_foreach::{reference, ForeachBackend, ScaleRule, ScaleState};

/// What the host learns at a sync.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScalerSnapshot {
    /// The scale the next step will use.
    pub scale: f32,
    /// Consecutive clean steps counted towards the next growth.
    pub growth_tracker: u32,
    /// Steps skipped since this scaler was made.
    pub skipped: u64,
    /// The global gradient norm of the last step, when clipping computed it.
    pub grad_norm: Option<f64>,
}

/// Loss scaling with every decision on the device. `B` is the inner
/// (non-autodiff) backend.
#[derive(Clone, Debug)]
pub struct DeviceScaler<B: Backend> {
    config: ScalerConfig,
    enabled: bool,
    scale: Tensor<B, 1>,
    tracker: Tensor<B, 1>,
    skipped: Tensor<B, 1>,
    norm: Option<Tensor<B, 1>>,
}

impl<B: Backend> DeviceScaler<B> {
    /// Restores a saved state on `device` (the skip count starts at 0).
    pub fn from_state(state: &ScalerState, device: &B::Device) -> Self {
        let one = |v: f32| Tensor::<B, 1>::full([1], v, device);
        Self {
            config: state.config.clone(),
            enabled: state.enabled,
            scale: one(state.scale),
            tracker: one(state.growth_tracker as f32),
            skipped: one(0.0),
            norm: None,
        }
    }

    /// Enabled exactly when `precision` needs loss scaling.
    pub fn for_precision(
        precision: crate::Precision,
        config: ScalerConfig,
        device: &B::Device,
    ) -> Self {
        Self::from_state(
            crate::GradScaler::for_precision(precision, config).state(),
            device,
        )
    }

    /// Whether scaling is on.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// `loss * scale` on the device (the loss itself when disabled).
    pub fn scale_loss<AD, const D: usize>(&self, loss: Tensor<AD, D>) -> Tensor<AD, D>
    where
        AD: AutodiffBackend<InnerBackend = B>,
    {
        if !self.enabled {
            return loss;
        }
        let s = self.scale.clone().reshape([1; D]);
        let s = if loss.dtype() == DType::F32 {
            s
        } else {
            s.cast(float_dtype(loss.dtype()))
        };
        loss * Tensor::<AD, D>::from_inner(s)
    }

    /// One optimizer step from scaled gradients, with no read back: unscale
    /// and flag inf/NaN (one foreach call over all gradients, unless the
    /// optimizer steps per parameter), clip by global norm when asked (the
    /// norm is computed only then), step with the flag as the optimizer's
    /// skip mask, and update the scale. Without scaling and clipping this is
    /// a plain step.
    pub fn step<AD, M>(
        &mut self,
        optim: &mut DeviceOptimizer<AD>,
        lr: f64,
        module: M,
        grads: GradientsParams,
        clip_grad_norm: Option<f64>,
    ) -> M
    where
        AD: AutodiffBackend<InnerBackend = B>,
        B: ForeachBackend,
        M: AutodiffModule<AD>,
    {
        if !self.enabled && clip_grad_norm.is_none() {
            return optim.step(lr, module, grads, None);
        }
        let mut grads = grads;
        let found = if self.enabled {
            let inv = self.scale.clone().recip();
            let all = grads::collect::<AD, M>(&module, &grads);
            let (unscaled, found) = if optim.is_foreach() {
                B::foreach_unscale_check(all, inv)
            } else {
                reference::unscale_check(all, inv)
            };
            let mut unscaled = unscaled.into_iter();
            grads = grads::map::<AD, M, _>(&module, grads, |_| {
                unscaled.next().expect("one unscaled gradient per gradient")
            });
            Some(found)
        } else {
            None
        };
        if let Some(max) = clip_grad_norm {
            let norm = grads::global_norm::<AD, M>(&module, &grads);
            let coef = norm
                .clone()
                .add_scalar(1e-6)
                .recip()
                .mul_scalar(max as f32)
                .clamp_max(1.0);
            grads = grads::map::<AD, M, _>(&module, grads, |g| grads::to_f32(g) * coef.clone());
            self.norm = Some(norm);
        }
        let module = optim.step_flagged(lr, module, grads, found.clone());
        if let Some(found) = found {
            self.update_flagged(found, optim.is_foreach());
        }
        module
    }

    /// The scale update on the device, with [`crate::GradScaler::update`]'s
    /// rules: back off on overflow; after `growth_interval` clean steps grow,
    /// unless the grown scale is not finite in f32.
    pub fn update(&mut self, found: Tensor<B, 1, Bool>)
    where
        B: ForeachBackend,
    {
        self.update_flagged(found.float(), true);
    }

    /// [`DeviceScaler::update`] from an f32 flag (above 0: found), in one
    /// kernel (`kernel`) or in tensor ops.
    fn update_flagged(&mut self, found: Tensor<B, 1>, kernel: bool)
    where
        B: ForeachBackend,
    {
        let c = &self.config;
        let rule = ScaleRule {
            growth_factor: c.growth_factor,
            backoff_factor: c.backoff_factor,
            growth_interval: c.growth_interval,
        };
        let state = ScaleState {
            scale: self.scale.clone(),
            tracker: self.tracker.clone(),
            skipped: self.skipped.clone(),
        };
        let next = if kernel {
            B::amp_update_scale(state, found, &rule)
        } else {
            reference::update_scale(state, found, &rule)
        };
        self.scale = next.scale;
        self.tracker = next.tracker;
        self.skipped = next.skipped;
    }

    /// Restarts the skip count (no read).
    pub fn reset_skipped(&mut self) {
        self.skipped = self.skipped.clone().zeros_like();
    }

    /// Reads scale, growth tracker, skip count and last norm in one read.
    pub fn sync(&self) -> ScalerSnapshot {
        let mut parts = vec![
            self.scale.clone(),
            self.tracker.clone(),
            self.skipped.clone(),
        ];
        if let Some(n) = &self.norm {
            parts.push(n.clone());
        }
        let v = readback::read_f32(Tensor::cat(parts, 0));
        ScalerSnapshot {
            scale: v[0],
            growth_tracker: v[1] as u32,
            skipped: v[2] as u64,
            grad_norm: v.get(3).map(|n| *n as f64),
        }
    }

    /// The state to save: one read with scaling on, none without.
    pub fn state(&self) -> ScalerState {
        self.state_at(None)
    }

    /// [`DeviceScaler::state`] from a snapshot just taken by
    /// [`DeviceScaler::sync`], so that it is not read again.
    pub fn state_at(&self, snap: Option<ScalerSnapshot>) -> ScalerState {
        if !self.enabled {
            // Disabled, the device values never change from the identity's.
            return ScalerState {
                enabled: false,
                scale: 1.0,
                growth_tracker: 0,
                config: self.config.clone(),
            };
        }
        let s = snap.unwrap_or_else(|| self.sync());
        ScalerState {
            enabled: true,
            scale: s.scale,
            growth_tracker: s.growth_tracker,
            config: self.config.clone(),
        }
    }
}
