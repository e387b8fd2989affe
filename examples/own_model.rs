//! A model written only with `burn::nn`, trained on MNIST by greentrain's
//! run: run.json, metrics.csv, emissions.csv, checkpoints, energy and CO2,
//! and `greentrain report` / `greentrain resume` on the folder it writes.
//!
//!     cargo run --release --example own_model -- --out runs [--precision fp16] [--epochs N] [--device cpu|wgpu|cuda:0] [--set key=value]...
//!
//! `--set` changes any key of configs/own_model.toml, as `greentrain --set` does.
//!
//! The network is plain Burn: no greentrain type inside it. Mixed precision
//! comes from the backend greentrain runs it on (`greentrain_amp::Amp`).

use std::process::ExitCode;

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::prelude::*;
use greentrain_amp::AmpBackend;
use greentrain_trainer::network::Network;
use greentrain_trainer::own::{self, OwnModel};
use greentrain_trainer::{config, DeviceSpec, Failure, TrainRequest};

/// Two 3x3 convolutions with max pooling, then two linear layers.
#[derive(Module, Debug)]
pub struct SmallCnn<B: Backend> {
    conv1: Conv2d<B>,
    conv2: Conv2d<B>,
    pool: MaxPool2d,
    fc1: Linear<B>,
    fc2: Linear<B>,
    relu: Relu,
}

impl<B: Backend> SmallCnn<B> {
    pub fn new(device: &B::Device) -> Self {
        let conv = |c_in, c_out| {
            Conv2dConfig::new([c_in, c_out], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        Self {
            conv1: conv(1, 16),
            conv2: conv(16, 32),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            fc1: LinearConfig::new(32 * 7 * 7, 128).init(device),
            fc2: LinearConfig::new(128, 10).init(device),
            relu: Relu::new(),
        }
    }

    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = self
            .pool
            .forward(self.relu.forward(self.conv1.forward(images)));
        let x = self.pool.forward(self.relu.forward(self.conv2.forward(x)));
        let x = self.relu.forward(self.fc1.forward(x.flatten(1, 3)));
        self.fc2.forward(x)
    }
}

/// What greentrain's run asks: logits from flattened 28x28 images.
impl<B: Backend> Network<B> for SmallCnn<B> {
    fn logits(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let n = x.dims()[0];
        self.forward(x.reshape([n, 1, 28, 28]))
    }
}

struct Mnist;

impl OwnModel for Mnist {
    type Net<B: AmpBackend> = SmallCnn<B>;

    fn name(&self) -> String {
        "small-cnn-16-32-128".into()
    }

    fn build<B: AmpBackend>(&self, device: &B::Device) -> SmallCnn<B> {
        SmallCnn::new(device)
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned());
    let (mut out, mut sets, mut device) = (None, vec![], DeviceSpec::Cpu);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        let parsed = match a.as_str() {
            "--out" => value().map(|v| out = Some(v)),
            "--precision" => value().map(|v| sets.push(format!("precision.mode={v}"))),
            "--epochs" => value().map(|v| sets.push(format!("train.epochs={v}"))),
            "--device" => value().and_then(|v| v.parse().map(|d| device = d)),
            "--set" => value().map(|v| sets.push(v)),
            _ => Err(format!("unknown argument {a}")),
        };
        if let Err(e) = parsed {
            eprintln!("own_model: {e}\nusage: own_model --out DIR [--precision fp16] [--epochs N] [--device cpu] [--set key=value]...");
            return ExitCode::from(2);
        }
    }
    let Some(out) = out else {
        eprintln!("usage: own_model --out DIR [--precision fp16] [--epochs N] [--device cpu] [--set key=value]...");
        return ExitCode::from(2);
    };
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/own_model.toml");
    let config = match config::load(path.as_ref(), &sets) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("own_model: {e}");
            return ExitCode::from(2);
        }
    };
    let request = TrainRequest {
        config,
        device,
        out_dir: out.into(),
        quiet: false,
    };
    match own::train(&Mnist, request) {
        Ok(o) => {
            println!("run: {}", o.run_dir.display());
            ExitCode::from(o.status.exit_code())
        }
        Err(Failure::Usage(e)) => {
            eprintln!("own_model: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("own_model: run failed: {e:#}");
            ExitCode::from(1)
        }
    }
}
