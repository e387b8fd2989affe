//! Whether autocast is on, per thread, as PyTorch keeps it.

use std::cell::Cell;

use burn_backend::FloatDType;

use crate::Precision;

thread_local! {
    static AUTOCAST: Cell<Option<FloatDType>> = const { Cell::new(None) };
}

/// Turns the autocast policy on for this thread until the guard drops
/// (nested guards restore the state they found). [`Precision::Fp32`] turns
/// it off: the same model code then runs plain f32.
#[must_use = "autocast is on only while the guard lives"]
pub fn autocast(precision: Precision) -> AutocastGuard {
    let dtype = match precision {
        Precision::Fp32 => None,
        other => Some(other.compute_dtype()),
    };
    AutocastGuard {
        previous: AUTOCAST.with(|a| a.replace(dtype)),
    }
}

/// The compute dtype products and convolutions run in on this thread, or
/// `None` while autocast is off.
pub fn autocast_dtype() -> Option<FloatDType> {
    AUTOCAST.with(Cell::get)
}

/// Restores the previous autocast state when dropped.
#[derive(Debug)]
pub struct AutocastGuard {
    previous: Option<FloatDType>,
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        AUTOCAST.with(|a| a.set(self.previous));
    }
}
