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
//! Semantics are PyTorch's `BatchNorm2d`: batch statistics with the biased
//! variance normalise in training, the running variance is updated with the
//! unbiased one; inference (no autodiff) normalises with the running
//! statistics.

use burn::nn::BatchNorm;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// `layer` applied to `x` `[batch, channels, ...]` in `x`'s dtype (f32 under
/// autocast), updating the running statistics when autodiff is on.
pub(crate) fn batch_norm<B: Backend, const D: usize>(
    layer: &BatchNorm<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    assert!(
        D >= 2,
        "batch norm needs [batch, channels, ...], got rank {D}"
    );
    let dims = x.dims();
    let (n, c) = (dims[0], dims[1]);
    let positions: usize = dims[2..].iter().product();
    let rows = x.reshape([n * c, positions]);
    let (centred, var) = if B::ad_enabled(&rows.device()) {
        let count = (n * positions) as f64;
        let mean = channel_sum(rows.clone(), n, c).div_scalar(count);
        let centred = rows - per_row(mean.clone(), n);
        let var = channel_sum(centred.clone().square(), n, c).div_scalar(count);
        update_running(layer, mean, var.clone(), count);
        (centred, var)
    } else {
        let mean = layer.running_mean.value();
        (rows - per_row(mean, n), layer.running_var.value())
    };
    let scale = layer.gamma.val() / var.add_scalar(layer.epsilon).sqrt();
    (centred * per_row(scale, n) + per_row(layer.beta.val(), n)).reshape(dims)
}

/// Per-channel sums of rows `[n * c, positions]`: `[c]`.
fn channel_sum<B: Backend>(rows: Tensor<B, 2>, n: usize, c: usize) -> Tensor<B, 1> {
    rows.sum_dim(1).reshape([n, c]).sum_dim(0).reshape([c])
}

/// A per-channel vector `[c]` as a column `[n * c, 1]`, one value per row.
fn per_row<B: Backend>(v: Tensor<B, 1>, n: usize) -> Tensor<B, 2> {
    let c = v.dims()[0];
    v.reshape([1, c]).expand([n, c]).reshape([n * c, 1])
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
