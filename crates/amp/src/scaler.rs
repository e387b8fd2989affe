//! Dynamic loss scaling, with the semantics of PyTorch's `GradScaler`.
//!
//! fp16 has a 5-bit exponent: gradients below about 6e-8 flush to zero.
//! Multiplying the loss by a large scale lifts them into range; the scaler
//! divides it out of the gradients before the optimizer sees them, skips
//! any step whose gradients overflowed, and adapts the scale.

use crate::grads::{self, GradInspection};
use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Scaler settings (PyTorch's defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalerConfig {
    /// Starting scale (default 65536 = 2^16).
    pub init_scale: f64,
    /// Factor applied after `growth_interval` clean steps (default 2).
    pub growth_factor: f64,
    /// Factor applied after an overflow (default 0.5).
    pub backoff_factor: f64,
    /// Clean steps between growths (default 2000).
    pub growth_interval: u32,
}

impl Default for ScalerConfig {
    fn default() -> Self {
        Self {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

/// A scaler setting out of range: which one, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalerConfigError {
    /// The field (`init_scale`, `growth_factor`, `backoff_factor`,
    /// `growth_interval`), as a config names it.
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for ScalerConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.key, self.message)
    }
}

impl std::error::Error for ScalerConfigError {}

impl ScalerConfig {
    /// Checks the settings; the error names the offending key.
    pub fn validate(&self) -> Result<(), ScalerConfigError> {
        let bad = |key, message: String| Err(ScalerConfigError { key, message });
        if !(self.init_scale.is_finite() && self.init_scale > 0.0)
            || self.init_scale > f32::MAX as f64
        {
            return bad(
                "init_scale",
                format!("must be a positive finite f32, got {}", self.init_scale),
            );
        }
        if !(self.growth_factor > 1.0 && self.growth_factor.is_finite()) {
            return bad(
                "growth_factor",
                format!("must be > 1, got {}", self.growth_factor),
            );
        }
        if !(self.backoff_factor > 0.0 && self.backoff_factor < 1.0) {
            return bad(
                "backoff_factor",
                format!("must be in (0, 1), got {}", self.backoff_factor),
            );
        }
        if self.growth_interval == 0 {
            return bad("growth_interval", "must be at least 1".into());
        }
        Ok(())
    }
}

/// What checkpoints store: enough to continue exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalerState {
    /// Whether scaling is on (fp16) or the scaler is the identity.
    pub enabled: bool,
    /// Current scale (an f32, as in PyTorch).
    pub scale: f32,
    /// Consecutive clean steps since the last growth or backoff.
    pub growth_tracker: u32,
    /// The settings in force.
    pub config: ScalerConfig,
}

/// What happened at one optimizer step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// The step was skipped because a gradient was inf or NaN.
    pub skipped: bool,
    /// The scale used for this step's backward pass.
    pub scale_used: f32,
    /// Global gradient norm after unscaling, when it was computed.
    pub grad_norm: Option<f64>,
    /// Gradients were clipped.
    pub clipped: bool,
}

/// The dynamic loss scaler. Disabled (`GradScaler::identity`) it scales by
/// 1, never inspects and never skips: the fp32 and bf16 path costs nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct GradScaler {
    state: ScalerState,
}

impl GradScaler {
    /// An enabled scaler.
    pub fn new(config: ScalerConfig) -> Self {
        Self {
            state: ScalerState {
                enabled: true,
                scale: config.init_scale as f32,
                growth_tracker: 0,
                config,
            },
        }
    }

    /// A scaler that does nothing (fp32, bf16).
    pub fn identity() -> Self {
        Self {
            state: ScalerState {
                enabled: false,
                scale: 1.0,
                growth_tracker: 0,
                config: ScalerConfig::default(),
            },
        }
    }

    /// Enabled exactly when `precision` needs loss scaling.
    pub fn for_precision(precision: crate::Precision, config: ScalerConfig) -> Self {
        if precision.needs_loss_scaling() {
            Self::new(config)
        } else {
            Self::identity()
        }
    }

    /// Restores a saved state.
    pub fn from_state(state: ScalerState) -> Self {
        Self { state }
    }

    /// The state to save.
    pub fn state(&self) -> &ScalerState {
        &self.state
    }

    /// Whether scaling is on.
    pub fn is_enabled(&self) -> bool {
        self.state.enabled
    }

    /// The current scale (1 when disabled).
    pub fn scale(&self) -> f32 {
        self.state.scale
    }

    /// Consecutive clean steps counted towards the next growth.
    pub fn growth_tracker(&self) -> u32 {
        self.state.growth_tracker
    }

    /// `loss * scale` (the loss itself when disabled).
    pub fn scale_loss<B: Backend, const D: usize>(&self, loss: Tensor<B, D>) -> Tensor<B, D> {
        if self.state.enabled {
            loss.mul_scalar(self.state.scale)
        } else {
            loss
        }
    }

    /// Divides the scale out of every gradient, once. The reciprocal is
    /// computed in f64 and rounded once.
    pub fn unscale<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        module: &M,
        grads: GradientsParams,
    ) -> GradientsParams {
        if !self.state.enabled {
            return grads;
        }
        let inv = 1.0f64 / self.state.scale as f64;
        grads::scale::<B, M>(module, grads, inv)
    }

    /// Adapts the scale after a step: back off on overflow, grow after
    /// `growth_interval` clean steps if the grown scale is finite in f32.
    pub fn update(&mut self, found_non_finite: bool) {
        if !self.state.enabled {
            return;
        }
        let s = &mut self.state;
        if found_non_finite {
            s.scale = (s.scale as f64 * s.config.backoff_factor) as f32;
            s.growth_tracker = 0;
        } else {
            let clean = s.growth_tracker + 1;
            if clean >= s.config.growth_interval {
                let grown = (s.scale as f64 * s.config.growth_factor) as f32;
                if grown.is_finite() {
                    s.scale = grown;
                }
                s.growth_tracker = 0;
            } else {
                s.growth_tracker = clean;
            }
        }
    }

    /// One optimizer step from scaled gradients: unscale, inspect (one
    /// read back), clip by global norm if asked, then step, or skip the
    /// step on inf/NaN leaving parameters and optimizer state untouched;
    /// finally update the scale.
    ///
    /// With scaling disabled and no clipping this is a plain
    /// `optim.step`: no inspection and no read back.
    pub fn step<B, M, O>(
        &mut self,
        optim: &mut O,
        lr: f64,
        module: M,
        grads: GradientsParams,
        clip_grad_norm: Option<f64>,
    ) -> (M, StepReport)
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
        O: Optimizer<M, B>,
    {
        self.step_with::<B, M, _>(module, grads, clip_grad_norm, |m, g| optim.step(lr, m, g))
    }

    /// [`GradScaler::step`] with the optimizer step given as a closure, for
    /// callers that hold several optimizer types behind one value.
    pub fn step_with<B, M, F>(
        &mut self,
        module: M,
        grads: GradientsParams,
        clip_grad_norm: Option<f64>,
        optim_step: F,
    ) -> (M, StepReport)
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
        F: FnOnce(M, GradientsParams) -> M,
    {
        let scale_used = self.state.scale;
        if !self.state.enabled && clip_grad_norm.is_none() {
            let module = optim_step(module, grads);
            return (
                module,
                StepReport {
                    skipped: false,
                    scale_used,
                    grad_norm: None,
                    clipped: false,
                },
            );
        }
        let grads = self.unscale::<B, M>(&module, grads);
        let GradInspection {
            non_finite,
            global_norm,
        } = grads::inspect::<B, M>(&module, &grads);
        // Only an enabled scaler may skip: without scaling an inf is a real
        // divergence, reported by the loss, as in PyTorch.
        if non_finite && self.state.enabled {
            self.update(true);
            return (
                module,
                StepReport {
                    skipped: true,
                    scale_used,
                    grad_norm: None,
                    clipped: false,
                },
            );
        }
        let (grads, clipped) = match clip_grad_norm {
            Some(max) => grads::clip_global_norm::<B, M>(&module, grads, global_norm, max),
            None => (grads, false),
        };
        let module = optim_step(module, grads);
        self.update(false);
        (
            module,
            StepReport {
                skipped: false,
                scale_used,
                grad_norm: Some(global_norm),
                clipped,
            },
        )
    }
}
