//! The foreach kernels for `CubeBackend` (cuda, wgpu): each launch walks a
//! group of tensors (a `Sequence` of bindings, as many as the device allows)
//! with a grid-stride loop, so a model's whole unscale-and-check or
//! optimizer step is one launch per group instead of several per tensor.
//!
//! Every input is made contiguous first (a no-op for the tensors a training
//! step makes), since the kernels index the buffers linearly.

use crate::{
    kernel_ready, reference, AdamStep, ForeachBackend, Group, ScaleRule, ScaleState, SgdStep,
};
use burn::tensor::{DType, Shape, Tensor as BTensor, TensorPrimitive};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::prelude::*;

/// Threads per cube, and the most cubes a launch uses: each thread then
/// loops over its share of every tensor in the group.
const CUBE_DIM: u32 = 256;
const MAX_CUBES: usize = 1024;
/// Bindings kept free of the device's limit for the runtime's own buffers.
const SPARE_BINDINGS: usize = 4;

#[cube(launch_unchecked)]
fn unscale_check_kernel(
    grads: &Sequence<Tensor<f32>>,
    inv_scale: &Tensor<f32>,
    out: &mut Sequence<Tensor<f32>>,
    found: &mut Tensor<f32>,
) {
    let inv = inv_scale[0];
    let stride = CUBE_COUNT * CUBE_DIM as usize;
    #[unroll]
    for i in 0..grads.len() {
        let g = grads.index(i);
        let o = out.index_mut(i);
        let mut idx = ABSOLUTE_POS;
        while idx < g.len() {
            let u = g[idx] * inv;
            o[idx] = u;
            if f32::is_nan(u) || f32::is_inf(u) {
                // Every writer writes the same value.
                found[0] = 1.0;
            }
            idx += stride;
        }
    }
}

/// The scale update, on one thread.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn update_scale_kernel(
    scale: &Tensor<f32>,
    tracker: &Tensor<f32>,
    skipped: &Tensor<f32>,
    found: &Tensor<f32>,
    scale_out: &mut Tensor<f32>,
    tracker_out: &mut Tensor<f32>,
    skipped_out: &mut Tensor<f32>,
    growth_factor: f32,
    backoff_factor: f32,
    growth_interval: f32,
) {
    if ABSOLUTE_POS == 0 {
        let s = scale[0];
        let hit = found[0] > 0.0;
        let mut t = tracker[0] + 1.0;
        if hit {
            t = 0.0;
        }
        let grow = t >= growth_interval;
        let mut grown = s * growth_factor;
        if f32::is_nan(grown) || f32::is_inf(grown) {
            grown = s;
        }
        let mut next = s;
        if grow {
            next = grown;
            t = 0.0;
        }
        if hit {
            next = s * backoff_factor;
            skipped_out[0] = skipped[0] + 1.0;
        } else {
            skipped_out[0] = skipped[0];
        }
        scale_out[0] = next;
        tracker_out[0] = t;
    }
}

/// One Adam/AdamW step. `state`: the moments exist (else they start at 0);
/// `l2`: weight decay added to the gradient (Adam); `decay`: the parameter
/// multiplied by `decay_factor` first (AdamW).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn adam_kernel(
    params: &Sequence<Tensor<f32>>,
    grads: &Sequence<Tensor<f32>>,
    m_in: &Sequence<Tensor<f32>>,
    v_in: &Sequence<Tensor<f32>>,
    steps: &Tensor<f32>,
    skip: &Tensor<f32>,
    p_out: &mut Sequence<Tensor<f32>>,
    m_out: &mut Sequence<Tensor<f32>>,
    v_out: &mut Sequence<Tensor<f32>>,
    lr: f32,
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    weight_decay: f32,
    decay_factor: f32,
    epsilon: f32,
    #[comptime] state: bool,
    #[comptime] l2: bool,
    #[comptime] decay: bool,
    #[comptime] skippable: bool,
) {
    let b1 = beta1;
    let one_b1 = one_minus_beta1;
    let b2 = beta2;
    let one_b2 = one_minus_beta2;
    let wd = weight_decay;
    // The bias corrections, as the reference computes them in tensor ops.
    let t = steps[0];
    let bc2_sqrt = f32::sqrt(1.0 - f32::powf(beta2, t));
    let bc1 = 1.0 - f32::powf(beta1, t);
    let c = bc2_sqrt / bc1;
    let e = bc2_sqrt * epsilon;
    let mut keep = false;
    if skippable {
        keep = skip[0] > 0.0;
    }
    let stride = CUBE_COUNT * CUBE_DIM as usize;
    #[unroll]
    for i in 0..params.len() {
        let pt = params.index(i);
        let gt = grads.index(i);
        let po = p_out.index_mut(i);
        let mo = m_out.index_mut(i);
        let vo = v_out.index_mut(i);
        let mut idx = ABSOLUTE_POS;
        while idx < pt.len() {
            let p = pt[idx];
            let mut g = gt[idx];
            if l2 {
                g += p * wd;
            }
            let mut m0 = 0.0f32;
            let mut v0 = 0.0f32;
            if state {
                m0 = m_in.index(i)[idx];
                v0 = v_in.index(i)[idx];
            }
            let m = m0 * b1 + g * one_b1;
            let v = v0 * b2 + g * g * one_b2;
            let delta = (m * c) / (f32::sqrt(v) + e);
            let mut base = p;
            if decay {
                base = p * decay_factor;
            }
            let np = base - delta * lr;
            po[idx] = select(keep, p, np);
            mo[idx] = select(keep, m0, m);
            vo[idx] = select(keep, v0, v);
            idx += stride;
        }
    }
}

/// One SGD step: `momentum` keeps a buffer (the gradient itself at the
/// first step, `state` false), else the step is `p - lr * g`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn sgd_kernel(
    params: &Sequence<Tensor<f32>>,
    grads: &Sequence<Tensor<f32>>,
    buf_in: &Sequence<Tensor<f32>>,
    skip: &Tensor<f32>,
    p_out: &mut Sequence<Tensor<f32>>,
    buf_out: &mut Sequence<Tensor<f32>>,
    lr: f32,
    momentum_factor: f32,
    weight_decay: f32,
    #[comptime] momentum: bool,
    #[comptime] state: bool,
    #[comptime] l2: bool,
    #[comptime] skippable: bool,
) {
    let mu = momentum_factor;
    let wd = weight_decay;
    let mut keep = false;
    if skippable {
        keep = skip[0] > 0.0;
    }
    let stride = CUBE_COUNT * CUBE_DIM as usize;
    #[unroll]
    for i in 0..params.len() {
        let pt = params.index(i);
        let gt = grads.index(i);
        let po = p_out.index_mut(i);
        let mut idx = ABSOLUTE_POS;
        while idx < pt.len() {
            let p = pt[idx];
            let mut g = gt[idx];
            if l2 {
                g += p * wd;
            }
            if momentum {
                let mut old = 0.0f32;
                let mut buf = g;
                if state {
                    old = buf_in.index(i)[idx];
                    buf = old * mu + g;
                }
                po[idx] = select(keep, p, p - buf * lr);
                buf_out.index_mut(i)[idx] = select(keep, old, buf);
            } else {
                po[idx] = select(keep, p, p - g * lr);
            }
            idx += stride;
        }
    }
}

type Cube<R, F, I, BT> = CubeBackend<R, F, I, BT>;

impl<R, F, I, BT> ForeachBackend for Cube<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn foreach_unscale_check(
        grads: Vec<BTensor<Self, 1>>,
        inv_scale: BTensor<Self, 1>,
    ) -> (Vec<BTensor<Self, 1>>, BTensor<Self, 1>) {
        if !kernel_ready(&[&grads]) || inv_scale.dtype() != DType::F32 {
            return reference::unscale_check(grads, inv_scale);
        }
        let inv = prim(inv_scale);
        let found = zero_flag(&inv);
        let grads: Vec<_> = grads.into_iter().map(prim).collect();
        let per = per_launch(&inv, 2, 2);
        let mut out = Vec::with_capacity(grads.len());
        for chunk in grads.chunks(per) {
            let outs: Vec<_> = chunk.iter().map(like).collect();
            let (count, dim) = grid(chunk);
            counted();
            // SAFETY: every output has its input's length and is contiguous,
            // and the kernel indexes each only below that length.
            unsafe {
                unscale_check_kernel::launch_unchecked::<R>(
                    &inv.client,
                    count,
                    dim,
                    seq(chunk),
                    inv.clone().into_tensor_arg(),
                    seq(&outs),
                    found.clone().into_tensor_arg(),
                )
            };
            out.extend(outs.into_iter().map(tensor));
        }
        (out, tensor(found))
    }

    fn amp_update_scale(
        state: ScaleState<Self>,
        found: BTensor<Self, 1>,
        rule: &ScaleRule,
    ) -> ScaleState<Self> {
        if !state.kernel_ready(&found) {
            return reference::update_scale(state, found, rule);
        }
        let ins: Vec<_> = [state.scale, state.tracker, state.skipped, found]
            .into_iter()
            .map(prim)
            .collect();
        let outs: Vec<_> = ins[..3].iter().map(like).collect();
        counted();
        // SAFETY: one thread reads and writes element 0 of one-element tensors.
        unsafe {
            update_scale_kernel::launch_unchecked::<R>(
                &ins[0].client,
                CubeCount::new_1d(1),
                CubeDim::new_1d(1),
                ins[0].clone().into_tensor_arg(),
                ins[1].clone().into_tensor_arg(),
                ins[2].clone().into_tensor_arg(),
                ins[3].clone().into_tensor_arg(),
                outs[0].clone().into_tensor_arg(),
                outs[1].clone().into_tensor_arg(),
                outs[2].clone().into_tensor_arg(),
                rule.growth_factor as f32,
                rule.backoff_factor as f32,
                rule.growth_interval as f32,
            )
        };
        ScaleState::from_outputs(outs.into_iter().map(tensor))
    }

    fn foreach_adam(
        step: &AdamStep<Self>,
        group: Group<Self>,
        grads: Vec<BTensor<Self, 1>>,
        skip: Option<BTensor<Self, 1>>,
    ) -> Group<Self> {
        let state = match (&group.first, &group.second) {
            (Some(m), Some(v)) => Some((m.clone(), v.clone())),
            _ => None,
        };
        let mut lists = vec![&group.params[..], &grads[..]];
        if let Some((m, v)) = &state {
            lists.extend([&m[..], &v[..]]);
        }
        if !kernel_ready(&lists)
            || step.steps.dims() != [1]
            || step.steps.dtype() != DType::F32
            || skip.as_ref().is_some_and(|s| s.dtype() != DType::F32)
        {
            return reference::adam(step, group, grads, skip);
        }
        let (b1, b2, lr, wd) = (step.beta1, step.beta2, step.lr, step.weight_decay);
        let hyper = [
            lr as f32,
            b1 as f32,
            (1.0 - b1) as f32,
            b2 as f32,
            (1.0 - b2) as f32,
            wd as f32,
            (1.0 - lr * wd) as f32,
        ];
        let steps = prim(step.steps.clone());
        let skip_t = skip.map(prim);
        let params: Vec<_> = group.params.into_iter().map(prim).collect();
        let grads: Vec<_> = grads.into_iter().map(prim).collect();
        let (m, v): (Vec<_>, Vec<_>) = match state {
            Some((m, v)) => (
                m.into_iter().map(prim).collect(),
                v.into_iter().map(prim).collect(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        let has_state = !m.is_empty();
        let per = per_launch(&steps, if has_state { 7 } else { 5 }, 2);
        let mut out = Group {
            params: Vec::new(),
            first: Some(Vec::new()),
            second: Some(Vec::new()),
        };
        for range in chunks(params.len(), per) {
            let (p, g) = (&params[range.clone()], &grads[range.clone()]);
            let (mi, vi) = if has_state {
                (&m[range.clone()], &v[range.clone()])
            } else {
                (&[][..], &[][..])
            };
            let (po, mo, vo): (Vec<_>, Vec<_>, Vec<_>) = (
                p.iter().map(like).collect(),
                p.iter().map(like).collect(),
                p.iter().map(like).collect(),
            );
            let (count, dim) = grid(p);
            counted();
            let skip_arg = skip_t.as_ref().unwrap_or(&steps).clone();
            // SAFETY: as in `foreach_unscale_check`.
            unsafe {
                adam_kernel::launch_unchecked::<R>(
                    &steps.client,
                    count,
                    dim,
                    seq(p),
                    seq(g),
                    seq(mi),
                    seq(vi),
                    steps.clone().into_tensor_arg(),
                    skip_arg.into_tensor_arg(),
                    seq(&po),
                    seq(&mo),
                    seq(&vo),
                    hyper[0],
                    hyper[1],
                    hyper[2],
                    hyper[3],
                    hyper[4],
                    hyper[5],
                    hyper[6],
                    step.epsilon as f32,
                    has_state,
                    !step.decoupled && wd > 0.0,
                    step.decoupled && wd > 0.0,
                    skip_t.is_some(),
                )
            };
            out.params.extend(po.into_iter().map(tensor));
            out.first
                .as_mut()
                .unwrap()
                .extend(mo.into_iter().map(tensor));
            out.second
                .as_mut()
                .unwrap()
                .extend(vo.into_iter().map(tensor));
        }
        out
    }

    fn foreach_sgd(
        step: &SgdStep,
        group: Group<Self>,
        grads: Vec<BTensor<Self, 1>>,
        skip: Option<BTensor<Self, 1>>,
    ) -> Group<Self> {
        let momentum = step.momentum.is_some();
        let state = if momentum { group.first.clone() } else { None };
        let mut lists = vec![&group.params[..], &grads[..]];
        if let Some(b) = &state {
            lists.push(&b[..]);
        }
        if !kernel_ready(&lists) || skip.as_ref().is_some_and(|s| s.dtype() != DType::F32) {
            return reference::sgd(step, group, grads, skip);
        }
        let hyper = [
            step.lr as f32,
            step.momentum.unwrap_or(0.0) as f32,
            step.weight_decay as f32,
        ];
        let params: Vec<_> = group.params.into_iter().map(prim).collect();
        let grads: Vec<_> = grads.into_iter().map(prim).collect();
        let bufs: Vec<_> = state.into_iter().flatten().map(prim).collect();
        let has_state = !bufs.is_empty();
        let skip_t = skip.map(prim);
        // p and g in, p out; the buffer out with momentum, and in once it exists.
        let per_tensor = 3 + usize::from(momentum) + usize::from(has_state);
        let per = per_launch(&params[0], per_tensor, 1);
        let mut out = Group {
            params: Vec::new(),
            first: momentum.then(Vec::new),
            second: None,
        };
        for range in chunks(params.len(), per) {
            let (p, g) = (&params[range.clone()], &grads[range.clone()]);
            let bi = if has_state {
                &bufs[range.clone()]
            } else {
                &[][..]
            };
            let po: Vec<_> = p.iter().map(like).collect();
            let bo: Vec<_> = if momentum {
                p.iter().map(like).collect()
            } else {
                Vec::new()
            };
            let (count, dim) = grid(p);
            counted();
            let skip_arg = skip_t.as_ref().unwrap_or(&p[0]).clone();
            // SAFETY: as in `foreach_unscale_check`.
            unsafe {
                sgd_kernel::launch_unchecked::<R>(
                    &p[0].client,
                    count,
                    dim,
                    seq(p),
                    seq(g),
                    seq(bi),
                    skip_arg.into_tensor_arg(),
                    seq(&po),
                    seq(&bo),
                    hyper[0],
                    hyper[1],
                    hyper[2],
                    momentum,
                    has_state,
                    step.weight_decay > 0.0,
                    skip_t.is_some(),
                )
            };
            out.params.extend(po.into_iter().map(tensor));
            if let Some(f) = out.first.as_mut() {
                f.extend(bo.into_iter().map(tensor));
            }
        }
        out
    }
}

fn counted() {
    crate::LAUNCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

fn prim<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    t: BTensor<Cube<R, F, I, BT>, 1>,
) -> CubeTensor<R> {
    into_contiguous(t.into_primitive().tensor())
}

fn tensor<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    t: CubeTensor<R>,
) -> BTensor<Cube<R, F, I, BT>, 1> {
    BTensor::from_primitive(TensorPrimitive::Float(t))
}

/// An uninitialised contiguous f32 tensor of `t`'s length.
fn like<R: CubeRuntime>(t: &CubeTensor<R>) -> CubeTensor<R> {
    empty_device_dtype(
        t.client.clone(),
        t.device.clone(),
        Shape::new([t.meta.num_elements()]),
        DType::F32,
    )
}

/// A one-element f32 zero, uploaded rather than filled by a kernel launch.
fn zero_flag<R: CubeRuntime>(like: &CubeTensor<R>) -> CubeTensor<R> {
    let handle = like.client.create_from_slice(&0f32.to_ne_bytes());
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        Shape::new([1]),
        handle,
        DType::F32,
    )
}

fn seq<R: CubeRuntime>(ts: &[CubeTensor<R>]) -> SequenceArg<R, Tensor<f32>> {
    ts.iter().map(|t| t.clone().into_tensor_arg()).collect()
}

/// How many tensors one launch takes: the device's binding limit, less the
/// launch's fixed bindings and a spare, over the bindings each tensor needs.
fn per_launch<R: CubeRuntime>(t: &CubeTensor<R>, per_tensor: usize, fixed: usize) -> usize {
    let max = t.client.properties().hardware.max_bindings as usize;
    (max.saturating_sub(fixed + SPARE_BINDINGS) / per_tensor).max(1)
}

fn chunks(n: usize, per: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..n).step_by(per).map(move |s| s..(s + per).min(n))
}

/// A 1-D grid sized for the group's largest tensor, capped so that threads
/// loop rather than the launch growing without bound.
fn grid<R: CubeRuntime>(ts: &[CubeTensor<R>]) -> (CubeCount, CubeDim) {
    let largest = ts.iter().map(|t| t.meta.num_elements()).max().unwrap_or(1);
    let cubes = largest.div_ceil(CUBE_DIM as usize).clamp(1, MAX_CUBES);
    (CubeCount::new_1d(cubes as u32), CubeDim::new_1d(CUBE_DIM))
}

#[cfg(test)]
mod tests {
    use super::chunks;

    #[test]
    fn chunks_cover_every_tensor_once_in_order() {
        for (n, per) in [(1, 1), (7, 3), (9, 3), (200, 64), (5, 100)] {
            let all: Vec<usize> = chunks(n, per).flatten().collect();
            assert_eq!(
                all,
                (0..n).collect::<Vec<_>>(),
                "{n} tensors, {per} a launch"
            );
            assert!(chunks(n, per).all(|r| r.len() <= per && !r.is_empty()));
        }
    }
}
