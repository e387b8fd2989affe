//! Addition of two f32 tensors of one shape (or one the other's trailing
//! values behind leading 1s, a transformer's positions) on `Autodiff<Flex>`
//! and Flex, and the sum of a gradient with one already registered, as one
//! pass split across rayon's pool.
//!
//! Flex adds on the calling thread (`add_inplace_f32_seq`), and so does
//! autodiff's gradient registration, with the pool's workers idle: in a
//! ResNet-20 step on the CPU the residual additions and the gradients
//! summed where a block's input feeds both its convolution and its shortcut
//! were about 4% of the wall time (perf, the thread driving the graph).
//! IEEE addition is commutative and each sum is still `lhs + rhs`: the same
//! bits as Flex's.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{FloatTensor, FloatTensorOps};
use burn::tensor::{DType, Shape, TensorData, TensorMetadata};
use rayon::prelude::*;

use crate::kernel::unzeroed;
use crate::sums;

/// A parent node's key in the gradients: a blank tensor given that node.
/// Gradients are looked up by node; burn-autodiff exports neither the
/// node's type (`NodeRef`) nor the tensor's, hence a macro over a parent
/// from `Ops::parents` and [`Key`], the tensor's type as Burn's alias
/// names it.
macro_rules! key {
    ($node:expr) => {{
        let node = $node;
        let mut key = $crate::add::blank();
        key.rc = std::sync::Arc::new(node.id);
        key.node = node;
        key
    }};
}

/// Elements per task.
const CHUNK: usize = 1 << 14;

/// Below this many elements a sum stays Flex's: two tasks' worth at least.
const MIN_LEN: usize = 2 * CHUNK;

#[derive(Debug)]
struct Add;

impl Backward<Flex, 2> for Add {
    /// The operands' shapes.
    type State = [Shape; 2];

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [lhs, rhs] = ops.parents;
        let [lhs_shape, rhs_shape] = ops.state;
        let dy = grads.consume::<Flex>(&ops.node);
        // As autodiff's own addition: the gradient to both, summed over the
        // dimensions an operand was broadcast along.
        if let Some(node) = lhs {
            accumulate(grads, key!(node), sums::broadcast(dy.clone(), &lhs_shape));
        }
        if let Some(node) = rhs {
            accumulate(grads, key!(node), sums::broadcast(dy, &rhs_shape));
        }
    }
}

/// How two operands [`inner`] takes line up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fit {
    /// One shape.
    Same,
    /// The right operand is the left's trailing `inner` values, broadcast
    /// along leading dimensions of 1 (a transformer's positions).
    RhsRepeats { inner: usize },
    /// The left operand is, the same way, the right's.
    LhsRepeats { inner: usize },
}

/// How [`autodiff`] and [`inner`] add these two in parallel: f32, both
/// contiguous, one shape or one a leading broadcast of the other, long
/// enough to split; `None` for anything else (Flex's).
fn fit(lhs: &FlexTensor, rhs: &FlexTensor) -> Option<Fit> {
    let plain = |t: &FlexTensor| t.dtype() == DType::F32 && t.as_slice::<f32>().is_some();
    let (l, r) = (lhs.layout().shape(), rhs.layout().shape());
    if !plain(lhs) || !plain(rhs) || l.num_elements().max(r.num_elements()) < MIN_LEN {
        return None;
    }
    // `small` is `big`'s trailing dimensions behind leading 1s.
    let repeats = |big: &Shape, small: &Shape| {
        let lead = (0..small.num_dims()).find(|&i| small[i] != 1)?;
        let fits = big.num_dims() == small.num_dims()
            && (lead..big.num_dims()).all(|i| big[i] == small[i])
            && lead > 0
            && (0..lead).any(|i| big[i] != 1);
        fits.then(|| small.num_elements())
    };
    if l == r {
        return Some(Fit::Same);
    }
    if let Some(inner) = repeats(l, r) {
        return Some(Fit::RhsRepeats { inner });
    }
    repeats(r, l).map(|inner| Fit::LhsRepeats { inner })
}

/// The sum recorded for backward, where [`fit`] takes it; autodiff's own
/// addition otherwise.
pub(crate) fn autodiff(
    lhs: FloatTensor<Autodiff<Flex>>,
    rhs: FloatTensor<Autodiff<Flex>>,
) -> FloatTensor<Autodiff<Flex>> {
    let Some(fit) = fit(&lhs.primitive, &rhs.primitive) else {
        return Autodiff::<Flex>::float_add(lhs, rhs);
    };
    let nodes = [lhs.node.clone(), rhs.node.clone()];
    let shapes = [lhs.primitive.shape(), rhs.primitive.shape()];
    let y = fitted(lhs.primitive, rhs.primitive, fit);
    match Add
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(shapes, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

/// `lhs + rhs` on Flex: in parallel where [`fit`] takes it, written over
/// whichever operand no one else holds; Flex's addition otherwise.
pub(crate) fn inner(lhs: FlexTensor, rhs: FlexTensor) -> FlexTensor {
    match fit(&lhs, &rhs) {
        Some(fit) => fitted(lhs, rhs, fit),
        None => Flex::float_add(lhs, rhs),
    }
}

/// [`inner`]'s parallel sum of two operands that `fit` as given.
fn fitted(lhs: FlexTensor, rhs: FlexTensor, fit: Fit) -> FlexTensor {
    match fit {
        Fit::RhsRepeats { inner } => return repeated(lhs, &rhs, inner),
        Fit::LhsRepeats { inner } => return repeated(rhs, &lhs, inner),
        Fit::Same => {}
    }
    // Addition commutes: the sum goes over whichever operand is writable.
    if !writable(&lhs) && !writable(&rhs) {
        return summed(&lhs, &rhs);
    }
    let (mut dst, other) = match writable(&lhs) {
        true => (lhs, rhs),
        false => (rhs, lhs),
    };
    let o = other.as_slice::<f32>().expect("contiguous (fit)");
    let d = dst.try_storage_mut::<f32>().expect("unique");
    d.par_chunks_mut(CHUNK)
        .zip(o.par_chunks(CHUNK))
        .for_each(|(d, o)| d.iter_mut().zip(o).for_each(|(d, o)| *d += *o));
    dst
}

/// Whether a sum may be written over `t`'s buffer: its own from the start,
/// and held by no one else.
fn writable(t: &FlexTensor) -> bool {
    t.layout().start_offset() == 0 && t.is_unique()
}

/// `lhs + rhs` of one shape into a new buffer.
fn summed(lhs: &FlexTensor, rhs: &FlexTensor) -> FlexTensor {
    let (l, r) = (
        lhs.as_slice::<f32>().expect("contiguous (fit)"),
        rhs.as_slice::<f32>().expect("contiguous (fit)"),
    );
    // SAFETY: every value of the output is written, one per input pair.
    let sum = unsafe {
        unzeroed(l.len(), |out| {
            out.par_chunks_mut(CHUNK)
                .zip(l.par_chunks(CHUNK).zip(r.par_chunks(CHUNK)))
                .for_each(|(o, (l, r))| {
                    for (o, (l, r)) in o.iter_mut().zip(l.iter().zip(r)) {
                        o.write(*l + *r);
                    }
                })
        })
    };
    FlexTensor::from_data(TensorData::new(sum, lhs.layout().shape().clone()))
}

/// What [`key!`] makes.
pub(crate) type Key = FloatTensor<Autodiff<Flex>>;

/// An empty untracked tensor, for [`key!`] to give a node.
pub(crate) fn blank() -> Key {
    let empty = FlexTensor::empty(Shape::new([0]), DType::F32);
    <Autodiff<Flex> as AutodiffBackend>::from_inner(empty)
}

/// `big` plus `small` (`inner` values) added to each of its runs of
/// `inner`: in `big`'s buffer where no one else holds it, else a new one.
fn repeated(mut big: FlexTensor, small: &FlexTensor, inner: usize) -> FlexTensor {
    let small = small.as_slice::<f32>().expect("contiguous (fit)");
    let shape = big.layout().shape().clone();
    let n = shape.num_elements();
    let rows = (CHUNK / inner).max(1) * inner;
    let add_rows = |part: &mut [f32]| {
        for row in part.chunks_exact_mut(inner) {
            row.iter_mut().zip(small).for_each(|(o, s)| *o += *s);
        }
    };
    if writable(&big) {
        let out = big.try_storage_mut::<f32>().expect("unique");
        out[..n].par_chunks_mut(rows).for_each(add_rows);
        return big;
    }
    let from = big.as_slice::<f32>().expect("contiguous (fit)");
    // SAFETY: every value is written, a copy of `big`'s before the sums.
    let sum = unsafe {
        unzeroed(n, |out| {
            out.par_chunks_mut(rows)
                .zip(from.par_chunks(rows))
                .for_each(|(o, f)| {
                    for (o, (f, s)) in o.iter_mut().zip(f.iter().zip(small.iter().cycle())) {
                        o.write(*f + *s);
                    }
                })
        })
    };
    FlexTensor::from_data(TensorData::new(sum, shape))
}

/// Registers `value` as (part of) the gradient of `key`'s node: summed
/// with one already there by [`inner`] (`value + old`, autodiff's order),
/// where autodiff's registration would sum them on the calling thread.
pub(crate) fn accumulate(grads: &mut Gradients, key: Key, value: FlexTensor) {
    let value = match grads.remove::<Flex>(&key) {
        Some(old) => inner(value, old),
        None => value,
    };
    grads.register::<Flex>(key.node.id, value);
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Tensor, TensorData, TensorPrimitive};

    type A = Autodiff<Flex>;

    /// Values with both zeros, NaN and infinities, past two tasks' chunks.
    fn values(seed: f32) -> Vec<f32> {
        let specials = [0.0, -0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e-40];
        (0..70_001)
            .map(|i| match specials.get(i % 89) {
                Some(v) => *v,
                None => ((i as f32) * seed).sin() * 1e3,
            })
            .collect()
    }

    fn bits(t: Tensor<Flex, 1>) -> Vec<u32> {
        let v = t.into_data().to_vec::<f32>().unwrap();
        v.into_iter().map(f32::to_bits).collect()
    }

    fn add(x: Tensor<A, 1>, y: Tensor<A, 1>) -> Tensor<A, 1> {
        let (x, y) = (x.into_primitive().tensor(), y.into_primitive().tensor());
        Tensor::from_primitive(TensorPrimitive::Float(super::autodiff(x, y)))
    }

    /// `x + y` (and `x` reused, so its gradient is summed with one already
    /// registered): the values and both gradients of Burn's addition.
    #[test]
    fn sums_and_gradients_are_burns() {
        let dev = Default::default();
        let input = |seed| Tensor::<A, 1>::from_data(TensorData::new(values(seed), [70_001]), &dev);
        let weight = Tensor::<A, 1>::from_data(TensorData::new(values(0.11), [70_001]), &dev);
        let run = |ours: bool| {
            let (x, y) = (input(0.37).require_grad(), input(0.53).require_grad());
            let s = match ours {
                true => add(x.clone(), y.clone()),
                false => x.clone() + y.clone(),
            };
            // x feeds the sum and, scaled, the loss itself; y twice through
            // the sum's own gradient.
            let loss = (s.clone() * weight.clone()).sum() + (x.clone() * 3.0).sum();
            let grads = loss.backward();
            let dx = x.grad(&grads).unwrap();
            let dy = y.grad(&grads).unwrap();
            (bits(s.inner()), bits(dx), bits(dy))
        };
        assert_eq!(run(true), run(false));
    }

    /// A left operand `[10, 3, 1200]` plus positions `[1, 3, 1200]`, either
    /// way round: Burn's sum and both gradients (the positions' summed over
    /// the batch by autodiff's own reduction), bit for bit.
    #[test]
    fn broadcast_positions_add_as_burns() {
        let dev = Default::default();
        let big = || {
            Tensor::<A, 1>::from_data(
                TensorData::new(values(0.37)[..36_000].to_vec(), [36_000]),
                &dev,
            )
            .reshape([10, 3, 1200])
        };
        let small = || {
            Tensor::<A, 1>::from_data(TensorData::new(values(0.53)[..3600].to_vec(), [3600]), &dev)
                .reshape([1, 3, 1200])
        };
        let w = Tensor::<A, 1>::from_data(
            TensorData::new(values(0.11)[..36_000].to_vec(), [36_000]),
            &dev,
        )
        .reshape([10, 3, 1200]);
        let bits3 = |t: Tensor<Flex, 3>| {
            let n = t.dims().iter().product::<usize>();
            bits(t.reshape([n]))
        };
        for swap in [false, true] {
            let run = |ours: bool| {
                let (x, p) = (big().require_grad(), small().require_grad());
                let (l, r) = match swap {
                    false => (x.clone(), p.clone()),
                    true => (p.clone(), x.clone()),
                };
                let s = match ours {
                    true => {
                        let (l, r) = (l.into_primitive().tensor(), r.into_primitive().tensor());
                        Tensor::<A, 3>::from_primitive(TensorPrimitive::Float(super::autodiff(
                            l, r,
                        )))
                    }
                    false => l + r,
                };
                let grads = (s.clone() * w.clone()).sum().backward();
                let (dx, dp) = (x.grad(&grads).unwrap(), p.grad(&grads).unwrap());
                assert_eq!(dp.dims(), [1, 3, 1200]);
                (bits3(s.inner()), bits3(dx), bits3(dp))
            };
            assert_eq!(run(true), run(false), "swapped {swap}");
        }
    }

    /// A broadcast sum written over its unique left operand: Flex's values.
    #[test]
    fn a_unique_operand_takes_the_broadcast_sum_in_place() {
        let dev = Default::default();
        let make = |seed, n: usize, shape: [usize; 3]| {
            let t = Tensor::<Flex, 1>::from_data(
                TensorData::new(values(seed)[..n].to_vec(), [n]),
                &dev,
            );
            t.reshape(shape)
        };
        let want = make(0.37, 36_000, [10, 3, 1200]) + make(0.53, 3600, [1, 3, 1200]);
        let (x, p) = (
            make(0.37, 36_000, [10, 3, 1200]),
            make(0.53, 3600, [1, 3, 1200]),
        );
        let got = super::inner(x.into_primitive().tensor(), p.into_primitive().tensor());
        let got = Tensor::<Flex, 3>::from_primitive(TensorPrimitive::Float(got));
        assert_eq!(bits(got.reshape([36_000])), bits(want.reshape([36_000])));
    }

    /// Shared operands (neither writable in place) and a short sum (Flex's):
    /// Flex's values either way.
    #[test]
    fn shared_and_short_operands_add_as_flex() {
        let dev = Default::default();
        for n in [70_001, 1_000] {
            let x =
                Tensor::<Flex, 1>::from_data(TensorData::new(values(0.2)[..n].to_vec(), [n]), &dev);
            let y =
                Tensor::<Flex, 1>::from_data(TensorData::new(values(0.3)[..n].to_vec(), [n]), &dev);
            let ours = super::inner(
                x.clone().into_primitive().tensor(),
                y.clone().into_primitive().tensor(),
            );
            let ours = Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(ours));
            assert_eq!(bits(ours), bits(x.clone() + y.clone()), "{n} values");
            let _keep = (x, y);
        }
    }
}
