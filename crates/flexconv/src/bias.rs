//! A convolution's bias on `Autodiff<Flex>` and Flex, in f32, f16 and
//! bfloat16: one pass adding each channel's bias to its planes (in f32
//! written over the convolution's fresh output), and in backward the output
//! gradient passed on as it is, with the bias gradient as per-channel sums.
//!
//! Burn's broadcast add walked `[N, C, H, W]` against `[1, C, 1, 1]` one
//! element at a time, and its backward reduced the gradient in two more
//! passes: with flexconv's rows `[N x C, H x W]` still 4.9% of a LeNet-5
//! step (docs/BENCHMARKS.md), 18% of a LeNet-5 fp16 step. The forward is the
//! same additions (16-bit values widened to f32, added, rounded back, as
//! Flex adds them: the same bits); the bias gradient sums each plane in
//! eight lanes of f64, then the planes in batch order, rounded to f32 once
//! (then to the 16-bit dtype): one fixed order, whatever the thread count.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{bf16, f16, DType, Tensor, TensorData, TensorPrimitive};
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::cast::BLOCK;

/// Whether [`add`] and [`add_inner`] take these: both f32, f16 or bfloat16.
pub(crate) fn takes<B: burn::tensor::backend::Backend>(y: &Tensor<B, 4>, b: &Tensor<B, 1>) -> bool {
    let float = matches!(y.dtype(), DType::F32 | DType::F16 | DType::BF16);
    float && b.dtype() == y.dtype() && b.dims()[0] == y.dims()[1]
}

#[derive(Debug)]
struct BiasAdd;

impl Backward<Flex, 2> for BiasAdd {
    /// `[N, C, H x W]`.
    type State = [usize; 3];

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_y, node_b] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        if let Some(b) = node_b {
            let db = channel_sums(&crate::op::floats(&dy), ops.state);
            let c = db.len();
            let db = match dy.dtype() {
                DType::F16 => TensorData::new(db.into_iter().map(f16::from_f32).collect(), [c]),
                DType::BF16 => TensorData::new(db.into_iter().map(bf16::from_f32).collect(), [c]),
                _ => TensorData::new(db, [c]),
            };
            grads.register::<Flex>(b.id, FlexTensor::from_data(db));
        }
        if let Some(y) = node_y {
            grads.register::<Flex>(y.id, dy);
        }
    }
}

/// `y + b` per channel, recorded for backward.
pub(crate) fn add(
    y: Tensor<Autodiff<Flex>, 4>,
    b: Tensor<Autodiff<Flex>, 1>,
) -> Tensor<Autodiff<Flex>, 4> {
    let [n, c, h, w] = y.dims();
    let y = y.into_primitive().tensor();
    let b = b.into_primitive().tensor();
    let node_y = y.node.clone();
    // The convolution's output, moved (not cloned) so that it is written
    // over where nothing else holds it.
    let out = biased(y.primitive, &b.primitive);
    let out = match BiasAdd
        .prepare::<NoCheckpointing>([node_y, b.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish([n, c, h * w], out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// The same on Flex alone (evaluation).
pub(crate) fn add_inner(y: Tensor<Flex, 4>, b: Tensor<Flex, 1>) -> Tensor<Flex, 4> {
    let out = biased(y.into_primitive().tensor(), &b.into_primitive().tensor());
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// `y` (`[N, C, H, W]`) with `b[c]` added to each of channel `c`'s planes;
/// in f32 in `y`'s buffer where `y` holds it alone.
fn biased(y: FlexTensor, b: &FlexTensor) -> FlexTensor {
    let shape = y.layout().shape().clone();
    let len = shape.num_elements();
    let plane = shape[2] * shape[3];
    let b = crate::op::floats(b);
    match y.dtype() {
        DType::F16 => return biased_half::<f16>(&y, &b, plane),
        DType::BF16 => return biased_half::<bf16>(&y, &b, plane),
        _ => {}
    }
    let mut y = crate::op::owned(y);
    let values = &mut y
        .try_storage_mut::<f32>()
        .expect("a buffer no one else holds")[..len];
    if plane > 0 {
        values
            .par_chunks_mut(plane)
            .enumerate()
            .for_each(|(i, p)| add_to(p, b[i % b.len()]));
    }
    y
}

/// [`biased`] for 16-bit `H`: each plane widened to f32 a block at a time,
/// the bias added, rounded back (Flex's operations), into a new buffer.
fn biased_half<H>(y: &FlexTensor, b: &[f32], plane: usize) -> FlexTensor
where
    H: burn::tensor::Element + bytemuck::Pod + Default + Send + Sync,
    [H]: HalfFloatSliceExt,
{
    let shape = y.layout().shape().clone();
    let y = y.to_contiguous();
    let src = y.as_slice::<H>().expect("contiguous");
    let mut out = vec![H::default(); src.len()];
    if plane > 0 {
        out.par_chunks_mut(plane)
            .zip(src.par_chunks(plane))
            .enumerate()
            .for_each(|(i, (out, src))| {
                let mut wide = [0f32; BLOCK];
                for (out, src) in out.chunks_mut(BLOCK).zip(src.chunks(BLOCK)) {
                    let wide = &mut wide[..src.len()];
                    src.convert_to_f32_slice(wide);
                    add_to(wide, b[i % b.len()]);
                    out.convert_from_f32_slice(wide);
                }
            });
    }
    FlexTensor::from_data(TensorData::new(out, shape))
}

fn add_to(plane: &mut [f32], b: f32) {
    for v in plane {
        *v += b;
    }
}

/// Per channel, the sum of `dy` (`[N, C, P]`) over the batch and the
/// plane: each plane in eight f64 lanes (element `i` in lane `i % 8`, the
/// lanes added in order), the planes in batch order, one rounding to f32.
fn channel_sums(dy: &[f32], [n, c, p]: [usize; 3]) -> Vec<f32> {
    if p == 0 {
        // An empty output (the gemm path can give one): no terms to sum.
        return vec![0.0; c];
    }
    let planes: Vec<f64> = dy.par_chunks(p).map(plane_sum).collect();
    (0..c)
        .map(|ch| (0..n).map(|i| planes[i * c + ch]).sum::<f64>() as f32)
        .collect()
}

fn plane_sum(plane: &[f32]) -> f64 {
    let mut lanes = [0f64; 8];
    let chunks = plane.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (l, v) in lanes.iter_mut().zip(chunk) {
            *l += *v as f64;
        }
    }
    for (l, v) in lanes.iter_mut().zip(tail) {
        *l += *v as f64;
    }
    lanes.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::FloatDType;

    /// In f16 and bfloat16: the output has Flex's bits (Burn's broadcast
    /// add), the output gradient passes through, and the bias gradient is
    /// the f32 sums of the same values within one 16-bit rounding.
    #[test]
    fn sixteen_bit_biases_add_as_flex_and_sum_in_f32() {
        type A = Autodiff<Flex>;
        let dev = Default::default();
        let (n, c, h, w) = (3, 5, 9, 31); // planes past a block of 256
        let vals = |len: usize, k: usize| -> Vec<f32> {
            (0..len)
                .map(|i| ((i * k % 97) as f32 - 48.0) / 7.0)
                .collect()
        };
        for dtype in [FloatDType::F16, FloatDType::BF16] {
            let y = Tensor::<A, 1>::from_data(
                TensorData::new(vals(n * c * h * w, 13), [n * c * h * w]),
                &dev,
            )
            .reshape([n, c, h, w])
            .cast(dtype);
            let b = Tensor::<A, 1>::from_data(TensorData::new(vals(c, 29), [c]), &dev)
                .cast(dtype)
                .require_grad();
            let r = Tensor::<A, 1>::from_data(
                TensorData::new(vals(n * c * h * w, 7), [n * c * h * w]),
                &dev,
            )
            .reshape([n, c, h, w])
            .cast(dtype);
            let ours = add(y.clone(), b.clone());
            let flex = y.clone() + b.clone().reshape([1, c, 1, 1]);
            assert_eq!(ours.dtype(), dtype.into());
            let bits = |t: Tensor<A, 4>| {
                t.inner()
                    .cast(FloatDType::F32)
                    .into_data()
                    .to_vec::<f32>()
                    .unwrap()
            };
            assert!(bits(ours.clone()) == bits(flex), "{dtype:?}: the sums");
            let grads = (ours * r.clone()).sum().backward();
            let db = b.grad(&grads).unwrap();
            assert_eq!(db.dtype(), dtype.into());
            let db = db
                .cast(FloatDType::F32)
                .into_data()
                .to_vec::<f32>()
                .unwrap();
            let r = r
                .inner()
                .cast(FloatDType::F32)
                .into_data()
                .to_vec::<f32>()
                .unwrap();
            for (ch, db) in db.iter().enumerate() {
                let want: f64 = (0..n)
                    .flat_map(|i| r[(i * c + ch) * h * w..(i * c + ch + 1) * h * w].iter())
                    .map(|v| *v as f64)
                    .sum();
                let tol = want.abs() / 128.0 + 1e-3; // 8 bits of bfloat16's mantissa
                assert!(
                    (*db as f64 - want).abs() <= tol,
                    "{dtype:?} channel {ch}: {db} against {want}"
                );
            }
        }
    }

    #[test]
    fn the_bias_gradient_is_each_channels_sum_in_one_order() {
        // Exact small integers: any order gives the same sum, so this
        // checks which elements go to which channel.
        let (n, c, p) = (3, 5, 11);
        let dy: Vec<f32> = (0..n * c * p).map(|i| (i % 7) as f32 - 3.0).collect();
        let want: Vec<f32> = (0..c)
            .map(|ch| {
                (0..n)
                    .flat_map(|i| dy[(i * c + ch) * p..(i * c + ch + 1) * p].iter())
                    .sum()
            })
            .collect();
        assert_eq!(channel_sums(&dy, [n, c, p]), want);
        assert_eq!(channel_sums(&[], [n, c, 0]), vec![0.0; c], "empty planes");
        // Lanes: 1e8 + 1 + ... in f32 one by one loses the ones; in f64 they stay.
        let mut plane = vec![1.0f32; 17];
        plane[0] = 1e8;
        assert_eq!(plane_sum(&plane), 1e8 + 16.0);
    }
}
