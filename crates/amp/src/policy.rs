//! The autocast policy: which dtype each op runs in.
//!
//! Burn has no autocast and its binary ops do not promote mismatched dtypes,
//! so every op a model runs goes through [`Autocast`], which casts its inputs
//! to the dtype PyTorch's autocast lists would give it. Master weights stay
//! f32; `Tensor::cast` records a cast in the autodiff graph whose backward
//! casts the gradient back, so parameter gradients arrive in f32.

use burn::nn::conv::{Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d};
use burn::nn::{BatchNorm, LayerNorm, Linear, PaddingConfig1d, PaddingConfig2d};
use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::module::{attention, conv1d, conv_transpose1d, conv_transpose2d, linear};
use burn::tensor::ops::{AttentionModuleOptions, ConvTransposeOptions, PaddedConvOptions};
use burn::tensor::{Bool, DType, FloatDType, Int, Tensor};
use greentrain_flexconv::ConvPath;
use greentrain_matmul::{MatmulBackend, MatmulKernel};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Training precision, as chosen in `[precision] mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32: the policy is a no-op.
    #[default]
    Fp32,
    /// Matmul/conv in f16, reductions and losses in f32, with loss scaling.
    Fp16,
    /// Matmul/conv in bf16, reductions and losses in f32, no loss scaling.
    Bf16,
}

impl Precision {
    /// All modes, in the order benchmarks report them.
    pub const ALL: [Precision; 3] = [Precision::Fp32, Precision::Fp16, Precision::Bf16];

    /// The dtype that lower-precision ops (matmul, linear, conv) run in.
    pub fn compute_dtype(self) -> FloatDType {
        match self {
            Precision::Fp32 => FloatDType::F32,
            Precision::Fp16 => FloatDType::F16,
            Precision::Bf16 => FloatDType::BF16,
        }
    }

    /// Whether this mode needs a dynamic loss scaler (only fp16: its 5-bit
    /// exponent flushes small gradients to zero; bf16 has f32's range).
    pub fn needs_loss_scaling(self) -> bool {
        matches!(self, Precision::Fp16)
    }

    /// The name used in configs and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
        }
    }

    /// Checks that the device can do this mode's dtype for general
    /// operations (`Backend::supports_dtype`), before any work starts.
    pub fn check_supported<B: Backend>(
        self,
        device: &B::Device,
    ) -> Result<(), UnsupportedPrecision> {
        self.check_with(|d| B::supports_dtype(device, d), &B::name(device))
    }

    /// [`Precision::check_supported`] against any support query (for
    /// backends reached some other way, and for tests).
    pub fn check_with(
        self,
        supports: impl Fn(DType) -> bool,
        backend: &str,
    ) -> Result<(), UnsupportedPrecision> {
        let dtype: DType = self.compute_dtype().into();
        if supports(dtype) {
            Ok(())
        } else {
            Err(UnsupportedPrecision {
                precision: self,
                dtype,
                backend: backend.to_string(),
            })
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" | "f32" => Ok(Precision::Fp32),
            "fp16" | "f16" | "half" => Ok(Precision::Fp16),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!(
                "unknown precision '{other}': expected fp32, fp16 or bf16"
            )),
        }
    }
}

/// What a config or `--precision` asks for: a fixed mode, or `auto`, which
/// picks per device (PyTorch users write `autocast` only on the GPU; this is
/// that choice made explicit and recorded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum PrecisionChoice {
    /// fp16 with loss scaling on a GPU that has f16, bf16 where only bf16
    /// is there, fp32 on the CPU (where 16-bit runs slower: flex widens it to f32).
    #[default]
    Auto,
    /// This mode, wherever it runs.
    Fixed(Precision),
}

impl PrecisionChoice {
    /// The mode to run: `gpu` says whether the device is a hardware GPU,
    /// `supports` whether it computes in a dtype.
    pub fn resolve(self, gpu: bool, supports: impl Fn(DType) -> bool) -> Precision {
        match self {
            PrecisionChoice::Fixed(p) => p,
            PrecisionChoice::Auto if !gpu => Precision::Fp32,
            PrecisionChoice::Auto if supports(DType::F16) => Precision::Fp16,
            PrecisionChoice::Auto if supports(DType::BF16) => Precision::Bf16,
            PrecisionChoice::Auto => Precision::Fp32,
        }
    }

    /// The fixed mode, if this is one.
    pub fn fixed(self) -> Option<Precision> {
        match self {
            PrecisionChoice::Fixed(p) => Some(p),
            PrecisionChoice::Auto => None,
        }
    }
}

impl From<Precision> for PrecisionChoice {
    fn from(p: Precision) -> Self {
        PrecisionChoice::Fixed(p)
    }
}

impl fmt::Display for PrecisionChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrecisionChoice::Auto => f.write_str("auto"),
            PrecisionChoice::Fixed(p) => p.fmt(f),
        }
    }
}

impl std::str::FromStr for PrecisionChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(PrecisionChoice::Auto);
        }
        s.parse::<Precision>()
            .map(PrecisionChoice::Fixed)
            .map_err(|_| format!("unknown precision '{s}': expected auto, fp32, fp16 or bf16"))
    }
}

impl Serialize for PrecisionChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PrecisionChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A precision the device cannot run.
#[derive(Debug, Clone, PartialEq)]
pub struct UnsupportedPrecision {
    /// The requested mode.
    pub precision: Precision,
    /// The dtype the mode needs.
    pub dtype: DType,
    /// The backend's own name for itself and the device.
    pub backend: String,
}

impl fmt::Display for UnsupportedPrecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "precision {} needs {:?} arithmetic, which backend {} does not support on this device; use another precision or device",
            self.precision, self.dtype, self.backend
        )
    }
}

impl std::error::Error for UnsupportedPrecision {}

/// The op policy. Cheap to copy; models take it by reference in `forward`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Autocast {
    precision: Precision,
    conv: ConvPath,
    matmul: MatmulKernel,
    split_sums: bool,
}

/// The wider of two float dtypes: an op on both runs in it.
pub fn wider(a: DType, b: DType) -> DType {
    fn rank(d: DType) -> u8 {
        match d {
            DType::F64 => 3,
            DType::F32 | DType::Flex32 => 2,
            DType::F16 | DType::BF16 => 1,
            _ => 0,
        }
    }
    if a == b {
        a
    } else if rank(a) == rank(b) {
        // f16 with bf16: neither holds the other, f32 holds both.
        DType::F32
    } else if rank(a) > rank(b) {
        a
    } else {
        b
    }
}

/// The `FloatDType` of a float `DType` (f32 for anything else).
pub(crate) fn float_dtype(d: DType) -> FloatDType {
    match d {
        DType::F64 => FloatDType::F64,
        DType::F16 => FloatDType::F16,
        DType::BF16 => FloatDType::BF16,
        DType::Flex32 => FloatDType::Flex32,
        _ => FloatDType::F32,
    }
}

/// Debug-time guard: Burn may compute garbage from mismatched dtypes in
/// release builds instead of failing, so every binary op checks.
#[inline]
fn assert_same<B: Backend, const D: usize, const E: usize>(
    op: &str,
    a: &Tensor<B, D>,
    b: &Tensor<B, E>,
) {
    debug_assert_eq!(
        a.dtype(),
        b.dtype(),
        "autocast: {op} got mismatched dtypes; route it through Autocast"
    );
}

impl Autocast {
    /// A policy for the given mode.
    pub fn new(precision: Precision) -> Self {
        Self {
            precision,
            conv: ConvPath::Native,
            matmul: MatmulKernel::Auto,
            split_sums: true,
        }
    }

    /// `false`: every sum as Burn runs it, in one reduction, on every backend;
    /// `true` (the default): bias gradients, layer and batch norm statistics
    /// and parameter gradients, and the loss's mean in two stages where the
    /// backend's sums are serial per output (see `sums.rs`).
    pub fn with_split_sums(self, on: bool) -> Self {
        Self {
            split_sums: on,
            ..self
        }
    }

    /// The same policy computing matrix products (matmul, linear) with
    /// `kernel` where the backend has it (see [`greentrain_matmul`]); Burn's
    /// own ops elsewhere.
    pub fn with_matmul(self, kernel: MatmulKernel) -> Self {
        Self {
            matmul: kernel,
            ..self
        }
    }

    /// The same policy computing convolutions on `conv` (see
    /// [`greentrain_flexconv::ConvPath`]).
    pub fn with_conv(self, conv: ConvPath) -> Self {
        Self { conv, ..self }
    }

    /// Puts this policy on the current thread until the guard drops: the
    /// precision (as [`crate::autocast`] does) and the kernels `Amp<B>`'s
    /// products, linear layers, layer norms and convolutions take, so that
    /// a plain Burn model on `Amp<B>` computes what this policy's methods
    /// compute.
    #[must_use = "the policy is on only while the guard lives"]
    pub fn enter(&self) -> crate::AutocastGuard {
        crate::backend::enter(crate::backend::State {
            dtype: crate::backend::compute_dtype(self.precision),
            matmul: self.matmul,
            split_sums: self.split_sums,
            conv: self.conv,
        })
    }

    /// The mode.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The dtype of matmul-class ops.
    pub fn compute_dtype(&self) -> FloatDType {
        self.precision.compute_dtype()
    }

    /// Casts to the lower compute dtype (no-op in fp32 mode).
    pub fn lower<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        if self.precision == Precision::Fp32 || x.dtype() == self.compute_dtype().into() {
            x
        } else {
            x.cast(self.compute_dtype())
        }
    }

    /// Casts to f32 (no-op when already f32).
    pub fn full<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        if x.dtype() == DType::F32 {
            x
        } else {
            x.cast(FloatDType::F32)
        }
    }

    /// Brings two tensors to their wider dtype.
    pub fn promote<B: Backend, const D: usize, const E: usize>(
        &self,
        a: Tensor<B, D>,
        b: Tensor<B, E>,
    ) -> (Tensor<B, D>, Tensor<B, E>) {
        let target = wider(a.dtype(), b.dtype());
        let cast = |d: DType| d != target;
        let a = if cast(a.dtype()) {
            a.cast(float_dtype(target))
        } else {
            a
        };
        let b = if cast(b.dtype()) {
            b.cast(float_dtype(target))
        } else {
            b
        };
        (a, b)
    }

    /// `a + b` in the wider dtype.
    pub fn add<B: Backend, const D: usize>(
        &self,
        a: Tensor<B, D>,
        b: Tensor<B, D>,
    ) -> Tensor<B, D> {
        let (a, b) = self.promote(a, b);
        assert_same("add", &a, &b);
        a + b
    }

    /// `a * b` in the wider dtype.
    pub fn mul<B: Backend, const D: usize>(
        &self,
        a: Tensor<B, D>,
        b: Tensor<B, D>,
    ) -> Tensor<B, D> {
        let (a, b) = self.promote(a, b);
        assert_same("mul", &a, &b);
        a * b
    }

    // ---- lower-precision ops -------------------------------------------

    /// Matrix product in the compute dtype.
    pub fn matmul<B: MatmulBackend, const D: usize>(
        &self,
        a: Tensor<B, D>,
        b: Tensor<B, D>,
    ) -> Tensor<B, D> {
        let (a, b) = (self.lower(a), self.lower(b));
        assert_same("matmul", &a, &b);
        greentrain_matmul::matmul(a, b, self.matmul)
    }

    /// `x W + b` in the compute dtype, from f32 master weights.
    ///
    /// Inputs of rank 3 and up are flattened to one matrix of rows first:
    /// Burn's linear broadcasts the weight over the leading dimensions, and
    /// its weight gradient is then a batched `x^T dy` that materialises one
    /// `d_in x d_out` matrix per batch element before summing them (4 GiB
    /// for a 512-wide layer at batch 4096). `Amp<B>`'s linear does the same where
    /// greentrain's kernels are registered ([`crate::use_kernels`]).
    pub fn linear_raw<B: MatmulBackend, const D: usize>(
        &self,
        x: Tensor<B, D>,
        weight: Tensor<B, 2>,
        bias: Option<Tensor<B, 1>>,
    ) -> Tensor<B, D> {
        let x = self.lower(x);
        let weight = self.lower(weight);
        let bias = bias.map(|b| self.lower(b));
        assert_same("linear", &x, &weight);
        if D < 2 {
            return linear(x, weight, bias);
        }
        let mut dims = x.dims();
        let rows = dims[..D - 1].iter().product::<usize>();
        let (kernel, split) = (self.matmul, self.split_sums);
        let x = x.reshape([rows, dims[D - 1]]);
        let y = crate::products::linear_rows(x, weight, bias, kernel, split);
        dims[D - 1] = y.dims()[1];
        y.reshape(dims)
    }

    /// `y + b` with `b` broadcast over the rows, as Burn's linear adds it.
    /// Where the backend's sums run one thread per output
    /// ([`MatmulBackend::gt_split_sums`]: the CubeCL backends), the add is
    /// shaped `[rows / c, c, n]` with `b` expanded over `c` (about
    /// `sqrt(rows)`), so that autodiff sums the bias gradient in two stages,
    /// over `rows / c` on `c * n` threads and then over `c`, instead of
    /// `rows` values on each of `n` threads. The forward is the same add.
    pub fn add_bias<B: MatmulBackend>(&self, y: Tensor<B, 2>, b: Tensor<B, 1>) -> Tensor<B, 2> {
        let split = self.splits::<B>(&y.device());
        crate::sums::add_bias(y, b, split)
    }

    /// Whether sums on `device` run in two stages (`[kernels] sums`).
    fn splits<B: MatmulBackend>(&self, device: &B::Device) -> bool {
        self.split_sums && B::gt_split_sums(device)
    }

    /// A Burn [`Linear`] layer in the compute dtype.
    pub fn linear<B: MatmulBackend, const D: usize>(
        &self,
        layer: &Linear<B>,
        x: Tensor<B, D>,
    ) -> Tensor<B, D> {
        self.linear_raw(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val()))
    }

    /// A Burn [`Conv1d`] layer in the compute dtype.
    pub fn conv1d<B: Backend>(&self, layer: &Conv1d<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let length = x.dims()[2];
        let (left, right) = match &layer.padding {
            PaddingConfig1d::Valid => (0, 0),
            PaddingConfig1d::Explicit(l, r) => (*l, *r),
            PaddingConfig1d::Same => same_padding(layer.kernel_size, layer.stride, length),
        };
        let options = PaddedConvOptions::asymmetric(
            [layer.stride],
            [left],
            [right],
            [layer.dilation],
            layer.groups,
        );
        let x = self.lower(x);
        let w = self.lower(layer.weight.val());
        let b = layer.bias.as_ref().map(|b| self.lower(b.val()));
        assert_same("conv1d", &x, &w);
        conv1d(x, w, b, options)
    }

    /// A Burn [`Conv2d`] layer in the compute dtype.
    pub fn conv2d<B: Backend>(&self, layer: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let ((top, bottom), (left, right)) = match &layer.padding {
            PaddingConfig2d::Valid => ((0, 0), (0, 0)),
            PaddingConfig2d::Explicit(t, l, b, r) => ((*t, *b), (*l, *r)),
            PaddingConfig2d::Same => (
                same_padding(layer.kernel_size[0], layer.stride[0], h),
                same_padding(layer.kernel_size[1], layer.stride[1], w),
            ),
        };
        let options = PaddedConvOptions::asymmetric(
            layer.stride,
            [top, left],
            [bottom, right],
            layer.dilation,
            layer.groups,
        );
        let x = self.lower(x);
        let wt = self.lower(layer.weight.val());
        let b = layer.bias.as_ref().map(|b| self.lower(b.val()));
        assert_same("conv2d", &x, &wt);
        // Burn's conv2d (faster gradients on Autodiff<Flex>), or batched products.
        greentrain_flexconv::conv2d_with(self.conv, x, wt, b, options)
    }

    /// A Burn [`ConvTranspose1d`] layer in the compute dtype.
    pub fn conv_transpose1d<B: Backend>(
        &self,
        layer: &ConvTranspose1d<B>,
        x: Tensor<B, 3>,
    ) -> Tensor<B, 3> {
        let options = ConvTransposeOptions::new(
            [layer.stride],
            [layer.padding],
            [layer.padding_out],
            [layer.dilation],
            layer.groups,
        );
        let x = self.lower(x);
        let w = self.lower(layer.weight.val());
        let b = layer.bias.as_ref().map(|b| self.lower(b.val()));
        assert_same("conv_transpose1d", &x, &w);
        conv_transpose1d(x, w, b, options)
    }

    /// A Burn [`ConvTranspose2d`] layer in the compute dtype.
    pub fn conv_transpose2d<B: Backend>(
        &self,
        layer: &ConvTranspose2d<B>,
        x: Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        let options = ConvTransposeOptions::new(
            layer.stride,
            layer.padding,
            layer.padding_out,
            layer.dilation,
            layer.groups,
        );
        let x = self.lower(x);
        let w = self.lower(layer.weight.val());
        let b = layer.bias.as_ref().map(|b| self.lower(b.val()));
        assert_same("conv_transpose2d", &x, &w);
        conv_transpose2d(x, w, b, options)
    }

    /// Scaled dot-product attention in the compute dtype (as PyTorch's
    /// autocast runs `scaled_dot_product_attention`); an additive bias is
    /// brought to the same dtype.
    pub fn attention<B: Backend>(
        &self,
        query: Tensor<B, 4>,
        key: Tensor<B, 4>,
        value: Tensor<B, 4>,
        mask: Option<Tensor<B, 4, Bool>>,
        attn_bias: Option<Tensor<B, 4>>,
        options: AttentionModuleOptions,
    ) -> Tensor<B, 4> {
        let (q, k, v) = (self.lower(query), self.lower(key), self.lower(value));
        assert_same("attention", &q, &k);
        assert_same("attention", &q, &v);
        let bias = attn_bias.map(|b| self.lower(b));
        attention(q, k, v, mask, bias, options)
    }

    // ---- dtype-preserving ops -----------------------------------------

    /// ReLU keeps its input's dtype (as in PyTorch's autocast).
    pub fn relu<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        activation::relu(x)
    }

    /// GELU keeps its input's dtype (as in PyTorch's autocast).
    pub fn gelu<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        activation::gelu(x)
    }

    /// tanh keeps its input's dtype.
    pub fn tanh<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        activation::tanh(x)
    }

    // ---- f32 ops ---------------------------------------------------------

    /// softmax in f32.
    pub fn softmax<B: Backend, const D: usize>(&self, x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
        activation::softmax(self.full(x), dim)
    }

    /// log_softmax in f32.
    pub fn log_softmax<B: Backend, const D: usize>(
        &self,
        x: Tensor<B, D>,
        dim: usize,
    ) -> Tensor<B, D> {
        activation::log_softmax(self.full(x), dim)
    }

    /// exp in f32.
    pub fn exp<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.full(x).exp()
    }

    /// Natural log in f32.
    pub fn log<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.full(x).log()
    }

    /// `x^p` in f32.
    pub fn powf_scalar<B: Backend, const D: usize>(&self, x: Tensor<B, D>, p: f32) -> Tensor<B, D> {
        self.full(x).powf_scalar(p)
    }

    /// Sum of all elements, in f32.
    pub fn sum<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, 1> {
        self.full(x).sum()
    }

    /// Mean of all elements, in f32.
    pub fn mean<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, 1> {
        self.full(x).mean()
    }

    /// Layer norm in f32 (its f32 parameters apply to an f32 input); the
    /// rows are viewed in two stages where sums split (`sums.rs`).
    pub fn layer_norm<B: MatmulBackend, const D: usize>(
        &self,
        layer: &LayerNorm<B>,
        x: Tensor<B, D>,
    ) -> Tensor<B, D> {
        let split = self.splits::<B>(&x.device());
        crate::sums::layer_norm(layer, self.full(x), split)
    }

    /// Batch norm in f32, running statistics included (PyTorch's semantics,
    /// in a layout every backend broadcasts fast: see `norm.rs`).
    pub fn batch_norm<B: MatmulBackend, const D: usize>(
        &self,
        layer: &BatchNorm<B>,
        x: Tensor<B, D>,
    ) -> Tensor<B, D> {
        let split = self.splits::<B>(&x.device());
        crate::norm::batch_norm_split(layer, self.full(x), split)
    }

    /// [`Self::batch_norm`] then a ReLU: one operation on the CPU in
    /// training (see [`crate::batch_norm_relu`]).
    pub fn batch_norm_relu<B: MatmulBackend, const D: usize>(
        &self,
        layer: &BatchNorm<B>,
        x: Tensor<B, D>,
    ) -> Tensor<B, D> {
        let split = self.splits::<B>(&x.device());
        crate::norm::batch_norm_relu_split(layer, self.full(x), split)
    }

    /// `relu(batch_norm(x) + shortcut)`: one operation on the CPU in
    /// training (see [`crate::batch_norm_add_relu`]).
    pub fn batch_norm_add_relu<B: MatmulBackend, const D: usize>(
        &self,
        layer: &BatchNorm<B>,
        x: Tensor<B, D>,
        shortcut: Tensor<B, D>,
    ) -> Tensor<B, D> {
        let split = self.splits::<B>(&x.device());
        crate::norm::batch_norm_add_relu_split(layer, self.full(x), shortcut, split)
    }

    /// Mean cross-entropy of `logits` `[batch, classes]` against class
    /// indices, computed in f32 whatever the logits' dtype: the exp inside
    /// would overflow f16 from logits of about 11.1 (e^11.1 > 65504).
    pub fn cross_entropy<B: MatmulBackend>(
        &self,
        logits: Tensor<B, 2>,
        targets: Tensor<B, 1, Int>,
    ) -> Tensor<B, 1> {
        let split = self.splits::<B>(&logits.device());
        crate::sums::mean(self.nll(self.log_softmax(logits, 1), targets), split)
    }

    /// Per-sample cross-entropy `[batch]`, in f32.
    pub fn cross_entropy_per_sample<B: Backend>(
        &self,
        logits: Tensor<B, 2>,
        targets: Tensor<B, 1, Int>,
    ) -> Tensor<B, 1> {
        self.nll(self.log_softmax(logits, 1), targets)
    }

    fn nll<B: Backend>(&self, log_probs: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
        let [n, _] = log_probs.dims();
        let picked = log_probs.gather(1, targets.reshape([n, 1]));
        picked.reshape([n]).neg()
    }
}

fn same_padding(kernel: usize, stride: usize, size: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = if out > 0 {
        ((out - 1) * stride + kernel).saturating_sub(size)
    } else {
        0
    };
    (total / 2, total - total / 2)
}
