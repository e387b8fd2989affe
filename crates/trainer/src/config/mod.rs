//! The run config (TOML): parsing, `--set` overrides, validation.
//!
//! Every error names the file, the key and, where it can be found, the line:
//! a user with a typo in a 40-line config should not have to bisect it.

/// `precision.mode`'s type, for `--precision` and `--precisions`.
pub use greentrain_amp::PrecisionChoice;
use greentrain_amp::{ConvPath, ScalerConfig};
pub use greentrain_energy::estimate::TrackingMode;
mod data;
mod kernels;
mod load;
mod log;
mod validate;

pub use data::{DataSection, DatasetKind, ModOp, Tokens};
pub use kernels::{KernelsSection, Sums};
pub use load::{load, locate, parse, parse_with, toml_value, Override};
pub use log::LogSection;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
pub use validate::validate;

/// A config error: file, key and line where known.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The config file, or `--set` for an override.
    pub file: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// Dotted key, e.g. `train.lr`.
    pub key: Option<String>,
    /// What is wrong.
    pub msg: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config error in {}", self.file)?;
        if let Some(l) = self.line {
            write!(f, " line {l}")?;
        }
        if let Some(k) = &self.key {
            write!(f, ", key `{k}`")?;
        }
        write!(f, ": {}", self.msg)
    }
}

impl std::error::Error for ConfigError {}

/// `[run]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Name of the run; the run directory is `<name>-<UTC timestamp>`.
    pub name: String,
    /// Seed for initialisation and data order.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn default_seed() -> u64 {
    42
}

/// Which model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Fully connected ReLU net; `hidden = []` is logistic regression.
    Mlp,
    /// LeNet-5 for 28x28 inputs.
    Lenet5,
    /// The MNIST-1D CNN of Greydanus & Kobak (input length 40).
    Mnist1dCnn,
    /// A transformer over token sequences (`d_model`, `heads`, `d_mlp`,
    /// `layers`); the logits are read at the last position.
    Transformer,
    /// A CIFAR-style ResNet (`depth` = 6n + 2, base `width`) for square
    /// one-channel images.
    Resnet,
    /// Your own Burn model, trained through the library
    /// (`own.rs`): its program builds it, so `greentrain --config`
    /// cannot, and `greentrain resume` runs that program again.
    Own,
}

/// The transformer's MLP activation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// max(0, x).
    #[default]
    Relu,
    /// GELU (erf form).
    Gelu,
}

/// Where the transformer's LayerNorms go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormPlace {
    /// Before attention and MLP (GPT-2).
    #[default]
    Pre,
    /// After each residual addition (the original transformer).
    Post,
    /// No LayerNorm (Nanda et al.'s grokking model).
    None,
}

/// Which of the transformer's linear layers carry a bias.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Biases {
    /// Every projection, the MLP and the unembedding.
    #[default]
    All,
    /// Only the MLP's two layers (Nanda et al.'s model).
    Mlp,
    /// None.
    None,
}

/// How the transformer's parameters are drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransformerInit {
    /// Linear layers as PyTorch's `nn.Linear` (weights and biases
    /// U(-1/sqrt(d_in), 1/sqrt(d_in))); embeddings and positions uniform
    /// with standard deviation 1/sqrt(d_model).
    #[default]
    Default,
    /// Nanda et al.'s `transformers.py`: every weight N(0, 1/d_model)
    /// (embeddings, positions, attention, both MLP layers), the
    /// unembedding N(0, 1/classes), biases 0.
    Nanda2023,
}

/// `[model]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// `mlp`, `lenet5`, `mnist1d_cnn`, `transformer` or `resnet`.
    pub kind: ModelKind,
    /// Hidden layer widths of the MLP (default `[800]`).
    #[serde(default = "default_hidden")]
    pub hidden: Vec<usize>,
    /// MLP: each hidden layer after the first whose width equals its
    /// input's adds its input, `h = h + relu(linear(h))` (the MNIST-1D
    /// reference MLP's second layer). Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residual: Option<bool>,
    /// Channels of the MNIST-1D CNN (default 25).
    #[serde(default = "default_channels")]
    pub channels: usize,
    /// Transformer width (default 128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d_model: Option<usize>,
    /// Attention heads (default 4; must divide `d_model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<usize>,
    /// MLP width (default 4 x `d_model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d_mlp: Option<usize>,
    /// Blocks (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<usize>,
    /// Longest sequence (default: the samples' length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<usize>,
    /// Vocabulary (default: the dataset's, e.g. p + 1 for `modular`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab: Option<usize>,
    /// Causal attention (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causal: Option<bool>,
    /// MLP activation (default `relu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<Activation>,
    /// LayerNorm placement (default `pre`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub norm: Option<NormPlace>,
    /// Unembedding tied to the embedding (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tied: Option<bool>,
    /// Which linear layers have a bias (default `all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biases: Option<Biases>,
    /// Parameter initialisation (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<TransformerInit>,
    /// ResNet depth, 6n + 2 (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<usize>,
    /// ResNet base width: channels of the first stage (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<usize>,
    /// How convolutions are computed: `native` (default: Burn's kernels,
    /// greentrain's own on the CPU) or `gemm` (shifted views and one batched
    /// product per layer, for the GPU backends' slow direct kernels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv: Option<ConvPath>,
}

/// The transformer's sizes, defaults applied.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TransformerSpec {
    /// Width.
    pub d_model: usize,
    /// Heads.
    pub heads: usize,
    /// MLP width.
    pub d_mlp: usize,
    /// Blocks.
    pub layers: usize,
    /// Causal attention.
    pub causal: bool,
    /// MLP activation.
    pub activation: Activation,
    /// LayerNorm placement.
    pub norm: NormPlace,
    /// Tied unembedding.
    pub tied: bool,
    /// Linear layers with a bias.
    pub biases: Biases,
    /// Parameter initialisation.
    pub init: TransformerInit,
}

impl ModelSection {
    /// The transformer settings with their defaults.
    pub fn transformer(&self) -> TransformerSpec {
        let d_model = self.d_model.unwrap_or(128);
        TransformerSpec {
            d_model,
            heads: self.heads.unwrap_or(4),
            d_mlp: self.d_mlp.unwrap_or(4 * d_model),
            layers: self.layers.unwrap_or(1),
            causal: self.causal.unwrap_or(true),
            activation: self.activation.unwrap_or_default(),
            norm: self.norm.unwrap_or_default(),
            tied: self.tied.unwrap_or(false),
            biases: self.biases.unwrap_or_default(),
            init: self.init.unwrap_or_default(),
        }
    }
}

fn default_hidden() -> Vec<usize> {
    vec![800]
}
fn default_channels() -> usize {
    25
}

/// Optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Plain SGD.
    Sgd,
    /// SGD with (heavy-ball) momentum.
    Momentum,
    /// Adam (L2 weight decay).
    Adam,
    /// AdamW (decoupled weight decay).
    Adamw,
}

/// Learning-rate schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// `lr` throughout.
    Constant,
    /// Cosine decay from `lr` to 0 over all steps.
    Cosine,
    /// `lr * gamma^(epoch / step_epochs)`.
    Step,
    /// `lr * gamma^k`, k the number of `milestones` (optimizer steps, as
    /// He et al.'s "32k and 48k iterations") already passed.
    Milestones,
}

/// `[train]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Number of epochs.
    pub epochs: usize,
    /// `sgd`, `momentum`, `adam` or `adamw`.
    pub optimizer: OptimizerKind,
    /// Peak learning rate.
    pub lr: f64,
    /// Weight decay (L2 for sgd/momentum/adam, decoupled for adamw).
    #[serde(default)]
    pub weight_decay: f64,
    /// Momentum coefficient for `momentum` (default 0.9).
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// Adam's and AdamW's (beta1, beta2) (default [0.9, 0.999]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub betas: Option<[f64; 2]>,
    /// Learning-rate schedule (default `constant`).
    #[serde(default = "default_schedule")]
    pub schedule: Schedule,
    /// Linear warm-up over the first N optimizer steps: step s (from 0)
    /// uses `lr * s / N`, as PyTorch's `LambdaLR(lambda s: min(s / N, 1))`
    /// (so the first step's rate is 0); a cosine schedule decays over the
    /// steps after it. Default 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub warmup_steps: u64,
    /// Epochs between decays for `schedule = "step"` (default 1).
    #[serde(default = "default_step_epochs")]
    pub step_epochs: usize,
    /// Decay factor for `schedule = "step"` (default 0.1).
    #[serde(default = "default_gamma")]
    pub gamma: f64,
    /// Optimizer steps at which `schedule = "milestones"` multiplies the
    /// rate by `gamma`, ascending.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub milestones: Vec<u64>,
    /// Global gradient-norm clipping threshold (off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_grad_norm: Option<f64>,
    /// Micro-batches accumulated per optimizer step (default 1).
    #[serde(default = "default_accumulate")]
    pub accumulate: usize,
    /// Steps between progress log lines when stdout is not a terminal. Log
    /// steps are the only steps that read anything back from the device.
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    /// Batches per epoch (default: one pass over the training set). More
    /// than a pass draws further shuffled passes, so that a GPU epoch lasts
    /// long enough to measure its energy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_per_epoch: Option<usize>,
    /// When to checkpoint at an epoch end: `"auto"` (default: keeps
    /// checkpoint time under 5% of training time), a number of epochs, or a
    /// duration such as `"60s"` or `"10m"`. Interrupts, pauses, budget stops
    /// and the run's end always checkpoint.
    #[serde(default)]
    pub checkpoint_every: CheckpointEvery,
    /// Accuracy to reach (validation when there is a validation split, else
    /// test): run.json records when and at what energy it was first met.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_accuracy: Option<f64>,
    /// Loss per label to reach instead (validation when there is a
    /// validation split, else test; per token for `text`): energy to a
    /// target perplexity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_loss: Option<f64>,
    /// End the run (status `reached_target`, exit 0) at the epoch where
    /// `target_accuracy` or `target_loss` is met.
    #[serde(default)]
    pub stop_at_target: bool,
}

/// `[train] checkpoint_every`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum CheckpointEvery {
    /// Checkpoint when the time since the last one is at least 20 times the
    /// last checkpoint's duration.
    #[default]
    Auto,
    /// Every N epochs.
    Epochs(usize),
    /// When at least this many seconds passed since the last checkpoint.
    Seconds(f64),
}

impl CheckpointEvery {
    /// Whether to checkpoint now, `since_s` after the last checkpoint, which
    /// took `last_cost_s`, at the end of (1-based) epoch `epoch`.
    pub fn due(self, epoch: usize, since_s: f64, last_cost_s: Option<f64>) -> bool {
        match self {
            CheckpointEvery::Auto => match last_cost_s {
                None => true,
                Some(cost) => since_s >= 20.0 * cost,
            },
            CheckpointEvery::Epochs(n) => epoch.is_multiple_of(n),
            CheckpointEvery::Seconds(s) => since_s >= s,
        }
    }
}

impl std::str::FromStr for CheckpointEvery {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t == "auto" {
            return Ok(CheckpointEvery::Auto);
        }
        if let Ok(n) = t.parse::<usize>() {
            return if n == 0 {
                Err("must be at least 1 epoch".into())
            } else {
                Ok(CheckpointEvery::Epochs(n))
            };
        }
        // The one duration syntax (`greentrain schedule`'s too).
        match greentrain_energy::schedule::parse_duration(t) {
            Ok(v) if v.is_finite() => Ok(CheckpointEvery::Seconds(v)),
            _ => Err(format!(
                "expected \"auto\", a number of epochs or a duration such as \"60s\" or \"1h30m\", got {s:?}"
            )),
        }
    }
}

impl fmt::Display for CheckpointEvery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointEvery::Auto => f.write_str("auto"),
            CheckpointEvery::Epochs(n) => write!(f, "{n}"),
            CheckpointEvery::Seconds(v) => write!(f, "{v}s"),
        }
    }
}

impl Serialize for CheckpointEvery {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            CheckpointEvery::Epochs(n) => s.serialize_u64(*n as u64),
            other => s.collect_str(other),
        }
    }
}

impl<'de> Deserialize<'de> for CheckpointEvery {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(i64),
            S(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::N(n) => n.to_string(),
            Raw::S(s) => s,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

fn default_momentum() -> f64 {
    0.9
}
fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn default_schedule() -> Schedule {
    Schedule::Constant
}
fn default_step_epochs() -> usize {
    1
}
fn default_gamma() -> f64 {
    0.1
}
fn default_accumulate() -> usize {
    1
}
fn default_log_every() -> usize {
    100
}

/// `[precision]`: the mode and the loss scaler's settings (greentrain-amp's
/// `ScalerConfig` itself, not a copy of its fields).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "PrecisionToml", into = "PrecisionToml")]
pub struct PrecisionSection {
    /// `auto` (default: fp16 with loss scaling on a GPU, fp32 on the CPU),
    /// `fp32`, `fp16` or `bf16`. A run folder's config.toml holds the mode
    /// that ran.
    pub mode: PrecisionChoice,
    /// The loss scaler (fp16 only): `init_scale`, `growth_factor`,
    /// `backoff_factor`, `growth_interval` in the same table.
    pub scaler: ScalerConfig,
}

/// `[precision]` as the file spells it: one flat table, unknown keys
/// refused (serde cannot flatten a struct and refuse unknown keys at once).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrecisionToml {
    #[serde(default)]
    mode: PrecisionChoice,
    #[serde(default = "d_init_scale")]
    init_scale: f64,
    #[serde(default = "d_growth")]
    growth_factor: f64,
    #[serde(default = "d_backoff")]
    backoff_factor: f64,
    #[serde(default = "d_interval")]
    growth_interval: u32,
}

fn d_init_scale() -> f64 {
    ScalerConfig::default().init_scale
}
fn d_growth() -> f64 {
    ScalerConfig::default().growth_factor
}
fn d_backoff() -> f64 {
    ScalerConfig::default().backoff_factor
}
fn d_interval() -> u32 {
    ScalerConfig::default().growth_interval
}

impl From<PrecisionToml> for PrecisionSection {
    fn from(t: PrecisionToml) -> Self {
        Self {
            mode: t.mode,
            scaler: ScalerConfig {
                init_scale: t.init_scale,
                growth_factor: t.growth_factor,
                backoff_factor: t.backoff_factor,
                growth_interval: t.growth_interval,
            },
        }
    }
}

impl From<PrecisionSection> for PrecisionToml {
    fn from(p: PrecisionSection) -> Self {
        let s = p.scaler;
        Self {
            mode: p.mode,
            init_scale: s.init_scale,
            growth_factor: s.growth_factor,
            backoff_factor: s.backoff_factor,
            growth_interval: s.growth_interval,
        }
    }
}

/// `[energy]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnergySection {
    /// Meter energy at all (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Background sampling rate in Hz (default 20).
    #[serde(default = "default_sample_hz")]
    pub sample_hz: f64,
    /// Seconds of idle power to measure before training (default 0: off).
    #[serde(default)]
    pub idle_baseline_s: f64,
    /// powercap root for RAPL (default `/sys/class/powercap`).
    #[serde(default = "default_rapl_root")]
    pub rapl_root: PathBuf,
    /// Whose share CPU and RAM estimates charge: `machine` (default) or
    /// `process`, as CodeCarbon's `tracking_mode`.
    #[serde(default)]
    pub tracking_mode: TrackingMode,
}

fn default_true() -> bool {
    true
}
/// 20 Hz: the cross-check integrates NVML's instant power (field 186) from
/// these samples, and a GPU step's power changes within milliseconds.
fn default_sample_hz() -> f64 {
    20.0
}
fn default_rapl_root() -> PathBuf {
    PathBuf::from("/sys/class/powercap")
}

impl Default for EnergySection {
    fn default() -> Self {
        Self {
            enabled: true,
            sample_hz: default_sample_hz(),
            idle_baseline_s: 0.0,
            rapl_root: default_rapl_root(),
            tracking_mode: TrackingMode::Machine,
        }
    }
}

/// `[carbon]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarbonSection {
    /// A constant intensity, gCO2eq/kWh (first choice when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intensity_g_per_kwh: Option<f64>,
    /// An intensity time series (Electricity Maps CSV, UK Carbon Intensity
    /// JSON, or `timestamp,g_per_kwh` CSV), relative to the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intensity_file: Option<PathBuf>,
    /// A zone from the shipped table: ISO alpha-3 (`FRA`) or
    /// `provider:region` (`gcp:europe-west1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Power usage effectiveness of the data centre (default 1.0).
    #[serde(default = "default_pue")]
    pub pue: f64,
    /// Embodied emissions attributed to the run, gCO2eq (for the SCI score).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embodied_g: Option<f64>,
}

fn default_pue() -> f64 {
    1.0
}

impl Default for CarbonSection {
    fn default() -> Self {
        Self {
            intensity_g_per_kwh: None,
            intensity_file: None,
            zone: None,
            pue: 1.0,
            embodied_g: None,
        }
    }
}

/// `[budget]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSection {
    /// Stop when the run's energy reaches, or is predicted to exceed, this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_kwh: Option<f64>,
    /// Stop when the run's emissions reach, or are predicted to exceed, this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_co2_g: Option<f64>,
    /// Epochs measured before the first whole-run prediction (default 1).
    #[serde(default = "default_predict_after")]
    pub predict_after_epochs: usize,
}

fn default_predict_after() -> usize {
    1
}

impl Default for BudgetSection {
    fn default() -> Self {
        Self {
            max_kwh: None,
            max_co2_g: None,
            predict_after_epochs: default_predict_after(),
        }
    }
}

/// The whole config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[run]`
    pub run: RunSection,
    /// `[data]`
    pub data: DataSection,
    /// `[model]`
    pub model: ModelSection,
    /// `[train]`
    pub train: TrainSection,
    /// `[precision]`
    #[serde(default)]
    pub precision: PrecisionSection,
    /// `[energy]`
    #[serde(default)]
    pub energy: EnergySection,
    /// `[carbon]`
    #[serde(default)]
    pub carbon: CarbonSection,
    /// `[budget]`
    #[serde(default)]
    pub budget: BudgetSection,
    /// `[kernels]`
    #[serde(default)]
    pub kernels: KernelsSection,
    /// `[log]`
    #[serde(default, skip_serializing_if = "LogSection::is_default")]
    pub log: LogSection,
}

/// A config and where it came from (for resolving relative paths).
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    /// The validated config.
    pub config: Config,
    /// The file it was read from.
    pub path: PathBuf,
}

impl LoadedConfig {
    /// The folder relative paths in the config are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }
}

impl Config {
    /// The resolved config as TOML (what the run directory's `config.toml` holds).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }
}
