//! The linear layer on rows, one implementation for [`crate::Autocast`]
//! and for `Amp<B>`.

use burn::tensor::module::linear;
use burn::tensor::Tensor;
use greentrain_matmul::{MatmulBackend, MatmulKernel};

/// `x W + b` for `x` `[rows, d_in]` whose dtypes the policy has set: the
/// product through greentrain-matmul where `kernel` routes it on `B`, and
/// the bias added so that its gradient sums in two stages where `split` is
/// on and `B`'s sums are serial per output (`sums::add_bias`); Burn's
/// `linear` where neither applies.
pub(crate) fn linear_rows<B: MatmulBackend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    kernel: MatmulKernel,
    split: bool,
) -> Tensor<B, 2> {
    let device = x.device();
    let routed = B::gt_routes(&device, x.dtype(), kernel);
    let split = split && B::gt_split_sums(&device);
    if !(routed || split) {
        return linear(x, weight, bias);
    }
    let y = if routed {
        greentrain_matmul::matmul(x, weight, kernel)
    } else {
        linear(x, weight, None)
    };
    match bias {
        Some(b) => crate::sums::add_bias(y, b, split),
        None => y,
    }
}
