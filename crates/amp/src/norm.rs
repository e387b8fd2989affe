//! Batch norm over rows of `[batch * channels, positions]`.
//!
//! Burn's `BatchNorm` broadcasts `[1, C, 1, 1]` statistics against
//! `[N, C, H, W]` in five elementwise ops (and as many in backward). The flex
//! CPU backend has no fast path for a broadcast along a middle dimension and
//! walks those ops one element at a time, which made them most of a ResNet
//! step on the CPU. Viewed as rows `[N * C, H * W]`, a per-channel value is a
//! per-row column `[N * C, 1]`, the broadcast flex vectorises; the statistics
//! come from contiguous row sums. The same form has fewer full-size passes on
//! a GPU (no transposed copies for the statistics).
//!
//! Where sums split (the CubeCL backends, `sums.rs`), the rows are viewed as
//! `[N * C, P / k, k]` and the batch as `[N / m, m]`, so that each sum over
//! positions or over the batch, forward and backward, runs in two stages
//! instead of `N * C` threads each looping over `H * W` values.
//!
//! Semantics are PyTorch's `BatchNorm2d`: batch statistics with the biased
//! variance normalise in training, the running variance is updated with the
//! unbiased one; inference (no autodiff) normalises with the running
//! statistics.

use crate::sums::split_of;
use burn::backend::{Autodiff, Flex};
use burn::nn::BatchNorm;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor, TensorData, TensorPrimitive};
use burn_backend::tensor::FloatTensor;
use greentrain_matmul::MatmulBackend;
use std::any::{Any, TypeId};

/// Burn's [`BatchNorm`] layer applied as greentrain applies it, for a plain
/// model (one that calls `batch_norm(&self.bn, x)` where it would call
/// `self.bn.forward(x)`): in f32 whatever `x`'s dtype (the statistics of
/// 16-bit activations lose too much in 16 bits), with PyTorch's semantics
/// (running statistics updated in training, used in evaluation), in a
/// layout every backend broadcasts fast, and with its sums in two stages
/// where the backend's are serial per output and the thread's policy splits
/// sums ([`crate::Autocast::enter`]). The output is f32.
pub fn batch_norm<B: MatmulBackend, const D: usize>(
    layer: &BatchNorm<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    let (x, split) = f32_and_split(x);
    batch_norm_split(layer, x, split)
}

/// `x` in f32, and whether the thread's policy and `B` split its sums.
fn f32_and_split<B: MatmulBackend, const D: usize>(x: Tensor<B, D>) -> (Tensor<B, D>, bool) {
    let x = if x.dtype() == DType::F32 {
        x
    } else {
        x.cast(FloatDType::F32)
    };
    let split = crate::backend::current().split_sums && B::gt_split_sums(&x.device());
    (x, split)
}

/// `relu(batch_norm(layer, x))`, the pair a ResNet's convolutions meet most:
/// in training on `Autodiff<Flex>` one operation (the ReLU in the norm's
/// own pass each way, its backward gate recomputed from the input: the same
/// bits, two passes over the activations fewer), composed elsewhere.
pub fn batch_norm_relu<B: MatmulBackend, const D: usize>(
    layer: &BatchNorm<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    let (x, split) = f32_and_split(x);
    batch_norm_relu_split(layer, x, split)
}

/// [`batch_norm_split`] followed by a ReLU, fused where [`on_flex`] takes it.
pub(crate) fn batch_norm_relu_split<B: Backend, const D: usize>(
    layer: &BatchNorm<B>,
    x: Tensor<B, D>,
    split: bool,
) -> Tensor<B, D> {
    match on_flex(layer, x, &Tail::Relu) {
        Ok(y) => y,
        Err(x) => burn::tensor::activation::relu(batch_norm_split(layer, x, split)),
    }
}

/// `relu(batch_norm(layer, x) + shortcut)`, a residual block's end: in
/// training on `Autodiff<Flex>` one operation (the sum and the ReLU in the
/// norm's own pass: four passes over the activations fewer forward, the
/// same bits), composed elsewhere. The norm's output is f32, so an f32
/// `shortcut` is the one that can be fused.
pub fn batch_norm_add_relu<B: MatmulBackend, const D: usize>(
    layer: &BatchNorm<B>,
    x: Tensor<B, D>,
    shortcut: Tensor<B, D>,
) -> Tensor<B, D> {
    let (x, split) = f32_and_split(x);
    batch_norm_add_relu_split(layer, x, shortcut, split)
}

/// [`batch_norm_add_relu`] with the sums' split decided.
pub(crate) fn batch_norm_add_relu_split<B: Backend, const D: usize>(
    layer: &BatchNorm<B>,
    x: Tensor<B, D>,
    shortcut: Tensor<B, D>,
    split: bool,
) -> Tensor<B, D> {
    // The clone (shared, not copied) is dropped before the composition's
    // sum, which may then write over the shortcut's buffer.
    let fused = on_flex(layer, x, &Tail::AddRelu(shortcut.clone()));
    match fused {
        Ok(y) => y,
        Err(x) => burn::tensor::activation::relu(batch_norm_split(layer, x, split) + shortcut),
    }
}

/// What the fused batch norm does after normalising, in its own pass.
enum Tail<B: Backend, const D: usize> {
    None,
    Relu,
    /// The shortcut added, then a ReLU.
    AddRelu(Tensor<B, D>),
}

/// `layer` applied to `x` `[batch, channels, ...]` in `x`'s dtype (f32 under
/// autocast), updating the running statistics when autodiff is on; `split`:
/// sums in two stages.
pub(crate) fn batch_norm_split<B: Backend, const D: usize>(
    layer: &BatchNorm<B>,
    x: Tensor<B, D>,
    split: bool,
) -> Tensor<B, D> {
    assert!(
        D >= 2,
        "batch norm needs [batch, channels, ...], got rank {D}"
    );
    let x = match on_flex(layer, x, &Tail::None).or_else(|x| inference_on_flex(layer, x)) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let dims = x.dims();
    let (n, c) = (dims[0], dims[1]);
    let p: usize = dims[2..].iter().product();
    let (k, m) = (split_of(p), split_of(n));
    if !split || (k < 2 && m < 2) {
        let rows = x.reshape([n * c, p]);
        let col = |v: Tensor<B, 1>| per_row(v, n, 1);
        let sum = |r: Tensor<B, 2>| channel_sum(r.sum_dim(1), n, c, 1);
        return normalise(layer, rows, (n * p) as f64, col, sum).reshape(dims);
    }
    let rows = x.reshape([n * c, p / k, k]);
    let col = |v: Tensor<B, 1>| per_row(v, n, m).reshape([n * c, 1, 1]);
    let sum = |r: Tensor<B, 3>| channel_sum(r.sum_dim(1).sum_dim(2), n, c, m);
    normalise(layer, rows, (n * p) as f64, col, sum).reshape(dims)
}

/// Training on `Autodiff<Flex>` (alone or under `Amp`): greentrain-flexconv's
/// fused batch norm, two passes forward and two backward where the tensor
/// ops take six and about ten; `Err(x)` for everything else.
fn on_flex<B: Backend, const D: usize>(
    layer: &BatchNorm<B>,
    x: Tensor<B, D>,
    tail: &Tail<B, D>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    use greentrain_flexconv::norm;
    let flex = TypeId::of::<FloatTensor<B>>() == TypeId::of::<FloatTensor<Autodiff<Flex>>>();
    if !flex || !B::ad_enabled(&x.device()) || x.dtype() != DType::F32 {
        return Err(x);
    }
    let (gamma, beta, eps) = (
        retype(layer.gamma.val()),
        retype(layer.beta.val()),
        layer.epsilon,
    );
    let fused = match tail {
        Tail::None => norm::batch_norm(retype(x.clone()), gamma, beta, eps, false),
        Tail::Relu => norm::batch_norm(retype(x.clone()), gamma, beta, eps, true),
        Tail::AddRelu(short) => {
            norm::batch_norm_add_relu(retype(x.clone()), gamma, beta, eps, retype(short.clone()))
        }
    };
    let Some((y, stats)) = fused else {
        return Err(x);
    };
    let device = x.device();
    let c = stats.mean.len();
    let mean = Tensor::<B, 1>::from_data(TensorData::new(stats.mean, [c]), &device);
    let var = Tensor::<B, 1>::from_data(TensorData::new(stats.var, [c]), &device);
    let count: usize = x.dims().iter().product::<usize>() / c;
    update_running(layer, mean, var, count as f64);
    Ok(retype(y))
}

/// Evaluation on Flex (alone or under `Amp`, no autodiff): greentrain-flexconv's
/// one-pass batch norm with the running statistics, the composition's bits;
/// `Err(x)` for everything else.
fn inference_on_flex<B: Backend, const D: usize>(
    layer: &BatchNorm<B>,
    x: Tensor<B, D>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let flex = TypeId::of::<FloatTensor<B>>() == TypeId::of::<FloatTensor<Flex>>();
    if !flex || B::ad_enabled(&x.device()) || x.dtype() != DType::F32 {
        return Err(x);
    }
    let per = [
        layer.running_mean.value(),
        layer.running_var.value(),
        layer.gamma.val(),
        layer.beta.val(),
    ]
    .map(retype);
    match greentrain_flexconv::norm::batch_norm_inference(retype(x.clone()), per, layer.epsilon) {
        Some(y) => Ok(retype(y)),
        None => Err(x),
    }
}

/// `x` as a tensor of backend `To`, whose float primitive is the same type
/// as `From`'s (`Amp<Autodiff<Flex>>` and `Autodiff<Flex>`, `Amp<Flex>` and
/// `Flex`; checked by the caller).
fn retype<From: Backend, To: Backend, const D: usize>(x: Tensor<From, D>) -> Tensor<To, D> {
    let p: Box<dyn Any> = Box::new(x.into_primitive().tensor());
    let p = *p.downcast().expect("the primitive checked by the caller");
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

/// The normalisation on rows of any layout: `col` broadcasts a per-channel
/// vector against the rows, `sum` sums the rows per channel; `count` values
/// per channel.
fn normalise<B: Backend, const R: usize>(
    layer: &BatchNorm<B>,
    rows: Tensor<B, R>,
    count: f64,
    col: impl Fn(Tensor<B, 1>) -> Tensor<B, R>,
    sum: impl Fn(Tensor<B, R>) -> Tensor<B, 1>,
) -> Tensor<B, R> {
    let (centred, var) = if B::ad_enabled(&rows.device()) {
        let mean = sum(rows.clone()).div_scalar(count);
        let centred = rows - col(mean.clone());
        let var = sum(centred.clone().square()).div_scalar(count);
        update_running(layer, mean, var.clone(), count);
        (centred, var)
    } else {
        let mean = layer.running_mean.value();
        (rows - col(mean), layer.running_var.value())
    };
    let scale = layer.gamma.val() / var.add_scalar(layer.epsilon).sqrt();
    centred * col(scale) + col(layer.beta.val())
}

/// Per-channel sums `[c]` of per-row sums (any shape of `n * c` values),
/// over the batch viewed as `[n / m, m]`.
fn channel_sum<B: Backend, const R: usize>(
    row_sums: Tensor<B, R>,
    n: usize,
    c: usize,
    m: usize,
) -> Tensor<B, 1> {
    if m < 2 {
        return row_sums.reshape([n, c]).sum_dim(0).reshape([c]);
    }
    row_sums
        .reshape([n / m, m, c])
        .sum_dim(0)
        .sum_dim(1)
        .reshape([c])
}

/// A per-channel vector `[c]` as a column `[n * c, 1]`, one value per row,
/// expanded over the batch viewed as `[n / m, m]` (`[n]` for m = 1).
fn per_row<B: Backend>(v: Tensor<B, 1>, n: usize, m: usize) -> Tensor<B, 2> {
    let c = v.dims()[0];
    if m < 2 {
        return v.reshape([1, c]).expand([n, c]).reshape([n * c, 1]);
    }
    v.reshape([1, 1, c])
        .expand([n / m, m, c])
        .reshape([n * c, 1])
}

/// PyTorch's update: momentum-weighted, the variance unbiased (n / (n - 1)).
fn update_running<B: Backend>(
    layer: &BatchNorm<B>,
    mean: Tensor<B, 1>,
    var: Tensor<B, 1>,
    count: f64,
) {
    let m = layer.momentum;
    let unbias = if count > 1.0 {
        count / (count - 1.0)
    } else {
        1.0
    };
    let device = mean.device();
    let rm = layer.running_mean.value_sync().to_device(&device);
    let rv = layer.running_var.value_sync().to_device(&device);
    let rm = rm.mul_scalar(1.0 - m) + mean.detach().mul_scalar(m);
    let rv = rv.mul_scalar(1.0 - m) + var.detach().mul_scalar(m * unbias);
    layer.running_mean.update(rm.detach());
    layer.running_var.update(rv.detach());
}
