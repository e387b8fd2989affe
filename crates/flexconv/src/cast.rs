//! Casts between f32 and the 16-bit floats on `Autodiff<Flex>` and Flex:
//! one pass split across rayon's pool, f16 eight values per instruction.
//!
//! Flex's `float_cast` widens every value into a new f64 buffer on one
//! thread and rounds each from there, one call per value: with autocast's
//! casts around every product that was about a fifth of a ResNet-20 fp16
//! evaluation on the CPU (perf). An f32 widened to f64 is the same number,
//! so rounding it once gives the bits rounding the f32 once gives; the
//! bfloat16 rounding is Flex's own expression (half's f64 rounding is not
//! its f32 one). A test holds every path to Flex's bits.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::ops::{FloatTensor, FloatTensorOps};
use burn::tensor::{bf16, f16, DType, FloatDType, TensorData};
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// Values per task: a task's start is noise against 16k conversions.
const CHUNK: usize = 1 << 14;

/// 16-bit values widened to f32 per block of this many, on the stack, by
/// the element-wise ops that work in f32 and round back (ReLU, the bias).
pub(crate) const BLOCK: usize = 256;

#[derive(Debug)]
struct Cast;

impl Backward<Flex, 1> for Cast {
    /// The input's dtype, which the gradient goes back to.
    type State = FloatDType;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node {
            grads.register::<Flex>(node.id, inner(dy, ops.state));
        }
    }
}

/// Whether [`autodiff`] and [`inner`] cast this way themselves (the rest is
/// Flex's).
pub(crate) fn takes(from: DType, to: DType) -> bool {
    matches!(
        (from, to),
        (DType::F32, DType::F16 | DType::BF16) | (DType::F16 | DType::BF16, DType::F32)
    )
}

/// The cast recorded for backward, as Autodiff's own: the gradient cast
/// back to the input's dtype.
pub(crate) fn autodiff(
    x: FloatTensor<Autodiff<Flex>>,
    to: FloatDType,
) -> FloatTensor<Autodiff<Flex>> {
    let from = x.primitive.dtype();
    let node = x.node.clone();
    let y = inner(x.primitive, to);
    match Cast
        .prepare::<NoCheckpointing>([node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(from.into(), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

/// `x` as `to` on Flex; ways [`takes`] does not take go to Flex's cast.
pub(crate) fn inner(x: FlexTensor, to: FloatDType) -> FlexTensor {
    if !takes(x.dtype(), to.into()) {
        return Flex::float_cast(x, to);
    }
    let shape = x.layout().shape().clone();
    let x = match x.layout().contiguous_offsets() {
        Some(_) => x,
        None => x.to_contiguous(),
    };
    let no = "contiguous, of the dtype matched";
    let data = match (x.dtype(), DType::from(to)) {
        (DType::F32, DType::F16) => {
            TensorData::new(convert(x.as_slice().expect(no), f16_from), shape)
        }
        (DType::F32, _) => TensorData::new(convert(x.as_slice().expect(no), bf16_from), shape),
        (DType::F16, _) => TensorData::new(convert(x.as_slice().expect(no), f16_into), shape),
        (_, _) => TensorData::new(convert(x.as_slice().expect(no), bf16_into), shape),
    };
    FlexTensor::from_data(data)
}

/// `f` over `src` chunk by chunk on rayon's pool into a new buffer.
pub(crate) fn convert<S: Sync, D: Copy + Default + Send>(
    src: &[S],
    f: fn(&[S], &mut [D]),
) -> Vec<D> {
    let mut out = vec![D::default(); src.len()];
    out.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(d, s)| f(s, d));
    out
}

/// f32 to f16, eight at a time where the CPU converts (F16C).
pub(crate) fn f16_from(s: &[f32], d: &mut [f16]) {
    d.convert_from_f32_slice(s);
}

/// f16 to f32, eight at a time where the CPU converts (F16C).
pub(crate) fn f16_into(s: &[f16], d: &mut [f32]) {
    s.convert_to_f32_slice(d);
}

/// f32 to bfloat16 as Flex rounds it (through f64).
fn bf16_from(s: &[f32], d: &mut [bf16]) {
    for (d, s) in d.iter_mut().zip(s) {
        *d = bf16::from_f64(f64::from(*s));
    }
}

/// bfloat16 to f32 as Flex widens it (through f64).
fn bf16_into(s: &[bf16], d: &mut [f32]) {
    for (d, s) in d.iter_mut().zip(s) {
        *d = (f64::from(s.to_f32())) as f32;
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{bf16, f16, DType, FloatDType, Tensor, TensorData, TensorPrimitive};

    type A = Autodiff<Flex>;

    /// f32 bit patterns: every exponent with spread mantissas, both signs,
    /// the boundaries of f16's and bfloat16's ranges, NaNs quiet and
    /// signalling; more than one task's chunk.
    fn f32s() -> Vec<f32> {
        let mut v: Vec<f32> = (0..1u64 << 20)
            .map(|i| f32::from_bits((i.wrapping_mul(0x9E37_79B9) as u32) ^ ((i as u32) << 12)))
            .collect();
        v.extend([
            0.0, -0.0, 65504.0, 65520.0, 65519.99, 6.1e-5, 5.96e-8, 2.98e-8, 1e-45,
        ]);
        v.extend([
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::from_bits(0x7F80_0001),
        ]);
        v.extend((0..1u32 << 16).map(|i| f32::from_bits((i << 16) | 0x8000))); // bf16 ties
        v.extend((0..1u32 << 16).map(|i| f32::from_bits((i << 13) | 0x1000))); // f16 ties
        v
    }

    fn flex(data: TensorData) -> Tensor<Flex, 1> {
        Tensor::from_data(data, &Default::default())
    }

    fn bits(t: Tensor<Flex, 1>) -> Vec<u8> {
        t.into_data().as_bytes().to_vec()
    }

    fn both(x: Tensor<Flex, 1>, to: FloatDType) -> (Vec<u8>, Vec<u8>) {
        let ours = super::inner(x.clone().into_primitive().tensor(), to);
        let ours: Tensor<Flex, 1> = Tensor::from_primitive(TensorPrimitive::Float(ours));
        (bits(ours), bits(x.cast(to)))
    }

    #[test]
    fn every_cast_gives_flexs_bits() {
        let v = f32s();
        let n = v.len();
        let x = flex(TensorData::new(v, [n]));
        for to in [FloatDType::F16, FloatDType::BF16] {
            let (ours, flexs) = both(x.clone(), to);
            assert!(ours == flexs, "f32 to {to:?}");
        }
        let every_f16: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
        let every_bf16: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).collect();
        for x in [
            flex(TensorData::new(every_f16, [1 << 16])),
            flex(TensorData::new(every_bf16, [1 << 16])),
        ] {
            let (ours, flexs) = both(x, FloatDType::F32);
            assert!(ours == flexs, "16 bits to f32");
        }
    }

    #[test]
    fn a_cast_view_and_its_gradient_come_back_in_the_inputs_dtype() {
        let device = Default::default();
        let x =
            Tensor::<A, 2>::from_data(TensorData::new(f32s()[..4096].to_vec(), [64, 64]), &device)
                .require_grad();
        // A transposed view: not contiguous.
        let t = x.clone().transpose();
        let y = Tensor::<A, 2>::from_primitive(TensorPrimitive::Float(super::autodiff(
            t.clone().into_primitive().tensor(),
            FloatDType::F16,
        )));
        assert_eq!(y.dtype(), DType::F16);
        assert_eq!(
            bits_of(y.clone().inner()),
            bits_of(t.inner().cast(FloatDType::F16))
        );
        let grads = (y.clone() * y).sum().backward();
        let g = x.grad(&grads).expect("x takes part");
        assert_eq!(g.dtype(), DType::F32);
        // Autodiff's own cast, the same graph: the same gradient.
        let x2 = x.detach().require_grad();
        let y2 = x2.clone().transpose().cast(FloatDType::F16);
        let grads2 = (y2.clone() * y2).sum().backward();
        assert_eq!(
            bits_of(g),
            bits_of(x2.grad(&grads2).expect("x2 takes part"))
        );
    }

    fn bits_of(t: Tensor<Flex, 2>) -> Vec<u8> {
        t.into_data().as_bytes().to_vec()
    }
}
