//! Whether autocast is on, and which of greentrain's kernels its products,
//! sums and convolutions take, per thread, as PyTorch keeps its autocast
//! state.

use std::cell::Cell;

use burn_backend::FloatDType;
use greentrain_flexconv::ConvPath;
use greentrain_matmul::MatmulKernel;

use crate::Precision;

/// The policy one thread runs under.
#[derive(Clone, Copy, Debug)]
pub(crate) struct State {
    /// The compute dtype of products and convolutions; `None`: autocast off.
    pub dtype: Option<FloatDType>,
    /// The kernel of 2-D products and linear layers, where the backend has
    /// greentrain's kernels ([`super::use_kernels`]).
    pub matmul: MatmulKernel,
    /// Whether bias gradients and layer-norm sums split in two stages where
    /// the backend's sums are serial per output.
    pub split_sums: bool,
    /// How conv2d runs.
    pub conv: ConvPath,
}

const OFF: State = State {
    dtype: None,
    matmul: MatmulKernel::Auto,
    split_sums: true,
    conv: ConvPath::Native,
};

thread_local! {
    static STATE: Cell<State> = const { Cell::new(OFF) };
}

/// Turns the autocast policy on for this thread until the guard drops
/// (nested guards restore the state they found). [`Precision::Fp32`] turns
/// it off: the same model code then runs plain f32. The kernel choices stay
/// as they were ([`crate::Autocast::enter`] sets them too).
#[must_use = "autocast is on only while the guard lives"]
pub fn autocast(precision: Precision) -> AutocastGuard {
    let state = State {
        dtype: compute_dtype(precision),
        ..current()
    };
    enter(state)
}

pub(crate) fn compute_dtype(precision: Precision) -> Option<FloatDType> {
    match precision {
        Precision::Fp32 => None,
        other => Some(other.compute_dtype()),
    }
}

/// Sets the whole state until the guard drops.
pub(crate) fn enter(state: State) -> AutocastGuard {
    AutocastGuard {
        previous: STATE.with(|s| s.replace(state)),
    }
}

/// This thread's state.
pub(crate) fn current() -> State {
    STATE.with(Cell::get)
}

/// The compute dtype products and convolutions run in on this thread, or
/// `None` while autocast is off.
pub fn autocast_dtype() -> Option<FloatDType> {
    current().dtype
}

/// Restores the previous autocast state when dropped.
#[derive(Debug)]
pub struct AutocastGuard {
    previous: State,
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        STATE.with(|s| s.set(self.previous));
    }
}
