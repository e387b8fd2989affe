//! Your own `burn::nn` models in greentrain's run ([`own`]): the run folder,
//! fp16/bf16 through `Amp`, interrupt and resume, the program `greentrain
//! resume` starts again, and the same models' steps on wgpu.

use std::path::PathBuf;

use burn::module::AutodiffModule;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use greentrain_amp::{autocast, Amp, AmpBackend, GradScaler, Precision, ScalerConfig};
use greentrain_trainer::checkpoint::Checkpoint;
use greentrain_trainer::config::{self, ModelKind};
use greentrain_trainer::network::Network;
use greentrain_trainer::own::{self, OwnModel};
mod common;
use common::{epoch_figures, interrupted_once_checkpointed};
use greentrain_trainer::{DeviceSpec, TrainRequest};

/// Conv, batch norm, max pool, linear over 8x8 digit images.
#[derive(Module, Debug)]
struct ConvNet<B: Backend> {
    conv: Conv2d<B>,
    norm: BatchNorm<B>,
    pool: MaxPool2d,
    relu: Relu,
    head: Linear<B>,
}

impl<B: Backend> ConvNet<B> {
    fn new(device: &B::Device) -> Self {
        Self {
            conv: Conv2dConfig::new([1, 8], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
            norm: BatchNormConfig::new(8).init(device),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            relu: Relu::new(),
            head: LinearConfig::new(8 * 4 * 4, 10).init(device),
        }
    }
}

impl<B: Backend> Network<B> for ConvNet<B> {
    fn logits(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let n = x.dims()[0];
        let h = self.conv.forward(x.reshape([n, 1, 8, 8]));
        let h = self.pool.forward(self.relu.forward(self.norm.forward(h)));
        self.head.forward(h.flatten(1, 3))
    }
}

/// A `burn::nn` transformer encoder over the image's 8 rows as tokens.
#[derive(Module, Debug)]
struct Encoder<B: Backend> {
    embed: Linear<B>,
    encoder: TransformerEncoder<B>,
    head: Linear<B>,
}

impl<B: Backend> Encoder<B> {
    fn new(device: &B::Device) -> Self {
        Self {
            embed: LinearConfig::new(8, 16).init(device),
            encoder: TransformerEncoderConfig::new(16, 32, 2, 1)
                .with_dropout(0.0)
                .init(device),
            head: LinearConfig::new(16, 10).init(device),
        }
    }
}

impl<B: Backend> Network<B> for Encoder<B> {
    fn logits(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let n = x.dims()[0];
        let h = self.embed.forward(x.reshape([n, 8, 8]));
        let h = self.encoder.forward(TransformerEncoderInput::new(h));
        self.head.forward(h.mean_dim(1).squeeze_dim(1))
    }
}

struct Convs;
impl OwnModel for Convs {
    type Net<B: AmpBackend> = ConvNet<B>;
    fn name(&self) -> String {
        "test-convnet".into()
    }
    fn build<B: AmpBackend>(&self, device: &B::Device) -> ConvNet<B> {
        ConvNet::new(device)
    }
}

struct Encoders;
impl OwnModel for Encoders {
    type Net<B: AmpBackend> = Encoder<B>;
    fn name(&self) -> String {
        "test-encoder".into()
    }
    fn build<B: AmpBackend>(&self, device: &B::Device) -> Encoder<B> {
        Encoder::new(device)
    }
}

/// Burn's initializers draw from one generator per backend: tests that
/// build models take turns, or the same seed would give other weights.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rng() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn request(sets: &[&str], out: PathBuf) -> TrainRequest {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/digits_mlp.toml"
    ));
    let mut all = vec!["model.kind=own".to_string()];
    all.extend(sets.iter().map(|s| s.to_string()));
    TrainRequest {
        config: config::load(&path, &all).unwrap(),
        device: DeviceSpec::Cpu,
        out_dir: out,
        quiet: true,
    }
}

/// Each model trains under fp32, fp16 and bf16 and writes greentrain's run
/// folder, with its program recorded for `greentrain resume`.
#[test]
fn own_models_train_into_a_run_folder() {
    let _rng = rng();
    let out = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, f64); 4] = [
        ("conv", "fp32", 0.8),
        ("conv", "fp16", 0.8),
        ("conv", "bf16", 0.75),
        ("encoder", "fp16", 0.25),
    ];
    for (model, precision, floor) in cases {
        let mode = format!("precision.mode={precision}");
        let req = request(
            &["train.epochs=4", &mode],
            out.path().join(format!("{model}-{precision}")),
        );
        let done = match model {
            "conv" => own::train(&Convs, req),
            _ => own::train(&Encoders, req),
        }
        .unwrap();
        let what = format!("{model} {precision}");
        assert_eq!(done.status, "completed", "{what}");
        let r = &done.record;
        assert_eq!(r.config.model.kind, ModelKind::Own);
        assert_eq!(r.precision.as_str(), precision);
        let rec = r.own.as_ref().expect("the program is recorded");
        assert_eq!(
            rec.model,
            if model == "conv" {
                "test-convnet"
            } else {
                "test-encoder"
            }
        );
        assert_eq!(rec.program, std::env::current_exe().unwrap());
        assert_eq!(r.epochs.len(), 4);
        assert!(r.parameters.unwrap() > 0);
        let acc = r.final_.as_ref().unwrap().test_accuracy;
        assert!(acc >= floor, "{what}: test accuracy {acc}");
        assert!(r.epochs.iter().all(|e| e.train_loss.is_finite()), "{what}");
        assert!(
            r.epochs[3].train_loss < r.epochs[0].train_loss,
            "{what}: no learning"
        );
        let energy = r.energy.as_ref().expect("metered");
        assert!(energy.total_j > 0.0, "{what}");
        for f in [
            "run.json",
            "metrics.csv",
            "emissions.csv",
            "config.toml",
            "checkpoint.bin",
        ] {
            assert!(done.run_dir.join(f).exists(), "{what}: no {f}");
        }
        let metrics = std::fs::read_to_string(done.run_dir.join("metrics.csv")).unwrap();
        assert_eq!(
            metrics.lines().count(),
            5,
            "{what}: a header and four epochs"
        );
    }
}

/// `greentrain --config` and `greentrain resume` refuse an own model's
/// config (nothing could build it); own::train refuses a config that is not
/// one, and resuming with another model is refused.
#[test]
fn own_configs_need_their_program() {
    let _rng = rng();
    let out = tempfile::tempdir().unwrap();
    let req = request(&["train.epochs=1"], out.path().to_path_buf());
    let e = greentrain_trainer::train(req.clone()).unwrap_err();
    assert!(format!("{e:?}").contains("own"), "{e:?}");
    let mut plain = req.clone();
    plain.config.config.model.kind = ModelKind::Mlp;
    assert!(own::train(&Convs, plain).is_err());
    let done = own::train(&Convs, req).unwrap();
    let e = own::resume(&Encoders, &done.run_dir, None, true).unwrap_err();
    assert!(format!("{e:?}").contains("test-convnet"), "{e:?}");
    let e = greentrain_trainer::resume(&done.run_dir, None, true).unwrap_err();
    assert!(format!("{e:?}").contains("its program resumes it"), "{e:?}");
    let cmd = own::rerun_command(
        done.record.own.as_ref().unwrap(),
        &done.run_dir,
        Some("cpu"),
    );
    assert_eq!(
        cmd.get_program(),
        std::env::current_exe().unwrap().as_os_str()
    );
    let envs: Vec<_> = cmd
        .get_envs()
        .map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned())))
        .collect();
    let run_dir = std::fs::canonicalize(&done.run_dir).unwrap();
    assert!(envs.contains(&(own::RESUME_ENV.into(), Some(run_dir.into()))));
    assert!(envs.contains(&(own::DEVICE_ENV.into(), Some("cpu".into()))));
}

/// Interrupted mid-epoch and resumed, an own model's fp16 run ends where
/// the uninterrupted one does, bit for bit.
#[test]
fn an_interrupted_own_run_resumes_to_the_same_result() {
    let _rng = rng();
    let out = tempfile::tempdir().unwrap();
    let sets = [
        "precision.mode=fp16",
        "train.epochs=3",
        "train.steps_per_epoch=400",
        "train.checkpoint_every=1",
    ];
    let whole = own::train(&Convs, request(&sets, out.path().join("whole"))).unwrap();
    let cut_dir = out.path().join("cut");
    let cut_req = request(&sets, cut_dir.clone());
    let cut = interrupted_once_checkpointed(&cut_dir, move || own::train(&Convs, cut_req)).unwrap();
    assert_eq!(cut.status, "interrupted");
    let state = Checkpoint::load(&cut.run_dir).unwrap().state;
    assert!(
        state.epoch >= 1 && state.step > 0,
        "epoch {} step {}",
        state.epoch,
        state.step
    );
    let done = own::resume(&Convs, &cut.run_dir, None, true).unwrap();
    assert_eq!(done.status, "completed");
    assert_eq!(done.record.resumed, 1);
    assert_eq!(epoch_figures(&done.record), epoch_figures(&whole.record));
    let weights = |dir: &std::path::Path| values(Checkpoint::load(dir).unwrap().model);
    assert_eq!(weights(&done.run_dir), weights(&whole.run_dir));
}

/// Every float in a checkpoint's ConvNet record, as bits (batch norm's
/// running statistics keep ids Burn draws at random, so the bytes differ).
fn values(bytes: Vec<u8>) -> Vec<Vec<u32>> {
    use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
    type F = burn::backend::Flex;
    let device = Default::default();
    let rec = BinBytesRecorder::<FullPrecisionSettings>::default()
        .load::<<ConvNet<F> as Module<F>>::Record>(bytes, &device)
        .unwrap();
    let model = ConvNet::<F>::new(&device).load_record(rec);
    struct All(Vec<Vec<u32>>);
    impl burn::module::ModuleVisitor<F> for All {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<F, D>>) {
            let v = p.val().into_data().to_vec::<f32>().unwrap();
            self.0.push(v.iter().map(|x| x.to_bits()).collect());
        }
    }
    let mut all = All(vec![]);
    model.visit(&mut all);
    assert!(all.0.len() >= 6);
    all.0
}

/// A few steps of `model` on `Amp<B>` under `precision`: finite losses,
/// f32 parameter gradients, and a scaler that skips an injected inf.
fn steps_on<B: AutodiffBackend, M: AutodiffModule<Amp<B>> + Network<Amp<B>>>(
    model: M,
    device: &B::Device,
    precision: Precision,
) {
    let x = Tensor::<Amp<B>, 2>::random(
        [16, 64],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        device,
    );
    let y = Tensor::<Amp<B>, 1, Int>::from_data(
        TensorData::new((0..16i64).map(|i| i % 10).collect(), [16]),
        device,
    );
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let mut optim = AdamConfig::new().init::<Amp<B>, M>();
    let mut scaler = GradScaler::for_precision(precision, ScalerConfig::default());
    let mut model = model;
    for step in 0..4 {
        let mut input = x.clone();
        if step == 2 && precision == Precision::Fp16 {
            // An inf in the batch: every gradient is non-finite.
            input = input.slice_assign([0..1, 0..1], Tensor::full([1, 1], f32::INFINITY, device));
        }
        let loss = {
            let _on = autocast(precision);
            loss_fn.forward(model.logits(input), y.clone())
        };
        let grads = GradientsParams::from_grads(scaler.scale_loss(loss.clone()).backward(), &model);
        let (m, report) = scaler.step(&mut optim, 1e-3, model, grads, None);
        model = m;
        let injected = step == 2 && precision == Precision::Fp16;
        assert_eq!(report.skipped, injected, "step {step} ({precision})");
        if !injected {
            let l: f32 = loss.into_scalar().elem();
            assert!(l.is_finite(), "step {step} ({precision}): loss {l}");
        }
    }
    let g = {
        let _on = autocast(precision);
        let loss = loss_fn.forward(model.logits(x), y);
        GradientsParams::from_grads(loss.backward(), &model)
    };
    struct Check<'a>(&'a GradientsParams, usize);
    impl<B: AutodiffBackend> burn::module::ModuleVisitor<Amp<B>> for Check<'_> {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<Amp<B>, D>>) {
            if !p.val().is_require_grad() {
                return;
            }
            let g = self
                .0
                .get::<Amp<B::InnerBackend>, D>(p.id)
                .expect("a gradient");
            assert_eq!(g.dtype(), burn::tensor::DType::F32);
            let v = g.into_data().convert::<f32>().to_vec::<f32>().unwrap();
            assert!(v.iter().all(|x| x.is_finite()));
            self.1 += 1;
        }
    }
    let mut check = Check(&g, 0);
    model.visit(&mut check);
    assert!(check.1 > 0);
}

/// A few of `docs/amp-ops.md`'s rules on `Amp<B>` under fp16: a product in
/// f16, softmax and sums in f32, mixed inputs promoted, gelu kept.
fn op_dtypes<B: AutodiffBackend>(device: &B::Device) {
    use burn::tensor::{activation, DType};
    let _on = autocast(Precision::Fp16);
    let x = Tensor::<Amp<B>, 2>::ones([4, 8], device);
    let h = x.clone().matmul(x.clone().transpose());
    assert_eq!(h.dtype(), DType::F16, "matmul");
    assert_eq!(
        activation::softmax(h.clone(), 1).dtype(),
        DType::F32,
        "softmax"
    );
    assert_eq!(h.clone().sum_dim(1).dtype(), DType::F32, "sum");
    assert_eq!(activation::gelu(h.clone()).dtype(), DType::F16, "gelu");
    assert_eq!(
        (h + Tensor::<Amp<B>, 2>::ones([4, 4], device)).dtype(),
        DType::F32,
        "add"
    );
}

/// The same unmodified models step on wgpu (lavapipe here) under fp16 and
/// bf16 as on flex.
#[test]
fn own_models_step_on_flex_and_wgpu() {
    let _rng = rng();
    type F = burn::backend::Autodiff<burn::backend::Flex>;
    let cpu = Default::default();
    for p in [Precision::Fp16, Precision::Bf16] {
        steps_on::<F, _>(ConvNet::<Amp<F>>::new(&cpu), &cpu, p);
        steps_on::<F, _>(Encoder::<Amp<F>>::new(&cpu), &cpu, p);
    }
    if greentrain_trainer::device::check(DeviceSpec::Wgpu).is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the wgpu tests"
        );
        eprintln!("no wgpu adapter: own models were not stepped on wgpu");
        return;
    }
    type W = burn::backend::Autodiff<burn::backend::Wgpu>;
    let gpu = Default::default();
    for p in [Precision::Fp16, Precision::Bf16] {
        if p.check_supported::<W>(&gpu).is_err() {
            eprintln!("{p} is not supported by this wgpu adapter: not stepped");
            continue;
        }
        steps_on::<W, _>(ConvNet::<Amp<W>>::new(&gpu), &gpu, p);
        steps_on::<W, _>(Encoder::<Amp<W>>::new(&gpu), &gpu, p);
    }
    op_dtypes::<W>(&gpu);
    // In greentrain's run on wgpu, Amp hands the loss scaler's and Adam's
    // steps to the backend's fused foreach kernels.
    let out = tempfile::tempdir().unwrap();
    let mut req = request(
        &[
            "precision.mode=fp16",
            "train.epochs=1",
            "train.steps_per_epoch=3",
        ],
        out.path().to_path_buf(),
    );
    req.device = DeviceSpec::Wgpu;
    let before = greentrain_foreach::kernel_launches();
    let done = own::train(&Convs, req).unwrap();
    assert_eq!(done.status, "completed");
    assert!(done.record.epochs[0].train_loss.is_finite());
    assert!(
        greentrain_foreach::kernel_launches() > before,
        "no foreach kernel ran under Amp on wgpu"
    );
}
