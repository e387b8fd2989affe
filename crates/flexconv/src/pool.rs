//! Max pooling without padding or dilation (LeNet-5's 2x2, stride 2) on
//! `Autodiff<Flex>` and Flex, as one autodiff operation.
//!
//! Flex pools through its general 3-D kernel, with an `i64` index tensor per
//! output, and scatters the gradient back one plane after another on one
//! thread; in a LeNet-5 step on this 2-core VM the pools were a fifth of the
//! time. Here each plane's windows are scanned directly, the argmax kept as
//! a `u32` offset within its plane, and the gradient scattered plane by
//! plane in parallel. The choice within a window is Flex's: its first
//! element, then any strictly greater one, so values and gradients are the
//! same bit for bit (a test compares them).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, Tensor, TensorPrimitive};
use rayon::prelude::*;
use std::sync::Arc;

use crate::op::{floats, reads, tensor};

/// A pool's sizes: `planes` images of `height x width` (batch times
/// channels), windows of `kernel` every `stride`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    /// Batch and channels.
    pub dims: [usize; 2],
    /// Input height and width.
    pub size: [usize; 2],
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Step between windows.
    pub stride: [usize; 2],
}

impl Pool {
    /// Output height and width (floor mode: windows that fit).
    pub fn out(&self) -> [usize; 2] {
        [0, 1].map(|i| (self.size[i] - self.kernel[i]) / self.stride[i] + 1)
    }

    fn planes(&self) -> usize {
        self.dims[0] * self.dims[1]
    }
}

/// Each window's maximum and its offset within the plane.
fn forward(x: &[f32], p: &Pool) -> (Vec<f32>, Vec<u32>) {
    let ([h, w], [oh, ow]) = (p.size, p.out());
    let (plane_in, plane_out) = (h * w, oh * ow);
    let mut y = vec![0.0f32; p.planes() * plane_out];
    let mut at = vec![0u32; p.planes() * plane_out];
    y.par_chunks_mut(plane_out)
        .zip(at.par_chunks_mut(plane_out))
        .zip(x.par_chunks(plane_in))
        .for_each(|((y, at), x)| {
            if p.kernel == [2, 2] && p.stride == [2, 2] {
                return halves(x, y, at, [w, ow]);
            }
            for r in 0..oh {
                for c in 0..ow {
                    let (top, left) = (r * p.stride[0], c * p.stride[1]);
                    let mut best = top * w + left;
                    let mut max = x[best];
                    for i in top..top + p.kernel[0] {
                        let row = &x[i * w + left..i * w + left + p.kernel[1]];
                        for (j, &v) in row.iter().enumerate() {
                            // Flex's rule: the first element, then any greater
                            // (selects, not branches: the comparisons of random
                            // activations are unpredictable).
                            let greater = v > max;
                            max = if greater { v } else { max };
                            best = if greater { i * w + left + j } else { best };
                        }
                    }
                    y[r * ow + c] = max;
                    at[r * ow + c] = best as u32;
                }
            }
        });
    (y, at)
}

widest! {
    /// One plane's 2 x 2 windows every 2 (LeNet-5's): the same rule over
    /// pairs of rows, as plain indexed loops the compiler vectorises (as
    /// iterator chains they were not: a tenth of a LeNet-5 step).
    fn halves / halves_avx512 / halves_avx2
        (x: &[f32], y: &mut [f32], at: &mut [u32], wide: [usize; 2]) = halves_body
}

#[inline(always)]
fn halves_body(x: &[f32], y: &mut [f32], at: &mut [u32], [w, ow]: [usize; 2]) {
    for r in 0..y.len() / ow {
        let top = &x[2 * r * w..][..2 * ow];
        let bottom = &x[(2 * r + 1) * w..][..2 * ow];
        let (y, at) = (&mut y[r * ow..][..ow], &mut at[r * ow..][..ow]);
        let first = (2 * r * w) as u32;
        for c in 0..ow {
            let (mut max, mut best) = (top[2 * c], 0u32);
            for (v, off) in [
                (top[2 * c + 1], 1),
                (bottom[2 * c], w),
                (bottom[2 * c + 1], w + 1),
            ] {
                let greater = v > max;
                max = if greater { v } else { max };
                best = if greater { off as u32 } else { best };
            }
            y[c] = max;
            at[c] = first + 2 * c as u32 + best;
        }
    }
}

/// The input's gradient: each output's gradient added at its argmax, in
/// output order within a plane (overlapping windows add as Flex does).
fn backward(dy: &[f32], at: &[u32], p: &Pool) -> Vec<f32> {
    let ([h, w], [oh, ow]) = (p.size, p.out());
    let (plane_in, plane_out) = (h * w, oh * ow);
    let mut dx = vec![0.0f32; p.planes() * plane_in];
    dx.par_chunks_mut(plane_in)
        .zip(dy.par_chunks(plane_out))
        .zip(at.par_chunks(plane_out))
        .for_each(|((dx, dy), at)| {
            for (g, &i) in dy.iter().zip(at) {
                dx[i as usize] += g;
            }
        });
    dx
}

#[derive(Debug)]
struct MaxPool;

impl Backward<Flex, 1> for MaxPool {
    type State = (Arc<Vec<u32>>, Pool, DType);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let Some(node) = node else {
            return;
        };
        let (at, p, dtype) = ops.state;
        let dx = backward(&floats(&dy), &at, &p);
        let [n, c] = p.dims;
        grads.register::<Flex>(node.id, tensor(dx, [n, c, p.size[0], p.size[1]], dtype));
    }
}

/// The pool of `x` on `Autodiff<Flex>`, recorded for backward.
pub fn max_pool2d(x: Tensor<Autodiff<Flex>, 4>, p: Pool) -> Tensor<Autodiff<Flex>, 4> {
    let x = x.into_primitive().tensor();
    let dtype = x.primitive.dtype();
    let [oh, ow] = p.out();
    let shape = [p.dims[0], p.dims[1], oh, ow];
    let y = match MaxPool
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (y, at) = forward(&floats(&x.primitive), &p);
            prep.finish((Arc::new(at), p, dtype), tensor(y, shape, dtype))
        }
        OpsKind::UnTracked(prep) => {
            let (y, _) = forward(&floats(&x.primitive), &p);
            prep.finish(tensor(y, shape, dtype))
        }
    };
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// The same pool on Flex (evaluation).
pub fn max_pool2d_inner(x: Tensor<Flex, 4>, p: Pool) -> Tensor<Flex, 4> {
    let x = x.into_primitive().tensor();
    let [oh, ow] = p.out();
    let (y, _) = forward(&floats(&x), &p);
    let y = tensor(y, [p.dims[0], p.dims[1], oh, ow], x.dtype());
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// Whether this crate pools `x` itself: f32 (f16 and bf16 where windows do
/// not overlap); no padding or dilation; floor mode (or ceil mode where every window fits anyway);
/// windows that fit, at most 2^32 positions per plane.
pub(crate) fn pool_of(
    dims: [usize; 4],
    dtype: DType,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    ceil_mode: bool,
) -> Option<Pool> {
    let [n, c, h, w] = dims;
    let p = Pool {
        dims: [n, c],
        size: [h, w],
        kernel,
        stride,
    };
    let fits = (0..2).all(|i| {
        kernel[i] >= 1 && stride[i] >= 1 && kernel[i] <= p.size[i] && {
            // Ceil mode adds a partial window only where one is left over.
            !ceil_mode || (p.size[i] - kernel[i]).is_multiple_of(stride[i])
        }
    });
    let plain = padding == [0, 0] && dilation == [1, 1];
    // Flex adds overlapping windows' 16-bit gradients in 16 bits; this crate
    // adds in f32, so those stay Flex's (to keep its numbers).
    let overlap = (0..2).any(|i| stride[i] < kernel[i]);
    let dtype_ok = dtype == DType::F32 || (reads(dtype) && !overlap);
    (plain && fits && dtype_ok && h * w <= u32::MAX as usize).then_some(p)
}
