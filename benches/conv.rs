//! Where a ResNet-20 step's convolution time goes on the CPU (flex).
//!
//! `cargo run -p greentrain-trainer --example conv [-- BATCH ROUNDS]`
//! Times Burn's `conv2d` at ResNet-20's four 3x3 shapes (MNIST, batch 512 by
//! default): the forward, the input gradient alone and the weight gradient
//! alone (each backward with the other operand untracked), and the whole
//! forward + backward. Beside it, the same convolution written as im2col from
//! Burn tensor ops (pad, nine strided slices, stack, one batched matmul), to
//! show whether greentrain could speed up ResNet without a kernel of its own;
//! its outputs and gradients are checked against Burn's. And the weight
//! gradient as one matrix product over an im2col copied on the host, to
//! size what a kernel of greentrain's own would gain. f32, one line per
//! round; GFLOP/s counts 2 x N x O x C x 9 x Ho x Wo per product.

use burn::backend::{Autodiff, Flex};
use burn::tensor::module::conv2d;
use burn::tensor::ops::{ConvOptions, PadMode};
use burn::tensor::{s, Distribution, Tensor};
use std::time::Instant;

type B = Autodiff<Flex>;

/// A convolution from tensor ops; autodiff derives its backward.
fn im2col_conv(x: Tensor<B, 4>, w: Tensor<B, 4>, stride: usize) -> Tensor<B, 4> {
    let [n, c, h, wd] = x.dims();
    let [o, _, kh, kw] = w.dims();
    let (ho, wo) = ((h + 2 - kh) / stride + 1, (wd + 2 - kw) / stride + 1);
    let xp = x.pad((1, 1, 1, 1), PadMode::Constant(0.0));
    let mut taps = Vec::with_capacity(kh * kw);
    for i in 0..kh {
        for j in 0..kw {
            let (hs, ws) = (i..i + stride * (ho - 1) + 1, j..j + stride * (wo - 1) + 1);
            taps.push(xp.clone().slice(s![.., .., hs;stride, ws;stride]));
        }
    }
    let cols = Tensor::stack::<5>(taps, 2).reshape([n, c * kh * kw, ho * wo]);
    w.reshape([1, o, c * kh * kw])
        .matmul(cols)
        .reshape([n, o, ho, wo])
}

fn burn_conv(x: Tensor<B, 4>, w: Tensor<B, 4>, stride: usize) -> Tensor<B, 4> {
    conv2d(x, w, None, ConvOptions::new([stride; 2], [1, 1], [1, 1], 1))
}

type Conv = fn(Tensor<B, 4>, Tensor<B, 4>, usize) -> Tensor<B, 4>;

/// Seconds for the forward and for the backward, and the results.
fn time(
    conv: Conv,
    x: &Tensor<B, 4>,
    w: &Tensor<B, 4>,
    track: (bool, bool),
    stride: usize,
) -> (f64, f64, [Option<Tensor<Flex, 4>>; 3]) {
    let x = x.clone().detach();
    let w = w.clone().detach();
    let x = if track.0 { x.require_grad() } else { x };
    let w = if track.1 { w.require_grad() } else { w };
    let t = Instant::now();
    let y = conv(x.clone(), w.clone(), stride);
    let out = y.clone().inner();
    let _ = out.clone().into_data();
    let forward = t.elapsed().as_secs_f64();
    if !track.0 && !track.1 {
        return (forward, 0.0, [Some(out), None, None]);
    }
    let t = Instant::now();
    let grads = y.backward();
    let gx = x.grad(&grads);
    let gw = w.grad(&grads);
    for g in gx.iter().chain(gw.iter()) {
        let _ = g.clone().into_data();
    }
    (forward, t.elapsed().as_secs_f64(), [Some(out), gx, gw])
}

/// Output length of a 3x3 convolution with padding 1.
fn out_len(len: usize, stride: usize) -> usize {
    (len - 1) / stride + 1
}

/// Channel rows of the padded input, one per (channel, tap): `[c * 9, n * ho * wo]`.
fn im2col_rows(x: &[f32], [n, c, h, w]: [usize; 4], stride: usize) -> Vec<f32> {
    let (ho, wo) = (out_len(h, stride), out_len(w, stride));
    let cols = n * ho * wo;
    let mut out = vec![0.0f32; c * 9 * cols];
    for ci in 0..c {
        for tap in 0..9 {
            let row = &mut out[(ci * 9 + tap) * cols..][..cols];
            let (kh, kw) = (tap / 3, tap % 3);
            for b in 0..n {
                let plane = &x[(b * c + ci) * h * w..][..h * w];
                for oh in 0..ho {
                    let Some(ih) = (oh * stride + kh).checked_sub(1).filter(|&i| i < h) else {
                        continue;
                    };
                    let dst = &mut row[(b * ho + oh) * wo..][..wo];
                    for (ow, d) in dst.iter_mut().enumerate() {
                        if let Some(iw) = (ow * stride + kw).checked_sub(1).filter(|&i| i < w) {
                            *d = plane[ih * w + iw];
                        }
                    }
                }
            }
        }
    }
    out
}

/// The weight gradient as one product, `dY [o, n*ho*wo] x cols^T`, with the
/// output gradient of `y.backward()` (ones): what a kernel of greentrain's
/// own could do. Seconds include the copies to and from tensors.
fn product_weight_grad(x: &Tensor<B, 4>, o: usize, stride: usize) -> (f64, Tensor<Flex, 4>) {
    let dims = x.dims();
    let [n, c, h, w] = dims;
    let (ho, wo) = (out_len(h, stride), out_len(w, stride));
    let dev = Default::default();
    let dy = Tensor::<Flex, 4>::ones([n, o, ho, wo], &dev);
    let t = Instant::now();
    let xs = x.clone().inner().into_data().to_vec::<f32>().unwrap();
    let cols = Tensor::<Flex, 1>::from_floats(&im2col_rows(&xs, dims, stride)[..], &dev)
        .reshape([c * 9, n * ho * wo]);
    let dy = dy.swap_dims(0, 1).reshape([o, n * ho * wo]);
    let dw = dy.matmul(cols.transpose()).reshape([o, c, 3, 3]);
    let _ = dw.clone().into_data();
    (t.elapsed().as_secs_f64(), dw)
}

fn max_diff(a: &Option<Tensor<Flex, 4>>, b: &Option<Tensor<Flex, 4>>) -> f32 {
    match (a, b) {
        (Some(a), Some(b)) => (a.clone() - b.clone()).abs().max().into_scalar(),
        _ => f32::NAN,
    }
}

fn shape(name: &str, dims: [usize; 4], out: usize, stride: usize, rounds: usize) {
    let [n, c, h, _] = dims;
    let dev = Default::default();
    let x = Tensor::<B, 4>::random(dims, Distribution::Normal(0.0, 1.0), &dev);
    let w = Tensor::<B, 4>::random([out, c, 3, 3], Distribution::Normal(0.0, 0.1), &dev);
    let ho = out_len(h, stride);
    let gflop = 2.0 * (n * out * c * 9 * ho * ho) as f64 / 1e9;
    let rate = |s: f64| format!("{s:.3} s ({:.1} GFLOP/s)", gflop / s);
    for _ in 0..rounds {
        let (fwd, _, _) = time(burn_conv, &x, &w, (false, false), stride);
        let (_, bx, _) = time(burn_conv, &x, &w, (true, false), stride);
        let (_, bw, _) = time(burn_conv, &x, &w, (false, true), stride);
        let (f1, b1, burn) = time(burn_conv, &x, &w, (true, true), stride);
        let (f2, b2, ops) = time(im2col_conv, &x, &w, (true, true), stride);
        let (pw, dw) = product_weight_grad(&x, out, stride);
        println!(
            "| {name} | {} | {} | {} | {} ({:.1e}) | {:.3} | {:.3} | {:.2} | {:.1e} / {:.1e} / {:.1e} |",
            rate(fwd),
            rate(bx),
            rate(bw),
            rate(pw),
            max_diff(&burn[2], &Some(dw)),
            f1 + b1,
            f2 + b2,
            (f2 + b2) / (f1 + b1),
            max_diff(&burn[0], &ops[0]),
            max_diff(&burn[1], &ops[1]),
            max_diff(&burn[2], &ops[2]),
        );
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (n, rounds) = (
        args.first().copied().unwrap_or(512),
        args.get(1).copied().unwrap_or(2),
    );
    println!("batch {n}, f32, flex; seconds (GFLOP/s)\n");
    println!(
        "| conv | forward | input gradient | weight gradient | weight gradient as one product \
         (max difference) | forward + backward, s | im2col from ops, forward + backward, s \
         | im2col / Burn | max difference y / dx / dw |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    shape("16->16, 28x28", [n, 16, 28, 28], 16, 1, rounds);
    shape("16->32, 28x28, stride 2", [n, 16, 28, 28], 32, 2, rounds);
    shape("32->32, 14x14", [n, 32, 14, 14], 32, 1, rounds);
    shape("64->64, 7x7", [n, 64, 7, 7], 64, 1, rounds);
}
