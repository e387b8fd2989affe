//! The fused batch norm's own pieces against their plain forms, bit for bit.

use super::lanes::grad_sums_with;
use super::*;
use crate::registers::Registers;

/// The AVX2 and AVX-512 sums give the plain loop's bits, with planes that
/// leave a remainder (7 x 7) and planes that do not (8 x 8), gated and not,
/// on each register set this CPU has.
#[test]
fn vector_gradient_sums_give_the_plain_bits() {
    let value = |i: usize, m: usize| ((i * 7919) % m) as f32 / m as f32 - 0.5;
    for p in [49, 64] {
        let s = Planes { n: 3, c: 5, p };
        let dy: Vec<f32> = (0..s.n * s.c * p).map(|i| value(i, 997)).collect();
        let x: Vec<f32> = (0..s.n * s.c * p).map(|i| value(i, 61)).collect();
        for ch in 0..s.c {
            let mk = [0.01 * ch as f64, 1.7];
            for gate in [
                None,
                Some(Gate {
                    m: 0.1,
                    k: 1.3,
                    b: -0.05,
                }),
            ] {
                let sums = |regs| {
                    let (a, b) = grad_sums_with(&dy, &x, s, ch, mk, gate, regs);
                    [a.to_bits(), b.to_bits()]
                };
                let plain = sums(Registers::Plain);
                for regs in available() {
                    assert_eq!(sums(regs), plain, "{regs:?} p {p} ch {ch} gate {gate:?}");
                }
            }
        }
    }
}

/// The vector register sets this CPU has (none off x86-64).
fn available() -> Vec<Registers> {
    let mut v = vec![];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            v.push(Registers::Avx2);
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            v.push(Registers::Avx512);
        }
    }
    v
}

type A = Autodiff<Flex>;

/// The fused tests' input shape: three channels, 7-wide planes.
const SHAPE: [usize; 4] = [4, 3, 5, 7];

/// Values in [-0.45, 0.55) in a pattern `m` picks, so that the norm's
/// output straddles 0 and a ReLU's gate cuts.
fn input(m: usize) -> Tensor<A, 4> {
    let n: usize = SHAPE.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % m) as f32 / m as f32 - 0.45)
        .collect();
    Tensor::from_data(TensorData::new(v, SHAPE), &Default::default())
}

/// Gamma and beta of the three channels, tracked.
fn affine() -> [Tensor<A, 1>; 2] {
    let dev = Default::default();
    [[1.2, -0.7, 0.9], [0.1, 0.3, -0.2]].map(|v| Tensor::from_floats(v, &dev).require_grad())
}

fn bits<const D: usize>(t: Tensor<Flex, D>) -> Vec<u32> {
    let v = t.into_data().to_vec::<f32>().unwrap();
    v.into_iter().map(f32::to_bits).collect()
}

/// Batch norm then ReLU as one operation: the output and the gradients
/// of x, gamma and beta of flexconv's batch norm followed by its ReLU,
/// bit for bit (values straddling 0 after the norm, so the gate cuts).
#[test]
fn a_fused_relu_gives_the_unfused_bits() {
    let run = |fused: bool| {
        let x = input(61).require_grad();
        let [gamma, beta] = affine();
        let (y, _) = batch_norm(x.clone(), gamma.clone(), beta.clone(), 1e-5, fused).unwrap();
        let y = match fused {
            true => y,
            false => burn::tensor::activation::relu(y),
        };
        let grads = (y.clone() * input(997)).sum().backward();
        let g = |t: Tensor<A, 1>| bits(t.grad(&grads).unwrap());
        (
            bits(y.inner()),
            bits(x.grad(&grads).unwrap()),
            g(gamma),
            g(beta),
        )
    };
    let (fused, plain) = (run(true), run(false));
    assert!(fused.0.contains(&0), "the ReLU cuts somewhere");
    assert_eq!(fused, plain);
}

/// A residual block's end as one operation, `relu(bn(x) + s)`, against
/// the composition with Burn's sum and ReLU: the output and the
/// gradients of x, gamma, beta and the shortcut, bit for bit; the
/// shortcut also feeds the loss itself, so its gradient comes in two
/// parts.
#[test]
fn a_fused_residual_sum_and_relu_give_the_composed_bits() {
    let run = |fused: bool| {
        let (x, short) = (input(61).require_grad(), input(89).require_grad());
        let [gamma, beta] = affine();
        let (g, b) = (gamma.clone(), beta.clone());
        let y = match fused {
            true => {
                batch_norm_add_relu(x.clone(), g, b, 1e-5, short.clone())
                    .unwrap()
                    .0
            }
            false => {
                let y = batch_norm(x.clone(), g, b, 1e-5, false).unwrap().0;
                burn::tensor::activation::relu(y + short.clone())
            }
        };
        let w = input(997);
        let loss = (y.clone() * w.clone()).sum() + (short.clone() * w.sin()).sum();
        let grads = loss.backward();
        let g1 = |t: Tensor<A, 1>| bits(t.grad(&grads).unwrap());
        let g4 = |t: Tensor<A, 4>| bits(t.grad(&grads).unwrap());
        let (dx, ds) = (g4(x), g4(short));
        (bits(y.inner()), dx, ds, g1(gamma), g1(beta))
    };
    let (fused, plain) = (run(true), run(false));
    assert!(fused.0.contains(&0), "the ReLU cuts somewhere");
    assert!(fused.0.iter().any(|v| *v != 0), "and passes somewhere");
    assert_eq!(fused, plain);
}
