//! ReLU on `Autodiff<Flex>` and Flex in f32, f16 and bfloat16: one pass
//! split across rayon's pool each way, in f32 written over its input where
//! nothing else holds it.
//!
//! Flex's `relu` and `relu_backward` walk the tensor on one thread into a
//! new buffer (16-bit values widened and rounded back one call each); after
//! a convolution that was 5-10% of a LeNet-5 or ResNet-20 step in f32 and
//! about a quarter of a LeNet-5 fp16 step (docs/BENCHMARKS.md). The
//! operations are Flex's own (16-bit values widened to f32, then
//! `x.max(0.0)` forward; backward, the gradient where the output is above 0,
//! else 0; then rounded back, which is exact), so the same bits.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{bf16, f16, DType, TensorData};
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::cast::BLOCK;
use crate::op::owned;

/// Elements per task: a task's start is noise against 16k elements.
const CHUNK: usize = 1 << 14;

#[derive(Debug)]
struct Relu;

impl Backward<Flex, 1> for Relu {
    /// The output (shared, not copied).
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let Some(node) = node else {
            return;
        };
        let y = ops.state;
        let dx = match dy.dtype() {
            DType::F16 => halves::<f16, _>(&[&y, &dy], |[y, g]| if y > 0.0 { g } else { 0.0 }),
            DType::BF16 => halves::<bf16, _>(&[&y, &dy], |[y, g]| if y > 0.0 { g } else { 0.0 }),
            _ => passed(dy, &y),
        };
        crate::add::accumulate(grads, key!(node), dx);
    }
}

/// ReLU's backward in f32: the gradient `dy` where the output `y` is above
/// 0, else 0, in `dy`'s buffer where nothing else holds it.
pub(crate) fn passed(dy: FlexTensor, y: &FlexTensor) -> FlexTensor {
    let mut dx = owned(dy);
    let y = crate::op::floats(y);
    let n = y.len();
    dx.try_storage_mut::<f32>().expect("owned")[..n]
        .par_chunks_mut(CHUNK)
        .zip(y.par_chunks(CHUNK))
        .for_each(|(g, y)| {
            for (g, y) in g.iter_mut().zip(y) {
                *g = if *y > 0.0 { *g } else { 0.0 };
            }
        });
    dx
}

/// Whether [`autodiff`] and [`inner`] take a tensor of this dtype.
pub(crate) fn takes(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}

/// ReLU recorded for backward.
pub(crate) fn autodiff(x: FloatTensor<Autodiff<Flex>>) -> FloatTensor<Autodiff<Flex>> {
    let node = x.node.clone();
    let y = inner(x.primitive);
    match Relu
        .prepare::<NoCheckpointing>([node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(y.clone(), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

/// ReLU on Flex: `x.max(0.0)`, in `x`'s buffer where an f32 `x` holds it
/// alone.
pub(crate) fn inner(x: FlexTensor) -> FlexTensor {
    match x.dtype() {
        DType::F16 => return halves::<f16, _>(&[&x], |[x]| x.max(0.0)),
        DType::BF16 => return halves::<bf16, _>(&[&x], |[x]| x.max(0.0)),
        _ => {}
    }
    let mut y = owned(x);
    let n = y.layout().shape().num_elements();
    y.try_storage_mut::<f32>().expect("owned")[..n]
        .par_chunks_mut(CHUNK)
        .for_each(|c| {
            for v in c {
                *v = v.max(0.0);
            }
        });
    y
}

/// `f` over `N` tensors of 16-bit floats `H` (of one shape) into a new one:
/// each block of values widened to f32 (eight per instruction for f16),
/// `f` on each, the results rounded back, as Flex's element-wise ops do.
fn halves<H, const N: usize>(
    xs: &[&FlexTensor; N],
    f: impl Fn([f32; N]) -> f32 + Sync,
) -> FlexTensor
where
    H: burn::tensor::Element + bytemuck::Pod + Default + Send + Sync,
    [H]: HalfFloatSliceExt,
{
    let shape = xs[0].layout().shape().clone();
    let held: Vec<FlexTensor> = xs.iter().map(|x| x.to_contiguous()).collect();
    let ins: Vec<&[H]> = held
        .iter()
        .map(|x| x.as_slice::<H>().expect("contiguous"))
        .collect();
    let mut out = vec![H::default(); shape.num_elements()];
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, out)| {
        let (mut wide, mut res) = ([[0f32; BLOCK]; N], [0f32; BLOCK]);
        for (b, out) in out.chunks_mut(BLOCK).enumerate() {
            let (at, len) = (c * CHUNK + b * BLOCK, out.len());
            for (w, x) in wide.iter_mut().zip(&ins) {
                x[at..at + len].convert_to_f32_slice(&mut w[..len]);
            }
            for (i, r) in res[..len].iter_mut().enumerate() {
                *r = f(std::array::from_fn(|k| wide[k][i]));
            }
            out.convert_from_f32_slice(&res[..len]);
        }
    });
    FlexTensor::from_data(TensorData::new(out, shape))
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{activation, FloatDType, Tensor, TensorData, TensorPrimitive};

    type A = Autodiff<Flex>;

    /// Values around 0 (both zeros, NaN, infinities), 70k of them: more
    /// than one task's chunk.
    fn input() -> Vec<f32> {
        let specials = [
            0.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e-40,
            -1e-40,
            3e-6, // f16 subnormals
            -3e-6,
        ];
        (0..70_001)
            .map(|i| match specials.get(i % 97) {
                Some(v) => *v,
                None => ((i as f32) * 0.37).sin(),
            })
            .collect()
    }

    fn bits(t: Tensor<Flex, 2>) -> Vec<u32> {
        let v = t.cast(FloatDType::F32).into_data().to_vec::<f32>().unwrap();
        v.into_iter().map(f32::to_bits).collect()
    }

    /// Output and input gradient (of `sum(relu(x) * w)`) in `dtype`, by
    /// Flex's ReLU (`ours` false) or this module's.
    fn run(ours: bool, dtype: FloatDType) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
        let dev = Default::default();
        let x = Tensor::<A, 1>::from_data(TensorData::new(input(), [70_001]), &dev)
            .reshape([1, 70_001])
            .cast(dtype)
            .detach()
            .require_grad();
        let held = x.clone(); // a clone held elsewhere: no writing over it
        let w = Tensor::<A, 2>::from_data(
            TensorData::new(
                (0..70_001).map(|i| (i % 5) as f32 - 2.0).collect(),
                [1, 70_001],
            ),
            &dev,
        )
        .cast(dtype);
        let y = if ours {
            let p = crate::relu::<A>(x.clone().into_primitive().tensor());
            Tensor::<A, 2>::from_primitive(TensorPrimitive::Float(p))
        } else {
            activation::relu(x.clone())
        };
        assert_eq!(y.dtype(), dtype.into());
        let grads = (y.clone() * w).sum().backward();
        let dx = x.grad(&grads).unwrap();
        assert_eq!(dx.dtype(), dtype.into());
        let x = bits(x.inner());
        assert_eq!(bits(held.inner()), x, "the input kept its values");
        (bits(y.inner()), bits(dx), x)
    }

    #[test]
    fn relu_gives_flexs_bits_both_ways() {
        for dtype in [FloatDType::F32, FloatDType::F16, FloatDType::BF16] {
            assert!(run(true, dtype) == run(false, dtype), "{dtype:?}");
        }
    }
}
