//! Batch norm in training as one autodiff operation on `Autodiff<Flex>`.
//!
//! Composed of tensor ops (greentrain-amp's `batch_norm`), a training step's
//! batch norm is six full passes forward (sum, centre, square, sum, scale,
//! shift) and about ten backward, each its own Flex op with its own output;
//! with the ReLUs and additions around it, that element-wise work was
//! about a sixth of a ResNet-20 step on the CPU (perf, docs/BENCHMARKS.md).
//! Here the forward reads the input twice (mean, then the centred
//! variance) and writes the output once; the backward reads the output
//! gradient and input once for both per-channel sums and once for the
//! input gradient.
//!
//! PyTorch's semantics: the biased batch variance normalises; the caller
//! updates the running statistics from the mean and biased variance
//! returned. Sums run per channel in f64 in a fixed order (in eight lanes,
//! image by image, the lanes added in order at the end), so the bits do
//! not depend on the thread count.

use std::mem::MaybeUninit;
use std::sync::Arc;

use rayon::prelude::*;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape, Tensor, TensorData, TensorMetadata, TensorPrimitive};

use crate::kernel::unzeroed;
use crate::op::floats;
use lanes::grad_sums;

/// A batch norm's sizes: images, channels, positions per channel plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Planes {
    n: usize,
    c: usize,
    p: usize,
}

impl Planes {
    /// The values of channel `ch`, plane by plane (image by image).
    fn of<'a>(&self, v: &'a [f32], ch: usize) -> impl Iterator<Item = &'a [f32]> + 'a {
        let (c, p) = (self.c, self.p);
        (0..self.n).map(move |i| &v[(i * c + ch) * p..][..p])
    }

    /// The planes of an f32 `x` `[N, C, ...]` whose per-channel tensors
    /// (`dtype` and dims each) are all f32 and `[C]`, with values to
    /// normalise; `None` for anything else (the caller composes it).
    fn fitting(dims: &[usize], dtype: DType, per: &[(DType, [usize; 1])]) -> Option<Self> {
        let s = Planes {
            n: dims[0],
            c: *dims.get(1)?,
            p: dims[2..].iter().product(),
        };
        let f32s = dtype == DType::F32 && per.iter().all(|(d, _)| *d == DType::F32);
        let widths = per.iter().all(|(_, w)| *w == [s.c]);
        (f32s && widths && s.n * s.c * s.p > 0).then_some(s)
    }

    fn count(&self) -> f64 {
        (self.n * self.p) as f64
    }
}

/// Per-channel statistics: the mean and `1 / sqrt(biased var + eps)`.
#[derive(Clone, Debug)]
struct Stats {
    mean: Vec<f32>,
    var: Vec<f32>,
    inv_std: Vec<f32>,
}

/// Independent f64 sums per channel, added in order at the end: one running
/// sum waits on its last add, about four cycles an element (the batch norm
/// was a tenth of a ResNet-20 step on the CPU with one).
const LANES: usize = 8;

/// `sum f(v)` over the planes' values: each plane's last `len % LANES`
/// into the first lanes, then the rest eight at a time, one to a lane; the
/// lanes added in order at the end.
#[inline(always)]
fn lane_sum<'a>(planes: impl Iterator<Item = &'a [f32]>, f: impl Fn(f32) -> f64) -> f64 {
    let mut acc = [0f64; LANES];
    for plane in planes {
        let chunks = plane.chunks_exact(LANES);
        for (a, v) in acc.iter_mut().zip(chunks.remainder()) {
            *a += f(*v);
        }
        for c in chunks {
            let c: &[f32; LANES] = c.try_into().expect("LANES values");
            for j in 0..LANES {
                acc[j] += f(c[j]);
            }
        }
    }
    acc.iter().sum()
}

/// Each channel's mean and biased variance (two passes, f64 sums).
fn stats(x: &[f32], s: Planes, epsilon: f64) -> Stats {
    let per: Vec<(f32, f32)> = (0..s.c)
        .into_par_iter()
        .map(|ch| {
            let (mean, var) = moments(x, s, ch);
            (mean as f32, var as f32)
        })
        .collect();
    let (mean, var): (Vec<f32>, Vec<f32>) = per.into_iter().unzip();
    let inv_std = var
        .iter()
        .map(|v| (1.0 / (*v as f64 + epsilon).sqrt()) as f32)
        .collect();
    Stats { mean, var, inv_std }
}

// The per-element loops below are built for AVX-512 and AVX2 where the CPU
// has them (the baseline x86-64 build is SSE2: four f32s or two f64s to a
// register), the backward's sums with AVX-512 intrinsics. IEEE arithmetic
// in the same order, no fused multiply-adds: the same bits on every path.

widest! {
    /// Channel `ch`'s mean and biased variance, two passes of f64 sums.
    fn moments / moments_avx512 / moments_avx2
        (x: &[f32], s: Planes, ch: usize) -> (f64, f64) = moments_body
}

#[inline(always)]
fn moments_body(x: &[f32], s: Planes, ch: usize) -> (f64, f64) {
    let mean = lane_sum(s.of(x, ch), |v| v as f64) / s.count();
    let sq = lane_sum(s.of(x, ch), |v| (v as f64 - mean).powi(2));
    (mean, sq / s.count())
}

widest! {
    /// `dst = (src - m) * k + b` for one plane, `[m, k, b]` its channel's.
    fn shift / shift_avx512 / shift_avx2
        (dst: &mut [MaybeUninit<f32>], src: &[f32], mkb: [f32; 3]) = shift_body
}

#[inline(always)]
fn shift_body(dst: &mut [MaybeUninit<f32>], src: &[f32], [m, k, b]: [f32; 3]) {
    for (d, v) in dst.iter_mut().zip(src) {
        d.write((v - m) * k + b);
    }
}

widest! {
    /// [`shift`] then ReLU (`max(0)`, as flexconv's ReLU).
    fn shift_relu / shift_relu_avx512 / shift_relu_avx2
        (dst: &mut [MaybeUninit<f32>], src: &[f32], mkb: [f32; 3]) = shift_relu_body
}

#[inline(always)]
fn shift_relu_body(dst: &mut [MaybeUninit<f32>], src: &[f32], [m, k, b]: [f32; 3]) {
    for (d, v) in dst.iter_mut().zip(src) {
        d.write(((v - m) * k + b).max(0.0));
    }
}

widest! {
    /// [`shift`], plus the shortcut's plane, then ReLU: a residual block's end.
    fn shift_add_relu / shift_add_relu_avx512 / shift_add_relu_avx2
        (dst: &mut [MaybeUninit<f32>], src: &[f32], short: &[f32], mkb: [f32; 3])
        = shift_add_relu_body
}

#[inline(always)]
fn shift_add_relu_body(
    dst: &mut [MaybeUninit<f32>],
    src: &[f32],
    short: &[f32],
    [m, k, b]: [f32; 3],
) {
    for ((d, v), s) in dst.iter_mut().zip(src).zip(short) {
        d.write((((v - m) * k + b) + s).max(0.0));
    }
}

/// A ReLU after the batch norm, seen from its backward: the gradient passes
/// where the normalised value `(x - m) * k + b` (recomputed from `x` with
/// the forward's f32 operations, so the same bits) is above 0, as ReLU's
/// backward passes it where its output is; else 0.
#[derive(Clone, Copy, Debug)]
struct Gate {
    m: f32,
    k: f32,
    b: f32,
}

impl Gate {
    #[inline(always)]
    fn pass(&self, g: f32, v: f32) -> f32 {
        if (v - self.m) * self.k + self.b > 0.0 {
            g
        } else {
            0.0
        }
    }
}

widest! {
    /// One plane's input gradient, `[scale, mean_g, m, k, mean_gx]` its
    /// channel's: `scale * (g - mean_g - (v - m) * k * mean_gx)`.
    fn grad_plane / grad_plane_avx512 / grad_plane_avx2
        (dst: &mut [MaybeUninit<f32>], g: &[f32], v: &[f32], c: [f32; 5]) = grad_plane_body
}

#[inline(always)]
fn grad_plane_body(dst: &mut [MaybeUninit<f32>], g: &[f32], v: &[f32], c: [f32; 5]) {
    let [scale, mean_g, m, k, mean_gx] = c;
    for ((d, g), v) in dst.iter_mut().zip(g).zip(v) {
        d.write(scale * (g - mean_g - (v - m) * k * mean_gx));
    }
}

widest! {
    /// [`grad_plane`] of the gradient through a ReLU's [`Gate`], `[m, k, b]`.
    fn grad_plane_gated / grad_plane_gated_avx512 / grad_plane_gated_avx2
        (dst: &mut [MaybeUninit<f32>], g: &[f32], v: &[f32], c: [f32; 5], mkb: [f32; 3])
        = grad_plane_gated_body
}

#[inline(always)]
fn grad_plane_gated_body(
    dst: &mut [MaybeUninit<f32>],
    g: &[f32],
    v: &[f32],
    c: [f32; 5],
    [gm, gk, gb]: [f32; 3],
) {
    let [scale, mean_g, m, k, mean_gx] = c;
    for ((d, g), v) in dst.iter_mut().zip(g).zip(v) {
        let g = if (v - gm) * gk + gb > 0.0 { *g } else { 0.0 };
        d.write(scale * (g - mean_g - (v - m) * k * mean_gx));
    }
}

/// What the forward's one pass does after the shift.
#[derive(Clone, Copy)]
enum Tail<'a> {
    /// Nothing: the normalised values are the output.
    None,
    /// `max(0)`.
    Relu,
    /// The shortcut (same shape as `x`) added, then `max(0)`.
    AddRelu(&'a [f32]),
}

/// `y = (x - mean) * factor + beta`, plane by plane (`factor` per channel:
/// `inv_std * gamma` in training, the composition's `gamma / sqrt(var +
/// eps)` in evaluation), then the `tail`.
fn normalise(x: &[f32], [mean, factor, beta]: [&[f32]; 3], s: Planes, tail: Tail) -> Vec<f32> {
    let plane = |(i, (dst, src)): (usize, (&mut [MaybeUninit<f32>], &[f32]))| {
        let ch = i % s.c;
        let mkb = [mean[ch], factor[ch], beta[ch]];
        match tail {
            Tail::None => shift(dst, src, mkb),
            Tail::Relu => shift_relu(dst, src, mkb),
            Tail::AddRelu(short) => shift_add_relu(dst, src, &short[i * s.p..][..s.p], mkb),
        }
    };
    // SAFETY: every plane's values are written.
    unsafe {
        unzeroed(x.len(), |y| {
            y.par_chunks_mut(s.p)
                .zip(x.par_chunks(s.p))
                .enumerate()
                .for_each(plane)
        })
    }
}

/// The input, gamma and beta gradients from the output gradient:
/// `dbeta = sum dy`, `dgamma = sum dy * xhat`,
/// `dx = gamma * inv_std * (dy - dbeta / M - xhat * dgamma / M)`.
fn gradients(
    dy: &[f32],
    x: &[f32],
    st: &Stats,
    gamma: &[f32],
    s: Planes,
    relu_beta: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    // The forward's scale, `inv_std * gamma` in f32: the gate's bits.
    let gate = |ch: usize| {
        relu_beta.map(|beta| Gate {
            m: st.mean[ch],
            k: st.inv_std[ch] * gamma[ch],
            b: beta[ch],
        })
    };
    let sums: Vec<(f64, f64)> = (0..s.c)
        .into_par_iter()
        .map(|ch| {
            let mk = [st.mean[ch] as f64, st.inv_std[ch] as f64];
            grad_sums(dy, x, s, ch, mk, gate(ch))
        })
        .collect();
    let dbeta: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
    let dgamma: Vec<f32> = sums.iter().map(|s| s.1 as f32).collect();
    let plane = |ch: usize, dst: &mut [MaybeUninit<f32>], g: &[f32], v: &[f32]| {
        let (m, k) = (st.mean[ch], st.inv_std[ch]);
        let scale = gamma[ch] * k;
        let (mean_g, mean_gx) = (
            (sums[ch].0 / s.count()) as f32,
            (sums[ch].1 / s.count()) as f32,
        );
        let c = [scale, mean_g, m, k, mean_gx];
        match gate(ch) {
            Some(t) => grad_plane_gated(dst, g, v, c, [t.m, t.k, t.b]),
            None => grad_plane(dst, g, v, c),
        }
    };
    // SAFETY: every plane's values are written.
    let dx = unsafe {
        unzeroed(x.len(), |dx| {
            dx.par_chunks_mut(s.p)
                .zip(dy.par_chunks(s.p).zip(x.par_chunks(s.p)))
                .enumerate()
                .for_each(|(i, (dst, (g, v)))| plane(i % s.c, dst, g, v))
        })
    };
    (dx, dgamma, dbeta)
}

#[derive(Debug)]
struct BatchNorm;

/// What followed the normalisation in the forward's pass, as the backward
/// needs it.
#[derive(Clone, Debug)]
enum After {
    Nothing,
    /// A ReLU: beta, for its gate recomputed from the input.
    Relu(Vec<f32>),
    /// A shortcut added, then a ReLU: the output (shared, not copied), where
    /// above 0 the gradient passes to the norm and the shortcut alike.
    AddRelu(FlexTensor),
}

/// What a batch norm's backward reads: the input, the statistics, gamma,
/// the sizes, and what followed.
#[derive(Clone, Debug)]
struct Saved {
    x: FlexTensor,
    st: Arc<Stats>,
    gamma: Vec<f32>,
    s: Planes,
    after: After,
}

/// Parents: the input, gamma, beta and the shortcut (a blank, untracked
/// node where none was added).
impl Backward<Flex, 4> for BatchNorm {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [id_x, id_g, id_b, _] = ops.parents.each_ref().map(|n| n.as_ref().map(|n| n.id));
        let dy = grads.consume::<Flex>(&ops.node);
        let Saved {
            x,
            st,
            gamma,
            s,
            after,
        } = ops.state;
        // After a residual sum, the ReLU's gradient is the norm's and the
        // shortcut's, as the composition's sum hands it to both.
        let (dy, beta) = match after {
            After::Nothing => (dy, None),
            After::Relu(beta) => (dy, Some(beta)),
            After::AddRelu(out) => (crate::relu::passed(dy, &out), None),
        };
        let (dx, dgamma, dbeta) =
            gradients(&floats(&dy), &floats(&x), &st, &gamma, s, beta.as_deref());
        put(grads, id_x, dx, x.shape());
        put(grads, id_g, dgamma, [s.c].into());
        put(grads, id_b, dbeta, [s.c].into());
        if let [.., Some(short)] = ops.parents {
            crate::add::accumulate(grads, key!(short), dy);
        }
    }
}

/// Registers `values` of `shape` as the gradient of `id`, where tracked.
fn put(grads: &mut Gradients, id: Option<NodeId>, values: Vec<f32>, shape: Shape) {
    if let Some(id) = id {
        let t = FlexTensor::from_data(TensorData::new(values, shape));
        grads.register::<Flex>(id, t);
    }
}

/// The batch statistics a training batch norm normalised with: each
/// channel's mean and biased variance, for the running statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchStats {
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
}

/// Batch norm of an f32 `x` `[N, C, ...]` with batch statistics, then a
/// ReLU where `relu` (one pass each way rather than the ReLU's own two,
/// the same bits), recorded for backward; `None` for another dtype or
/// shape (the caller composes it).
pub fn batch_norm<const D: usize>(
    x: Tensor<Autodiff<Flex>, D>,
    gamma: Tensor<Autodiff<Flex>, 1>,
    beta: Tensor<Autodiff<Flex>, 1>,
    epsilon: f64,
    relu: bool,
) -> Option<(Tensor<Autodiff<Flex>, D>, BatchStats)> {
    let then = if relu { Then::Relu } else { Then::Nothing };
    train(x, gamma, beta, epsilon, then)
}

/// `relu(batch_norm(x) + shortcut)`, a residual block's end, in one pass
/// each way where the composition takes three forward (the norm, the sum,
/// the ReLU: four full passes over the activations more); the same bits.
/// `None` where [`batch_norm`] would give `None` or `shortcut` is not an
/// f32 tensor of `x`'s shape (the caller composes it).
pub fn batch_norm_add_relu<const D: usize>(
    x: Tensor<Autodiff<Flex>, D>,
    gamma: Tensor<Autodiff<Flex>, 1>,
    beta: Tensor<Autodiff<Flex>, 1>,
    epsilon: f64,
    shortcut: Tensor<Autodiff<Flex>, D>,
) -> Option<(Tensor<Autodiff<Flex>, D>, BatchStats)> {
    if shortcut.dtype() != DType::F32 || shortcut.dims() != x.dims() {
        return None;
    }
    let short = shortcut.into_primitive().tensor();
    train(x, gamma, beta, epsilon, Then::AddRelu(short))
}

/// What follows the norm in its own pass.
enum Then {
    Nothing,
    Relu,
    /// The shortcut's primitive: its values and its node.
    AddRelu(FloatTensor<Autodiff<Flex>>),
}

/// [`batch_norm`] and [`batch_norm_add_relu`]: the statistics, the one
/// forward pass, the record for backward.
fn train<const D: usize>(
    x: Tensor<Autodiff<Flex>, D>,
    gamma: Tensor<Autodiff<Flex>, 1>,
    beta: Tensor<Autodiff<Flex>, 1>,
    epsilon: f64,
    then: Then,
) -> Option<(Tensor<Autodiff<Flex>, D>, BatchStats)> {
    let per = [(gamma.dtype(), gamma.dims()), (beta.dtype(), beta.dims())];
    let s = Planes::fitting(&x.dims(), x.dtype(), &per)?;
    let [x, gamma, beta] = [
        x.into_primitive().tensor(),
        gamma.into_primitive().tensor(),
        beta.into_primitive().tensor(),
    ];
    let values = floats(&x.primitive);
    let st = stats(&values, s, epsilon);
    let (g, b) = (
        floats(&gamma.primitive).into_owned(),
        floats(&beta.primitive).into_owned(),
    );
    let factor: Vec<f32> = st.inv_std.iter().zip(&g).map(|(k, g)| k * g).collect();
    let coefficients = [&st.mean[..], &factor, &b];
    let y = match &then {
        Then::Nothing => normalise(&values, coefficients, s, Tail::None),
        Then::Relu => normalise(&values, coefficients, s, Tail::Relu),
        Then::AddRelu(short) => {
            let short = floats(&short.primitive);
            normalise(&values, coefficients, s, Tail::AddRelu(&short))
        }
    };
    let y = FlexTensor::from_data(TensorData::new(y, x.primitive.shape()));
    let batch = BatchStats {
        mean: st.mean.clone(),
        var: st.var.clone(),
    };
    let (after, short_node) = match then {
        Then::Nothing => (After::Nothing, crate::add::blank().node),
        Then::Relu => (After::Relu(b), crate::add::blank().node),
        Then::AddRelu(short) => (After::AddRelu(y.clone()), short.node),
    };
    let nodes = [
        x.node.clone(),
        gamma.node.clone(),
        beta.node.clone(),
        short_node,
    ];
    let y = match BatchNorm
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let saved = Saved {
                x: x.primitive.clone(),
                st: Arc::new(st),
                gamma: g,
                s,
                after,
            };
            prep.finish(saved, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Some((Tensor::from_primitive(TensorPrimitive::Float(y)), batch))
}

/// Batch norm in evaluation on Flex with the running statistics:
/// `y = (x - mean) * (gamma / sqrt(var + eps)) + beta` in one pass over an
/// f32 `x` `[N, C, ...]`, where the composed tensor ops take three (a
/// tenth of a ResNet-20 evaluation). The same f32 operations in the same
/// order as the composition, so the same bits. `None` for another dtype or
/// shape (the caller composes it).
pub fn batch_norm_inference<const D: usize>(
    x: Tensor<Flex, D>,
    [mean, var, gamma, beta]: [Tensor<Flex, 1>; 4],
    epsilon: f64,
) -> Option<Tensor<Flex, D>> {
    let per = [&mean, &var, &gamma, &beta].map(|t| (t.dtype(), t.dims()));
    let s = Planes::fitting(&x.dims(), x.dtype(), &per)?;
    let [mean, var, gamma, beta] =
        [mean, var, gamma, beta].map(|t| floats(&t.into_primitive().tensor()).into_owned());
    // The composition's scale, `gamma / sqrt(var + eps)` in f32.
    let factor: Vec<f32> = var
        .iter()
        .zip(&gamma)
        .map(|(v, g)| g / (v + epsilon as f32).sqrt())
        .collect();
    let x = x.into_primitive().tensor();
    let y = normalise(&floats(&x), [&mean, &factor, &beta], s, Tail::None);
    let y = FlexTensor::from_data(TensorData::new(y, x.shape()));
    Some(Tensor::from_primitive(TensorPrimitive::Float(y)))
}

mod lanes;
#[cfg(test)]
mod tests;
