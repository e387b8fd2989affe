//! greentrain's kernels beneath `Amp<I>`: which backends have them.
//!
//! `Amp<I>` forwards to any Burn backend, so its ops cannot require
//! [`MatmulBackend`] of `I` (Burn's ndarray, tch or candle backends have no
//! impl, and Rust has no specialisation). A backend that has one is
//! registered once, by type ([`use_kernels`]); `Amp<I>`'s products, linear
//! layers and layer norms then look `I` up and run greentrain's kernels and
//! split sums where it is registered, Burn's ops where not.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use burn::tensor::Tensor;
use burn_backend::Backend;
use greentrain_matmul::{MatmulBackend, MatmulKernel};

/// One registered backend's entry points.
pub(crate) struct Kernels<I: Backend> {
    /// `x W + b` on rows (`crate::products::linear_rows`).
    pub linear: LinearFn<I>,
    /// A 2-D product through greentrain-matmul.
    pub matmul: fn(Tensor<I, 2>, Tensor<I, 2>, MatmulKernel) -> Tensor<I, 2>,
    /// [`MatmulBackend::gt_split_sums`].
    pub split_sums: fn(&I::Device) -> bool,
}

type LinearFn<I> =
    fn(Tensor<I, 2>, Tensor<I, 2>, Option<Tensor<I, 1>>, MatmulKernel, bool) -> Tensor<I, 2>;

type Registry = RwLock<HashMap<TypeId, &'static (dyn Any + Send + Sync)>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Lets `Amp<I>` run greentrain's kernels on `I`: products and linear
/// layers through greentrain-matmul (the kernel [`crate::Autocast::enter`]
/// chose), bias and layer-norm gradients summed in two stages where `I`'s
/// sums are serial per output. Register both the autodiff backend and its
/// inner one (`Autodiff<B>` and `B`): evaluation runs on the inner.
/// Idempotent; one entry per type for the life of the process.
pub fn use_kernels<I: MatmulBackend>() {
    let id = TypeId::of::<I>();
    if registry().read().is_ok_and(|r| r.contains_key(&id)) {
        return;
    }
    let entry: Kernels<I> = Kernels {
        linear: crate::products::linear_rows::<I>,
        matmul: greentrain_matmul::matmul::<I, 2>,
        split_sums: I::gt_split_sums,
    };
    let mut r = registry().write().unwrap_or_else(|e| e.into_inner());
    r.entry(id).or_insert_with(|| Box::leak(Box::new(entry)));
}

/// `I`'s entry, if registered.
pub(crate) fn kernels<I: Backend>() -> Option<&'static Kernels<I>> {
    let r = registry().read().unwrap_or_else(|e| e.into_inner());
    r.get(&TypeId::of::<I>())
        .copied()
        .and_then(|k| k.downcast_ref::<Kernels<I>>())
}
