//! The foreach operations in Burn's tensor ops, one tensor at a time: the
//! default on every backend without kernels, the fallback for inputs a
//! kernel cannot take, and what the kernels are tested against.
//!
//! The arithmetic is Burn's `Sgd`, `Adam` and `AdamW` (L2 weight decay for
//! SGD and Adam, decoupled for AdamW; Burn's epsilon placement), with each
//! host scalar rounded to f32 once, as `mul_scalar` does.

use crate::{AdamStep, Group, ScaleRule, ScaleState, SgdStep};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, FloatDType, Tensor};

/// See [`crate::ForeachBackend::foreach_unscale_check`]. The flag is the
/// sum of `g * 0` over every value (NaN exactly when some value is inf or
/// NaN, never from large finite values), tested for NaN.
pub fn unscale_check<B: Backend>(
    grads: Vec<Tensor<B, 1>>,
    inv_scale: Tensor<B, 1>,
) -> (Vec<Tensor<B, 1>>, Tensor<B, 1>) {
    let grads: Vec<_> = grads
        .into_iter()
        .map(|g| to_f32(g) * inv_scale.clone())
        .collect();
    let found = match non_finite_sum(&grads) {
        Some(sum) => sum.is_nan().float(),
        None => inv_scale.zeros_like(),
    };
    (grads, found)
}

/// `sum(g * 0)` over every tensor (each in f32): NaN exactly when some value
/// is inf or NaN, without a false positive from large finite values (which
/// a sum of `g` or `g^2` could overflow into). `None` for no tensors.
pub fn non_finite_sum<B: Backend>(tensors: &[Tensor<B, 1>]) -> Option<Tensor<B, 1>> {
    let parts: Vec<_> = tensors
        .iter()
        .map(|g| to_f32(g.clone()).mul_scalar(0.0).sum())
        .collect();
    (!parts.is_empty()).then(|| Tensor::cat(parts, 0).sum())
}

/// See [`crate::ForeachBackend::amp_update_scale`].
pub fn update_scale<B: Backend>(
    state: ScaleState<B>,
    found: Tensor<B, 1>,
    rule: &ScaleRule,
) -> ScaleState<B> {
    let ScaleState {
        scale,
        tracker,
        skipped,
    } = state;
    let found_b = found.clone().greater_elem(0.0);
    let hit = found_b.clone().float();
    let tracker = (tracker.add_scalar(1.0)) * hit.clone().neg().add_scalar(1.0);
    let grow = tracker
        .clone()
        .greater_equal_elem(rule.growth_interval as f32);
    let grown = scale.clone().mul_scalar(rule.growth_factor as f32);
    let grown = grown
        .clone()
        .mask_where(grown.is_finite().bool_not(), scale.clone());
    let backed = scale.clone().mul_scalar(rule.backoff_factor as f32);
    ScaleState {
        scale: scale
            .mask_where(grow.clone(), grown)
            .mask_where(found_b, backed),
        tracker: tracker.mask_fill(grow, 0.0),
        skipped: skipped + hit,
    }
}

/// See [`crate::ForeachBackend::foreach_adam`].
pub fn adam<B: Backend>(
    step: &AdamStep<B>,
    group: Group<B>,
    grads: Vec<Tensor<B, 1>>,
    skip: Option<Tensor<B, 1>>,
) -> Group<B> {
    let (b1, b2, lr, wd) = (step.beta1, step.beta2, step.lr, step.weight_decay);
    let skip = skip.map(|s| s.greater_elem(0.0));
    let (combined, eps_term) = bias_corrections(step);
    let mut out = empty_like(&group, true);
    for (i, (p, g)) in group.params.iter().zip(grads).enumerate() {
        let p = p.clone();
        let g = if step.decoupled { g } else { l2(g, &p, wd) };
        let (m0, v0) = match (&group.first, &group.second) {
            (Some(m), Some(v)) => (m[i].clone(), v[i].clone()),
            _ => (p.zeros_like(), p.zeros_like()),
        };
        let m = m0.clone().mul_scalar(b1 as f32) + g.clone().mul_scalar((1.0 - b1) as f32);
        let v = v0.clone().mul_scalar(b2 as f32) + g.square().mul_scalar((1.0 - b2) as f32);
        let delta = (m.clone() * combined.clone()) / (v.clone().sqrt() + eps_term.clone());
        let base = if step.decoupled && wd > 0.0 {
            p.clone().mul_scalar((1.0 - lr * wd) as f32)
        } else {
            p.clone()
        };
        let new_p = base - delta.mul_scalar(lr);
        push(
            &mut out,
            skip.as_ref(),
            (new_p, p),
            Some((m, m0)),
            Some((v, v0)),
        );
    }
    out
}

/// Adam's `sqrt(1 - b2^t) / (1 - b1^t)` and `eps * sqrt(1 - b2^t)`.
pub(crate) fn bias_corrections<B: Backend>(step: &AdamStep<B>) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let device = step.steps.device();
    let pow = |b: f64| Tensor::<B, 1>::full([1], b as f32, &device).powf(step.steps.clone());
    let bc2_sqrt = pow(step.beta2).neg().add_scalar(1.0).sqrt();
    let bc1 = pow(step.beta1).neg().add_scalar(1.0);
    let combined = bc2_sqrt.clone() / bc1;
    let eps_term = bc2_sqrt.mul_scalar(step.epsilon as f32);
    (combined, eps_term)
}

/// See [`crate::ForeachBackend::foreach_sgd`].
pub fn sgd<B: Backend>(
    step: &SgdStep,
    group: Group<B>,
    grads: Vec<Tensor<B, 1>>,
    skip: Option<Tensor<B, 1>>,
) -> Group<B> {
    let skip = skip.map(|s| s.greater_elem(0.0));
    let mut out = empty_like(&group, false);
    for (i, (p, g)) in group.params.iter().zip(grads).enumerate() {
        let p = p.clone();
        let g = l2(g, &p, step.weight_decay);
        let Some(mu) = step.momentum else {
            let new_p = p.clone() - g.mul_scalar(step.lr);
            push(&mut out, skip.as_ref(), (new_p, p), None, None);
            continue;
        };
        // The first buffer is the gradient itself, as in Burn and PyTorch.
        let (buf, old) = match &group.first {
            Some(b) => (b[i].clone().mul_scalar(mu as f32) + g, b[i].clone()),
            None => (g, p.zeros_like()),
        };
        let new_p = p.clone() - buf.clone().mul_scalar(step.lr);
        push(&mut out, skip.as_ref(), (new_p, p), Some((buf, old)), None);
    }
    out
}

fn empty_like<B: Backend>(group: &Group<B>, adam: bool) -> Group<B> {
    let n = group.params.len();
    Group {
        params: Vec::with_capacity(n),
        first: None,
        second: adam.then(|| Vec::with_capacity(n)),
    }
}

/// Appends one tensor's results, each `(new, old)` pair kept old where
/// `skip` is set.
fn push<B: Backend>(
    out: &mut Group<B>,
    skip: Option<&Tensor<B, 1, Bool>>,
    p: (Tensor<B, 1>, Tensor<B, 1>),
    first: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
    second: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
) {
    let keep = |(new, old): (Tensor<B, 1>, Tensor<B, 1>)| match skip {
        Some(s) => {
            let n = new.dims()[0];
            new.mask_where(s.clone().expand([n]), old)
        }
        None => new,
    };
    out.params.push(keep(p));
    if let Some(f) = first {
        out.first.get_or_insert_with(Vec::new).push(keep(f));
    }
    if let (Some(s), Some(list)) = (second, out.second.as_mut()) {
        list.push(keep(s));
    }
}

fn l2<B: Backend>(g: Tensor<B, 1>, p: &Tensor<B, 1>, weight_decay: f64) -> Tensor<B, 1> {
    if weight_decay > 0.0 {
        g + p.clone().mul_scalar(weight_decay as f32)
    } else {
        g
    }
}

/// The tensor in f32 (unchanged when it already is).
pub fn to_f32<B: Backend>(g: Tensor<B, 1>) -> Tensor<B, 1> {
    if g.dtype() == burn::tensor::DType::F32 {
        g
    } else {
        g.cast(FloatDType::F32)
    }
}
