//! Max-pool time on the CPU (flex): Burn's `max_pool2d` against
//! greentrain-flexconv's, forward and backward, at LeNet-5's two pools.
//!
//! `cargo run -p greentrain-trainer --example pool [-- BATCH ROUNDS]`
//! (batch 256 and 7 rounds by default). Each round times both, one after
//! the other, on the same input (a ReLU's output, so a quarter of the
//! windows hold ties) and checks that greentrain's output and gradient are
//! Burn's bit for bit. Prints one line per round and the medians.

use burn::backend::{Autodiff, Flex};
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::{Distribution, Tensor};
use std::time::Instant;

type B = Autodiff<Flex>;
type Pool = fn(Tensor<B, 4>, [usize; 2], [usize; 2], [usize; 2], [usize; 2], bool) -> Tensor<B, 4>;

/// Seconds for the forward and the backward, the output and the gradient.
fn time(pool: Pool, x: &Tensor<B, 4>) -> (f64, f64, Vec<f32>, Vec<f32>) {
    let x = x.clone().detach().require_grad();
    let t = Instant::now();
    let y = pool(x.clone(), [2, 2], [2, 2], [0, 0], [1, 1], false);
    let out: Vec<f32> = y.clone().inner().into_data().to_vec().unwrap();
    let forward = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let g = y.sum().backward();
    let dx: Vec<f32> = x.grad(&g).unwrap().into_data().to_vec().unwrap();
    (forward, t.elapsed().as_secs_f64(), out, dx)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("BATCH ROUNDS are numbers"))
        .collect();
    let (batch, rounds) = (
        args.first().copied().unwrap_or(256),
        args.get(1).copied().unwrap_or(7),
    );
    let dev = Default::default();
    for (c, side) in [(6, 28), (16, 10)] {
        let x: Tensor<B, 4> = relu(Tensor::random(
            [batch, c, side, side],
            Distribution::Normal(0.0, 1.0),
            &dev,
        ));
        let (mut burn, mut ours) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let (bf, bb, by, bdx) = time(max_pool2d, &x);
            let (gf, gb, gy, gdx) = time(greentrain_flexconv::max_pool2d, &x);
            assert!(
                by == gy && bdx == gdx,
                "greentrain's pool differs from Burn's"
            );
            println!(
                "{batch}x{c}x{side}x{side} round {round}: Burn {:.2} + {:.2} ms, greentrain {:.2} + {:.2} ms",
                bf * 1e3,
                bb * 1e3,
                gf * 1e3,
                gb * 1e3
            );
            burn.push((bf, bb));
            ours.push((gf, gb));
        }
        let med =
            |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| median(v.iter().map(f).collect()) * 1e3;
        println!(
            "{batch}x{c}x{side}x{side} median: Burn forward {:.2} ms, backward {:.2} ms; greentrain forward {:.2} ms, backward {:.2} ms",
            med(&burn, |t| t.0),
            med(&burn, |t| t.1),
            med(&ours, |t| t.0),
            med(&ours, |t| t.1)
        );
    }
}
