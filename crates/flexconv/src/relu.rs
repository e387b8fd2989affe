//! ReLU on `Autodiff<Flex>` and Flex in f32: one pass split across rayon's
//! pool each way, written over its input where nothing else holds it.
//!
//! Flex's `relu` and `relu_backward` walk the tensor on one thread into a
//! new buffer; after a convolution that was 5-10% of a LeNet-5 or ResNet-20
//! step (docs/BENCHMARKS.md). The operations are Flex's own (`x.max(0.0)`
//! forward; backward, the gradient where the output is above 0, else 0), so
//! the same bits.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::ops::FloatTensor;
use burn::tensor::DType;
use rayon::prelude::*;

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
        let mut dx = owned(dy);
        let y = crate::op::floats(&y);
        let n = y.len();
        dx.try_storage_mut::<f32>().expect("owned")[..n]
            .par_chunks_mut(CHUNK)
            .zip(y.par_chunks(CHUNK))
            .for_each(|(g, y)| {
                for (g, y) in g.iter_mut().zip(y) {
                    *g = if *y > 0.0 { *g } else { 0.0 };
                }
            });
        grads.register::<Flex>(node.id, dx);
    }
}

/// Whether [`autodiff`] and [`inner`] take a tensor of this dtype.
pub(crate) fn takes(dtype: DType) -> bool {
    dtype == DType::F32
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

/// ReLU on Flex: `x.max(0.0)` in `x`'s buffer where `x` holds it alone.
pub(crate) fn inner(x: FlexTensor) -> FlexTensor {
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

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{activation, Tensor, TensorData, TensorPrimitive};

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
        ];
        (0..70_001)
            .map(|i| match specials.get(i % 97) {
                Some(v) => *v,
                None => ((i as f32) * 0.37).sin(),
            })
            .collect()
    }

    fn bits(t: Tensor<Flex, 2>) -> Vec<u32> {
        let v = t.into_data().to_vec::<f32>().unwrap();
        v.into_iter().map(f32::to_bits).collect()
    }

    /// Output and input gradient (of `sum(relu(x) * w)`), by Flex's
    /// ReLU (`ours` false) or this module's.
    fn run(ours: bool) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
        let dev = Default::default();
        let x = Tensor::<A, 1>::from_data(TensorData::new(input(), [70_001]), &dev)
            .reshape([1, 70_001])
            .require_grad();
        let held = x.clone(); // a clone held elsewhere: no writing over it
        let w = Tensor::<A, 2>::from_data(
            TensorData::new(
                (0..70_001).map(|i| (i % 5) as f32 - 2.0).collect(),
                [1, 70_001],
            ),
            &dev,
        );
        let y = if ours {
            let p = crate::relu::<A>(x.clone().into_primitive().tensor());
            Tensor::<A, 2>::from_primitive(TensorPrimitive::Float(p))
        } else {
            activation::relu(x.clone())
        };
        let grads = (y.clone() * w).sum().backward();
        let dx = x.grad(&grads).unwrap();
        let x = bits(x.inner());
        assert_eq!(bits(held.inner()), x, "the input kept its values");
        (bits(y.inner()), bits(dx), x)
    }

    #[test]
    fn relu_gives_flexs_bits_both_ways() {
        assert!(run(true) == run(false));
    }
}
