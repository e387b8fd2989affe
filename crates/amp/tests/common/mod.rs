//! The fixture both test files share: a small linear layer, its data,
//! and bit-level views of parameters and gradients.
#![allow(dead_code)] // each test file uses its own subset

use burn::backend::{Autodiff, Flex};
use burn::module::Param;
use burn::nn::Linear;
use burn::optim::GradientsParams;
use burn::tensor::{Int, Tensor, TensorData};
use greentrain_amp::{grads, Autocast};

pub type B = Autodiff<Flex>;
pub type I = Flex;

pub fn dev() -> burn::tensor::Device<B> {
    Default::default()
}

/// A 6->4 linear layer with fixed, varied weights.
pub fn model() -> Linear<B> {
    let w: Vec<f32> = (0..24)
        .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.05)
        .collect();
    let b: Vec<f32> = (0..4).map(|i| i as f32 * 0.01).collect();
    Linear {
        weight: Param::from_tensor(Tensor::from_data(TensorData::new(w, [6, 4]), &dev())),
        bias: Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(b, [4]),
            &dev(),
        ))),
    }
}

pub fn batch(n: usize, offset: usize) -> (Tensor<B, 2>, Tensor<B, 1, Int>) {
    let x: Vec<f32> = (0..n * 6)
        .map(|i| (((i + offset) * 13 % 17) as f32 - 8.0) * 0.1)
        .collect();
    let y: Vec<i64> = (0..n).map(|i| ((i + offset) % 4) as i64).collect();
    (
        Tensor::from_data(TensorData::new(x, [n, 6]), &dev()),
        Tensor::from_data(TensorData::new(y, [n]), &dev()),
    )
}

pub fn loss(m: &Linear<B>, ac: &Autocast, n: usize, offset: usize) -> Tensor<B, 1> {
    let (x, y) = batch(n, offset);
    ac.cross_entropy(ac.linear(m, x), y)
}

pub fn params(m: &Linear<B>) -> Vec<u32> {
    let mut v: Vec<f32> = m.weight.val().into_data().to_vec().unwrap();
    v.extend(
        m.bias
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .to_vec::<f32>()
            .unwrap(),
    );
    v.into_iter().map(f32::to_bits).collect()
}

pub fn grad_vec(m: &Linear<B>, g: &GradientsParams) -> Vec<f32> {
    grads::collect::<B, _>(m, g)
        .into_iter()
        .flat_map(|t| t.into_data().to_vec::<f32>().unwrap())
        .collect()
}

pub fn grads_of(m: &Linear<B>, scaled: Tensor<B, 1>) -> GradientsParams {
    GradientsParams::from_grads(scaled.backward(), m)
}

pub fn poisoned(m: &Linear<B>, value: f32) -> GradientsParams {
    let mut g = GradientsParams::new();
    let mut w = vec![0.01f32; 24];
    w[5] = value;
    g.register::<I, 2>(
        m.weight.id,
        Tensor::from_data(TensorData::new(w, [6, 4]), &dev()),
    );
    g.register::<I, 1>(
        m.bias.as_ref().unwrap().id,
        Tensor::from_data(TensorData::new(vec![0.01f32; 4], [4]), &dev()),
    );
    g
}
