//! The convolution as one batched matrix product in Burn's own tensor ops,
//! on any backend. Burn 0.21's CubeCL backends without `autotune` run every
//! convolution with direct loop kernels, and the weight gradient's kernel
//! has one thread per weight (576 for a 16-to-16 3x3 layer) each looping
//! over the whole batch: ResNet-20 trained 28x slower than PyTorch on an
//! H200 (docs/BENCHMARKS.md, 2026-12-04). Here the zero-padded input's
//! kh x kw shifted (and strided) views are stacked into rows and one
//! product per image with the reshaped weight gives the output; autodiff
//! differentiates the padding, slices and product, so both gradients are
//! batched products too. It costs kh x kw copies of the input in memory,
//! so a batch whose copies would pass [`MAX_ROWS_BYTES`] goes in slices.

use burn::tensor::backend::Backend;
use burn::tensor::ops::PaddedConvOptions;
use burn::tensor::Tensor;

/// The most bytes of stacked views built at once (lavapipe's largest
/// storage buffer; small beside a GPU's memory): larger batches go in slices.
pub const MAX_ROWS_BYTES: usize = 128 << 20;

/// `conv2d` as padded, shifted views and one batched product; `None` for
/// what it does not compute (dilation, groups, a kernel larger than the
/// padded input, mismatched channels), which the caller leaves to Burn.
pub fn conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    options: &PaddedConvOptions<2>,
) -> Option<Tensor<B, 4>> {
    conv2d_within(x, weight, options, MAX_ROWS_BYTES)
}

/// [`conv2d`] building at most `max_bytes` of stacked views at once.
pub fn conv2d_within<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    options: &PaddedConvOptions<2>,
    max_bytes: usize,
) -> Option<Tensor<B, 4>> {
    let o = &options.options;
    let [n, c, h, w] = x.dims();
    let [c_out, c_w, kh, kw] = weight.dims();
    let [pt, pl] = o.padding;
    let [pb, pr] = options.padding_end.unwrap_or(o.padding);
    let (hp, wp) = (h + pt + pb, w + pl + pr);
    let [sh, sw] = o.stride;
    let plain = o.dilation == [1, 1] && o.groups == 1 && c_w == c && sh > 0 && sw > 0;
    if !plain || kh == 0 || kw == 0 || kh > hp || kw > wp || n == 0 || c_out == 0 {
        return None;
    }
    let (ho, wo) = ((hp - kh) / sh + 1, (wp - kw) / sw + 1);
    let per_image = c * kh * kw * ho * wo * x.dtype().size();
    let images = (max_bytes / per_image.max(1)).max(1);
    if n > images {
        // In slices of the batch: evaluation batches would need gigabytes.
        let parts = (0..n).step_by(images).map(|i| {
            let part = x.clone().slice([i..(i + images).min(n), 0..c, 0..h, 0..w]);
            conv2d_within(part, weight.clone(), options, max_bytes).expect("the same geometry")
        });
        return Some(Tensor::cat(parts.collect(), 0));
    }
    // Padded up to whole strides, row r of the image is row r / s, phase
    // r % s of a [.., rows / s, s] reshape: a strided view is a slice.
    let (hq, wq) = (hp.div_ceil(sh) * sh, wp.div_ceil(sw) * sw);
    let padded = Tensor::<B, 4>::zeros([n, c, hq, wq], (&x.device(), x.dtype()))
        .slice_assign([0..n, 0..c, pt..pt + h, pl..pl + w], x);
    let grid: Tensor<B, 6> = padded.reshape([n, c, hq / sh, sh, wq / sw, sw]);
    let views = (0..kh)
        .flat_map(|ky| (0..kw).map(move |kx| (ky, kx)))
        .map(|(ky, kx)| {
            let (ry, py, rx, px) = (ky / sh, ky % sh, kx / sw, kx % sw);
            grid.clone()
                .slice([0..n, 0..c, ry..ry + ho, py..py + 1, rx..rx + wo, px..px + 1])
                .reshape([n, c, ho * wo])
        })
        .collect::<Vec<_>>();
    // Row (ky * kw + kx) * c + channel, the order of the permuted weight.
    let cols = Tensor::cat(views, 1);
    let wr: Tensor<B, 3> = weight
        .permute([0, 2, 3, 1])
        .reshape([1, c_out, kh * kw * c]);
    Some(wr.matmul(cols).reshape([n, c_out, ho, wo]))
}
