//! Reductions shaped so that a backend whose sums run one thread per output
//! (cubek's `Unit` routine on the CubeCL backends, serial over the reduced
//! axis) sums in two stages of about `sqrt(len)` each.
//!
//! Burn's autodiff reduces a broadcast gradient one dimension at a time, in
//! increasing order. Viewing a reduced axis of length `len` as two axes
//! `[len / c, c]` therefore makes every sum, forward or backward, two
//! launches: `len / c` values on `c` times as many threads, then `c`. The
//! forward values are the same ops on the same numbers; only the order of
//! additions changes. Flex, whose sums are vectorised loops, keeps one
//! reduction ([`greentrain_matmul::MatmulBackend::gt_split_sums`]).

use burn::nn::LayerNorm;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

/// Reductions shorter than this stay one launch: a serial loop over fewer
/// values costs less than a second launch (a few microseconds). A judgement
/// from launch overheads, not yet measured on a GPU.
pub(crate) const SPLIT_MIN: usize = 512;

/// The largest power of two at most `sqrt(len)` that divides `len` (1: no
/// split, also for `len` under [`SPLIT_MIN`]).
pub(crate) fn split_of(len: usize) -> usize {
    if len < SPLIT_MIN {
        return 1;
    }
    let mut c = 1;
    while c * 2 * c * 2 <= len && len.is_multiple_of(c * 2) {
        c *= 2;
    }
    c
}

/// `y + b` with `b` broadcast over the rows of `y` `[rows, n]`, the add shaped
/// `[rows / c, c, n]` so that `b`'s gradient is summed in two stages.
/// Unsplit, the add is greentrain-flexconv's (on Flex, rows and `b`'s
/// gradient summed on rayon's pool, the same bits).
pub(crate) fn add_bias<B: Backend>(y: Tensor<B, 2>, b: Tensor<B, 1>, split: bool) -> Tensor<B, 2> {
    let [rows, n] = y.dims();
    let c = split_of(rows);
    if !split || c < 2 {
        let b = b.unsqueeze_dim::<2>(0).into_primitive().tensor();
        let y = greentrain_flexconv::add::<B>(y.into_primitive().tensor(), b);
        return Tensor::from_primitive(TensorPrimitive::Float(y));
    }
    let b = b.reshape([1, 1, n]).expand([1, c, n]);
    (y.reshape([rows / c, c, n]) + b).reshape([rows, n])
}

/// The shape `[rows / c, c, d]` a layer norm over the last dimension of
/// `dims` runs on where sums split, or `None` where it keeps its shape (a
/// rank under 2, or rows too few to split). `Amp<B>`'s layer norm and
/// [`layer_norm`] both ask here.
pub(crate) fn layer_norm_rows(dims: &[usize]) -> Option<[usize; 3]> {
    let (&d, lead) = dims.split_last()?;
    let rows: usize = lead.iter().product();
    let c = split_of(rows);
    (!lead.is_empty() && c >= 2).then_some([rows / c, c, d])
}

/// Burn's layer norm over the last dimension, with the rows viewed as
/// `[rows / c, c]`: the statistics are per row either way, and the gradients
/// of gamma and beta (sums over every row) come in two stages.
pub(crate) fn layer_norm<B: Backend, const D: usize>(
    layer: &LayerNorm<B>,
    x: Tensor<B, D>,
    split: bool,
) -> Tensor<B, D> {
    let dims = x.dims();
    match layer_norm_rows(&dims).filter(|_| split) {
        Some(rows) => layer.forward(x.reshape(rows)).reshape(dims),
        None => layer.forward(x),
    }
}

/// The mean of a vector, summed in two stages where `split`.
pub(crate) fn mean<B: Backend>(x: Tensor<B, 1>, split: bool) -> Tensor<B, 1> {
    let [n] = x.dims();
    let c = split_of(n);
    if !split || c < 2 {
        return x.mean();
    }
    x.reshape([n / c, c]).sum_dim(0).sum().div_scalar(n as f64)
}

#[cfg(test)]
mod tests {
    use super::split_of;

    #[test]
    fn splits_are_powers_of_two_near_the_square_root() {
        assert_eq!(split_of(4096), 64);
        assert_eq!(split_of(1024), 32);
        assert_eq!(split_of(1536), 32); // 48 x 32
        assert_eq!(split_of(768), 16); // 48 x 16
        assert_eq!(split_of(512), 16);
        assert_eq!(split_of(513), 1); // odd
                                      // Short sums stay one launch.
        assert_eq!(split_of(256), 1);
        assert_eq!(split_of(64), 1);
        assert_eq!(split_of(0), 1);
    }

    #[test]
    fn layer_norms_split_their_rows_not_their_features() {
        use super::layer_norm_rows;
        assert_eq!(layer_norm_rows(&[64, 16, 32]), Some([32, 32, 32])); // 1024 rows
        assert_eq!(layer_norm_rows(&[1024, 8]), Some([32, 32, 8]));
        assert_eq!(layer_norm_rows(&[12, 3, 16]), None); // 36 rows: too few
        assert_eq!(layer_norm_rows(&[4096]), None); // one row
        assert_eq!(layer_norm_rows(&[]), None);
    }
}
