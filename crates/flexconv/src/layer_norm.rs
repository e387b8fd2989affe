//! Layer norm over the last dimension on `Autodiff<Flex>` and Flex, as one
//! operation each way with its rows split across rayon's pool, and the bits
//! of Burn's composition.
//!
//! Burn 0.21 composes `layer_norm` of nine tensor ops (mean, centre,
//! square, mean, add epsilon, square root, divide, scale, shift), and
//! autodiff differentiates each: some twenty Flex ops, all on the thread
//! driving the graph while the pool's workers wait. In a CPU training step
//! of the transformer they were about a tenth of the wall time (perf,
//! docs/BENCHMARKS.md). Here a task takes whole rows: the forward reads a
//! row twice and writes it once; the backward reads the output gradient and
//! the input twice and writes the input's gradient once, and gamma's and
//! beta's sums over the rows go by columns ([`crate::sums`]).
//!
//! Every value is the composition's: the same f32 operations in its order,
//! row sums through Flex's own `sum_f32`, a division where it divides, the
//! reciprocal where its division's backward multiplies by one, the square
//! root's gradient through `powf(-0.5) / 2`, and the input's gradient added
//! up in the order autodiff registers its parts (any gradient already there,
//! then the centring's, then the mean's). A model trains to the same bits
//! with or without it; the `Amp` backend's tests hold it to that.

use std::hint::black_box;
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::ops::{FloatTensor, ModuleOps};
use burn::tensor::{DType, Shape, TensorData, TensorMetadata};
use burn_flex::simd::kernels::sum_f32;
use rayon::prelude::*;

use crate::add;
use crate::kernel::{unzeroed, zeroed};
use crate::op::floats;
use crate::sums;

/// Values per task.
const CHUNK: usize = 1 << 14;

/// Below this many values a layer norm stays Burn's: two tasks at least.
const MIN_LEN: usize = 2 * CHUNK;

/// Each row's statistics, as the composition computes them: the mean,
/// the variance plus epsilon, and its square root.
#[derive(Debug, Default)]
struct Rows {
    mean: Vec<f32>,
    var_eps: Vec<f32>,
    std: Vec<f32>,
}

/// The width `d` of the rows where a layer norm runs here: an f32 input of
/// rank 2 or more and this many values, an f32 gamma (and beta) of `[d]`.
fn width(x: &FlexTensor, gamma: &FlexTensor, beta: Option<&FlexTensor>) -> Option<usize> {
    let shape = x.layout().shape();
    let rank = shape.num_dims();
    let d = shape[rank.checked_sub(1)?];
    let param = |t: &FlexTensor| {
        let s = t.layout().shape();
        t.dtype() == DType::F32 && s.num_dims() == 1 && s[0] == d
    };
    let fits = rank >= 2 && x.dtype() == DType::F32 && shape.num_elements() >= MIN_LEN;
    (fits && d > 0 && param(gamma) && beta.is_none_or(param)).then_some(d)
}

widest! {
    /// One row's output, as the composition computes it; returns its
    /// `[mean, var + eps, sqrt(var + eps)]`. `sq` is scratch of the row's
    /// width; `beta` is empty where there is none.
    fn row_forward / row_forward_avx512 / row_forward_avx2
        (out: &mut [f32], x: &[f32], sq: &mut [f32], gb: [&[f32]; 2], eps: f32) -> [f32; 3]
        = row_forward_body
}

#[inline(always)]
fn row_forward_body(
    out: &mut [f32],
    x: &[f32],
    sq: &mut [f32],
    [gamma, beta]: [&[f32]; 2],
    eps: f32,
) -> [f32; 3] {
    let d = x.len() as f32;
    let mean = sum_f32(x) / d;
    for (s, &v) in sq.iter_mut().zip(x) {
        let c = v - mean;
        *s = c * c;
    }
    let var_eps = sum_f32(sq) / d + eps;
    let std = var_eps.sqrt();
    let normed = out.iter_mut().zip(x).zip(gamma);
    if beta.is_empty() {
        normed.for_each(|((o, &v), &g)| *o = (v - mean) / std * g);
    } else {
        for (((o, &v), &g), &b) in normed.zip(beta) {
            *o = (v - mean) / std * g + b;
        }
    }
    [mean, var_eps, std]
}

/// The layer norm of `x` (rows of `gamma.len()`), and its rows' statistics.
fn forward(x: &[f32], gamma: &[f32], beta: &[f32], eps: f64) -> (Vec<f32>, Rows) {
    let d = gamma.len();
    let n = x.len() / d;
    let per_task = (CHUNK / d).max(1);
    let mut stats = vec![[0.0f32; 3]; n];
    // SAFETY: each task zeroes its part of the output before writing it.
    let out = unsafe {
        unzeroed(x.len(), |out| {
            out.par_chunks_mut(per_task * d)
                .zip(x.par_chunks(per_task * d))
                .zip(stats.par_chunks_mut(per_task))
                .for_each(|((out, x), stats)| {
                    let out = zeroed(out);
                    let mut sq = vec![0.0f32; d];
                    for ((o, x), s) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)).zip(stats) {
                        *s = row_forward(o, x, &mut sq, [gamma, beta], eps as f32);
                    }
                })
        })
    };
    let rows = Rows {
        mean: stats.iter().map(|s| s[0]).collect(),
        var_eps: stats.iter().map(|s| s[1]).collect(),
        std: stats.iter().map(|s| s[2]).collect(),
    };
    (out, rows)
}

widest! {
    /// One row's input gradient (over the gradient already registered,
    /// where there is one) and `g * normalised`, as autodiff computes them
    /// from the output gradient `g`.
    fn row_backward / row_backward_avx512 / row_backward_avx2
        (out: [&mut [f32]; 3], rows: [&[f32]; 4], st: [f32; 3]) = row_backward_body
}

/// `out`: the input gradient, `g * normalised`, scratch; `rows`: the
/// output gradient, the input, the old gradient (or empty), gamma.
#[inline(always)]
fn row_backward_body(
    [dx, prod, t]: [&mut [f32]; 3],
    [g, x, old, gamma]: [&[f32]; 4],
    [mean, var_eps, std]: [f32; 3],
) {
    // The mean's backward: ones times 1/d (an f64 rounded to f32).
    let per = (1.0f64 / x.len() as f64) as f32;
    let (recip, std2) = (1.0 / std, std * std);
    // Scaling by gamma (the gradient of gamma wants g * normalised), then
    // the division's gradient toward its divisor, summed over the row.
    for ((((t, p), &g), &v), &w) in t.iter_mut().zip(prod.iter_mut()).zip(g).zip(x).zip(gamma) {
        let c = v - mean;
        *p = g * (c / std);
        *t = (g * w) * (-c / std2);
    }
    let d_std = sum_f32(t);
    // Square root (`powf(-0.5) / 2`), epsilon, then the variance's mean.
    let d_var = d_std * (var_eps.powf(black_box(-0.5)) / 2.0);
    let d_sq = per * sum_f32(&[d_var]);
    // The centred values' three gradients in autodiff's order: the
    // division's, then the square's two operands'.
    for ((((dx, t), &g), &v), &w) in dx.iter_mut().zip(t.iter_mut()).zip(g).zip(x).zip(gamma) {
        let c = v - mean;
        let m = d_sq * c;
        let dc = m + (m + (g * w) * recip);
        *dx = dc;
        *t = -dc;
    }
    // The centring's subtracted mean, then the mean's own backward.
    let d_x_mean = per * sum_f32(&[sum_f32(t)]);
    if old.is_empty() {
        dx.iter_mut().for_each(|dx| *dx += d_x_mean);
    } else {
        for (dx, &o) in dx.iter_mut().zip(old) {
            *dx = d_x_mean + (*dx + o);
        }
    }
}

/// The input's gradient (over `old` where not empty) and `g * normalised`.
fn backward(g: &[f32], x: &[f32], old: &[f32], gamma: &[f32], rows: &Rows) -> [Vec<f32>; 2] {
    let d = gamma.len();
    let per_task = (CHUNK / d).max(1) * d;
    let task = |i: usize, dx: &mut [f32], prod: &mut [f32]| {
        let at = i * per_task;
        let (g, x) = (&g[at..at + dx.len()], &x[at..at + dx.len()]);
        let old = old.get(at..at + dx.len()).unwrap_or(&[]);
        let mut t = vec![0.0f32; d];
        for (r, ((dx, prod), (g, x))) in dx
            .chunks_exact_mut(d)
            .zip(prod.chunks_exact_mut(d))
            .zip(g.chunks_exact(d).zip(x.chunks_exact(d)))
            .enumerate()
        {
            let row = at / d + r;
            let st = [rows.mean[row], rows.var_eps[row], rows.std[row]];
            let old = old.get(r * d..(r + 1) * d).unwrap_or(&[]);
            row_backward([dx, prod, &mut t], [g, x, old, gamma], st);
        }
    };
    let mut prod = Vec::new();
    // SAFETY: each task zeroes its parts of both outputs before writing them.
    let dx = unsafe {
        unzeroed(x.len(), |dx| {
            prod = unzeroed(x.len(), |prod| {
                dx.par_chunks_mut(per_task)
                    .zip(prod.par_chunks_mut(per_task))
                    .enumerate()
                    .for_each(|(i, (dx, prod))| task(i, zeroed(dx), zeroed(prod)))
            })
        })
    };
    [dx, prod]
}

#[derive(Debug)]
struct LayerNorm;

/// What the backward reads: the input (contiguous), gamma, the rows'
/// statistics.
#[derive(Clone, Debug)]
struct Saved {
    x: FlexTensor,
    gamma: Arc<Vec<f32>>,
    rows: Arc<Rows>,
}

/// Parents: the input, gamma and beta (untracked where there is none).
impl Backward<Flex, 3> for LayerNorm {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        let Saved { x, gamma, rows } = ops.state;
        let shape = x.layout().shape().clone();
        // gamma's and beta's shape as the composition broadcast them: [1, .., 1, d].
        let mut per = vec![1; shape.num_dims()];
        per[shape.num_dims() - 1] = gamma.len();
        let per = Shape::from(per);
        let dy = floats(&dy);
        let [node_x, node_gamma, node_beta] = ops.parents;
        // Autodiff sums the leading dimensions away, then reshapes to [d].
        let summed = |v: &[f32]| {
            let sums = sums::leading(v, &shape, &per).unwrap_or_else(|| v.to_vec());
            FlexTensor::from_data(TensorData::new(sums, [gamma.len()]))
        };
        if let Some(node) = node_beta {
            add::accumulate(grads, key!(node), summed(&dy));
        }
        let old = node_x
            .clone()
            .and_then(|node| grads.remove::<Flex>(&key!(node)));
        let old = old.as_ref().map(floats);
        let [dx, prod] = backward(
            &dy,
            floats(&x).as_ref(),
            old.as_deref().unwrap_or(&[]),
            &gamma,
            &rows,
        );
        if let Some(node) = node_gamma {
            add::accumulate(grads, key!(node), summed(&prod));
        }
        if let Some(node) = node_x {
            let dx = FlexTensor::from_data(TensorData::new(dx, shape));
            grads.register::<Flex>(node.id, dx);
        }
    }
}

/// Burn's `layer_norm` on `Autodiff<Flex>`, recorded as one operation
/// where [`width`] takes it, Burn's composition otherwise.
pub(crate) fn autodiff(
    x: FloatTensor<Autodiff<Flex>>,
    gamma: FloatTensor<Autodiff<Flex>>,
    beta: Option<FloatTensor<Autodiff<Flex>>>,
    epsilon: f64,
) -> FloatTensor<Autodiff<Flex>> {
    if width(
        &x.primitive,
        &gamma.primitive,
        beta.as_ref().map(|b| &b.primitive),
    )
    .is_none()
    {
        return Autodiff::<Flex>::layer_norm(x, gamma, beta, epsilon);
    }
    let shape = x.primitive.shape();
    // The input as the backward reads it: contiguous (shared, or a copy).
    let xs = match x.primitive.as_slice::<f32>() {
        Some(_) => x.primitive.clone(),
        None => FlexTensor::from_data(TensorData::new(
            floats(&x.primitive).into_owned(),
            shape.clone(),
        )),
    };
    let g = floats(&gamma.primitive).into_owned();
    let b = beta.as_ref().map(|b| floats(&b.primitive).into_owned());
    let (y, rows) = forward(&floats(&xs), &g, b.as_deref().unwrap_or(&[]), epsilon);
    let y = FlexTensor::from_data(TensorData::new(y, shape));
    let saved = || Saved {
        x: xs,
        gamma: Arc::new(g),
        rows: Arc::new(rows),
    };
    // Without beta the third parent is a blank, untracked node: no gradient.
    let beta_node = beta.map_or_else(|| add::blank().node, |b| b.node);
    let nodes = [x.node, gamma.node, beta_node];
    match LayerNorm
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(saved(), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::ops::ModuleOps;
    use burn::tensor::{Tensor, TensorData, TensorPrimitive};

    type A = Autodiff<Flex>;

    fn values(n: usize, seed: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 4093) as f32 / 409.3 - 5.0) * scale)
            .collect()
    }

    fn bits(t: Tensor<Flex, 1>) -> Vec<u32> {
        let v = t.into_data().to_vec::<f32>().unwrap();
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Output, loss and the gradients of the input (which also feeds a
    /// residual sum, so its gradient arrives in parts), gamma and beta.
    fn run(dims: [usize; 3], beta: bool, fused: bool) -> Vec<Vec<u32>> {
        let device = Default::default();
        let n: usize = dims.iter().product();
        let d = dims[2];
        // Rows of different offsets and spreads.
        let x: Vec<f32> = values(n, 1, 1.0)
            .iter()
            .enumerate()
            .map(|(i, v)| v * (1.0 + (i / d % 7) as f32) + (i / d % 5) as f32)
            .collect();
        let x = Tensor::<A, 3>::from_data(TensorData::new(x, dims), &device).require_grad();
        let gamma = Tensor::<A, 1>::from_data(TensorData::new(values(d, 2, 0.3), [d]), &device)
            .require_grad();
        let b = Tensor::<A, 1>::from_data(TensorData::new(values(d, 3, 0.1), [d]), &device)
            .require_grad();
        let prim = |t: &Tensor<A, 1>| t.clone().into_primitive().tensor();
        let (xp, gp) = (x.clone().into_primitive().tensor(), prim(&gamma));
        let bp = beta.then(|| prim(&b));
        let y = match fused {
            true => super::autodiff(xp, gp, bp, 1e-5),
            false => A::layer_norm(xp, gp, bp, 1e-5),
        };
        let y = Tensor::<A, 3>::from_primitive(TensorPrimitive::Float(y));
        let w = Tensor::<A, 3>::from_data(TensorData::new(values(n, 4, 1.0), dims), &device);
        let out = (y.clone() * w.clone()).exp() + x.clone() * 0.5;
        let loss = (out * w).sum();
        let grads = loss.backward();
        let flat = |t: Tensor<Flex, 3>| bits(t.reshape([n]));
        let mut got = vec![flat(y.inner()), bits(loss.inner())];
        got.push(flat(x.grad(&grads).unwrap()));
        got.push(bits(gamma.grad(&grads).unwrap()));
        if beta {
            got.push(bits(b.grad(&grads).unwrap()));
        }
        got
    }

    /// The fused layer norm against Burn's composition on `Autodiff<Flex>`:
    /// every value and gradient bit for bit, with and without beta, rows of
    /// one and of two leading dimensions.
    #[test]
    fn values_and_gradients_are_the_compositions_bits() {
        for (dims, beta) in [
            ([64, 3, 200], true),
            ([128, 1, 384], false),
            ([40, 4, 205], true),
        ] {
            let (fused, composed) = (run(dims, beta, true), run(dims, beta, false));
            let names = ["output", "loss", "x grad", "gamma grad", "beta grad"];
            for ((f, c), name) in fused.iter().zip(&composed).zip(names) {
                let same = f.iter().zip(c).filter(|(a, b)| a == b).count();
                assert_eq!(
                    same,
                    c.len(),
                    "{name} {dims:?}: {same} of {} equal",
                    c.len()
                );
            }
        }
    }
}
