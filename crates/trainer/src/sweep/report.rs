//! `sweep.json`, its tables and its figure.

use super::search::rungs;
use super::spec::{AshaSection, Metric, Params, Strategy, Value};
use crate::files::write_atomic;
use crate::plots::energy_unit;
use crate::record::{sig, EpochRecord, RunRecord};
use crate::status::RunStatus;
use greentrain_energy::Provenance;
use greentrain_plot::{Figure, Lines, Panel, Series};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One trial in `sweep.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// 0-based id.
    pub id: usize,
    /// The sampled values.
    pub params: Params,
    /// `running`, `completed`, `pruned`, `diverged`, `failed`,
    /// `interrupted` or `stopped_budget`.
    pub status: RunStatus,
    /// Run directory.
    pub run_dir: Option<PathBuf>,
    /// Metric at the end (for pruned trials: at the rung where they stopped).
    pub metric: Option<f64>,
    /// Epochs trained.
    pub epochs: usize,
    /// Energy of the run, J.
    pub energy_j: Option<f64>,
    /// gCO2eq of the run.
    pub co2_g: Option<f64>,
    /// Provenance of the energy.
    pub provenance: Option<Provenance>,
    /// Error, for failed trials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// With `train.target_accuracy`: energy up to the epoch that met it, J.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_energy_j: Option<f64>,
}

/// What ASHA saved: the epochs pruned trials did not train, and their
/// energy estimated from each pruned trial's own joules per epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AshaSummary {
    /// Rung epochs.
    pub rungs: Vec<usize>,
    /// Trials pruned.
    pub pruned: usize,
    /// Epochs not trained.
    pub epochs_saved: usize,
    /// Estimated joules not spent (pruned trial's J/epoch x epochs saved).
    pub energy_saved_j: f64,
}

/// `sweep.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    /// `greentrain.sweep/1`.
    pub schema: String,
    /// Sweep name.
    pub name: String,
    /// Sweep file.
    pub file: PathBuf,
    /// Its sha256.
    pub file_sha256: String,
    /// Strategy.
    pub strategy: Strategy,
    /// Search seed.
    pub seed: u64,
    /// Metric maximised.
    pub metric: Metric,
    /// Trials at once.
    pub parallel: usize,
    /// Every trial, by id.
    pub trials: Vec<Trial>,
    /// The best trial's id.
    pub best: Option<usize>,
    /// Sum of the trials' energy, J.
    pub total_energy_j: f64,
    /// Sum of the trials' gCO2eq.
    pub total_co2_g: f64,
    /// Weakest provenance among the trials.
    pub provenance: Option<Provenance>,
    /// ASHA's saving.
    pub asha: Option<AshaSummary>,
    /// Why the sweep stopped early, if it did.
    pub stopped: Option<String>,
    /// Caveats about the energy figures.
    pub notes: Vec<String>,
}

impl SweepReport {
    /// Trials in the order they finished counting (by id), with the
    /// best-so-far metric and cumulative energy and CO2.
    pub fn curve(&self) -> Vec<(f64, f64, f64)> {
        let mut best = f64::NEG_INFINITY;
        let (mut j, mut g) = (0.0, 0.0);
        let mut out = vec![];
        for t in &self.trials {
            j += t.energy_j.unwrap_or(0.0);
            g += t.co2_g.unwrap_or(0.0);
            if let Some(m) = t.metric {
                best = best.max(m);
            }
            if best.is_finite() {
                out.push((j, g, best));
            }
        }
        out
    }

    /// The Markdown summary.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "# Sweep {} ({}, {} trials, seed {})\n\n| trial | status | epochs | {} | energy (J) | gCO2eq | params |\n|---|---|---|---|---|---|---|\n",
            self.name,
            self.strategy,
            self.trials.len(),
            self.seed,
            self.metric
        );
        for t in &self.trials {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                t.id,
                t.status,
                t.epochs,
                t.metric
                    .map(|m| format!("{:.2}%", 100.0 * m))
                    .unwrap_or_else(|| "-".into()),
                t.energy_j.map(sig).unwrap_or_else(|| "-".into()),
                t.co2_g.map(sig).unwrap_or_else(|| "-".into()),
                params_text(&t.params)
            ));
        }
        let prov = self
            .provenance
            .map_or_else(|| "not metered".to_string(), |p| p.to_string());
        match self
            .best
            .and_then(|b| self.trials.iter().find(|t| t.id == b))
        {
            Some(b) => s.push_str(&format!(
                "\nBest: trial {} with {} {:.2}% ({}), run {}.\n",
                b.id,
                self.metric,
                100.0 * b.metric.unwrap_or(0.0),
                params_text(&b.params),
                b.run_dir
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )),
            None => s.push_str("\nNo trial finished.\n"),
        }
        s.push_str(&format!(
            "The sweep used {} kWh ({prov}) and emitted {} gCO2eq.\n",
            sig(self.total_energy_j / 3.6e6),
            sig(self.total_co2_g)
        ));
        if let Some(a) = &self.asha {
            s.push_str(&format!(
                "ASHA (rungs at epochs {:?}) pruned {} trial(s), saving {} epochs and about {} kWh (estimated from each pruned trial's own J/epoch).\n",
                a.rungs,
                a.pruned,
                a.epochs_saved,
                sig(a.energy_saved_j / 3.6e6)
            ));
        }
        if let Some(w) = &self.stopped {
            s.push_str(&format!("Stopped early: {w}.\n"));
        }
        for n in &self.notes {
            s.push_str(&format!("Note: {n}\n"));
        }
        s
    }

    /// `sweep.csv`: one row per trial.
    pub fn csv(&self) -> String {
        let keys: Vec<String> = self
            .trials
            .iter()
            .flat_map(|t| t.params.keys().cloned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let mut s = format!(
            "trial,status,epochs,{},energy_j,co2_g,provenance,run_dir,{}\n",
            self.metric,
            keys.iter().map(|k| q(k)).collect::<Vec<_>>().join(",")
        );
        for t in &self.trials {
            let o = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
            s.push_str(&format!(
                "{},{},{},{},{},{},{},{},{}\n",
                t.id,
                t.status,
                t.epochs,
                o(t.metric),
                o(t.energy_j),
                o(t.co2_g),
                t.provenance.map(|p| p.to_string()).unwrap_or_default(),
                q(&t.run_dir
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()),
                keys.iter()
                    .map(|k| q(&t.params.get(k).map(Value::toml).unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
        s
    }

    /// Writes sweep.json, sweep.csv, sweep.md and the plot.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        write_atomic(
            &dir.join("sweep.json"),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )?;
        write_atomic(&dir.join("sweep.csv"), self.csv().as_bytes())?;
        write_atomic(&dir.join("sweep.md"), self.markdown().as_bytes())?;
        if !self.curve().is_empty() {
            crate::plots::write_figure(&sweep_figure(&[self]), dir, "sweep")?;
        }
        Ok(())
    }
}

pub(super) fn params_text(p: &Params) -> String {
    p.iter()
        .map(|(k, v)| format!("{k}={}", v.toml()))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn summarise(r: &mut SweepReport, asha: Option<&AshaSection>, epochs: usize) {
    r.total_energy_j = r.trials.iter().filter_map(|t| t.energy_j).sum();
    r.total_co2_g = r.trials.iter().filter_map(|t| t.co2_g).sum();
    r.provenance = crate::energy::weakest_provenance(r.trials.iter().filter_map(|t| t.provenance));
    r.best = r
        .trials
        .iter()
        .filter(|t| t.metric.is_some() && t.status == RunStatus::Completed)
        .max_by(|a, b| {
            a.metric
                .partial_cmp(&b.metric)
                .unwrap()
                .then(b.id.cmp(&a.id))
        })
        .map(|t| t.id);
    if let Some(a) = asha {
        let pruned: Vec<&Trial> = r
            .trials
            .iter()
            .filter(|t| t.status == RunStatus::Pruned)
            .collect();
        r.asha = Some(AshaSummary {
            rungs: rungs(a, epochs),
            pruned: pruned.len(),
            epochs_saved: pruned.iter().map(|t| epochs - t.epochs).sum(),
            energy_saved_j: pruned
                .iter()
                .filter_map(|t| {
                    t.energy_j
                        .map(|j| j / t.epochs.max(1) as f64 * (epochs - t.epochs) as f64)
                })
                .sum(),
        });
    }
}

pub(super) fn metric_of(e: &EpochRecord, metric: Metric) -> Option<f64> {
    if metric == Metric::ValAccuracy {
        e.val_accuracy
    } else {
        Some(e.test_accuracy)
    }
}

pub(super) fn epoch_metric(r: &RunRecord, metric: Metric) -> Option<f64> {
    metric_of(r.epochs.last()?, metric)
}

/// Best metric so far against the sweep's cumulative energy and CO2, one
/// staircase per sweep (several sweeps: one line per strategy).
pub fn sweep_figure(sweeps: &[&SweepReport]) -> Figure {
    let max_j = sweeps
        .iter()
        .filter_map(|s| s.curve().last().map(|c| c.0))
        .fold(0.0, f64::max);
    let (unit, per) = energy_unit(max_j);
    let label = |s: &SweepReport| format!("{} ({})", s.name, s.strategy);
    let metric = sweeps
        .first()
        .map(|s| s.metric.as_str().replace('_', " "))
        .unwrap_or_default();
    let provs: BTreeSet<String> = sweeps
        .iter()
        .filter_map(|s| s.provenance.map(|p| p.to_string()))
        .collect();
    Figure {
        title: "Best result so far against the sweep's energy and emissions".into(),
        panels: vec![
            Panel::Lines(Lines {
                title: "against energy".into(),
                x_label: format!("cumulative energy ({unit})"),
                y_label: format!("best {metric} (%)"),
                series: sweeps
                    .iter()
                    .map(|s| Series {
                        label: label(s),
                        points: s.curve().iter().map(|c| (c.0 / per, 100.0 * c.2)).collect(),
                    })
                    .collect(),
                step: true,
            }),
            Panel::Lines(Lines {
                title: "against emissions".into(),
                x_label: "cumulative emissions (gCO2eq)".into(),
                y_label: format!("best {metric} (%)"),
                series: sweeps
                    .iter()
                    .map(|s| Series {
                        label: label(s),
                        points: s.curve().iter().map(|c| (c.1, 100.0 * c.2)).collect(),
                    })
                    .collect(),
                step: true,
            }),
        ],
        note: Some(if provs.is_empty() {
            "energy not metered".into()
        } else {
            format!(
                "one step per finished trial; energy: {}",
                provs.into_iter().collect::<Vec<_>>().join(", ")
            )
        }),
    }
}
