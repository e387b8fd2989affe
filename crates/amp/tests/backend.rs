//! `Amp<B>`, autocast as a backend: per-op dtypes against PyTorch's lists,
//! unmodified `burn::nn` models training under it, and fp32 under it equal
//! to the backend it wraps.

use std::collections::{BTreeMap, BTreeSet};

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module};
use burn::nn::conv::{Conv1dConfig, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{BatchNorm, BatchNormConfig, LayerNormConfig, Linear, LinearConfig, Relu};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{activation, DType, Distribution, FloatDType, Int, Tensor, TensorData};
use greentrain_amp::{
    autocast, autocast_dtype, rule, rules, Amp, GradScaler, Precision, Rule, ScalerConfig,
};

type A = Amp<Autodiff<Flex>>;
type P = Autodiff<Flex>;

/// Seeding is per device and tests run in parallel: the tests that seed
/// and draw take this first.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rng() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn dev() -> burn::tensor::Device<A> {
    Default::default()
}

fn rand<const D: usize>(shape: [usize; D]) -> Tensor<A, D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), &dev())
}

fn repo_file(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join(path)).unwrap()
}

/// PyTorch's lists, by list name (tests/data/pytorch_autocast_lists.txt).
fn pytorch_lists() -> BTreeMap<String, BTreeSet<String>> {
    let mut lists: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current = String::new();
    for line in repo_file("tests/data/pytorch_autocast_lists.txt").lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_string();
        } else {
            lists
                .entry(current.clone())
                .or_default()
                .insert(line.to_string());
        }
    }
    lists
}

/// The table in docs/amp-ops.md (its rows whose first cell is an op name),
/// checked against `rule()` and PyTorch's lists.
#[test]
fn docs_table_matches_the_rules_and_pytorchs_lists() {
    let lists = pytorch_lists();
    let in_list = |list: &str, op: &str| lists[list].contains(op);
    let doc = repo_file("../../docs/amp-ops.md");
    let mut documented = BTreeSet::new();
    for row in doc.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        let op = cells[0].trim_matches('`');
        let want = match cells[1] {
            "low" => Rule::Low,
            "f32" => Rule::F32,
            "promote" => Rule::Promote,
            other => panic!("{op}: unknown rule {other}"),
        };
        assert_eq!(rule(op), want, "{op}: docs say {want:?}");
        documented.insert(op.to_string());
        let torch = cells[2];
        if torch.starts_with("greentrain:")
            || torch.starts_with("backward:")
            || torch.starts_with("type promotion")
        {
            assert!(
                want != Rule::Low || torch.starts_with("greentrain:"),
                "{op}: a lower-precision op needs a PyTorch counterpart or a reason"
            );
            continue;
        }
        for name in torch.split(',').map(str::trim) {
            let ok = match want {
                Rule::Low => in_list("lower_precision_fp", name),
                Rule::F32 => in_list("fp32", name) || in_list("fp32_set_opt_dtype", name),
                Rule::Promote => in_list("promote", name),
                Rule::Keep => false,
            };
            assert!(ok, "{op}: PyTorch's {name} is not in the list for {want:?}");
        }
    }
    let ruled: BTreeSet<String> = rules().map(|(op, _)| op.to_string()).collect();
    assert_eq!(
        documented, ruled,
        "docs/amp-ops.md and the rule table differ"
    );
    assert_eq!(rule("float_sqrt"), Rule::Keep);
    assert_eq!(rule("gelu"), Rule::Keep);
}

/// The dtypes the ops produce under autocast, op by op, for f16 and bf16.
#[test]
fn ops_run_in_the_dtype_of_their_rule() {
    let _rng = rng();
    for precision in [Precision::Fp16, Precision::Bf16] {
        let low: DType = precision.compute_dtype().into();
        let _on = autocast(precision);
        assert_eq!(autocast_dtype(), Some(precision.compute_dtype()));
        let x = rand([4, 8]);
        let w = rand([8, 3]);
        // low: products, linear, convolutions, attention.
        assert_eq!(x.clone().matmul(w.clone()).dtype(), low, "matmul");
        let lin = LinearConfig::new(8, 3).init::<A>(&dev());
        assert_eq!(lin.forward(x.clone()).dtype(), low, "linear");
        let c1 = Conv1dConfig::new(2, 3, 3).init::<A>(&dev());
        assert_eq!(c1.forward(rand([2, 2, 9])).dtype(), low, "conv1d");
        let c2 = Conv2dConfig::new([2, 3], [3, 3]).init::<A>(&dev());
        assert_eq!(c2.forward(rand([2, 2, 6, 6])).dtype(), low, "conv2d");
        let q = rand([1, 2, 5, 4]);
        let att = attention(
            q.clone(),
            q.clone(),
            q,
            None,
            None,
            AttentionModuleOptions::default(),
        );
        assert_eq!(att.dtype(), low, "attention");
        // f32: a 16-bit input comes out f32.
        let h = x.clone().cast(precision.compute_dtype());
        assert_eq!(h.dtype(), low);
        assert_eq!(
            activation::softmax(h.clone(), 1).dtype(),
            DType::F32,
            "softmax"
        );
        assert_eq!(
            activation::log_softmax(h.clone(), 1).dtype(),
            DType::F32,
            "log_softmax"
        );
        assert_eq!(h.clone().exp().dtype(), DType::F32, "exp");
        assert_eq!(h.clone().abs().log().dtype(), DType::F32, "log");
        assert_eq!(h.clone().sum().dtype(), DType::F32, "sum");
        assert_eq!(h.clone().sum_dim(1).dtype(), DType::F32, "sum_dim");
        assert_eq!(h.clone().mean_dim(0).dtype(), DType::F32, "mean_dim");
        assert_eq!(
            h.clone().powf_scalar(2.0).dtype(),
            DType::F32,
            "powf_scalar"
        );
        let ln = LayerNormConfig::new(8).init::<A>(&dev());
        assert_eq!(ln.forward(h.clone()).dtype(), DType::F32, "layer_norm");
        // promote: the wider input wins; f16 with bf16 gives f32.
        assert_eq!((h.clone() + x.clone()).dtype(), DType::F32, "add");
        assert_eq!((x.clone() * h.clone()).dtype(), DType::F32, "mul");
        let other = if precision == Precision::Fp16 {
            FloatDType::BF16
        } else {
            FloatDType::F16
        };
        assert_eq!(
            (h.clone() - x.clone().cast(other)).dtype(),
            DType::F32,
            "f16 - bf16"
        );
        assert_eq!(
            Tensor::cat(vec![h.clone(), x.clone()], 0).dtype(),
            DType::F32,
            "cat"
        );
        // keep: ops in no list run in their input's dtype.
        assert_eq!(activation::gelu(h.clone()).dtype(), low, "gelu");
        assert_eq!(activation::relu(h.clone()).dtype(), low, "relu");
        assert_eq!(activation::sigmoid(h.clone()).dtype(), low, "sigmoid");
        assert_eq!(h.clone().abs().sqrt().dtype(), low, "sqrt");
        assert_eq!(h.clone().tanh().dtype(), low, "tanh");
        assert_eq!(h.clone().reshape([8, 4]).dtype(), low, "reshape");
        let pool = MaxPool2dConfig::new([2, 2]).init();
        let img = rand([1, 1, 4, 4]).cast(precision.compute_dtype());
        assert_eq!(pool.forward(img).dtype(), low, "max_pool2d");
        // f64 stays f64 under a lower-precision op, as in PyTorch.
        let d = x.clone().cast(FloatDType::F64);
        assert_eq!(
            d.clone().matmul(d.transpose()).dtype(),
            DType::F64,
            "f64 matmul"
        );
    }
}

/// Without a guard (or with fp32) nothing is cast: `Amp<B>` is `B`.
#[test]
fn outside_autocast_nothing_is_cast() {
    let _rng = rng();
    let x = rand([4, 8]);
    let lin = LinearConfig::new(8, 3).init::<A>(&dev());
    assert_eq!(autocast_dtype(), None);
    assert_eq!(lin.forward(x.clone()).dtype(), DType::F32);
    {
        let _on = autocast(Precision::Fp16);
        {
            let _off = autocast(Precision::Fp32);
            assert_eq!(lin.forward(x.clone()).dtype(), DType::F32);
        }
        assert_eq!(
            lin.forward(x.clone()).dtype(),
            DType::F16,
            "the outer guard is back"
        );
    }
    assert_eq!(autocast_dtype(), None);
    let h = x.clone().cast(FloatDType::F16);
    assert_eq!(activation::softmax(h.clone(), 1).dtype(), DType::F16);
    // Promotion holds outside autocast too: Burn alone would refuse it.
    assert_eq!((h + x).dtype(), DType::F32);
}

#[derive(Module, Debug)]
struct Encoder<B: Backend> {
    encoder: TransformerEncoder<B>,
    head: Linear<B>,
}

impl<B: Backend> Encoder<B> {
    fn new(device: &B::Device) -> Self {
        Self {
            encoder: TransformerEncoderConfig::new(16, 32, 2, 2)
                .with_dropout(0.0)
                .init(device),
            head: LinearConfig::new(16, 4).init(device),
        }
    }

    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 2> {
        let h = self.encoder.forward(TransformerEncoderInput::new(x));
        self.head.forward(h.mean_dim(1).squeeze_dim(1))
    }
}

#[derive(Module, Debug)]
struct ConvNet<B: Backend> {
    conv1: burn::nn::conv::Conv2d<B>,
    norm1: BatchNorm<B>,
    conv2: burn::nn::conv::Conv2d<B>,
    pool: MaxPool2d,
    relu: Relu,
    head: Linear<B>,
}

impl<B: Backend> ConvNet<B> {
    fn new(device: &B::Device) -> Self {
        Self {
            conv1: Conv2dConfig::new([1, 6], [3, 3])
                .with_padding(burn::nn::PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
            norm1: BatchNormConfig::new(6).init(device),
            conv2: Conv2dConfig::new([6, 8], [3, 3])
                .with_stride([2, 2])
                .init(device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            relu: Relu::new(),
            head: LinearConfig::new(8, 4).init(device),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let h = self.relu.forward(self.norm1.forward(self.conv1.forward(x)));
        let h = self.pool.forward(self.relu.forward(self.conv2.forward(h)));
        self.head.forward(h.flatten(1, 3))
    }
}

fn labels(n: usize) -> Tensor<A, 1, Int> {
    Tensor::from_data(
        TensorData::new((0..n as i64).map(|i| i % 4).collect(), [n]),
        &dev(),
    )
}

/// Every parameter gradient of `model` in `grads`: present, f32, finite.
fn assert_f32_finite_grads<M: AutodiffModule<A>>(model: &M, grads: &GradientsParams, what: &str) {
    struct Check<'a> {
        grads: &'a GradientsParams,
        seen: usize,
        what: &'a str,
    }
    impl burn::module::ModuleVisitor<A> for Check<'_> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<A, D>>) {
            if !param.val().is_require_grad() {
                return; // batch norm's running statistics
            }
            let g = self
                .grads
                .get::<Amp<Flex>, D>(param.id)
                .unwrap_or_else(|| panic!("{}: a parameter has no gradient", self.what));
            assert_eq!(g.dtype(), DType::F32, "{}: gradient dtype", self.what);
            let v = g.into_data().convert::<f32>().to_vec::<f32>().unwrap();
            assert!(
                v.iter().all(|x| x.is_finite()),
                "{}: non-finite gradient",
                self.what
            );
            assert_eq!(
                param.val().dtype(),
                DType::F32,
                "{}: master weight dtype",
                self.what
            );
            self.seen += 1;
        }
    }
    let mut check = Check {
        grads,
        seen: 0,
        what,
    };
    model.visit(&mut check);
    assert!(check.seen > 0);
}

/// Trains `model` for `steps` under `precision` with a loss scaler; checks
/// gradients each step, returns the losses.
fn train<M, F>(mut model: M, precision: Precision, steps: usize, what: &str, forward: F) -> Vec<f32>
where
    M: AutodiffModule<A>,
    F: Fn(&M, usize) -> Tensor<A, 2>,
{
    let mut optim = AdamConfig::new().init::<A, M>();
    let mut scaler = GradScaler::for_precision(precision, ScalerConfig::default());
    let loss_fn = CrossEntropyLossConfig::new().init(&dev());
    let mut losses = vec![];
    for step in 0..steps {
        let _on = autocast(precision);
        let logits = forward(&model, step);
        let n = logits.dims()[0];
        let loss = loss_fn.forward(logits, labels(n));
        assert_eq!(loss.dtype(), DType::F32, "{what}: loss dtype");
        losses.push(loss.clone().into_scalar().to_f32());
        let grads = GradientsParams::from_grads(scaler.scale_loss(loss).backward(), &model);
        // Scaled by 2^16 (fp16) or 1 (bf16): still finite in f32.
        assert_f32_finite_grads(&model, &grads, what);
        let (m, report) = scaler.step(&mut optim, 3e-3, model, grads, None);
        assert!(!report.skipped, "{what}: step {step} skipped");
        model = m;
    }
    assert!(losses.iter().all(|l| l.is_finite()), "{what}: {losses:?}");
    losses
}

use burn::tensor::cast::ToElement;

/// An unmodified `burn::nn` transformer encoder trains under fp16 and bf16.
#[test]
fn nn_transformer_encoder_trains_under_fp16_and_bf16() {
    for precision in [Precision::Fp16, Precision::Bf16] {
        let _rng = rng();
        A::seed(&dev(), 7);
        let x = rand([8, 5, 16]);
        let losses = train(Encoder::new(&dev()), precision, 12, "encoder", |m, _| {
            m.forward(x.clone())
        });
        assert!(
            losses[11] < losses[0],
            "{precision}: loss did not fall: {losses:?}"
        );
    }
}

/// An unmodified conv net (conv, batch norm, max pool, linear) trains
/// under fp16 and bf16.
#[test]
fn nn_conv_net_trains_under_fp16_and_bf16() {
    for precision in [Precision::Fp16, Precision::Bf16] {
        let _rng = rng();
        A::seed(&dev(), 11);
        let x = rand([8, 1, 8, 8]);
        let losses = train(ConvNet::new(&dev()), precision, 12, "convnet", |m, _| {
            m.forward(x.clone())
        });
        assert!(
            losses[11] < losses[0],
            "{precision}: loss did not fall: {losses:?}"
        );
    }
}

/// An inf in the input makes every gradient non-finite: the scaler skips the
/// step, leaves the weights alone and backs off.
#[test]
fn the_scaler_skips_a_step_with_an_injected_inf() {
    let _rng = rng();
    A::seed(&dev(), 3);
    let model = ConvNet::<A>::new(&dev());
    let mut optim = AdamConfig::new().init::<A, ConvNet<A>>();
    let mut scaler = GradScaler::for_precision(Precision::Fp16, ScalerConfig::default());
    let before = model.head.weight.val().into_data();
    let mut x = vec![0.5f32; 8 * 64];
    x[17] = f32::INFINITY;
    let x = Tensor::<A, 4>::from_data(TensorData::new(x, [8, 1, 8, 8]), &dev());
    let _on = autocast(Precision::Fp16);
    let loss = CrossEntropyLossConfig::new()
        .init(&dev())
        .forward(model.forward(x), labels(8));
    let grads = GradientsParams::from_grads(scaler.scale_loss(loss).backward(), &model);
    let scale = scaler.scale();
    let (model, report) = scaler.step(&mut optim, 1e-2, model, grads, None);
    assert!(report.skipped);
    assert_eq!(scaler.scale(), scale / 2.0);
    assert_eq!(model.head.weight.val().into_data(), before);
}

/// Under fp32 (autocast off) `Amp<B>` trains bit-identically to `B`.
#[test]
fn fp32_under_amp_is_bit_identical_to_the_wrapped_backend() {
    fn run<B: burn::tensor::backend::AutodiffBackend>() -> Vec<f32> {
        let device = Default::default();
        B::seed(&device, 5);
        let model = Encoder::<B>::new(&device);
        let mut optim = AdamConfig::new().init::<B, Encoder<B>>();
        let x = Tensor::<B, 3>::random([4, 3, 16], Distribution::Normal(0.0, 1.0), &device);
        let y = Tensor::<B, 1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 3], [4]), &device);
        let mut model = model;
        for _ in 0..3 {
            let loss = CrossEntropyLossConfig::new()
                .init(&device)
                .forward(model.forward(x.clone()), y.clone());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-3, model, grads);
        }
        model.head.weight.val().into_data().to_vec::<f32>().unwrap()
    }
    let _rng = rng();
    let plain = run::<P>();
    let amp = {
        let _off = autocast(Precision::Fp32);
        run::<A>()
    };
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&plain), bits(&amp));
}

/// Convolutions under `Amp<Autodiff<Flex>>` keep greentrain-flexconv's
/// route: the same values and gradients as calling it directly.
#[test]
fn convolutions_keep_the_flexconv_route() {
    let _rng = rng();
    let device = Default::default();
    let x: Tensor<P, 4> =
        Tensor::random([2, 3, 7, 7], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let w: Tensor<P, 4> =
        Tensor::random([4, 3, 3, 3], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let options = burn::tensor::ops::ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    assert!(greentrain_flexconv::routes(&x, &w, &options.clone().into()));
    let direct = greentrain_flexconv::conv2d(x.clone(), w.clone(), None, options.clone().into());
    let g_direct = direct.clone().sum().backward();
    let xa = Tensor::<A, 4>::from_data(x.to_data(), &dev()).require_grad();
    let wa = Tensor::<A, 4>::from_data(w.to_data(), &dev()).require_grad();
    let via_amp = burn::tensor::module::conv2d(xa.clone(), wa.clone(), None, options);
    let g_amp = via_amp.clone().sum().backward();
    assert_eq!(via_amp.into_data(), direct.into_data());
    assert_eq!(
        wa.grad(&g_amp).unwrap().into_data(),
        w.grad(&g_direct).unwrap().into_data()
    );
    assert_eq!(
        xa.grad(&g_amp).unwrap().into_data(),
        x.grad(&g_direct).unwrap().into_data()
    );
}

/// A 1-D convolution under `Amp<Autodiff<Flex>>` is greentrain-flexconv's
/// 2-D one over rows one high (the same bits as calling it so), within
/// 1e-5 of Burn's own conv1d in value and gradients; a dilated one stays
/// Burn's, bit for bit.
#[test]
fn conv1d_takes_the_2d_route_with_burns_numbers() {
    let _rng = rng();
    let _off = autocast(Precision::Fp32);
    let device = Default::default();
    // (stride, padding, dilation, kernel): MNIST-1D's, stride 1, dilated.
    for (s, p, d, k) in [(2, 2, 1, 5), (1, 1, 1, 3), (1, 2, 2, 3)] {
        let what = format!("stride {s}, padding {p}, dilation {d}, kernel {k}");
        let normal = Distribution::Normal(0.0, 1.0);
        let x: Tensor<P, 3> = Tensor::random([3, 4, 40], normal, &device).require_grad();
        let w: Tensor<P, 3> = Tensor::random([5, 4, k], normal, &device).require_grad();
        let b: Tensor<P, 1> = Tensor::random([5], normal, &device).require_grad();
        let options = burn::tensor::ops::ConvOptions::new([s], [p], [d], 1);
        let burn =
            burn::tensor::module::conv1d(x.clone(), w.clone(), Some(b.clone()), options.clone());
        let g_burn = burn.clone().sum().backward();
        let amp = |t: &Tensor<P, 3>| Tensor::<A, 3>::from_data(t.to_data(), &dev()).require_grad();
        let (xa, wa) = (amp(&x), amp(&w));
        let ba = Tensor::<A, 1>::from_data(b.to_data(), &dev()).require_grad();
        let via_amp =
            burn::tensor::module::conv1d(xa.clone(), wa.clone(), Some(ba.clone()), options);
        let g_amp = via_amp.clone().sum().backward();
        let values = |t: TensorData| t.to_vec::<f32>().unwrap();
        let close = |a: Vec<f32>, b: Vec<f32>, part: &str| {
            let top = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = a
                .iter()
                .zip(&b)
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert_eq!(a.len(), b.len(), "{what}: {part}");
            assert!(
                err <= 1e-5 * top,
                "{what}: {part} differs by {err:e} of {top:e}"
            );
            if d > 1 {
                assert_eq!(a, b, "{what}: {part}, Burn's own");
            }
        };
        close(values(via_amp.to_data()), values(burn.to_data()), "output");
        close(
            values(xa.grad(&g_amp).unwrap().into_data()),
            values(x.grad(&g_burn).unwrap().into_data()),
            "input gradient",
        );
        close(
            values(wa.grad(&g_amp).unwrap().into_data()),
            values(w.grad(&g_burn).unwrap().into_data()),
            "weight gradient",
        );
        close(
            values(ba.grad(&g_amp).unwrap().into_data()),
            values(b.grad(&g_burn).unwrap().into_data()),
            "bias gradient",
        );
        let (x2, w2) = (
            x.clone().unsqueeze_dim::<4>(2),
            w.clone().unsqueeze_dim::<4>(2),
        );
        let wide = burn::tensor::ops::ConvOptions::new([1, s], [0, p], [1, d], 1);
        if d == 1 {
            let flexconv = greentrain_flexconv::conv2d(x2, w2, Some(b.clone()), wide.into());
            assert_eq!(
                values(via_amp.to_data()),
                values(flexconv.squeeze_dim::<3>(2).to_data()),
                "{what}: flexconv's bits"
            );
        }
    }
}
