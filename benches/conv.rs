//! Convolution time on the CPU (flex): Burn's convolution against greentrain's.
//!
//! `cargo run -p greentrain-trainer --example conv [-- BATCH ROUNDS]`
//! Times Burn's `conv2d` and `greentrain_flexconv::conv2d` (forward and
//! gradients as shifted matrix products) at ResNet-20's four 3x3 shapes and
//! LeNet-5's two 5x5 ones (MNIST, batch 512 by default): the forwards, the
//! input gradient alone and the weight gradient alone (each backward with the
//! other operand untracked), and the whole forward + backward; greentrain's
//! output and gradients are checked against Burn's. greentrain computes the
//! strided shape as stride-1 convolutions over the input's phases, and the
//! 1-channel layer with flexconv's `direct` kernel. f32, one line per round;
//! GFLOP/s counts 2 x N x O x C x Kh x Kw x Ho x Wo per product.

use burn::backend::{Autodiff, Flex};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Distribution, Tensor};
use std::time::Instant;

type B = Autodiff<Flex>;

/// Stride and padding of one benchmarked convolution.
#[derive(Clone, Copy)]
struct Opts {
    stride: usize,
    pad: usize,
}

impl Opts {
    fn conv(self) -> ConvOptions<2> {
        ConvOptions::new([self.stride; 2], [self.pad; 2], [1, 1], 1)
    }
}

fn burn_conv(x: Tensor<B, 4>, w: Tensor<B, 4>, o: Opts) -> Tensor<B, 4> {
    conv2d(x, w, None, o.conv())
}

fn greentrain_conv(x: Tensor<B, 4>, w: Tensor<B, 4>, o: Opts) -> Tensor<B, 4> {
    greentrain_flexconv::conv2d(x, w, None, o.conv().into())
}

type Conv = fn(Tensor<B, 4>, Tensor<B, 4>, Opts) -> Tensor<B, 4>;

/// Seconds for the forward and for the backward, and the gradients and output.
fn time(
    conv: Conv,
    x: &Tensor<B, 4>,
    w: &Tensor<B, 4>,
    track: (bool, bool),
    o: Opts,
) -> (f64, f64, [Option<Tensor<Flex, 4>>; 3]) {
    let x = x.clone().detach();
    let w = w.clone().detach();
    let x = if track.0 { x.require_grad() } else { x };
    let w = if track.1 { w.require_grad() } else { w };
    let t = Instant::now();
    let y = conv(x.clone(), w.clone(), o);
    let out = y.clone().inner();
    let _ = out.clone().into_data();
    let forward = t.elapsed().as_secs_f64();
    if !track.0 && !track.1 {
        return (forward, 0.0, [None, None, Some(out)]);
    }
    let t = Instant::now();
    let grads = y.backward();
    let gx = x.grad(&grads);
    let gw = w.grad(&grads);
    for g in gx.iter().chain(gw.iter()) {
        let _ = g.clone().into_data();
    }
    (forward, t.elapsed().as_secs_f64(), [gx, gw, Some(out)])
}

/// Largest difference relative to the largest magnitude of `b`.
fn rel_diff(a: &Option<Tensor<Flex, 4>>, b: &Option<Tensor<Flex, 4>>) -> f32 {
    match (a, b) {
        (Some(a), Some(b)) => {
            let scale = b.clone().abs().max().into_scalar();
            (a.clone() - b.clone()).abs().max().into_scalar() / scale
        }
        _ => f32::NAN,
    }
}

fn shape(name: &str, dims: [usize; 4], out: usize, k: usize, o: Opts, rounds: usize) {
    let [n, c, h, _] = dims;
    let dev = Default::default();
    let x = Tensor::<B, 4>::random(dims, Distribution::Normal(0.0, 1.0), &dev);
    let w = Tensor::<B, 4>::random([out, c, k, k], Distribution::Normal(0.0, 0.1), &dev);
    let ho = (h + 2 * o.pad - k) / o.stride + 1;
    let gflop = 2.0 * (n * out * c * k * k * ho * ho) as f64 / 1e9;
    let rate = |s: f64| format!("{s:.3} s ({:.1})", gflop / s);
    for _ in 0..rounds {
        let (fwd, _, _) = time(burn_conv, &x, &w, (false, false), o);
        let (gfwd, _, _) = time(greentrain_conv, &x, &w, (false, false), o);
        let (_, bx, _) = time(burn_conv, &x, &w, (true, false), o);
        let (_, bw, _) = time(burn_conv, &x, &w, (false, true), o);
        let (_, gx, _) = time(greentrain_conv, &x, &w, (true, false), o);
        let (_, gw, _) = time(greentrain_conv, &x, &w, (false, true), o);
        let (f1, b1, burn) = time(burn_conv, &x, &w, (true, true), o);
        let (f2, b2, ours) = time(greentrain_conv, &x, &w, (true, true), o);
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {:.3} / {:.3} | {:.2} | {:.1e} / {:.1e} / {:.1e} |",
            rate(fwd),
            rate(gfwd),
            rate(bx),
            rate(bw),
            rate(gx),
            rate(gw),
            f1 + b1,
            f2 + b2,
            (f1 + b1) / (f2 + b2),
            rel_diff(&ours[2], &burn[2]),
            rel_diff(&ours[0], &burn[0]),
            rel_diff(&ours[1], &burn[1]),
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
        "| conv | Burn: forward | greentrain: forward | Burn: input gradient | Burn: weight gradient \
         | greentrain: input gradient | greentrain: weight gradient \
         | forward + backward, Burn / greentrain, s | speed-up | relative difference y / dx / dw |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let (same, strided, valid) = (
        Opts { stride: 1, pad: 1 },
        Opts { stride: 2, pad: 1 },
        Opts { stride: 1, pad: 0 },
    );
    shape("16->16 3x3, 28x28", [n, 16, 28, 28], 16, 3, same, rounds);
    shape(
        "16->32 3x3, 28x28, stride 2",
        [n, 16, 28, 28],
        32,
        3,
        strided,
        rounds,
    );
    shape("32->32 3x3, 14x14", [n, 32, 14, 14], 32, 3, same, rounds);
    shape("64->64 3x3, 7x7", [n, 64, 7, 7], 64, 3, same, rounds);
    shape(
        "1->6 5x5, 28x28, pad 2",
        [n, 1, 28, 28],
        6,
        5,
        Opts { stride: 1, pad: 2 },
        rounds,
    );
    shape("6->16 5x5, 14x14", [n, 6, 14, 14], 16, 5, valid, rounds);
}
