//! A strided convolution as one stride-1 convolution over the input's
//! phases stacked as channels ("space to depth"). With stride s, kernel tap
//! `(t, u)` of output `(y, x)` reads padded input `(s*y + t, s*x + u)`: row
//! `y + t / s`, column `x + u / s` of the input's phase `(t % s, u % s)` (the
//! rows and columns congruent to it mod s). Stacking the phases that have
//! taps as channels, `[N, P*C, Hp/s, Wp/s]`, the convolution is a stride-1,
//! unpadded one of that stack with a `ceil(Kh/s) x ceil(Kw/s)` kernel whose
//! taps past the real kernel are zero: a 3x3 stride-2 layer computes 16 taps
//! for 9 (1.78x the products), but as one [`crate::kernel`] correlation
//! (forward and both gradients) 4x as deep, where the phases one by one were
//! four shallow products over 16-32 terms, each with its own copies, at
//! about a quarter of the stride-1 layers' GFLOP/s (docs/BENCHMARKS.md).
//! Burn's flex computes a strided weight gradient as a convolution over the
//! whole output gradient. Each input position lies in one phase, so the
//! stack's gradient is placed back, not summed.

use std::ops::Range;
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
use crate::layout::{self, Place};
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

    /// Whether the stacked convolution's products are deep enough for gemm
    /// to beat Flex's own forward ([`Geometry::shallow`]'s rule).
    pub fn deep(&self) -> bool {
        !self.stacked().shallow()
    }

    /// Phases with taps per row and per column: `min(s, k)` (a 1x1 kernel
    /// reads one phase of s x s).
    fn phases(&self) -> [usize; 2] {
        let ([kh, kw], [sh, sw]) = (self.g.kernel, self.stride);
        [sh.min(kh), sw.min(kw)]
    }

    /// The stride-1 convolution over the stacked phases: phase `(a, b)`'s
    /// channel `c` is channel `(a * phases[1] + b) * C + c`, a phase is
    /// `Hp / s` rows of `Wp / s`, rounded up (zero past the input).
    fn stacked(&self) -> Geometry {
        let ([kh, kw], [sh, sw], [pa, pb]) = (self.g.kernel, self.stride, self.phases());
        Geometry {
            c_in: pa * pb * self.g.c_in,
            height: self.g.hp().div_ceil(sh),
            width: self.g.wp().div_ceil(sw),
            kernel: [kh.div_ceil(sh), kw.div_ceil(sw)],
            padding: [0, 0],
            ..self.g
        }
    }

    /// Where an image lies in its padded, channels-last copy (rows and
    /// columns of whole strides, `s * Hq` by `s * Wq`, zero past the input),
    /// and that copy's length.
    fn padded(&self, st: &Geometry) -> (Place, usize) {
        let wp = self.stride[1] * st.width;
        let len = self.stride[0] * st.height * wp * self.g.c_in;
        let place = Place {
            w: self.g.width,
            wp,
            at: self.g.padding,
        };
        (place, len)
    }

    /// Calls `f(run in the stack's rows, run in the padded copy)` for each
    /// run of `P_w * C` values they share: for phase row `a`, stack pixel
    /// `(i, j)`'s phases `(a, 0..P_w)` are padded pixels `(s*i + a, s*j ..)`,
    /// side by side in both.
    fn runs(&self, st: &Geometry, mut f: impl FnMut(Range<usize>, Range<usize>)) {
        let ([sh, sw], [pa, pb], c) = (self.stride, self.phases(), self.g.c_in);
        let (run, wide) = (pb * c, sw * st.width);
        for (i, j) in (0..st.height).flat_map(|i| (0..st.width).map(move |j| (i, j))) {
            for a in 0..pa {
                let at = ((i * st.width + j) * pa + a) * run;
                let from = ((sh * i + a) * wide + sw * j) * c;
                f(at..at + run, from..from + run);
            }
        }
    }

    /// The stack's input grid from `[N, C, H, W]` values, through each
    /// image's padded channels-last copy (a transpose, then runs of `P_w * C`).
    fn stack(&self, x: &[f32], st: &Geometry) -> kernel::InputGrid {
        let (c, (place, padded)) = (self.g.c_in, self.padded(st));
        let image = c * self.g.height * self.g.width;
        kernel::InputGrid::of_pixels(st, |n, rows| {
            let mut copy = vec![0f32; padded];
            layout::to_rows(
                &x[n * image..(n + 1) * image],
                layout::writable(&mut copy),
                c,
                place,
            );
            self.runs(st, |to, from| rows[to].copy_from_slice(&copy[from]));
        })
    }

    /// The stack's input gradient (grid rows) placed back at the input's
    /// positions `[N, C, H, W]` (padding dropped, phases without taps zero).
    fn unstack(&self, rows: &[f32], st: &Geometry) -> Vec<f32> {
        let (c, (place, padded)) = (self.g.c_in, self.padded(st));
        let image = c * self.g.height * self.g.width;
        // SAFETY: to_planes writes every value of each image's chunk.
        unsafe {
            kernel::unzeroed(self.g.batch * image, |dx| {
                dx.par_chunks_mut(image)
                    .zip(rows.par_chunks(st.height * st.width * st.c_in))
                    .for_each(|(dst, src)| {
                        let mut copy = vec![0f32; padded];
                        self.runs(st, |from, to| copy[to].copy_from_slice(&src[from]));
                        layout::to_planes(&copy, dst, c, place);
                    })
            })
        }
    }

    /// Where weight `(o, c, y, x)` sits in the stack's kernel
    /// `[C_out, P*C, Kh/s, Kw/s]`.
    fn tap(&self, st: &Geometry, o: usize, c: usize, y: usize, x: usize) -> usize {
        let ([sh, sw], [_, pb], [th, tw]) = (self.stride, self.phases(), st.kernel);
        let p = (y % sh) * pb + x % sw;
        ((o * st.c_in + p * self.g.c_in + c) * th + y / sh) * tw + x / sw
    }

    /// Calls `f(stack kernel index, weight index)` for each weight.
    fn taps(&self, st: &Geometry, mut f: impl FnMut(usize, usize)) {
        kernel::weight_elements(&self.g, |idx, (o, c, y, x)| {
            f(self.tap(st, o, c, y, x), idx)
        });
    }

    /// `weight` `[C_out, C_in, Kh, Kw]` as the stack's kernel, zero where a
    /// phase's taps run past the real kernel.
    fn stacked_weight(&self, weight: &[f32], st: &Geometry) -> Vec<f32> {
        let mut out = vec![0f32; st.c_out * st.c_in * st.kernel[0] * st.kernel[1]];
        self.taps(st, |s, w| out[s] = weight[w]);
        out
    }

    /// The stack kernel's gradient at the real kernel's taps.
    fn unstacked_weight(&self, part: &[f32], st: &Geometry) -> Vec<f32> {
        let mut dw = vec![0f32; self.g.c_out * self.g.c_in * self.g.kernel[0] * self.g.kernel[1]];
        self.taps(st, |s, w| dw[w] = part[s]);
        dw
    }
}

/// The output `[N, C_out, Ho, Wo]` (no bias) in `x`'s dtype and the
/// stack's input grid, kept for the weight gradient.
fn forward(x: &FlexTensor, weight: &FlexTensor, s: &Strided) -> (FlexTensor, kernel::InputGrid) {
    let st = s.stacked();
    let grid = s.stack(&floats(x), &st);
    let y = kernel::forward_within(&grid, &s.stacked_weight(&floats(weight), &st), &st, s.out());
    let [ho, wo] = s.out();
    (tensor(y, [s.g.batch, s.g.c_out, ho, wo], x.dtype()), grid)
}

/// The input gradient (if `weight` is given) and the weight gradient (if
/// `grid` is), from the output gradient, zero beyond it in the stack's output.
fn backward(
    dy: &[f32],
    weight: Option<&[f32]>,
    grid: Option<&kernel::InputGrid>,
    s: &Strided,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let st = s.stacked();
    let dyg = kernel::OutputGrad::within(dy, &st, s.out());
    let dx = weight.map(|w| {
        let rows = kernel::input_grad_rows(&dyg, &s.stacked_weight(w, &st), &st);
        s.unstack(&rows, &st)
    });
    let dw = grid.map(|grid| s.unstacked_weight(&kernel::weight_grad(grid, &dyg, &st), &st));
    (dx, dw)
}

#[derive(Debug)]
struct StackedConv;

impl Backward<Flex, 2> for StackedConv {
    type State = (Arc<kernel::InputGrid>, NodeId, DType, Strided);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (grid, w_state, x_dtype, s) = ops.state;
        let w: FlexTensor = checkpointer.retrieve_node_output(w_state);
        let weight = floats(&w);
        let weight = node_x.is_some().then_some(&weight[..]);
        let grid = node_w.is_some().then_some(&*grid);
        let (dx, dw) = backward(&floats(&dy), weight, grid, &s);
        let keys = [node_x.map(|n| key!(n)), node_w.map(|n| key!(n))];
        register(grads, keys, [dx, dw], &s.g, [x_dtype, w.dtype()]);
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
    let (y, grid) = forward(&x.primitive, &w.primitive, &s);
    let y = match StackedConv
        .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let state = (Arc::new(grid), prep.checkpoint(&w), dtype, s);
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// The same strided convolution on Flex itself (evaluation): no graph to
/// record, the stack's grid dropped after the forward.
pub fn conv2d_inner(x: Tensor<Flex, 4>, w: Tensor<Flex, 4>, s: Strided) -> Tensor<Flex, 4> {
    let (x, w) = (x.into_primitive().tensor(), w.into_primitive().tensor());
    let (y, _) = forward(&x, &w, &s);
    Tensor::from_primitive(TensorPrimitive::Float(y))
}
