//! `greentrain reproduce RUN_DIR`: re-run a recorded run from its own
//! `run.json` and compare every recorded metric side by side.

use greentrain_trainer::config::{self, LoadedConfig};
use greentrain_trainer::device::DeviceSpec;
use greentrain_trainer::record::{EpochRecord, RunRecord};
use greentrain_trainer::train::{train, Failure, Outcome, TrainRequest};
use std::path::{Path, PathBuf};

/// How closely metrics must agree.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tolerance {
    /// Bit-identical (the CPU backend is deterministic).
    Exact,
    /// GPU kernels may reduce in a different order from run to run:
    /// accuracies within 0.5 points, losses within 2% (relative).
    Gpu,
}

impl Tolerance {
    /// The rule, in words, for the printed comparison.
    pub fn describe(&self) -> &'static str {
        match self {
            Tolerance::Exact => "exact (CPU backend)",
            Tolerance::Gpu => {
                "accuracy within 0.005, losses within 2% (GPU kernels are not bit-reproducible); \
                 loss_scale and skipped_steps not compared (they follow the run's rounding)"
            }
        }
    }

    fn same(&self, kind: Kind, a: f64, b: f64) -> bool {
        match (self, kind) {
            (Tolerance::Exact, _) => a.to_bits() == b.to_bits() || a == b,
            (Tolerance::Gpu, Kind::Accuracy) => (a - b).abs() <= 0.005,
            (Tolerance::Gpu, Kind::Loss) => (a - b).abs() <= 0.02 * a.abs().max(b.abs()).max(1e-12),
            (Tolerance::Gpu, Kind::Count) => a == b,
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Accuracy,
    Loss,
    Count,
}

/// One compared value.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// e.g. `epoch 3 test_accuracy`.
    pub metric: String,
    /// As recorded.
    pub recorded: f64,
    /// As reproduced.
    pub reproduced: f64,
    /// Within the tolerance.
    pub matches: bool,
}

/// Compares the metrics of two runs' epochs.
pub fn compare(a: &[EpochRecord], b: &[EpochRecord], tol: Tolerance) -> Vec<Comparison> {
    let mut out = Vec::new();
    if a.len() != b.len() {
        out.push(Comparison {
            metric: "epochs".into(),
            recorded: a.len() as f64,
            reproduced: b.len() as f64,
            matches: false,
        });
    }
    for (x, y) in a.iter().zip(b) {
        let mut rows: Vec<(&str, Kind, f64, f64)> = vec![
            ("train_loss", Kind::Loss, x.train_loss, y.train_loss),
            ("test_loss", Kind::Loss, x.test_loss, y.test_loss),
            (
                "test_accuracy",
                Kind::Accuracy,
                x.test_accuracy,
                y.test_accuracy,
            ),
            ("loss_scale", Kind::Count, x.loss_scale, y.loss_scale),
            (
                "skipped_steps",
                Kind::Count,
                x.skipped_steps as f64,
                y.skipped_steps as f64,
            ),
        ];
        // Records from before training accuracy was kept have none to compare.
        if let (Some(r), Some(p)) = (x.train_accuracy, y.train_accuracy) {
            rows.insert(1, ("train_accuracy", Kind::Accuracy, r, p));
        }
        for (name, kind, r, p) in rows {
            // Listed as matching, a value never compared would claim
            // agreement nobody checked: leave it out.
            if matches!((tol, kind), (Tolerance::Gpu, Kind::Count)) {
                continue;
            }
            out.push(Comparison {
                metric: format!("epoch {} {name}", x.epoch),
                recorded: r,
                reproduced: p,
                matches: tol.same(kind, r, p),
            });
        }
    }
    out
}

/// Re-runs `run_dir`'s recorded config and compares. Returns the new run
/// and the comparisons.
pub fn reproduce(
    run_dir: &Path,
    device: Option<DeviceSpec>,
    out_dir: &Path,
    quiet: bool,
) -> Result<(Outcome, Vec<Comparison>, Tolerance), Failure> {
    let usage = |e: anyhow::Error| Failure::Usage(e);
    let recorded = RunRecord::load(run_dir).map_err(usage)?;
    if recorded.status != greentrain_trainer::status::RunStatus::Completed {
        return Err(Failure::Usage(anyhow::anyhow!(
            "{} has status {}: only completed runs can be reproduced",
            run_dir.display(),
            recorded.status
        )));
    }
    let config = recorded.config.clone();
    config::validate(&config).map_err(|(k, m)| {
        usage(anyhow::anyhow!(
            "{}: recorded config key `{k}`: {m}",
            run_dir.display()
        ))
    })?;
    let spec = match device {
        Some(d) => d,
        None => recorded
            .device
            .spec
            .parse()
            .map_err(|e: String| usage(anyhow::anyhow!(e)))?,
    };
    // Relative paths in the config resolve against the run's original
    // config folder, recorded in run.json (before 2026-11-28: only in the
    // checkpoint).
    let config_dir = if recorded.config_dir.as_os_str().is_empty() {
        greentrain_trainer::checkpoint::Checkpoint::load(run_dir)
            .map(|c| c.state.config_dir)
            .unwrap_or_else(|_| run_dir.to_path_buf())
    } else {
        recorded.config_dir.clone()
    };
    let loaded = LoadedConfig {
        config,
        path: config_dir.join("reproduced.toml"),
    };
    let outcome = train(TrainRequest {
        config: loaded,
        device: spec,
        out_dir: out_dir.to_path_buf(),
        quiet,
    })?;
    let tol = if spec == DeviceSpec::Cpu && recorded.device.backend == "flex" {
        Tolerance::Exact
    } else {
        Tolerance::Gpu
    };
    let cmp = compare(&recorded.epochs, &outcome.record.epochs, tol);
    Ok((outcome, cmp, tol))
}

/// The side-by-side table.
pub fn table(cmp: &[Comparison]) -> String {
    let mut s = format!(
        "{:28} {:>22} {:>22}  match\n",
        "metric", "recorded", "reproduced"
    );
    for c in cmp {
        s.push_str(&format!(
            "{:28} {:>22} {:>22}  {}\n",
            c.metric,
            c.recorded,
            c.reproduced,
            if c.matches { "yes" } else { "NO" }
        ));
    }
    s
}

/// Default output folder for reproductions.
pub fn default_out() -> PathBuf {
    PathBuf::from("runs")
}
