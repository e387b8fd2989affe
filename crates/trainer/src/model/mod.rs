//! Models: plain Burn modules. The run trains them on `Amp<B>`
//! ([`greentrain_amp::Amp`]), so the precision policy, not the model,
//! decides each op's dtype, and their products, sums and convolutions take
//! greentrain's kernels through it.
//!
//! Parameters are drawn from the run's own ChaCha stream (PyTorch's default
//! `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`), not from the backend's global RNG:
//! the same seed gives the same initial weights on every backend, and tests
//! running in parallel cannot disturb each other's initialisation.

pub mod resnet;
pub mod transformer;

use crate::config::{ModelKind, ModelSection};
use burn::module::{Module, Param, ParamId};
use burn::nn::conv::{Conv1d, Conv2d};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, PaddingConfig1d, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::module::max_pool2d;
use burn::tensor::{Tensor, TensorData};
use greentrain_amp::MatmulBackend;
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use resnet::ResNet;
use transformer::Transformer;

/// Parameter initialiser over the run's seed.
pub struct Init<'a, B: Backend> {
    rng: ChaCha8Rng,
    device: &'a B::Device,
    next_id: u64,
}

impl<'a, B: Backend> Init<'a, B> {
    /// Stream 0 of the run's seed is reserved for parameters.
    pub fn new(seed: u64, device: &'a B::Device) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(0);
        Self {
            rng,
            device,
            next_id: 0,
        }
    }

    fn uniform<const D: usize>(&mut self, shape: [usize; D], bound: f32) -> Param<Tensor<B, D>> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| self.rng.random_range(-bound..bound))
            .collect();
        let t = Tensor::from_data(TensorData::new(v, shape), self.device);
        Param::initialized(self.next_param_id(), t.require_grad())
    }

    /// Parameter ids are numbered, not random, so that the same config
    /// gives a byte-identical model record.
    fn next_param_id(&mut self) -> ParamId {
        self.next_id += 1;
        ParamId::from(self.next_id)
    }

    /// `d` copies of `value`.
    fn filled(&self, d: usize, value: f32) -> Tensor<B, 1> {
        Tensor::from_data(TensorData::new(vec![value; d], [d]), self.device)
    }

    /// A parameter drawn from U(-bound, bound).
    pub fn param<const D: usize>(&mut self, shape: [usize; D], bound: f32) -> Param<Tensor<B, D>> {
        self.uniform(shape, bound)
    }

    fn constant(&mut self, d: usize, value: f32) -> Param<Tensor<B, 1>> {
        let t = self.filled(d, value);
        Param::initialized(self.next_param_id(), t.require_grad())
    }

    /// A LayerNorm over `d` features (scale 1, shift 0, epsilon 1e-5).
    pub fn layer_norm(&mut self, d: usize) -> LayerNorm<B> {
        let mut ln = LayerNormConfig::new(d).init(self.device);
        ln.gamma = self.constant(d, 1.0);
        ln.beta = Some(self.constant(d, 0.0));
        ln
    }

    /// A linear layer `[d_in, d_out]`.
    pub fn linear(&mut self, d_in: usize, d_out: usize) -> Linear<B> {
        self.linear_uniform(d_in, d_out, true)
    }

    /// A linear layer `[d_in, d_out]` drawn as PyTorch's `nn.Linear`, with
    /// or without a bias.
    pub fn linear_uniform(&mut self, d_in: usize, d_out: usize, bias: bool) -> Linear<B> {
        let k = 1.0 / (d_in as f32).sqrt();
        Linear {
            weight: self.uniform([d_in, d_out], k),
            bias: bias.then(|| self.uniform([d_out], k)),
        }
    }

    /// A linear layer with weights N(0, std^2) and a zero bias if any.
    pub fn linear_normal(&mut self, d_in: usize, d_out: usize, std: f32, bias: bool) -> Linear<B> {
        Linear {
            weight: self.normal([d_in, d_out], std),
            bias: bias.then(|| self.constant(d_out, 0.0)),
        }
    }

    /// A parameter drawn from N(0, std^2) (Box-Muller over the seed's stream).
    pub fn normal<const D: usize>(&mut self, shape: [usize; D], std: f32) -> Param<Tensor<B, D>> {
        let n: usize = shape.iter().product();
        let mut v = Vec::with_capacity(n + 1);
        while v.len() < n {
            // 1 - u lies in (0, 1], so the logarithm is finite.
            let u1: f64 = 1.0 - self.rng.random::<f64>();
            let u2: f64 = self.rng.random();
            let r = (-2.0 * u1.ln()).sqrt();
            let a = std::f64::consts::TAU * u2;
            v.push((r * a.cos()) as f32 * std);
            v.push((r * a.sin()) as f32 * std);
        }
        v.truncate(n);
        let t = Tensor::from_data(TensorData::new(v, shape), self.device);
        Param::initialized(self.next_param_id(), t.require_grad())
    }

    /// A 1-D convolution.
    pub fn conv1d(
        &mut self,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
    ) -> Conv1d<B> {
        let k = 1.0 / ((c_in * kernel) as f32).sqrt();
        Conv1d {
            weight: self.uniform([c_out, c_in, kernel], k),
            bias: Some(self.uniform([c_out], k)),
            stride,
            kernel_size: kernel,
            dilation: 1,
            groups: 1,
            padding: PaddingConfig1d::Explicit(pad, pad),
        }
    }

    /// A 2-D convolution, square kernel, stride 1.
    pub fn conv2d(&mut self, c_in: usize, c_out: usize, kernel: usize, pad: usize) -> Conv2d<B> {
        let k = 1.0 / ((c_in * kernel * kernel) as f32).sqrt();
        Conv2d {
            weight: self.uniform([c_out, c_in, kernel, kernel], k),
            bias: Some(self.uniform([c_out], k)),
            stride: [1, 1],
            kernel_size: [kernel, kernel],
            dilation: [1, 1],
            groups: 1,
            padding: PaddingConfig2d::Explicit(pad, pad, pad, pad),
        }
    }
}

/// Fully connected ReLU network; no hidden layer is logistic regression.
/// With `residual`, a hidden layer after the first whose width equals its
/// input's adds its input: `h = h + relu(linear(h))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    layers: Vec<Linear<B>>,
    /// Not a parameter: the record (and a checkpoint) is the same either way.
    #[module(skip)]
    residual: bool,
}

impl<B: Backend> Mlp<B> {
    /// Logits from samples `[batch, features]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let last = self.layers.len() - 1;
        let mut h = x;
        for (i, l) in self.layers.iter().enumerate() {
            if i == last {
                return l.forward(h);
            }
            let [d_in, d_out] = l.weight.dims();
            let adds = self.residual && i > 0 && d_in == d_out;
            let y = relu(l.forward(h.clone()));
            h = if adds { h + y } else { y };
        }
        h
    }
}

/// LeNet-5 (ReLU, max-pool) for 1x28x28 inputs.
#[derive(Module, Debug)]
pub struct LeNet5<B: Backend> {
    c1: Conv2d<B>,
    c3: Conv2d<B>,
    f5: Linear<B>,
    f6: Linear<B>,
    out: Linear<B>,
}

impl<B: Backend> LeNet5<B> {
    /// Logits from images flattened to `[batch, 784]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, _] = x.dims();
        let x = x.reshape([n, 1, 28, 28]);
        let h = relu(self.c1.forward(x)); // 6x28x28 (padding 2)
        let h = max_pool2d(h, [2, 2], [2, 2], [0, 0], [1, 1], false); // 6x14x14
        let h = relu(self.c3.forward(h)); // 16x10x10
        let h = max_pool2d(h, [2, 2], [2, 2], [0, 0], [1, 1], false); // 16x5x5
        let h = h.reshape([n, 16 * 5 * 5]);
        let h = relu(self.f5.forward(h));
        let h = relu(self.f6.forward(h));
        self.out.forward(h)
    }
}

/// The MNIST-1D CNN (Greydanus & Kobak): three Conv1d (k 5/3/3, stride 2,
/// padding 1) with ReLU, then Linear(channels*5, 10).
#[derive(Module, Debug)]
pub struct Mnist1dCnn<B: Backend> {
    conv1: Conv1d<B>,
    conv2: Conv1d<B>,
    conv3: Conv1d<B>,
    linear: Linear<B>,
}

impl<B: Backend> Mnist1dCnn<B> {
    /// Logits from signals `[batch, length]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, len] = x.dims();
        let x = x.reshape([n, 1, len]);
        let h = relu(self.conv1.forward(x));
        let h = relu(self.conv2.forward(h));
        let h = relu(self.conv3.forward(h));
        let [_, c, l] = h.dims();
        self.linear.forward(h.reshape([n, c * l]))
    }
}

/// Every model greentrain trains.
// One model per run: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Model<B: Backend> {
    /// See [`Mlp`].
    Mlp(Mlp<B>),
    /// See [`LeNet5`].
    LeNet5(LeNet5<B>),
    /// See [`Mnist1dCnn`].
    Mnist1dCnn(Mnist1dCnn<B>),
    /// See [`Transformer`].
    Transformer(Transformer<B>),
    /// See [`ResNet`].
    ResNet(ResNet<B>),
}

/// The side of square one-channel images given as `[side, side]` or
/// flattened.
/// Channels and side of square images: `[side, side]`, `[side * side]`
/// (one channel) or `[channels, side, side]` (channels first).
fn image_dims(shape: &[usize]) -> Option<(usize, usize)> {
    match shape {
        [h, w] if h == w => Some((1, *h)),
        [c, h, w] if h == w && (1..=4).contains(c) => Some((*c, *h)),
        [n] => {
            let s = (*n as f64).sqrt().round() as usize;
            (s * s == *n).then_some((1, s))
        }
        _ => None,
    }
}

/// The model does not fit the data.
#[derive(Debug, thiserror::Error)]
#[error(
    "model.kind = \"{kind}\" does not fit dataset {dataset} with samples of shape {shape:?}: {why}"
)]
pub struct ShapeMismatch {
    kind: String,
    dataset: String,
    shape: Vec<usize>,
    why: String,
}

/// Output length of a 1-D convolution.
fn conv_out(len: usize, k: usize, s: usize, p: usize) -> Option<usize> {
    (len + 2 * p).checked_sub(k).map(|v| v / s + 1)
}

/// Length after the MNIST-1D CNN's three convolutions (k 5/3/3, stride 2,
/// padding 1); None when the signal is too short.
fn cnn_out_len(len: usize) -> Option<usize> {
    conv_out(len, 5, 2, 1)
        .and_then(|l| conv_out(l, 3, 2, 1))
        .and_then(|l| conv_out(l, 3, 2, 1))
        .filter(|&l| l > 0)
}

/// Checks that `spec` fits samples of `shape` before any work; `vocab` is
/// the dataset's token count, for datasets of tokens.
pub fn check_fit(
    spec: &ModelSection,
    dataset: &str,
    shape: &[usize],
    vocab: Option<usize>,
) -> Result<(), ShapeMismatch> {
    let err = |why: &str| ShapeMismatch {
        kind: format!("{:?}", spec.kind).to_lowercase(),
        dataset: dataset.to_string(),
        shape: shape.to_vec(),
        why: why.to_string(),
    };
    match spec.kind {
        ModelKind::Mlp | ModelKind::Own => Ok(()),
        ModelKind::Lenet5 => {
            if shape == [28, 28] || shape == [784] {
                Ok(())
            } else {
                Err(err("lenet5 needs 28x28 images"))
            }
        }
        ModelKind::Resnet => match image_dims(shape) {
            Some((_, s)) if s >= 4 => Ok(()),
            _ => Err(err(
                "resnet needs square images of side 4 or more ([side, side] or [channels, side, side])",
            )),
        },
        ModelKind::Transformer => {
            if shape.len() != 1 {
                return Err(err("transformer needs token sequences (1-D samples)"));
            }
            if spec.vocab.or(vocab).is_none() {
                return Err(err(
                    "transformer needs tokens: a token dataset (modular) or model.vocab",
                ));
            }
            Ok(())
        }
        ModelKind::Mnist1dCnn => {
            if shape.len() != 1 {
                return Err(err("mnist1d_cnn needs 1-D signals"));
            }
            match cnn_out_len(shape[0]) {
                Some(_) => Ok(()),
                None => Err(err("signal too short for three stride-2 convolutions")),
            }
        }
    }
}

impl<B: MatmulBackend> Model<B> {
    /// Builds the model for samples of `shape` and `classes` outputs;
    /// `vocab` is the dataset's token count, for models of tokens, and
    /// `targets` the labels per sample (more than one: the transformer
    /// predicts at every position, causally).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spec: &ModelSection,
        shape: &[usize],
        classes: usize,
        targets: usize,
        vocab: Option<usize>,
        seed: u64,
        device: &B::Device,
    ) -> Self {
        let mut init = Init::<B>::new(seed, device);
        let features: usize = shape.iter().product();
        match spec.kind {
            ModelKind::Mlp => {
                let mut dims = vec![features];
                dims.extend(&spec.hidden);
                dims.push(classes);
                let layers = dims.windows(2).map(|w| init.linear(w[0], w[1])).collect();
                let residual = spec.residual.unwrap_or(false);
                Model::Mlp(Mlp { layers, residual })
            }
            ModelKind::Lenet5 => Model::LeNet5(LeNet5 {
                c1: init.conv2d(1, 6, 5, 2),
                c3: init.conv2d(6, 16, 5, 0),
                f5: init.linear(400, 120),
                f6: init.linear(120, 84),
                out: init.linear(84, classes),
            }),
            ModelKind::Mnist1dCnn => {
                let c = spec.channels;
                let l = cnn_out_len(shape[0]).expect("check_fit ran first");
                Model::Mnist1dCnn(Mnist1dCnn {
                    conv1: init.conv1d(1, c, 5, 2, 1),
                    conv2: init.conv1d(c, c, 3, 2, 1),
                    conv3: init.conv1d(c, c, 3, 2, 1),
                    linear: init.linear(c * l, classes),
                })
            }
            ModelKind::Resnet => {
                let (channels, side) = image_dims(shape).expect("check_fit ran first");
                let (depth, width) = (spec.depth.unwrap_or(20), spec.width.unwrap_or(16));
                Model::ResNet(ResNet::new(
                    &mut init, depth, width, side, channels, classes,
                ))
            }
            ModelKind::Own => unreachable!("train and resume refuse `own` without its program"),
            ModelKind::Transformer => {
                let vocab = spec.vocab.or(vocab).expect("check_fit ran first");
                let context = spec.context.unwrap_or(shape[0]).max(shape[0]);
                let mut t_spec = spec.transformer();
                t_spec.causal |= targets > 1;
                let t = Transformer::new(&mut init, t_spec, vocab, context, classes)
                    .every_position(targets > 1);
                Model::Transformer(t)
            }
        }
    }

    /// Logits `[batch, classes]` from flattened samples `[batch, features]`;
    /// on `Amp<B>`, in the dtypes of the thread's autocast policy.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            Model::Mlp(m) => m.forward(x),
            Model::LeNet5(m) => m.forward(x),
            Model::Mnist1dCnn(m) => m.forward(x),
            Model::Transformer(m) => m.forward(x),
            Model::ResNet(m) => m.forward(x),
        }
    }
}

impl<B: MatmulBackend> Model<B> {
    /// Trainable parameters ([`crate::network::trainable_params`]).
    pub fn trainable_params(&self) -> usize {
        crate::network::trainable_params::<B, _>(self)
    }
}

impl<B: MatmulBackend> crate::network::Network<B> for Model<B> {
    fn logits(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.forward(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn mlp(residual: Option<bool>) -> (Model<Flex>, ModelSection) {
        let mut spec: ModelSection = toml::from_str("kind = \"mlp\"\nhidden = [16, 16]").unwrap();
        spec.residual = residual;
        (
            Model::new(&spec, &[8], 3, 1, None, 7, &Default::default()),
            spec,
        )
    }

    /// `residual` unset is the plain MLP, op for op (so every earlier run
    /// and checkpoint is unchanged); set, the second layer adds its input,
    /// as the MNIST-1D reference's `h = h + relu(linear2(h))`; the records
    /// are the same either way.
    #[test]
    fn a_residual_mlp_adds_its_equal_width_layers_inputs() {
        let x = Tensor::<Flex, 2>::from_data(
            burn::tensor::TensorData::new(
                (0..32)
                    .map(|i| (i as f32 * 0.37).sin())
                    .collect::<Vec<f32>>(),
                [4, 8],
            ),
            &Default::default(),
        );
        let (plain, _) = mlp(None);
        let (res, _) = mlp(Some(true));
        let Model::Mlp(m) = &plain else {
            unreachable!()
        };
        let l = &m.layers;
        let lin = |i: usize, h: Tensor<Flex, 2>| {
            burn::tensor::module::linear(h, l[i].weight.val(), l[i].bias.as_ref().map(|b| b.val()))
        };
        let relu = |t: Tensor<Flex, 2>| burn::tensor::activation::relu(t);
        let h1 = relu(lin(0, x.clone()));
        let want_plain = lin(2, relu(lin(1, h1.clone())));
        let want_res = lin(2, h1.clone() + relu(lin(1, h1)));
        let read = |t: Tensor<Flex, 2>| t.into_data().to_vec::<f32>().unwrap();
        assert_eq!(read(plain.forward(x.clone())), read(want_plain.clone()));
        assert_eq!(read(res.forward(x)), read(want_res.clone()));
        assert_ne!(read(want_plain), read(want_res));
        assert_eq!(
            crate::run::model_bytes(&plain),
            crate::run::model_bytes(&res)
        );
    }
}
