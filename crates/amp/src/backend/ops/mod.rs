//! The op traits' impls for `Amp<I>` (generated: one forwarding method per
//! Burn trait method, `tools/gen_forward.py`) and the casts they apply.

mod activation;
mod bool;
mod float;
mod int;
mod module;
mod qtensor;
mod table;
mod transaction;

use burn::tensor::{Tensor, TensorPrimitive as Primitive};
use burn_backend::ops::{ConvOptions, DeformConv2dBackward, TransactionPrimitive};
use burn_backend::tensor::FloatTensor;
use burn_backend::{Backend, DType, Shape, TensorMetadata, TensorPrimitive};

use super::kernels::kernels;
use super::state::{autocast_dtype, current};
use super::Amp;
use greentrain_flexconv::ConvPath;

/// What autocast does to an op's float inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Cast to the compute dtype (f16 or bf16) while autocast is on:
    /// products, convolutions, attention (PyTorch's lower-precision list).
    Low,
    /// Cast 16-bit inputs to f32 while autocast is on: exp, log, pow, sums,
    /// means, softmax, log-softmax, layer norm, losses (PyTorch's fp32 list).
    F32,
    /// Two or more float inputs: cast to the widest of their dtypes, always
    /// (Burn's binary ops would otherwise fail on mixed dtypes).
    Promote,
    /// Not listed: the op runs in its input's dtype.
    Keep,
}

/// The rule for one of Burn 0.21's backend ops, by its method name
/// (`float_matmul`, `softmax`, `linear`, ...).
pub fn rule(op: &str) -> Rule {
    match table::RULES.binary_search_by(|(name, _)| name.cmp(&op)) {
        Ok(i) => table::RULES[i].1,
        Err(_) => Rule::Keep,
    }
}

/// Casts only when the dtype differs (a cast of equal dtypes would still
/// record a node in the autodiff graph); on flex in one parallel pass.
fn to<I: Backend>(t: FloatTensor<I>, dtype: DType) -> FloatTensor<I> {
    if t.dtype() == dtype {
        t
    } else {
        greentrain_flexconv::cast::<I>(t, dtype.into())
    }
}

/// [`Rule::Low`]: f32 and 16-bit floats go to the compute dtype; f64 stays
/// (as PyTorch leaves doubles alone).
fn low<I: Backend>(t: FloatTensor<I>) -> FloatTensor<I> {
    match autocast_dtype() {
        Some(d)
            if matches!(
                t.dtype(),
                DType::F32 | DType::Flex32 | DType::F16 | DType::BF16
            ) =>
        {
            to::<I>(t, d.into())
        }
        _ => t,
    }
}

/// [`Rule::F32`]: 16-bit floats go to f32.
fn full<I: Backend>(t: FloatTensor<I>) -> FloatTensor<I> {
    match (autocast_dtype(), t.dtype()) {
        (Some(_), DType::F16 | DType::BF16) => to::<I>(t, DType::F32),
        _ => t,
    }
}

/// [`Rule::Promote`]'s target: the widest float dtype among the inputs;
/// f16 with bf16 gives f32 (neither holds the other), as in PyTorch.
fn widest(dtypes: impl Iterator<Item = DType>) -> DType {
    let rank = |d: DType| match d {
        DType::F64 => 3,
        DType::F32 | DType::Flex32 => 2,
        _ => 1,
    };
    let mut wide: Option<DType> = None;
    for d in dtypes {
        wide = Some(match wide {
            None => d,
            Some(w) if rank(d) > rank(w) => d,
            Some(w) if rank(d) == rank(w) && d != w && rank(d) == 1 => DType::F32,
            Some(w) => w,
        });
    }
    wide.unwrap_or(DType::F32)
}

/// A 1-D convolution as a 2-D one over images one row high where
/// greentrain-flexconv computes that (`Autodiff<Flex>` and Flex on the
/// native path): Flex's own conv1d runs its general 3-D kernel after
/// strided copies, which took more than a third of the MNIST-1D CNN's step.
/// Everything else keeps `I::conv1d`.
fn conv1d<I: Backend>(
    x: FloatTensor<I>,
    weight: FloatTensor<I>,
    bias: Option<FloatTensor<I>>,
    options: ConvOptions<1>,
) -> FloatTensor<I> {
    let native = current().conv == ConvPath::Native;
    if !native || !greentrain_flexconv::on_flex::<I>() {
        return I::conv1d(x, weight, bias, options);
    }
    let (x2, w2) = (
        tensor::<I, 3>(x.clone()).unsqueeze_dim::<4>(2),
        tensor::<I, 3>(weight.clone()).unsqueeze_dim::<4>(2),
    );
    let o = &options;
    let wide = ConvOptions::new(
        [1, o.stride[0]],
        [0, o.padding[0]],
        [1, o.dilation[0]],
        o.groups,
    );
    if !greentrain_flexconv::routes(&x2, &w2, &wide.clone().into()) {
        return I::conv1d(x, weight, bias, options);
    }
    let y = conv2d::<I>(
        x2.into_primitive().tensor(),
        w2.into_primitive().tensor(),
        bias,
        wide,
    );
    tensor::<I, 4>(y)
        .squeeze_dim::<3>(2)
        .into_primitive()
        .tensor()
}

/// A convolution through greentrain-flexconv on this thread's conv path
/// (`Native` computes stride-1 convolutions' gradients on `Autodiff<Flex>`
/// faster than Burn and hands every other backend and geometry to
/// `I::conv2d` unchanged).
fn conv2d<I: Backend>(
    x: FloatTensor<I>,
    weight: FloatTensor<I>,
    bias: Option<FloatTensor<I>>,
    options: ConvOptions<2>,
) -> FloatTensor<I> {
    let bias = bias.map(tensor::<I, 1>);
    let path = current().conv;
    greentrain_flexconv::conv2d_with(path, tensor(x), tensor(weight), bias, options.into())
        .into_primitive()
        .tensor()
}

/// Max pooling through greentrain-flexconv, which pools unpadded windows on
/// `Autodiff<Flex>` and Flex itself (Burn's values and gradients, faster)
/// and hands everything else to `I::max_pool2d`.
fn max_pool2d<I: Backend>(
    x: FloatTensor<I>,
    kernel_size: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    ceil_mode: bool,
) -> FloatTensor<I> {
    let x = tensor::<I, 4>(x);
    greentrain_flexconv::max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)
        .into_primitive()
        .tensor()
}

/// A product: greentrain-matmul's kernel for two matrices where `I` has
/// greentrain's kernels ([`super::use_kernels`]), `I`'s own otherwise.
fn matmul<I: Backend>(lhs: FloatTensor<I>, rhs: FloatTensor<I>) -> FloatTensor<I> {
    match kernels::<I>() {
        Some(k) if lhs.shape().num_dims() == 2 && rhs.shape().num_dims() == 2 => {
            (k.matmul)(tensor(lhs), tensor(rhs), current().matmul)
                .into_primitive()
                .tensor()
        }
        _ => I::float_matmul(lhs, rhs),
    }
}

/// A linear layer. Where `I` has greentrain's kernels, on rows: inputs of
/// rank 3 and up flattened to one matrix first, as greentrain's models
/// always did (Burn's linear broadcasts the weight, and its weight gradient
/// then materialises one `d_in x d_out` product per leading index before
/// summing them), the product and the bias gradient through greentrain's
/// kernels. Elsewhere `I`'s own linear, so that `Amp<I>` with autocast off
/// computes exactly what `I` does.
fn linear<I: Backend>(
    x: FloatTensor<I>,
    weight: FloatTensor<I>,
    bias: Option<FloatTensor<I>>,
) -> FloatTensor<I> {
    let shape = x.shape();
    let rank = shape.num_dims();
    let Some(k) = kernels::<I>().filter(|_| rank >= 2) else {
        return I::linear(x, weight, bias);
    };
    let d_in = shape[rank - 1];
    let rows: usize = shape[..rank - 1].iter().product();
    let x = if rank == 2 {
        x
    } else {
        I::float_reshape(x, Shape::new([rows, d_in]))
    };
    let s = current();
    let bias = bias.map(tensor::<I, 1>);
    let y = (k.linear)(tensor(x), tensor(weight), bias, s.matmul, s.split_sums)
        .into_primitive()
        .tensor();
    if rank == 2 {
        return y;
    }
    let mut dims = shape.to_vec();
    dims[rank - 1] = y.shape()[1];
    I::float_reshape(y, Shape::from(dims))
}

/// Layer norm over the last dimension; where sums split on `I`, the rows
/// viewed as `[rows / c, c]` so that gamma's and beta's gradients sum in two
/// stages (`sums.rs`). The statistics are per row either way.
fn layer_norm<I: Backend>(
    x: FloatTensor<I>,
    gamma: FloatTensor<I>,
    beta: Option<FloatTensor<I>>,
    epsilon: f64,
) -> FloatTensor<I> {
    let shape = x.shape();
    let split = current().split_sums
        && kernels::<I>().is_some_and(|k| (k.split_sums)(&I::float_device(&x)));
    match crate::sums::layer_norm_rows(&shape).filter(|_| split) {
        Some(rows) => {
            let x = I::float_reshape(x, Shape::new(rows));
            I::float_reshape(I::layer_norm(x, gamma, beta, epsilon), shape)
        }
        None => greentrain_flexconv::layer_norm::<I>(x, gamma, beta, epsilon),
    }
}

/// `I`'s primitive as a tensor of rank `D` (the rank the caller checked).
fn tensor<I: Backend, const D: usize>(t: FloatTensor<I>) -> Tensor<I, D> {
    Tensor::from_primitive(Primitive::Float(t))
}

pub(super) fn rewrap_primitive<I: Backend>(t: TensorPrimitive<I>) -> TensorPrimitive<Amp<I>> {
    match t {
        TensorPrimitive::Float(t) => TensorPrimitive::Float(t),
        TensorPrimitive::QFloat(q) => TensorPrimitive::QFloat(q),
    }
}

fn rewrap_deform<I: Backend>(g: DeformConv2dBackward<I>) -> DeformConv2dBackward<Amp<I>> {
    DeformConv2dBackward::new(
        g.x_grad,
        g.offset_grad,
        g.weight_grad,
        g.mask_grad,
        g.bias_grad,
    )
}

fn unwrap_transaction<I: Backend>(t: TransactionPrimitive<Amp<I>>) -> TransactionPrimitive<I> {
    TransactionPrimitive::new(t.read_floats, t.read_qfloats, t.read_ints, t.read_bools)
}

pub(super) fn unwrap_primitive<I: Backend>(t: TensorPrimitive<Amp<I>>) -> TensorPrimitive<I> {
    match t {
        TensorPrimitive::Float(t) => TensorPrimitive::Float(t),
        TensorPrimitive::QFloat(q) => TensorPrimitive::QFloat(q),
    }
}

/// Every op with a rule other than [`Rule::Keep`], sorted by name.
pub fn rules() -> impl Iterator<Item = (&'static str, Rule)> {
    table::RULES.iter().copied()
}
