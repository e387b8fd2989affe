//! Whole-model gradient operations: unscale, inspect (non-finite check and
//! global norm with a single read back), scale by a factor, accumulate.
//!
//! `GradientsParams` cannot be iterated, so these walk the module's
//! parameters with a visitor and look each gradient up by its id.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use std::marker::PhantomData;

/// What one look at all gradients found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradInspection {
    /// Some gradient holds an inf or NaN.
    pub non_finite: bool,
    /// Global L2 norm over all gradients (meaningless when `non_finite`).
    pub global_norm: f64,
}

struct MapGrads<'a, B: AutodiffBackend, F> {
    grads: &'a mut GradientsParams,
    f: F,
    _b: PhantomData<B>,
}

/// Applies `f` to every parameter's gradient in place. `f` receives the
/// gradient flattened to rank 1 and returns the new flattened gradient.
fn map_grads<B, M, F>(module: &M, grads: &mut GradientsParams, f: F)
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    F: FnMut(Tensor<B::InnerBackend, 1>) -> Tensor<B::InnerBackend, 1>,
{
    let mut v = MapGrads::<B, F> {
        grads,
        f,
        _b: PhantomData,
    };
    module.visit(&mut v);
}

impl<B: AutodiffBackend, F> ModuleVisitor<B> for MapGrads<'_, B, F>
where
    F: FnMut(Tensor<B::InnerBackend, 1>) -> Tensor<B::InnerBackend, 1>,
{
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let shape = g.shape();
            let out = (self.f)(g.flatten(0, D - 1)).reshape(shape);
            self.grads.register::<B::InnerBackend, D>(param.id, out);
        }
    }
}

struct Collect<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    out: Vec<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            self.out.push(g.flatten(0, D - 1));
        }
    }
}

/// Every gradient, flattened, in parameter order.
pub fn collect<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> Vec<Tensor<B::InnerBackend, 1>> {
    let mut v = Collect::<B> {
        grads,
        out: Vec::new(),
    };
    module.visit(&mut v);
    v.out
}

/// Multiplies every gradient by `factor` (computed by the caller in f64 and
/// rounded once to f32, so a power of two stays exact).
pub fn scale<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    mut grads: GradientsParams,
    factor: f64,
) -> GradientsParams {
    let f = factor as f32;
    map_grads::<B, M, _>(module, &mut grads, |g| {
        let g = to_f32(g);
        g.mul_scalar(f)
    });
    grads
}

/// Applies `f` to every gradient, flattened to rank 1, and returns the
/// gradients: element-wise work that stays on the device.
pub fn map<B, M, F>(module: &M, mut grads: GradientsParams, f: F) -> GradientsParams
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    F: FnMut(Tensor<B::InnerBackend, 1>) -> Tensor<B::InnerBackend, 1>,
{
    map_grads::<B, M, F>(module, &mut grads, f);
    grads
}

/// `reduce` applied to every gradient (in f32) and summed, as a
/// one-element device tensor; `None` without gradients.
fn total<B, M, F>(
    module: &M,
    grads: &GradientsParams,
    reduce: F,
) -> Option<Tensor<B::InnerBackend, 1>>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    F: Fn(Tensor<B::InnerBackend, 1>) -> Tensor<B::InnerBackend, 1>,
{
    let parts: Vec<_> = collect::<B, M>(module, grads)
        .into_iter()
        .map(|g| reduce(to_f32(g)))
        .collect();
    (!parts.is_empty()).then(|| Tensor::cat(parts, 0).sum())
}

/// `sum(g * 0)` over all gradients: NaN exactly when some gradient holds an
/// inf or NaN, without a false positive from large finite values (which a
/// sum of `g` or `g^2` could overflow into). Stays on the device.
pub fn non_finite_sum<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> Option<Tensor<B::InnerBackend, 1>> {
    greentrain_foreach::reference::non_finite_sum(&collect::<B, M>(module, grads))
}

/// The sum of all squared gradient elements. Stays on the device.
pub fn squared_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> Option<Tensor<B::InnerBackend, 1>> {
    total::<B, M, _>(module, grads, |g| g.square().sum())
}

/// The global L2 norm of all gradients as a one-element device tensor (no
/// read back).
pub fn global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> Tensor<B::InnerBackend, 1> {
    squared_norm::<B, M>(module, grads)
        .map(|sq| sq.sqrt())
        .unwrap_or_else(|| Tensor::zeros([1], &Default::default()))
}

/// The gradient in f32 (unchanged when it already is).
pub use greentrain_foreach::reference::to_f32;

/// Checks all gradients for inf/NaN ([`non_finite_sum`]) and computes their
/// global L2 norm ([`squared_norm`]) with a single read back of two numbers.
pub fn inspect<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> GradInspection {
    let flag = non_finite_sum::<B, M>(module, grads);
    let (Some(flag), Some(sq)) = (flag, squared_norm::<B, M>(module, grads)) else {
        return GradInspection {
            non_finite: false,
            global_norm: 0.0,
        };
    };
    let both = Tensor::cat(vec![flag, sq], 0);
    let values = crate::readback::read_f32(both);
    GradInspection {
        non_finite: !values[0].is_finite(),
        global_norm: (values[1] as f64).sqrt(),
    }
}

/// Global-norm clipping (as `torch.nn.utils.clip_grad_norm_`): when the
/// norm exceeds `max_norm`, every gradient is multiplied by
/// `max_norm / (norm + 1e-6)`. Returns the gradients and whether they were
/// clipped.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: GradientsParams,
    global_norm: f64,
    max_norm: f64,
) -> (GradientsParams, bool) {
    let coef = max_norm / (global_norm + 1e-6);
    if coef < 1.0 {
        (scale::<B, M>(module, grads, coef), true)
    } else {
        (grads, false)
    }
}

/// Adds `more` into `acc` gradient by gradient (for accumulation over
/// micro-batches). A parameter present in only one side keeps that side.
pub fn accumulate<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    acc: Option<GradientsParams>,
    more: GradientsParams,
) -> GradientsParams {
    let Some(mut acc) = acc else { return more };
    struct Add<'a, B: AutodiffBackend> {
        acc: &'a mut GradientsParams,
        more: GradientsParams,
        _b: PhantomData<B>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Add<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let extra = self.more.remove::<B::InnerBackend, D>(param.id);
            let cur = self.acc.remove::<B::InnerBackend, D>(param.id);
            let sum = match (cur, extra) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
            if let Some(s) = sum {
                self.acc.register::<B::InnerBackend, D>(param.id, s);
            }
        }
    }
    let mut v = Add::<B> {
        acc: &mut acc,
        more,
        _b: PhantomData,
    };
    module.visit(&mut v);
    acc
}
