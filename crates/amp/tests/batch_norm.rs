//! Autocast's batch norm against Burn's `BatchNorm` (the same output and
//! gradients) and PyTorch's running-statistics update (unbiased variance).

use burn::backend::{Autodiff, Flex};
use burn::module::{Param, RunningState};
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use greentrain_amp::{Autocast, Precision};

type B = Autodiff<Flex>;
const SHAPE: [usize; 4] = [3, 4, 5, 6];

/// Deterministic, not centred, a different scale per channel.
fn input<Bk: Backend>(dev: &Bk::Device) -> Tensor<Bk, 4> {
    let n: usize = SHAPE.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| {
            let c = (i / 30) % 4;
            ((i * 7919 % 101) as f32 / 50.0 - 0.7) * (1.0 + c as f32) + c as f32
        })
        .collect();
    Tensor::from_data(TensorData::new(v, SHAPE), dev)
}

fn layer<Bk: Backend>(dev: &Bk::Device) -> BatchNorm<Bk> {
    let mut bn = BatchNormConfig::new(4).init::<Bk>(dev);
    bn.gamma = Param::from_tensor(Tensor::from_floats([1.5, 0.5, 2.0, 1.0], dev));
    bn.beta = Param::from_tensor(Tensor::from_floats([-0.25, 0.0, 0.5, 1.0], dev));
    bn
}

fn values<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

/// One training step's output, x/gamma/beta gradients and running mean of a
/// fresh layer through `forward`.
type Step = (Vec<f32>, [Vec<f32>; 3], Vec<f32>);

fn train_step(forward: impl Fn(&BatchNorm<B>, Tensor<B, 4>) -> Tensor<B, 4>) -> Step {
    let dev = Default::default();
    let weights: Tensor<B, 4> = input::<B>(&dev).sin();
    let bn = layer::<B>(&dev);
    let x = input::<B>(&dev).require_grad();
    let y = forward(&bn, x.clone());
    let g = (y.clone() * weights).sum().backward();
    let grads = [
        values(x.grad(&g).unwrap()),
        values(bn.gamma.val().grad(&g).unwrap()),
        values(bn.beta.val().grad(&g).unwrap()),
    ];
    (values(y), grads, values(bn.running_mean.value_sync()))
}

/// `ours` against `reference`: output within 1e-5, gradients within 1e-4,
/// running mean within 1e-6.
fn assert_steps_close((y, g, rm): &Step, (y_ref, g_ref, rm_ref): &Step) {
    assert_close(y, y_ref, 1e-5, "output");
    for (k, what) in ["d/dx", "d/dgamma", "d/dbeta"].iter().enumerate() {
        assert_close(&g[k], &g_ref[k], 1e-4, what);
    }
    assert_close(rm, rm_ref, 1e-6, "running mean");
}

#[test]
fn training_output_and_gradients_match_burns_batch_norm() {
    let ac = Autocast::new(Precision::Fp32);
    let ours = train_step(|bn, x| ac.batch_norm(bn, x));
    let burns = train_step(|bn, x| bn.forward(x));
    assert_steps_close(&ours, &burns);
}

/// The fused batch norm and ReLU (one operation on `Autodiff<Flex>`): Burn's
/// batch norm then ReLU, gradients and running statistics included.
#[test]
fn fused_relu_matches_burns_batch_norm_then_relu() {
    let ac = Autocast::new(Precision::Fp32);
    let ours = train_step(|bn, x| ac.batch_norm_relu(bn, x));
    let burns = train_step(|bn, x| burn::tensor::activation::relu(bn.forward(x)));
    let y = &ours.0;
    assert!(
        y.contains(&0.0) && y.iter().any(|v| *v > 0.0),
        "the ReLU cuts"
    );
    assert_steps_close(&ours, &burns);
}

#[test]
fn running_variance_is_updated_with_the_unbiased_variance() {
    let dev = Default::default();
    let bn = layer::<B>(&dev);
    Autocast::new(Precision::Fp32).batch_norm(&bn, input::<B>(&dev));
    let x = values(input::<Flex>(&Default::default()));
    let per = SHAPE[2] * SHAPE[3];
    let count = (SHAPE[0] * per) as f64;
    let rv = values(bn.running_var.value_sync());
    for (c, got) in rv.iter().enumerate() {
        let xs: Vec<f64> = (0..SHAPE[0])
            .flat_map(|n| {
                x[(n * 4 + c) * per..(n * 4 + c + 1) * per]
                    .iter()
                    .map(|&v| v as f64)
            })
            .collect();
        let mean = xs.iter().sum::<f64>() / count;
        let unbiased = xs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (count - 1.0);
        let want = 0.9 + 0.1 * unbiased;
        assert!(
            ((*got as f64) - want).abs() < 1e-5 * want,
            "channel {c}: {got} vs {want}"
        );
    }
}

#[test]
fn inference_normalises_with_the_running_statistics() {
    let dev = Default::default();
    let mut bn = layer::<Flex>(&dev);
    let stats = |v: [f32; 4]| Tensor::<Flex, 1>::from_floats(v, &dev);
    bn.running_mean = RunningState::new(stats([0.5, -1.0, 2.0, 0.0]));
    bn.running_var = RunningState::new(stats([1.0, 4.0, 0.25, 9.0]));
    let ours = Autocast::new(Precision::Fp32).batch_norm(&bn, input::<Flex>(&dev));
    assert_close(
        &values(ours),
        &values(bn.forward(input::<Flex>(&dev))),
        1e-5,
        "inference",
    );
    assert_eq!(
        values(bn.running_mean.value_sync()),
        vec![0.5, -1.0, 2.0, 0.0],
        "inference leaves the running statistics alone"
    );
}

#[test]
fn rank_two_inputs_are_one_position_per_channel() {
    let dev = Default::default();
    let x = input::<B>(&dev)
        .reshape([SHAPE[0] * 5, 4 * 6])
        .narrow(1, 0, 4);
    let ours = Autocast::new(Precision::Fp32).batch_norm(&layer::<B>(&dev), x.clone());
    let burns = layer::<B>(&dev).forward(x);
    assert_close(&values(ours), &values(burns), 1e-5, "[batch, channels]");
}
