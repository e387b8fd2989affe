//! Burn's `conv2d`, faster on the CPU.
//!
//! On `Autodiff<Flex>`, Burn computes a convolution's weight gradient as
//! another convolution whose kernel is the whole output-gradient image, the
//! slowest part of a ResNet step on flex (docs/BENCHMARKS.md). [`conv2d`]
//! computes stride-1 convolutions and both their gradients as a few large
//! matrix products over a channels-last copy of the input ([`kernel`]), on
//! `Autodiff<Flex>` for training and on Flex for evaluation; the forward of
//! a convolution with very shallow products (a first layer) is [`direct`]'s
//! register-blocked sums, in Flex's order (in 16 bits summed in f32). A
//! strided convolution is one stride-1 convolution over the input's phases
//! stacked as channels ([`strided`]), in training and in evaluation. Every
//! other backend, and every other convolution (dilated, grouped, asymmetric
//! padding), goes to Burn's `conv2d` unchanged, so GPU
//! runs are untouched, unless [`conv2d_with`] is asked for [`ConvPath::Gemm`]
//! ([`gemm`]: batched products in Burn's tensor ops, on any backend).
//! Max pooling ([`max_pool2d`], [`pool`]), batch norm in training
//! ([`norm`]), layer norm in training ([`layer_norm()`]), ReLU ([`relu()`]),
//! additions ([`add()`]), a convolution's bias and the casts between f32 and
//! 16 bits ([`cast()`]) are single operations on Flex too, for the models'
//! other layers around the convolutions and autocast's casts.

/// `fn $name(args)` calling `$body`, built three times: for AVX-512, for
/// AVX2 and for the baseline, the widest this CPU has chosen at run time.
/// Where none fuses a multiply and an add, all give the same bits; the
/// AVX builds keep their names for the tests. With `$module::$function` in
/// place of the AVX-512 build's name, that function (unsafe, for a CPU with
/// AVX-512F) is the AVX-512 build instead.
macro_rules! widest {
    ($(#[$doc:meta])* fn $name:ident / $avx512:ident / $avx2:ident
        ($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $body:ident) => {
        widest! {
            $(#[$doc])* fn $name / self::$avx512 / $avx2 ($($arg: $ty),*) $(-> $ret)? = $body
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        unsafe fn $avx512($($arg: $ty),*) $(-> $ret)? {
            $body($($arg),*)
        }
    };
    ($(#[$doc:meta])* fn $name:ident / $module:ident::$avx512:ident / $avx2:ident
        ($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $body:ident) => {
        $(#[$doc])*
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (checked just above).
                    return unsafe { $module::$avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2 (checked just above).
                    return unsafe { $avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        unsafe fn $avx2($($arg: $ty),*) $(-> $ret)? {
            $body($($arg),*)
        }
    };
}

#[macro_use]
mod add;
mod bias;
mod cast;
pub mod direct;
pub mod gemm;
pub mod kernel;
mod layer_norm;
mod layout;
pub mod matmul;
pub mod norm;
mod op;
mod outer;
pub mod pool;
mod registers;
mod relu;
mod reshape;
pub mod strided;
mod sums;

use std::any::Any;

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::module;
use burn::tensor::ops::{FloatTensor, PaddedConvOptions};
use burn::tensor::{FloatDType, Shape, Tensor, TensorMetadata};
use serde::{Deserialize, Serialize};

pub use kernel::Geometry;

/// Which computation [`conv2d_with`] runs (`[model] conv` in greentrain's
/// config).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConvPath {
    /// [`conv2d`]: Burn's kernels, this crate's shifted products on Flex.
    #[default]
    Native,
    /// [`gemm::conv2d`]: shifted views and one batched product in Burn's
    /// tensor ops, on any backend (for the CubeCL backends' slow direct
    /// kernels); what it does not compute goes to Burn.
    Gemm,
}

/// [`conv2d`] or, for [`ConvPath::Gemm`], [`gemm::conv2d`] where it applies.
pub fn conv2d_with<B: Backend>(
    path: ConvPath,
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    options: PaddedConvOptions<2>,
) -> Tensor<B, 4> {
    let y = match path {
        ConvPath::Native => return conv2d(x, weight, bias, options),
        ConvPath::Gemm => match gemm::conv2d(x.clone(), weight.clone(), &options) {
            Some(y) => y,
            None => return module::conv2d(x, weight, bias, options),
        },
    };
    with_bias(y, bias)
}

/// `y` plus a bias per channel. On flex in f32, [`bias`]'s one pass; in
/// 16 bits, as rows `[batch x channels, positions]` plus a per-row column:
/// flex walks the `[1, C, 1, 1]` broadcast one element at a time, and that
/// add was a fifth of a LeNet-5 training step (docs/BENCHMARKS.md). The same
/// additions every way; the bias gradient sums in another order. Other
/// backends keep the broadcast.
fn with_bias<B: Backend>(y: Tensor<B, 4>, bias: Option<Tensor<B, 1>>) -> Tensor<B, 4> {
    let Some(b) = bias else {
        return y;
    };
    let [n, c, h, w] = y.dims();
    if !on_flex::<B>() {
        return y + b.reshape([1, c, 1, 1]);
    }
    if bias::takes(&y, &b) {
        return match is::<B, Flex>() {
            true => same(bias::add_inner(same(y), same(b))),
            false => same(bias::add(same(y), same(b))),
        };
    }
    let column = b.reshape([1, c]).expand([n, c]).reshape([n * c, 1]);
    (y.reshape([n * c, h * w]) + column).reshape([n, c, h, w])
}

/// Burn's [`module::conv2d`], routed to the shifted-product gradients where
/// they apply (see the crate's documentation).
pub fn conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    options: PaddedConvOptions<2>,
) -> Tensor<B, 4> {
    if let Some(s) = strided(&x, &weight, &options) {
        let y: Tensor<B, 4> = if is::<B, Flex>() {
            same(strided::conv2d_inner(same(x), same(weight), s))
        } else {
            same(strided::conv2d(same(x), same(weight), s))
        };
        return with_bias(y, bias);
    }
    let Some(geometry) = geometry(&x, &weight, &options) else {
        return module::conv2d(x, weight, bias, options);
    };
    let y: Tensor<B, 4> = if is::<B, Flex>() {
        same(op::conv2d_inner(same(x), same(weight), geometry))
    } else {
        same(op::conv2d(same(x), same(weight), options.options, geometry))
    };
    with_bias(y, bias)
}

/// Burn's [`module::max_pool2d`], computed by [`pool`] on `Autodiff<Flex>`
/// and Flex where it has no padding or dilation (the same values and
/// gradients, faster); Burn's everywhere else.
pub fn max_pool2d<B: Backend>(
    x: Tensor<B, 4>,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    ceil_mode: bool,
) -> Tensor<B, 4> {
    let flex = on_flex::<B>();
    let args = (kernel, stride, padding, dilation, ceil_mode);
    let route = flex
        .then(|| {
            pool::pool_of(
                x.dims(),
                x.dtype(),
                kernel,
                stride,
                padding,
                dilation,
                ceil_mode,
            )
        })
        .flatten();
    let Some(p) = route else {
        let (k, s, pad, d, ceil) = args;
        return module::max_pool2d(x, k, s, pad, d, ceil);
    };
    if is::<B, Flex>() {
        same(pool::max_pool2d_inner(same(x), p))
    } else {
        same(pool::max_pool2d(same(x), p))
    }
}

/// Burn's float cast; between f32 and f16 or bfloat16 on `Autodiff<Flex>`
/// and Flex, one parallel pass (f16 eight values per instruction) with
/// Flex's bits rather than Flex's one value at a time through f64;
/// `B::float_cast` everywhere else.
pub fn cast<B: Backend>(x: FloatTensor<B>, to: FloatDType) -> FloatTensor<B> {
    if cast::takes(x.dtype(), to.into()) {
        if is::<B, Autodiff<Flex>>() {
            return same(cast::autodiff(same(x), to));
        }
        if is::<B, Flex>() {
            return same(cast::inner(same(x), to));
        }
    }
    B::float_cast(x, to)
}

/// Burn's ReLU, as one parallel pass each way on `Autodiff<Flex>` and Flex
/// in f32 (Flex's operations, the same bits; in place where the buffers
/// are free); `B::relu` everywhere else.
pub fn relu<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    if relu::takes(x.dtype()) {
        if is::<B, Autodiff<Flex>>() {
            return same(relu::autodiff(same(x)));
        }
        if is::<B, Flex>() {
            return same(relu::inner(same(x)));
        }
    }
    B::relu(x)
}

/// Burn's float addition; on `Autodiff<Flex>` and Flex, two f32 tensors of
/// one shape summed on rayon's pool, where Flex sums them on one thread:
/// the same bits.
pub fn add<B: Backend>(lhs: FloatTensor<B>, rhs: FloatTensor<B>) -> FloatTensor<B> {
    if is::<B, Autodiff<Flex>>() {
        return same(add::autodiff(same(lhs), same(rhs)));
    }
    if is::<B, Flex>() {
        return same(add::inner(same(lhs), same(rhs)));
    }
    B::float_add(lhs, rhs)
}

/// Burn's layer norm over the last dimension; on `Autodiff<Flex>` in f32
/// one operation each way with the rows split across rayon's pool, the
/// composition's operations in its order (the same bits); `B::layer_norm`
/// everywhere else (Flex has its own fused forward for evaluation).
pub fn layer_norm<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: Option<FloatTensor<B>>,
    epsilon: f64,
) -> FloatTensor<B> {
    if is::<B, Autodiff<Flex>>() {
        return same(layer_norm::autodiff(
            same(x),
            same(gamma),
            beta.map(same),
            epsilon,
        ));
    }
    B::layer_norm(x, gamma, beta, epsilon)
}

/// Burn's reshape; on `Autodiff<Flex>` and Flex a strided view's
/// contiguous runs copied whole (forward, and the gradient's way back),
/// where Flex would copy it one element at a time: the same values.
pub fn reshape<B: Backend>(x: FloatTensor<B>, shape: Shape) -> FloatTensor<B> {
    if is::<B, Autodiff<Flex>>() {
        return same(reshape::autodiff(same(x), shape));
    }
    if is::<B, Flex>() {
        return same(reshape::inner(same(x), shape));
    }
    B::float_reshape(x, shape)
}

/// Whether [`conv2d`] computes this convolution's gradients itself rather
/// than through Burn.
pub fn routes<B: Backend>(
    x: &Tensor<B, 4>,
    weight: &Tensor<B, 4>,
    options: &PaddedConvOptions<2>,
) -> bool {
    strided(x, weight, options).is_some() || geometry(x, weight, options).is_some()
}

/// The plan when [`conv2d`] takes this strided convolution apart into
/// stride-1 ones ([`strided`]): on `Autodiff<Flex>`, and on Flex alone
/// (evaluation, the forward only) where the stacked products are deep
/// enough for gemm ([`strided::Strided::deep`]; Flex's own otherwise).
fn strided<B: Backend>(
    x: &Tensor<B, 4>,
    weight: &Tensor<B, 4>,
    options: &PaddedConvOptions<2>,
) -> Option<strided::Strided> {
    let s = strided::Strided::new(shape(x, weight, options)?, options.options.stride)?;
    (is::<B, Autodiff<Flex>>() || s.deep()).then_some(s)
}

/// The geometry when this convolution takes the shifted-product path:
/// stride 1, and on Flex alone (only the forward) not a shallow one that
/// the direct kernel does not compute (those stay Burn's).
fn geometry<B: Backend>(
    x: &Tensor<B, 4>,
    weight: &Tensor<B, 4>,
    options: &PaddedConvOptions<2>,
) -> Option<Geometry> {
    let g = shape(x, weight, options)?;
    let forward_only_and_shallow = is::<B, Flex>() && g.shallow() && !op::direct(&g, x.dtype());
    (options.options.stride == [1, 1] && !forward_only_and_shallow).then_some(g)
}

/// The shape of a convolution flexconv computes, at any stride:
/// `Autodiff<Flex>` or Flex, no dilation, one group, the same padding on
/// both sides, a float dtype the kernels read ([`Geometry::of`] checks the
/// rest).
fn shape<B: Backend>(
    x: &Tensor<B, 4>,
    weight: &Tensor<B, 4>,
    options: &PaddedConvOptions<2>,
) -> Option<Geometry> {
    let o = &options.options;
    let flex = on_flex::<B>();
    let plain = o.dilation == [1, 1] && o.groups == 1;
    let symmetric = options.padding_end.is_none_or(|end| end == o.padding);
    let dtype = op::reads(x.dtype()) && x.dtype() == weight.dtype();
    (flex && plain && symmetric && dtype)
        .then(|| Geometry::of(x.dims(), weight.dims(), o.padding))
        .flatten()
}

/// Whether `B` is Flex or `Autodiff<Flex>`, the backends this crate's own
/// kernels serve (callers check it before building anything for them).
pub fn on_flex<B: Backend>() -> bool {
    is::<B, Autodiff<Flex>>() || is::<B, Flex>()
}

fn is<A: 'static, B: 'static>() -> bool {
    std::any::TypeId::of::<A>() == std::any::TypeId::of::<B>()
}

/// `a` as the type [`is`] found it to be.
fn same<A: 'static, B: 'static>(a: A) -> B {
    *(Box::new(a) as Box<dyn Any>)
        .downcast::<B>()
        .expect("the caller checked the backend with `is` first")
}
