//! The fused batch norm against Burn's `BatchNorm` (training: batch
//! statistics, biased variance): output, the three gradients and the
//! statistics it returns for the running ones; and the one-pass evaluation
//! batch norm against the layer's running-statistics forward on Flex.

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Param, RunningState};
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::tensor::{Tensor, TensorData};
use greentrain_flexconv::norm::{batch_norm, batch_norm_inference};

mod common;
use common::{data, values};

type B = Autodiff<Flex>;

/// [`common::values`] with a different offset and scale per channel.
fn input<const D: usize>(shape: [usize; D]) -> Tensor<B, D> {
    let (n, c) = (shape.iter().product::<usize>(), shape[1]);
    let per: usize = shape[2..].iter().product();
    let v: Vec<f32> = values(n, 7)
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let ch = (i / per) % c;
            (2.0 * v - 0.2) * (1.0 + ch as f32) + 3.0 * ch as f32
        })
        .collect();
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

fn layer(c: usize) -> BatchNorm<B> {
    let dev = Default::default();
    let mut bn = BatchNormConfig::new(c).init::<B>(&dev);
    let g: Vec<f32> = (0..c).map(|i| 0.5 + 0.25 * i as f32).collect();
    let b: Vec<f32> = (0..c).map(|i| 0.1 * i as f32 - 0.3).collect();
    bn.gamma = Param::from_tensor(Tensor::from_data(TensorData::new(g, [c]), &dev));
    bn.beta = Param::from_tensor(Tensor::from_data(TensorData::new(b, [c]), &dev));
    bn
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

/// Output and gradients of `x`, gamma and beta against Burn's layer, and
/// the batch statistics against plain f64 arithmetic.
fn check<const D: usize>(shape: [usize; D], track_x: bool) {
    let c = shape[1];
    let weights = input(shape).sin();
    let run = |ours: bool| {
        let bn = layer(c);
        let x = input(shape);
        let x = if track_x { x.require_grad() } else { x };
        let (y, stats) = match ours {
            true => {
                let (g, b) = (bn.gamma.val(), bn.beta.val());
                let (y, s) = batch_norm(x.clone(), g, b, bn.epsilon, false).expect("fused");
                (y, Some(s))
            }
            false => (bn.forward(x.clone()), None),
        };
        let g = (y.clone() * weights.clone()).sum().backward();
        let dx = x.grad(&g).map(data);
        let dg = data(bn.gamma.val().grad(&g).unwrap());
        let db = data(bn.beta.val().grad(&g).unwrap());
        (data(y), dx, dg, db, stats)
    };
    let (y, dx, dg, db, stats) = run(true);
    let (y_ref, dx_ref, dg_ref, db_ref, _) = run(false);
    assert_close(&y, &y_ref, 1e-5, "output");
    assert_eq!(
        dx.is_some(),
        track_x,
        "an input gradient only where tracked"
    );
    if let (Some(dx), Some(dx_ref)) = (dx, dx_ref) {
        assert_close(&dx, &dx_ref, 1e-4, "d/dx");
    }
    assert_close(&dg, &dg_ref, 1e-4, "d/dgamma");
    assert_close(&db, &db_ref, 1e-4, "d/dbeta");
    let x = data(input(shape));
    let per: usize = shape[2..].iter().product();
    let stats = stats.unwrap();
    for ch in 0..c {
        let xs: Vec<f64> = (0..shape[0])
            .flat_map(|n| x[(n * c + ch) * per..][..per].iter().map(|v| *v as f64))
            .collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            (stats.mean[ch] as f64 - mean).abs() < 1e-5 * (1.0 + mean.abs()),
            "mean {ch}"
        );
        assert!(
            (stats.var[ch] as f64 - var).abs() < 1e-5 * var,
            "biased variance {ch}"
        );
    }
}

#[test]
fn fused_batch_norm_matches_burns_layer() {
    check([3, 4, 5, 6], true);
    check([8, 16, 7, 7], true); // ResNet's stage-3 shape, small batch
    check([5, 3, 11], true); // rank 3 (a 1-D CNN)
    check([2, 5, 4, 4], false); // input untracked: gamma and beta only
}

#[test]
fn other_dtypes_and_shapes_are_left_to_the_caller() {
    let x = input([2, 3, 4]);
    let dev = Default::default();
    let (g, b) = (
        Tensor::<B, 1>::ones([4], &dev),
        Tensor::<B, 1>::zeros([4], &dev),
    );
    assert!(
        batch_norm(x.clone(), g, b, 1e-5, false).is_none(),
        "gamma of another width"
    );
    let half = x.cast(burn::tensor::FloatDType::F16);
    let (g, b) = (
        Tensor::<B, 1>::ones([3], &dev),
        Tensor::<B, 1>::zeros([3], &dev),
    );
    assert!(batch_norm(half, g, b, 1e-5, false).is_none(), "f16");
}

/// Evaluation on Flex: the one-pass batch norm against Burn's layer with
/// running statistics that are neither zeros nor ones.
fn check_inference<const D: usize>(shape: [usize; D]) {
    let (c, dev) = (shape[1], Default::default());
    let mut bn = layer(c).valid();
    let mean: Vec<f32> = (0..c).map(|i| 0.3 * i as f32 - 0.5).collect();
    let var: Vec<f32> = (0..c).map(|i| 0.2 + 0.7 * i as f32).collect();
    bn.running_mean = RunningState::new(Tensor::from_data(TensorData::new(mean, [c]), &dev));
    bn.running_var = RunningState::new(Tensor::from_data(TensorData::new(var, [c]), &dev));
    let x = input(shape).inner();
    let want = data(bn.forward(x.clone()));
    let per = [
        bn.running_mean.value(),
        bn.running_var.value(),
        bn.gamma.val(),
        bn.beta.val(),
    ];
    let y = batch_norm_inference(x, per, bn.epsilon).expect("f32, matching widths");
    assert_close(&data(y), &want, 1e-6, "evaluation output");
}

#[test]
fn inference_batch_norm_matches_burns_layer() {
    check_inference([4, 16, 7, 7]);
    check_inference([5, 3, 11]);
    let x = input([2, 3, 4]).inner();
    let dev = Default::default();
    let per = [0.0, 1.0, 1.0, 0.0].map(|v| Tensor::<Flex, 1>::full([4], v, &dev));
    assert!(
        batch_norm_inference(x, per, 1e-5).is_none(),
        "statistics of another width"
    );
}
