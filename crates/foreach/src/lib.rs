//! Multi-tensor ("foreach") operations for Burn: the work a mixed-precision
//! training step does on every parameter, done for all of them at once.
//!
//! A model with `n` parameter tensors costs a GPU `n` kernel launches per
//! element-wise pass when each tensor is its own op, and the loss scaler's
//! inf/NaN check costs one reduction per tensor on top. PyTorch runs the
//! check and unscale as one kernel (`_amp_foreach_non_finite_check_and_unscale_`)
//! and its `foreach`/`fused` optimizers as a few; [`ForeachBackend`] is that
//! for Burn:
//! - on the CubeCL backends (`CubeBackend`, feature `cube`), one kernel per
//!   group of tensors (as many as the device binds at once), and under Burn's
//!   fusion (feature `fusion`) the same kernel as a custom fusion operation;
//! - on Flex, the optimizer steps as one pass over each parameter (the
//!   tensor ops' bits, in a fraction of their time);
//! - everywhere else (any other backend), the same arithmetic in Burn's
//!   tensor ops ([`reference`](mod@reference)), which is also what the kernels are tested
//!   against.
//!
//! Every operation takes the tensors flattened to rank 1, in f32; a kernel
//! that cannot take its inputs (another dtype, mismatched lengths) falls back
//! to [`reference`](mod@reference), never to a wrong answer.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

#[cfg(feature = "cube")]
mod cube;
mod flex;
#[cfg(feature = "fusion")]
mod fusion;
pub mod reference;

/// An Adam or AdamW step's hyperparameters. The step count `t` is a
/// one-element f32 tensor on the device, so that a skipped step does not
/// advance the bias corrections `sqrt(1 - b2^t) / (1 - b1^t)` and
/// `eps * sqrt(1 - b2^t)` (Burn's epsilon placement), which the kernels
/// compute from it in the same launch.
#[derive(Clone, Debug)]
pub struct AdamStep<B: Backend> {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    pub weight_decay: f64,
    /// AdamW: weight decay applied to the parameter, not added to the gradient.
    pub decoupled: bool,
    /// The step count this step uses (1 at the first step).
    pub steps: Tensor<B, 1>,
}

/// An SGD step's hyperparameters (heavy-ball momentum without dampening,
/// L2 weight decay added to the gradient).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdStep {
    pub lr: f64,
    pub momentum: Option<f64>,
    pub weight_decay: f64,
}

/// Parameters and their optimizer state, one entry per tensor, each flattened
/// to rank 1 and the same length as its gradient.
#[derive(Clone, Debug)]
pub struct Group<B: Backend> {
    pub params: Vec<Tensor<B, 1>>,
    /// The first state tensor of each parameter (momentum buffer, or Adam's
    /// first moment); `None` before the first step.
    pub first: Option<Vec<Tensor<B, 1>>>,
    /// Adam's second moment; `None` for SGD and before the first step.
    pub second: Option<Vec<Tensor<B, 1>>>,
}

/// The loss scale's state on the device, each a one-element f32 tensor.
#[derive(Clone, Debug)]
pub struct ScaleState<B: Backend> {
    pub scale: Tensor<B, 1>,
    /// Consecutive clean steps counted towards the next growth.
    pub tracker: Tensor<B, 1>,
    /// Steps skipped so far.
    pub skipped: Tensor<B, 1>,
}

impl<B: Backend> ScaleState<B> {
    /// Whether a kernel can take this state and `found`: all one-element f32.
    #[cfg_attr(not(feature = "cube"), allow(dead_code))]
    pub(crate) fn kernel_ready(&self, found: &Tensor<B, 1>) -> bool {
        [&self.scale, &self.tracker, &self.skipped, found]
            .iter()
            .all(|t| t.dims() == [1] && t.dtype() == burn::tensor::DType::F32)
    }

    /// The state from a kernel's three outputs, in field order.
    #[cfg_attr(not(feature = "cube"), allow(dead_code))]
    pub(crate) fn from_outputs(outs: impl IntoIterator<Item = Tensor<B, 1>>) -> Self {
        let mut outs = outs.into_iter();
        let mut next = || outs.next().expect("three outputs: scale, tracker, skipped");
        ScaleState {
            scale: next(),
            tracker: next(),
            skipped: next(),
        }
    }
}

/// The dynamic loss scale's rules (PyTorch's `GradScaler` arguments).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScaleRule {
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: u32,
}

/// Operations over many tensors at once. Every method has a default in
/// Burn's tensor ops ([`reference`](mod@reference)), so any backend can implement this trait
/// with an empty `impl`; the CubeCL backends override them with kernels.
///
/// `skip`, where given, is a one-element f32 tensor: where it is above 0 the
/// step changes nothing, and parameters and state come back bit for bit as
/// they were (state that did not exist comes back as zeros).
pub trait ForeachBackend: Backend {
    /// Each gradient multiplied by `inv_scale` (a one-element f32 tensor),
    /// and a one-element f32 flag: 1 when some unscaled value is inf or NaN,
    /// else 0. Gradients of another float dtype are cast to f32 first.
    fn foreach_unscale_check(
        grads: Vec<Tensor<Self, 1>>,
        inv_scale: Tensor<Self, 1>,
    ) -> (Vec<Tensor<Self, 1>>, Tensor<Self, 1>) {
        reference::unscale_check(grads, inv_scale)
    }

    /// The scale update after a step (PyTorch's `_amp_update_scale_`): on a
    /// non-finite step (`found` above 0) back off and count the skip; after
    /// `growth_interval` clean steps grow, unless the grown scale is not
    /// finite in f32. One launch on the CubeCL backends instead of a dozen
    /// one-element ops.
    fn amp_update_scale(
        state: ScaleState<Self>,
        found: Tensor<Self, 1>,
        rule: &ScaleRule,
    ) -> ScaleState<Self> {
        reference::update_scale(state, found, rule)
    }

    /// One Adam/AdamW step over a group; returns the new group.
    fn foreach_adam(
        step: &AdamStep<Self>,
        group: Group<Self>,
        grads: Vec<Tensor<Self, 1>>,
        skip: Option<Tensor<Self, 1>>,
    ) -> Group<Self> {
        reference::adam(step, group, grads, skip)
    }

    /// One SGD step over a group; returns the new group.
    fn foreach_sgd(
        step: &SgdStep,
        group: Group<Self>,
        grads: Vec<Tensor<Self, 1>>,
        skip: Option<Tensor<Self, 1>>,
    ) -> Group<Self> {
        reference::sgd(step, group, grads, skip)
    }
}

/// Foreach kernels launched by this process (every backend, every group):
/// lets a test or benchmark tell a kernel from the tensor-op fallback.
pub fn kernel_launches() -> u64 {
    LAUNCHES.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg_attr(not(feature = "cube"), allow(dead_code))]
pub(crate) static LAUNCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Burn's CPU backend: the optimizer steps as one pass over each parameter
/// and the scaler's unscale-and-check as one pass over each gradient (the
/// tensor ops' bits); the scale update in tensor ops.
impl ForeachBackend for burn_flex::Flex {
    fn foreach_unscale_check(
        grads: Vec<Tensor<Self, 1>>,
        inv_scale: Tensor<Self, 1>,
    ) -> (Vec<Tensor<Self, 1>>, Tensor<Self, 1>) {
        flex::unscale_check(grads, inv_scale)
    }

    fn foreach_adam(
        step: &AdamStep<Self>,
        group: Group<Self>,
        grads: Vec<Tensor<Self, 1>>,
        skip: Option<Tensor<Self, 1>>,
    ) -> Group<Self> {
        flex::adam(step, group, grads, skip)
    }

    fn foreach_sgd(
        step: &SgdStep,
        group: Group<Self>,
        grads: Vec<Tensor<Self, 1>>,
        skip: Option<Tensor<Self, 1>>,
    ) -> Group<Self> {
        flex::sgd(step, group, grads, skip)
    }
}

/// Whether the kernels can take these tensors: every one f32, and each
/// list's lengths equal to the parameters'.
pub(crate) fn kernel_ready<B: Backend>(lists: &[&[Tensor<B, 1>]]) -> bool {
    let Some(first) = lists.first() else {
        return false;
    };
    let lens: Vec<usize> = first.iter().map(|t| t.dims()[0]).collect();
    !lens.is_empty()
        && lists.iter().all(|l| {
            l.len() == lens.len()
                && l.iter()
                    .zip(&lens)
                    .all(|(t, n)| t.dims()[0] == *n && t.dtype() == burn::tensor::DType::F32)
        })
}
