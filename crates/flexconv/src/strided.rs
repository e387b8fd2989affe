//! A strided convolution as stride-1 ones. With stride s, kernel tap
//! `(t, u)` of output `(y, x)` reads padded input `(s*y + t, s*x + u)`: row
//! `y + t / s` of the input's phase `(t % s, u % s)`, the rows and columns
//! congruent to it mod s. So the convolution is the sum over the s x s
//! phases of a stride-1, unpadded convolution of that phase with the taps
//! that fall on it: the same products, no wasted work, each by
//! [`crate::kernel`]'s shifted products (forward and both gradients), where
//! Burn's flex computes a strided weight gradient as a convolution over the
//! whole output gradient (ResNet-20's two stride-2 layers,
//! docs/BENCHMARKS.md). The input gradient of a phase is its own positions
//! of the input's, so the phases' gradients are placed, not summed.

use std::sync::Arc;

use rayon::prelude::*;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, Tensor, TensorPrimitive};

use crate::kernel::{self, Geometry};
use crate::op::{floats, register, tensor};

/// One strided convolution: the whole shape (its `kernel` and `padding`)
/// and the stride.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strided {
    pub g: Geometry,
    pub stride: [usize; 2],
}

impl Strided {
    /// The plan for a convolution of shape `g` with `stride`, when it is
    /// strided.
    pub fn new(g: Geometry, stride: [usize; 2]) -> Option<Self> {
        let strided = stride != [1, 1] && stride.iter().all(|s| *s > 0);
        strided.then_some(Strided { g, stride })
    }

    /// The output's height and width.
    pub fn out(&self) -> [usize; 2] {
        let ([kh, kw], [sh, sw]) = (self.g.kernel, self.stride);
        [(self.g.hp() - kh) / sh + 1, (self.g.wp() - kw) / sw + 1]
    }

    /// The phases with taps: their offsets and stride-1 geometries (a phase
    /// is `Hp / s` rows of `Wp / s`, rounded up, zero where past the input).
    fn phases(&self) -> Vec<([usize; 2], Geometry)> {
        let ([kh, kw], [sh, sw]) = (self.g.kernel, self.stride);
        let mut phases = Vec::new();
        for a in 0..sh.min(kh) {
            for b in 0..sw.min(kw) {
                let g = Geometry {
                    height: self.g.hp().div_ceil(sh),
                    width: self.g.wp().div_ceil(sw),
                    kernel: [(kh - a).div_ceil(sh), (kw - b).div_ceil(sw)],
                    padding: [0, 0],
                    ..self.g
                };
                phases.push(([a, b], g));
            }
        }
        phases
    }

    /// Position `(i, j)` of phase `at` in the unpadded input, if inside it.
    fn source(&self, at: [usize; 2], i: usize, j: usize) -> Option<(usize, usize)> {
        let (y, x) = (self.stride[0] * i + at[0], self.stride[1] * j + at[1]);
        let (y, x) = (
            y.checked_sub(self.g.padding[0])?,
            x.checked_sub(self.g.padding[1])?,
        );
        (y < self.g.height && x < self.g.width).then_some((y, x))
    }

    /// Phase `at` of `[N, C, H, W]` values, `[N, C, ph.height, ph.width]`.
    fn phase_of(&self, x: &[f32], at: [usize; 2], ph: &Geometry, c: usize) -> Vec<f32> {
        let (h, w) = (self.g.height, self.g.width);
        let mut out = vec![0f32; self.g.batch * c * ph.height * ph.width];
        out.par_chunks_mut(ph.height * ph.width)
            .zip(x.par_chunks(h * w))
            .for_each(|(plane, src)| {
                for (i, dst) in plane.chunks_exact_mut(ph.width).enumerate() {
                    for (j, d) in dst.iter_mut().enumerate() {
                        if let Some((y, xx)) = self.source(at, i, j) {
                            *d = src[y * w + xx];
                        }
                    }
                }
            });
        out
    }

    /// Places phase `at`'s values `[N, C, ph.height, ph.width]` at their
    /// positions in `dst` `[N, C, H, W]` (padding positions are dropped).
    fn place(&self, part: &[f32], at: [usize; 2], ph: &Geometry, dst: &mut [f32]) {
        let (h, w) = (self.g.height, self.g.width);
        dst.par_chunks_mut(h * w)
            .zip(part.par_chunks(ph.height * ph.width))
            .for_each(|(plane, src)| {
                for (i, line) in src.chunks_exact(ph.width).enumerate() {
                    for (j, v) in line.iter().enumerate() {
                        if let Some((y, x)) = self.source(at, i, j) {
                            plane[y * w + x] = *v;
                        }
                    }
                }
            });
    }

    /// The taps of `weight` `[C_out, C_in, Kh, Kw]` on phase `at`.
    fn taps_of(&self, weight: &[f32], at: [usize; 2], ph: &Geometry) -> Vec<f32> {
        let ([kh, kw], [sh, sw], [th, tw]) = (self.g.kernel, self.stride, ph.kernel);
        let mut out = vec![0f32; weight.len() / (kh * kw) * th * tw];
        for (k, v) in out.iter_mut().enumerate() {
            let (oc, t, u) = (k / (th * tw), k / tw % th, k % tw);
            *v = weight[(oc * kh + at[0] + sh * t) * kw + at[1] + sw * u];
        }
        out
    }
}

/// The output `[N, C_out, Ho, Wo]` (no bias), summed over the phases in
/// order, and the phases' input grids for the weight gradient.
fn forward(x: &[f32], weight: &[f32], s: &Strided) -> (Vec<f32>, Vec<kernel::InputGrid>) {
    let [ho, wo] = s.out();
    let mut y = vec![0f32; s.g.batch * s.g.c_out * ho * wo];
    let mut grids = Vec::new();
    for (at, ph) in s.phases() {
        let grid = kernel::InputGrid::new(&s.phase_of(x, at, &ph, s.g.c_in), &ph);
        let part = kernel::forward(&grid, &s.taps_of(weight, at, &ph), &ph);
        let [hq, wq] = ph.out();
        y.par_chunks_mut(ho * wo)
            .zip(part.par_chunks(hq * wq))
            .for_each(|(dst, src)| {
                for (d, line) in dst.chunks_exact_mut(wo).zip(src.chunks_exact(wq)) {
                    d.iter_mut().zip(line).for_each(|(d, v)| *d += v);
                }
            });
        grids.push(grid);
    }
    (y, grids)
}

/// The input gradient (if `weight` is given) and the weight gradient (if
/// `grids` are), each phase's from the output gradient widened to its grid.
fn backward(
    dy: &[f32],
    weight: Option<&[f32]>,
    grids: Option<&[kernel::InputGrid]>,
    s: &Strided,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let ([ho, wo], g) = (s.out(), &s.g);
    let mut dx = weight.map(|_| vec![0f32; g.batch * g.c_in * g.height * g.width]);
    let mut dw = grids.map(|_| vec![0f32; g.c_out * g.c_in * g.kernel[0] * g.kernel[1]]);
    for (k, (at, ph)) in s.phases().into_iter().enumerate() {
        let [hq, wq] = ph.out();
        let mut wide = vec![0f32; g.batch * g.c_out * hq * wq];
        wide.par_chunks_mut(hq * wq)
            .zip(dy.par_chunks(ho * wo))
            .for_each(|(dst, src)| {
                for (d, line) in dst.chunks_exact_mut(wq).zip(src.chunks_exact(wo)) {
                    d[..wo].copy_from_slice(line);
                }
            });
        let dyg = kernel::OutputGrad::new(&wide, &ph);
        if let (Some(dx), Some(w)) = (dx.as_mut(), weight) {
            let part = kernel::input_grad(&dyg, &s.taps_of(w, at, &ph), &ph);
            s.place(&part, at, &ph, dx);
        }
        if let (Some(dw), Some(grids)) = (dw.as_mut(), grids) {
            let part = kernel::weight_grad(&grids[k], &dyg, &ph);
            let ([kh, kw], [th, tw]) = (g.kernel, ph.kernel);
            for (t, v) in part.iter().enumerate() {
                let (oc, r, c) = (t / (th * tw), t / tw % th, t % tw);
                dw[(oc * kh + at[0] + s.stride[0] * r) * kw + at[1] + s.stride[1] * c] = *v;
            }
        }
    }
    (dx, dw)
}

#[derive(Debug)]
struct PhasedConv;

impl Backward<Flex, 2> for PhasedConv {
    type State = (Arc<Vec<kernel::InputGrid>>, NodeId, DType, Strided);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (grids, w_state, x_dtype, s) = ops.state;
        let w: FlexTensor = checkpointer.retrieve_node_output(w_state);
        let weight = floats(&w);
        let weight = node_x.is_some().then_some(&weight[..]);
        let grids = node_w.is_some().then_some(&grids[..]);
        let (dx, dw) = backward(&floats(&dy), weight, grids, &s);
        let ids = [node_x.map(|n| n.id), node_w.map(|n| n.id)];
        register(grads, ids, [dx, dw], &s.g, [x_dtype, w.dtype()]);
    }
}

/// The bias-free strided convolution of `x` with `w`, recorded for backward.
pub fn conv2d(
    x: Tensor<Autodiff<Flex>, 4>,
    w: Tensor<Autodiff<Flex>, 4>,
    s: Strided,
) -> Tensor<Autodiff<Flex>, 4> {
    let x = x.into_primitive().tensor();
    let w = w.into_primitive().tensor();
    let dtype = x.primitive.dtype();
    let (y, grids) = forward(&floats(&x.primitive), &floats(&w.primitive), &s);
    let [ho, wo] = s.out();
    let y = tensor(y, [s.g.batch, s.g.c_out, ho, wo], dtype);
    let y = match PhasedConv
        .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let state = (Arc::new(grids), prep.checkpoint(&w), dtype, s);
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive(TensorPrimitive::Float(y))
}
