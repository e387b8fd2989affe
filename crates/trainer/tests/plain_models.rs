//! greentrain's models are plain Burn modules run under `Amp<B>`. Their
//! numbers on flex are pinned here: each model's logits, loss, every
//! parameter's gradient and the parameters after the step (batch norm's
//! running statistics included) hash to the values the models gave when
//! every op went through `Autocast` one call at a time (commit 87ca842), in
//! fp32, fp16 and bf16. A changed op order, cast or reduction shows as a
//! different hash. Re-pinned since, on purpose: LeNet-5 in fp32
//! (its first layer's weight gradient from flexconv's `direct` kernel) and
//! ResNet-8 in fp32 and fp16 (strided convolutions as sums over phases);
//! ResNet-8 in fp32 again (neighbouring images share their zero padding in
//! flexconv's grid, so the weight gradient sums its rows in other groups);
//! the MNIST-1D CNN in all three (its Conv1d layers now flexconv's 2-D
//! convolutions over rows one high, not Flex's conv1d); ResNet-8 in fp32
//! and fp16 and the MNIST-1D CNN in fp32 (strided convolutions as one
//! stride-1 convolution over the phases stacked as channels, and weight
//! gradients of small images summed in more, smaller groups); ResNet-8 in
//! all three (training batch norm fused on `Autodiff<Flex>`, its sums in
//! f64); LeNet-5 in fp32 again, twice (its second layer's weight gradient
//! as flexconv's sums of outer products, its first layer's with fused
//! multiply-adds, both on a CPU with AVX-512, as here); LeNet-5 and the
//! MNIST-1D CNN in fp32 (convolution biases added in one pass, their
//! gradients summed per plane in f64 lanes): new
//! summation orders that flexconv's and amp's tests check against Burn's
//! (within 1e-5, 1e-4 for batch norm's gradients); LeNet-5 in fp16 (its
//! 5 x 5 first layer's f16 products summed in f32 and rounded once, as every
//! other convolution's, not in f16 one term at a time); LeNet-5 and the
//! MNIST-1D CNN in fp16 and bf16 (their convolution biases' gradients summed
//! per plane in f64 lanes, as in fp32, then rounded to the 16-bit dtype).

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Int, Tensor, TensorData};
use greentrain_amp::{Amp, Autocast, Precision};
use greentrain_trainer::config::ModelSection;
use greentrain_trainer::model::Model;
use sha2::{Digest, Sha256};

type B = Amp<Autodiff<Flex>>;

/// A model kind from its `[model]` table, the sample shape, the classes and
/// the vocabulary (token models).
struct Case {
    name: &'static str,
    toml: &'static str,
    shape: &'static [usize],
    classes: usize,
    vocab: Option<usize>,
}

const CASES: &[Case] = &[
    Case {
        name: "mlp",
        toml: "kind = \"mlp\"\nhidden = [32, 32]\nresidual = true",
        shape: &[64],
        classes: 10,
        vocab: None,
    },
    Case {
        name: "lenet5",
        toml: "kind = \"lenet5\"",
        shape: &[28, 28],
        classes: 10,
        vocab: None,
    },
    Case {
        name: "mnist1d_cnn",
        toml: "kind = \"mnist1d_cnn\"\nchannels = 8",
        shape: &[40],
        classes: 10,
        vocab: None,
    },
    Case {
        name: "transformer_pre_gelu",
        toml: "kind = \"transformer\"\nd_model = 16\nheads = 2\nd_mlp = 32\nlayers = 2\n\
               activation = \"gelu\"\nnorm = \"pre\"",
        shape: &[5],
        classes: 7,
        vocab: Some(9),
    },
    Case {
        name: "transformer_post_tied",
        toml: "kind = \"transformer\"\nd_model = 16\nheads = 4\nd_mlp = 32\nlayers = 1\n\
               norm = \"post\"\ntied = true\ncausal = true",
        shape: &[5],
        classes: 7,
        vocab: Some(9),
    },
    Case {
        name: "resnet8",
        toml: "kind = \"resnet\"\ndepth = 8\nwidth = 4",
        shape: &[3, 8, 8],
        classes: 10,
        vocab: None,
    },
];

/// Every parameter's value, and its gradient where it has one, in visiting
/// order, as f32 bytes.
struct Collect<'a, A: AutodiffBackend> {
    grads: &'a A::Gradients,
    hash: Sha256,
}

impl<A: AutodiffBackend> ModuleVisitor<A> for Collect<'_, A> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<A, D>>) {
        let value = param.val();
        if let Some(g) = value.grad(self.grads) {
            self.hash.update(f32_bytes(g.cast(DType::F32).into_data()));
        }
        self.hash.update(f32_bytes(value.inner().into_data()));
    }
}

fn f32_bytes(d: TensorData) -> Vec<u8> {
    let v: Vec<f32> = d.convert::<f32>().to_vec().unwrap();
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Deterministic inputs: token ids for token models, values in [-1, 1]
/// otherwise; labels below `classes`.
fn batch(case: &Case, n: usize) -> (Vec<f32>, Vec<i64>) {
    let features: usize = case.shape.iter().product();
    let x = (0..n * features)
        .map(|i| match case.vocab {
            Some(v) => ((i * 7 + i / 3) % v) as f32,
            None => ((i * 37 % 17) as f32 - 8.0) / 8.0,
        })
        .collect();
    let y = (0..n)
        .map(|i| ((i * 5 + 3) % case.classes) as i64)
        .collect();
    (x, y)
}

/// One forward and backward: the hash of the logits (as f32), the loss,
/// every gradient and every parameter afterwards.
fn fingerprint(case: &Case, precision: Precision) -> String {
    // As the run does: greentrain's kernels beneath `Amp`.
    greentrain_amp::use_kernels::<Autodiff<Flex>>();
    let spec: ModelSection = toml::from_str(case.toml).unwrap();
    let dev = Default::default();
    let model = Model::<B>::new(&spec, case.shape, case.classes, 1, case.vocab, 11, &dev);
    let n = 6;
    let (x, y) = batch(case, n);
    let features: usize = case.shape.iter().product();
    let x = Tensor::<B, 2>::from_data(TensorData::new(x, [n, features]), &dev);
    let y = Tensor::<B, 1, Int>::from_data(TensorData::new(y, [n]), &dev);
    let ac = Autocast::new(precision);
    let (logits, loss) = {
        let _on = ac.enter();
        let logits = model.forward(x);
        (logits.clone(), ac.cross_entropy(logits, y))
    };
    let mut hash = Sha256::new();
    hash.update(f32_bytes(logits.cast(DType::F32).inner().into_data()));
    hash.update(f32_bytes(loss.clone().inner().into_data()));
    let grads = loss.backward();
    let mut c = Collect::<B> {
        grads: &grads,
        hash,
    };
    model.visit(&mut c);
    format!("{:x}", c.hash.finalize())
}

/// What the models gave when each op went through `Autocast` (87ca842); the
/// transformers' since their last block computes the last position alone
/// (the same values to rounding: `model::transformer`'s tests). On a CPU
/// with AVX-512 (the Intel VM they were pinned on).
const PINNED: &[(&str, &str, &str)] = &[
    (
        "mlp",
        "fp32",
        "a6ab56069e2ca6bbeb7b1fa744a0d794c4929de92f18574b29f99ed8719a734e",
    ),
    (
        "mlp",
        "fp16",
        "2cda502463792579f386c73aa725815c6cdf961afca73078d9ae3798d129af6e",
    ),
    (
        "mlp",
        "bf16",
        "7d0f801631c9db96aa5b531e0032b78e372a38f0bd2705d938b4cbab473fa34c",
    ),
    (
        "lenet5",
        "fp32",
        "9f81c13acc2ad8e0d82d7b734dfa92c331bb34932c1606d90caf5d4a1efefe1b",
    ),
    (
        "lenet5",
        "fp16",
        "4f33cadff45349433ae368dfa332bc8ad6260d5ebc585a4da3f06e1385b254db",
    ),
    (
        "lenet5",
        "bf16",
        "ca49f45b98e84d56026f3e25d097f9531fe5904c4bcd1da7beb27430b7d4feab",
    ),
    (
        "mnist1d_cnn",
        "fp32",
        "b4f6bd584e608b0dd0a5565b5809668a3ec275bfb3f59b23c1abcadca593414b",
    ),
    (
        "mnist1d_cnn",
        "fp16",
        "f45ae0e2272561738ac73e5194e881ba00196e803e9ef2e209c41838bd4de5b8",
    ),
    (
        "mnist1d_cnn",
        "bf16",
        "fde2a14c4c6f690eaf918554d0df138e809a3ff65c65a7b812e47d021fa0a94f",
    ),
    (
        "transformer_pre_gelu",
        "fp32",
        "db9a561715382755e7c324bc7b058c0bd56771a769544d557263e4de5fc78cdd",
    ),
    (
        "transformer_pre_gelu",
        "fp16",
        "3117973ba2161dd1ff97d9b1dfe41e6016032692ee8ef381bd034c974d141e22",
    ),
    (
        "transformer_pre_gelu",
        "bf16",
        "89d10db0e13c1a659c00983ebd25ae77fbfec0c6c3ee8f3eba9bed646beadf55",
    ),
    (
        "transformer_post_tied",
        "fp32",
        "04acbd8662f032ff48595d26b8e0e8ae7f61ff5a747cec9cf02217451422a823",
    ),
    (
        "transformer_post_tied",
        "fp16",
        "ac2293839f6edcfc2ed8eea6017fbbbd1487fc9b256e2d23fa4e96057711c076",
    ),
    (
        "transformer_post_tied",
        "bf16",
        "7a6f567153909c39efe5c21643cf2d09f75f7724d06d87ddeb6ee1174364a201",
    ),
    (
        "resnet8",
        "fp32",
        "6eb8aa5d323b784845d42e165d23acf1711b682ed56425773cb8b1bcee58814d",
    ),
    (
        "resnet8",
        "fp16",
        "e6b7aa85ff9449d6fb720e0d6da688c4da978bbbee67ec693d3eeaa1919fb0b9",
    ),
    (
        "resnet8",
        "bf16",
        "a20cc0a80119f5ad08d2ac1684297e4cc3cb9835f1b7fe2aa39c327cc735db09",
    ),
];

/// The same numbers on a CPU with AVX2 and no AVX-512 (recorded on the AMD
/// EPYC VM, 2026-12-07): gemm's AVX2 microkernels tile and block the
/// products otherwise, and flexconv's AVX-512 kernels (the weight
/// gradient's sums of outer products, the first layer's fused
/// multiply-adds) give way to gemm and plain loops, so most fp32 numbers
/// and a few 16-bit ones are summed in other orders. Each op's own tests
/// hold its results to Burn's on either CPU.
const PINNED_AVX2: &[(&str, &str, &str)] = &[
    (
        "mlp",
        "fp32",
        "03fc28e074b375788ccdc765b80e9e56b60518b0e32592d678819f855e7d6be7",
    ),
    (
        "mlp",
        "fp16",
        "2cda502463792579f386c73aa725815c6cdf961afca73078d9ae3798d129af6e",
    ),
    (
        "mlp",
        "bf16",
        "7d0f801631c9db96aa5b531e0032b78e372a38f0bd2705d938b4cbab473fa34c",
    ),
    (
        "lenet5",
        "fp32",
        "56b6048c6c521030e018cf684a0bd383cef4a2fabb49e921ab7c6077e3a518ea",
    ),
    (
        "lenet5",
        "fp16",
        "6db03330291bfd50cb5c1de98d2ce4723b4586c66d888a40ab53a4b06aa74aca",
    ),
    (
        "lenet5",
        "bf16",
        "ca49f45b98e84d56026f3e25d097f9531fe5904c4bcd1da7beb27430b7d4feab",
    ),
    (
        "mnist1d_cnn",
        "fp32",
        "a6812741237c15a1f27ac57e8c17570f9b518a0445125629b25d0987092ce5a9",
    ),
    (
        "mnist1d_cnn",
        "fp16",
        "f45ae0e2272561738ac73e5194e881ba00196e803e9ef2e209c41838bd4de5b8",
    ),
    (
        "mnist1d_cnn",
        "bf16",
        "fde2a14c4c6f690eaf918554d0df138e809a3ff65c65a7b812e47d021fa0a94f",
    ),
    (
        "transformer_pre_gelu",
        "fp32",
        "95027b4b9241b94e803201b0b03978a07b2ed4e55784adb43b8802881554f039",
    ),
    (
        "transformer_pre_gelu",
        "fp16",
        "b7e6c1e473d57682680d3bdaf5d365114b6024d5e38e560a779b299ed8576ee1",
    ),
    (
        "transformer_pre_gelu",
        "bf16",
        "8c5378587016bfd62647b3d4317c99304b1ff8ef13d7c72b5600e8fafb02d025",
    ),
    (
        "transformer_post_tied",
        "fp32",
        "a4a74784addcddc07e4fa82a66d27bb9bd8511bb829196306b45aab66cbdf9f7",
    ),
    (
        "transformer_post_tied",
        "fp16",
        "0e8c58b61a8166693c4fe103bb07d0b65514fd51a348c9b90a22c23efe141575",
    ),
    (
        "transformer_post_tied",
        "bf16",
        "57c46c031d35e1bbd24225537dcb13c6a9ba9785962b674518987e1bb3042a98",
    ),
    (
        "resnet8",
        "fp32",
        "faaaeeaecf737f239744e7797a5def877c7dde461a0927e36cf7f24ecbd0754d",
    ),
    (
        "resnet8",
        "fp16",
        "e6b7aa85ff9449d6fb720e0d6da688c4da978bbbee67ec693d3eeaa1919fb0b9",
    ),
    (
        "resnet8",
        "bf16",
        "a20cc0a80119f5ad08d2ac1684297e4cc3cb9835f1b7fe2aa39c327cc735db09",
    ),
];

/// The numbers pinned for the widest vectors this CPU has, where any are.
fn pinned() -> Option<&'static [(&'static str, &'static str, &'static str)]> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Some(PINNED);
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return Some(PINNED_AVX2);
        }
    }
    None
}

#[test]
fn models_give_the_numbers_they_gave_through_autocast() {
    let mut got = Vec::new();
    for case in CASES {
        for p in [Precision::Fp32, Precision::Fp16, Precision::Bf16] {
            got.push((case.name, p.as_str(), fingerprint(case, p)));
        }
    }
    for (name, p, h) in &got {
        println!("    (\"{name}\", \"{p}\", \"{h}\"),");
    }
    let Some(pinned) = pinned() else {
        eprintln!(
            "no numbers are pinned for this CPU (neither AVX-512 nor AVX2): nothing compared"
        );
        return;
    };
    let want: Vec<(&str, &str, String)> = pinned
        .iter()
        .map(|(a, b, c)| (*a, *b, c.to_string()))
        .collect();
    assert_eq!(got, want);
}
