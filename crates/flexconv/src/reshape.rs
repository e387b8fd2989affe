//! Reshapes of strided tensors on `Autodiff<Flex>` and Flex: runs copied
//! whole, on rayon's pool, each way.
//!
//! A reshape of a view Flex cannot reinterpret (a transformer's heads
//! merged back after `swap_dims`: `[n, h, t, d] -> [n, t, h, d] -> [n, t,
//! h * d]`) copies it first; a layout that does not collapse to two
//! dimensions goes through Flex's index iterator one element at a time,
//! and autodiff's backward of the heads' split copies each gradient the
//! same way. In the CPU transformer that was about 6% of a training step
//! (docs/BENCHMARKS.md). Here the trailing dimensions that are contiguous
//! in memory are one run and each run one `copy_from_slice`: the same
//! values, moved, so the same bits.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::{Autodiff, Flex};
use burn::tensor::ops::{FloatTensor, FloatTensorOps};
use burn::tensor::{Bytes, Shape};
use rayon::prelude::*;

/// Runs shorter than this are not copied whole: the last dimension is
/// gathered instead, a stride apart (a transpose's single elements).
const MIN_RUN: usize = 8;

/// Bytes per task.
const CHUNK_BYTES: usize = 1 << 16;

#[derive(Debug)]
struct Reshape;

impl Backward<Flex, 1> for Reshape {
    /// The input's shape and the output's.
    type State = (Shape, Shape);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let Some(node) = node else {
            return;
        };
        let (from, to) = ops.state;
        // As autodiff's own reshape: a gradient broadcast along an axis the
        // output has as 1 is summed back first.
        let mut dy = dy;
        let got = dy.layout().shape().clone();
        for i in 0..to.num_dims() {
            if to[i] == 1 && got[i] != 1 {
                dy = Flex::float_sum_dim(dy, i);
            }
        }
        grads.register::<Flex>(node.id, inner(dy, from));
    }
}

/// The reshape recorded for backward.
pub(crate) fn autodiff(
    x: FloatTensor<Autodiff<Flex>>,
    shape: Shape,
) -> FloatTensor<Autodiff<Flex>> {
    let from = x.primitive.layout().shape().clone();
    let node = x.node.clone();
    let y = inner(x.primitive, shape.clone());
    match Reshape
        .prepare::<NoCheckpointing>([node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((from, shape), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

/// `x` as `shape`: a view where Flex can reinterpret it, else
/// [`contiguous`]'s copy, else Flex's.
pub(crate) fn inner(x: FlexTensor, shape: Shape) -> FlexTensor {
    if x.layout().reshape(shape.clone()).is_some() {
        return x.reshape(shape);
    }
    match contiguous(&x) {
        Some(c) => c.reshape(shape),
        None => x.reshape(shape),
    }
}

/// A contiguous copy of `x` where every stride is positive (or, outside
/// the run, 0): its innermost contiguous run copied whole where it has at
/// least [`MIN_RUN`] elements, else its last dimension gathered; `None`
/// for anything else (Flex copies it).
pub(crate) fn contiguous(x: &FlexTensor) -> Option<FlexTensor> {
    let layout = x.layout();
    let dims = layout.shape().to_vec();
    let strides = layout.strides();
    if strides.iter().any(|&s| s < 0) || dims.contains(&0) {
        return None;
    }
    // Trailing dimensions laid out back to back form one run.
    let (mut run, mut outer) = (1usize, dims.len());
    while outer > 0 && (dims[outer - 1] == 1 || strides[outer - 1] as usize == run) {
        run *= dims[outer - 1];
        outer -= 1;
    }
    let mut step = 1;
    if run < MIN_RUN {
        // Short runs (a transposed gradient's single elements): the last
        // dimension longer than 1 is the run, read `step` apart.
        let last = (0..dims.len()).rev().find(|&i| dims[i] > 1)?;
        (run, step, outer) = (dims[last], strides[last] as usize, last);
        if step == 0 {
            return None; // a broadcast: Flex's
        }
    }
    let runs = Runs {
        dims: &dims[..outer],
        strides: &strides[..outer],
        start: layout.start_offset(),
        run,
        step,
    };
    // Typed storage, so that Flex's typed views of the copy stay aligned.
    let bytes = match x.dtype().size() {
        2 => Bytes::from_elems(runs.copy::<u16>(x)),
        4 => Bytes::from_elems(runs.copy::<u32>(x)),
        8 => Bytes::from_elems(runs.copy::<u64>(x)),
        _ => Bytes::from_elems(runs.copy::<u8>(x)),
    };
    let shape = layout.shape().clone();
    Some(FlexTensor::new(bytes, Layout::contiguous(shape), x.dtype()))
}

/// A strided view as runs of `run` elements `step` apart (1: contiguous):
/// the outer dimensions and strides (in elements) that place each run.
struct Runs<'a> {
    dims: &'a [usize],
    strides: &'a [isize],
    start: usize,
    run: usize,
    step: usize,
}

impl Runs<'_> {
    /// The view's elements in order, as `E`s of its element's size, each
    /// run moved whole into memory not zeroed first.
    fn copy<E: bytemuck::Pod + Send + Sync>(&self, x: &FlexTensor) -> Vec<E> {
        let src: &[E] = bytemuck::cast_slice(x.bytes());
        let total = self.dims.iter().product::<usize>() * self.run;
        let per_task = (CHUNK_BYTES / (self.run * std::mem::size_of::<E>())).max(1);
        let mut out = Vec::with_capacity(total);
        out.spare_capacity_mut()[..total]
            .par_chunks_mut(per_task * self.run)
            .enumerate()
            .for_each(|(t, part)| {
                for (i, d) in part.chunks_exact_mut(self.run).enumerate() {
                    // The run's index, digit by digit from the last dimension.
                    let (mut r, mut at) = (t * per_task + i, self.start);
                    for (&n, &s) in self.dims.iter().zip(self.strides).rev() {
                        at += (r % n) * s as usize;
                        r /= n;
                    }
                    match self.step {
                        1 => {
                            for (d, s) in d.iter_mut().zip(&src[at..at + self.run]) {
                                d.write(*s);
                            }
                        }
                        step => {
                            let from = &src[at..=at + (self.run - 1) * step];
                            for (d, s) in d.iter_mut().zip(from.iter().step_by(step)) {
                                d.write(*s);
                            }
                        }
                    }
                }
            });
        // SAFETY: the chunks cover all `total` values and each run is written.
        unsafe { out.set_len(total) };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Tensor, TensorData, TensorPrimitive};

    fn flex(t: Tensor<Flex, 4>) -> FlexTensor {
        t.into_primitive().tensor()
    }

    /// Heads merged back after a swap, a permutation with a short inner
    /// run, a sliced view, and transposes (single-element runs, read a
    /// stride apart): the copy holds Flex's values, in f32 and f16.
    #[test]
    fn strided_reshapes_copy_flexs_values() {
        let device = Default::default();
        let values: Vec<f32> = (0..2 * 3 * 4 * 16).map(|i| i as f32 * 0.5 - 7.0).collect();
        let x = Tensor::<Flex, 4>::from_data(TensorData::new(values, [2, 3, 4, 16]), &device);
        for dtype in [burn::tensor::DType::F32, burn::tensor::DType::F16] {
            let x = x.clone().cast(dtype);
            let views = [
                x.clone().swap_dims(1, 2),
                x.clone().slice([0..2, 1..3, 0..4, 0..16]),
                x.clone()
                    .permute([0, 2, 1, 3])
                    .slice([0..2, 0..4, 0..3, 8..16]),
                x.clone().swap_dims(2, 3),
                x.clone().swap_dims(1, 3).slice([0..2, 0..16, 1..4, 0..3]),
            ];
            for v in views {
                let dims = v.dims();
                let want = v.clone().reshape([dims[0] * dims[1], dims[2] * dims[3]]);
                let got = inner(
                    flex(v.clone()),
                    Shape::new([dims[0] * dims[1], dims[2] * dims[3]]),
                );
                assert!(got.is_contiguous());
                let got: Tensor<Flex, 2> = Tensor::from_primitive(TensorPrimitive::Float(got));
                assert_eq!(got.into_data(), want.into_data());
            }
        }
    }

    /// The gradient of a reshape of a swapped view comes back in the
    /// input's shape with Burn's values.
    #[test]
    fn the_gradient_comes_back_through_the_copy() {
        type A = Autodiff<Flex>;
        let device = Default::default();
        let values: Vec<f32> = (0..2 * 3 * 4 * 16).map(|i| (i % 13) as f32 - 6.0).collect();
        let x = Tensor::<A, 4>::from_data(TensorData::new(values, [2, 3, 4, 16]), &device)
            .require_grad();
        let weight: Vec<f32> = (0..2 * 4 * 48).map(|i| (i % 7) as f32 * 0.25).collect();
        let w = Tensor::<A, 3>::from_data(TensorData::new(weight, [2, 4, 48]), &device);
        let prim = x.clone().swap_dims(1, 2).into_primitive().tensor();
        let y: Tensor<A, 3> = Tensor::from_primitive(TensorPrimitive::Float(autodiff(
            prim,
            Shape::new([2, 4, 48]),
        )));
        let grads = (y * w.clone()).sum().backward();
        let got = x.grad(&grads).expect("a gradient");
        let want = w.inner().reshape([2, 4, 3, 16]).swap_dims(1, 2);
        assert_eq!(got.dims(), [2, 3, 4, 16]);
        assert_eq!(got.into_data(), want.into_data());
    }
}
