//! The run record: `run.json`, `metrics.csv`, `config.toml`, always written
//! atomically (temporary file, fsync, rename) so a crash never leaves half
//! a record. Field names are a contract (`docs/run-record.md`).

use crate::config::{Config, PrecisionChoice};
use crate::files::read_json;
use crate::status::RunStatus;
use greentrain_amp::Precision;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Schema tag of `run.json`.
pub const SCHEMA: &str = "greentrain.run/1";

/// Four significant digits, without switching to exponent notation for
/// the small numbers that short CPU runs produce.
pub fn sig(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let digits = (3 - x.abs().log10().floor() as i32).max(0) as usize;
    format!("{x:.digits$}")
}

/// Software versions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Versions {
    /// greentrain.
    pub greentrain: String,
    /// Burn.
    pub burn: String,
    /// The rustc that built this binary.
    pub rustc: String,
}

impl Versions {
    /// This build's versions.
    pub fn current() -> Self {
        Self {
            greentrain: env!("CARGO_PKG_VERSION").to_string(),
            burn: "0.21.0".to_string(),
            rustc: env!("GREENTRAIN_RUSTC_VERSION").to_string(),
        }
    }
}

/// The device a run used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// `flex`, `cuda` or `wgpu`.
    pub backend: String,
    /// Human-readable device name.
    pub name: String,
    /// The `--device` value (`cpu`, `cuda:1`, `wgpu`).
    pub spec: String,
}

/// A change to a run's config made by `resume --set`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigChange {
    /// When (RFC 3339 UTC).
    pub at: String,
    /// The settings as given (`train.epochs=12`).
    pub set: Vec<String>,
    /// The finished epochs when it was made.
    pub after_epochs: usize,
    /// The config's sha256 before the change.
    pub config_sha256_before: String,
}

/// One epoch's metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss over the epoch's samples.
    #[serde(with = "crate::num::f64_any")]
    pub train_loss: f64,
    /// Training accuracy over the epoch's samples, each counted in its own
    /// step before that step's update (as training loss is); absent in
    /// records written before it was kept.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::num::opt_f64_any"
    )]
    pub train_accuracy: Option<f64>,
    /// Mean test loss.
    #[serde(with = "crate::num::f64_any")]
    pub test_loss: f64,
    /// Test accuracy, a fraction in [0, 1].
    #[serde(with = "crate::num::f64_any")]
    pub test_accuracy: f64,
    /// Validation loss, when a validation split exists.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::num::opt_f64_any"
    )]
    pub val_loss: Option<f64>,
    /// Validation accuracy, when a validation split exists.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::num::opt_f64_any"
    )]
    pub val_accuracy: Option<f64>,
    /// Wall time of the epoch's training steps, in seconds.
    pub wall_s: f64,
    /// Wall time of evaluation, in seconds.
    pub eval_s: f64,
    /// Training samples processed in the epoch.
    pub samples: u64,
    /// Training samples per second.
    pub samples_per_s: f64,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
    /// Loss scale at the end of the epoch (1 without scaling).
    #[serde(with = "crate::num::f64_any")]
    pub loss_scale: f64,
    /// Optimizer steps skipped for inf/NaN gradients in this epoch.
    pub skipped_steps: u64,
    /// Seconds spent assembling batches (data loading).
    pub data_s: f64,
    /// Energy of the epoch (training, evaluation and checkpoint windows), J.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_j: Option<f64>,
    /// Emissions of the epoch, gCO2eq.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub co2_g: Option<f64>,
    /// Seconds spent writing the checkpoint at this epoch's end (absent when
    /// `train.checkpoint_every` skipped it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_s: Option<f64>,
    /// Energy of that checkpoint window, J (not part of `energy_j`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_j: Option<f64>,
    /// `exp(test_loss)`, for next-token prediction (losses are per token).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::num::opt_f64_any"
    )]
    pub test_perplexity: Option<f64>,
    /// `exp(val_loss)`, for next-token prediction with a validation split.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::num::opt_f64_any"
    )]
    pub val_perplexity: Option<f64>,
}

/// The totals of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinalRecord {
    /// Test accuracy after the last epoch.
    #[serde(with = "crate::num::f64_any")]
    pub test_accuracy: f64,
    /// Test loss after the last epoch.
    #[serde(with = "crate::num::f64_any")]
    pub test_loss: f64,
    /// Training wall time summed over epochs, in seconds.
    pub wall_s: f64,
    /// Training samples processed.
    pub samples: u64,
    /// Optimizer steps skipped in the whole run.
    pub skipped_steps: u64,
    /// Energy of the whole run, kWh (all components, all windows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_kwh: Option<f64>,
    /// Emissions, gCO2eq: `energy_kwh x carbon.pue x carbon.intensity_g_per_kwh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub co2_g: Option<f64>,
    /// Joules per training sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub j_per_sample: Option<f64>,
}

/// `run.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `greentrain.run/1`.
    pub schema: String,
    /// Run name.
    pub name: String,
    /// Where the run stands (`docs/run-record.md` lists the states).
    pub status: crate::status::RunStatus,
    /// RFC 3339 UTC.
    pub started_at: String,
    /// RFC 3339 UTC, when finished.
    pub finished_at: Option<String>,
    /// The resolved config (what `config.toml` holds).
    pub config: crate::config::Config,
    /// The folder the config's relative paths resolve against (the
    /// original config file's), so that `reproduce` needs nothing else.
    #[serde(default)]
    pub config_dir: std::path::PathBuf,
    /// sha256 of the resolved `config.toml`.
    pub config_sha256: String,
    /// Seed.
    pub seed: u64,
    /// Software versions.
    pub versions: Versions,
    /// Device.
    pub device: DeviceRecord,
    /// The mode that ran: `fp32`, `fp16` or `bf16`.
    pub precision: greentrain_amp::Precision,
    /// What was asked for: `auto`, or the mode itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision_requested: Option<greentrain_amp::PrecisionChoice>,
    /// Dataset facts.
    pub dataset: DatasetRecord,
    /// Trainable parameters of the model (batch-norm running statistics
    /// are not parameters), so a record states the model's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<u64>,
    /// Per-epoch metrics.
    pub epochs: Vec<EpochRecord>,
    /// Totals, once at least one epoch finished.
    #[serde(rename = "final")]
    pub final_: Option<FinalRecord>,
    /// Error message when `status` is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How many times the run was resumed.
    #[serde(default)]
    pub resumed: u32,
    /// Changes made to the config by `resume --set`, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_changes: Vec<ConfigChange>,
    /// Energy, with provenance per component (absent when metering is off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy: Option<crate::energy::EnergyRecord>,
    /// Carbon: intensity, its source, PUE, emissions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carbon: Option<crate::energy::CarbonOut>,
    /// The carbon-aware plan followed, and when the run actually trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<crate::follow::ScheduleRecord>,
    /// Seconds from the start of training to the end of the first optimizer
    /// step on the device (kernel compilation and autotuning), summed over
    /// the run's processes. Counted in the first epoch's time and energy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_s: Option<f64>,
    /// With `train.target_accuracy`: whether and when it was met, and what
    /// reaching it cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetRecord>,
    /// A run of your own model (`own.rs`): the program that trains
    /// it, which `greentrain resume` runs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own: Option<OwnRecord>,
}

/// The program behind an own-model run, as it was started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OwnRecord {
    /// What the program calls its model (`OwnModel::name`).
    pub model: String,
    /// The executable (absolute).
    pub program: std::path::PathBuf,
    /// Its arguments, after the program's name.
    pub args: Vec<String>,
    /// The folder it ran in.
    pub cwd: std::path::PathBuf,
}

/// Energy to a target accuracy, the way MLPerf reports time to train.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetRecord {
    /// The accuracy asked for (absent for a loss target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// The loss asked for (`train.target_loss`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// What is compared with it: `val_accuracy` (or `val_loss`) when the
    /// run has a validation split, else `test_accuracy` (`test_loss`).
    pub metric: Metric,
    /// Whether some epoch met it.
    pub reached: bool,
    /// The first epoch that met it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<usize>,
    /// Training seconds up to the end of that epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_s: Option<f64>,
    /// The run's energy up to the end of that epoch (all windows), J.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_j: Option<f64>,
    /// Its emissions, gCO2eq.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub co2_g: Option<f64>,
    /// Provenance of `energy_j`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<greentrain_energy::Provenance>,
}

/// A figure of an epoch record, by the name records give it: what a
/// target is compared with and what a sweep maximises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Test accuracy.
    #[default]
    TestAccuracy,
    /// Validation accuracy (needs a validation split).
    ValAccuracy,
    /// Test loss (per token for next-token prediction).
    TestLoss,
    /// Validation loss.
    ValLoss,
}

impl Metric {
    /// The name in records and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::TestAccuracy => "test_accuracy",
            Metric::ValAccuracy => "val_accuracy",
            Metric::TestLoss => "test_loss",
            Metric::ValLoss => "val_loss",
        }
    }

    /// Whether higher is better (an accuracy) rather than lower (a loss).
    pub fn is_accuracy(self) -> bool {
        matches!(self, Metric::TestAccuracy | Metric::ValAccuracy)
    }

    /// Its value in `e` (None: a validation figure without that split).
    pub fn of(self, e: &EpochRecord) -> Option<f64> {
        match self {
            Metric::TestAccuracy => Some(e.test_accuracy),
            Metric::ValAccuracy => e.val_accuracy,
            Metric::TestLoss => Some(e.test_loss),
            Metric::ValLoss => e.val_loss,
        }
    }

    /// Whether `value` meets `goal`: at least it for an accuracy, at most
    /// it for a loss.
    pub fn meets(self, value: f64, goal: f64) -> bool {
        if self.is_accuracy() {
            value >= goal
        } else {
            value <= goal
        }
    }
}

/// A metric equals its recorded name.
impl PartialEq<&str> for Metric {
    fn eq(&self, name: &&str) -> bool {
        self.as_str() == *name
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Dataset facts in the record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetRecord {
    /// Name.
    pub name: String,
    /// Training samples (after the validation split).
    pub train_samples: usize,
    /// Validation samples.
    pub val_samples: usize,
    /// Test samples.
    pub test_samples: usize,
    /// Shape of one sample.
    pub sample_shape: Vec<usize>,
    /// Classes the output layer has (the largest training label + 1 for
    /// label files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_classes: Option<usize>,
    /// Labels that leave most of those classes unused (a stray label of 255
    /// makes 256 outputs): said here and when the run starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_warning: Option<String>,
    /// Class names in index order: a CSV's label names, CIFAR-10's
    /// classes, an image folder's subfolders, or the characters of `char`
    /// text tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_names: Option<Vec<String>>,
    /// Labels per sample, where more than one (next-token prediction:
    /// the context length; losses and accuracies are per token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets_per_sample: Option<usize>,
    /// Whether training batches are cropped and flipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment: Option<bool>,
    /// Images skipped as unreadable (`skip_bad`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_images: Option<usize>,
}

impl RunRecord {
    /// The record of a run that starts now: status `running`, nothing
    /// trained, the config it runs (`toml_text` is the run folder's
    /// `config.toml`, whose sha256 it keeps) and the precision asked for
    /// and resolved.
    pub fn started(
        config: &Config,
        config_dir: PathBuf,
        toml_text: &str,
        started: std::time::SystemTime,
        device: DeviceRecord,
        (precision, requested): (Precision, PrecisionChoice),
        dataset: DatasetRecord,
    ) -> Self {
        RunRecord {
            schema: SCHEMA.into(),
            name: config.run.name.clone(),
            status: RunStatus::Running,
            started_at: crate::files::rfc3339(started),
            finished_at: None,
            config: config.clone(),
            config_dir,
            config_sha256: crate::data::sha256_hex(toml_text.as_bytes()),
            seed: config.run.seed,
            versions: Versions::current(),
            device,
            precision,
            precision_requested: Some(requested),
            dataset,
            parameters: None,
            epochs: vec![],
            final_: None,
            error: None,
            resumed: 0,
            config_changes: vec![],
            energy: None,
            carbon: None,
            schedule: None,
            warmup_s: None,
            target: None,
            own: None,
        }
    }

    /// Reads `run.json` (the ledger writes it).
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        read_json(&dir.join("run.json"), "a greentrain run record")
    }
}

#[cfg(test)]
mod tests {
    /// Every finite f64 written to run.json reads back bit for bit.
    #[test]
    fn awkward_floats_round_trip_exactly() {
        let awkward = [
            0.9332591768631813,
            0.10096757714626253,
            0.1 + 0.2,
            1.0 / 3.0,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            -0.0,
            1.8351070556640625,
            123456789.12345679,
        ];
        for v in awkward {
            let json = serde_json::to_string(&v).unwrap();
            let back: f64 = serde_json::from_str(&json).unwrap();
            assert_eq!(back.to_bits(), v.to_bits(), "{v:e} written as {json}");
            // Through a record's value tree too, as read_json does.
            let tree: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(tree.as_f64().unwrap().to_bits(), v.to_bits(), "{json}");
        }
    }
}
