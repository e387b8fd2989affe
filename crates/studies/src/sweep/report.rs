//! `sweep.json`, its tables and its figure.

use super::pareto;
use super::search::rungs;
use super::spec::{AshaSection, Metric, Objective, Params, Strategy, Value};
use crate::plots::energy_unit;
use greentrain_energy::Provenance;
use greentrain_plot::{Figure, Lines, Panel, Scatter, Series};
use greentrain_trainer::files::write_atomic;
use greentrain_trainer::record::{sig, EpochRecord, RunRecord};
use greentrain_trainer::status::RunStatus;
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
    /// Test accuracy after the last epoch trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_accuracy: Option<f64>,
    /// Validation accuracy after the last epoch trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
    /// Training seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_s: Option<f64>,
}

impl Trial {
    /// The trial's value of an objective. `metric` is the sweep's accuracy
    /// metric: a record written before the accuracies had their own
    /// fields still has it as `metric`.
    pub fn value(&self, o: Objective, metric: Metric) -> Option<f64> {
        let own = |v: Option<f64>, m: Metric| v.or(self.metric.filter(|_| metric == m));
        match o {
            Objective::TestAccuracy => own(self.test_accuracy, Metric::TestAccuracy),
            Objective::ValAccuracy => own(self.val_accuracy, Metric::ValAccuracy),
            Objective::EnergyJ => self.energy_j,
            Objective::Co2G => self.co2_g,
            Objective::WallS => self.wall_s,
            Objective::EnergyToTarget => self.target_energy_j,
        }
    }

    /// Whether the trial trained to its end (every epoch, or to its target):
    /// only these can be best or on the Pareto front.
    pub fn finished(&self) -> bool {
        matches!(self.status, RunStatus::Completed | RunStatus::ReachedTarget)
    }
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
    /// The accuracy in the tables and ASHA's rungs.
    pub metric: Metric,
    /// What the sweep optimises, primary first.
    #[serde(default)]
    pub objectives: Vec<Objective>,
    /// Trials at once.
    pub parallel: usize,
    /// Every trial, by id.
    pub trials: Vec<Trial>,
    /// The best trial's id on the primary objective.
    pub best: Option<usize>,
    /// The finished trials no other finished trial dominates, best on the
    /// first objective first (with one objective: the best and its ties).
    #[serde(default)]
    pub pareto: Vec<usize>,
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

    /// The objective of the sweep's metric (sweeps maximise accuracies:
    /// test accuracy for any other name a crafted file may hold).
    fn primary(&self) -> Objective {
        Objective::of_metric(self.metric).unwrap_or(Objective::TestAccuracy)
    }

    /// The objectives, primary first (a record from before objectives
    /// existed: its metric).
    pub fn objectives(&self) -> Vec<Objective> {
        if self.objectives.is_empty() {
            vec![self.primary()]
        } else {
            self.objectives.clone()
        }
    }

    /// The finished trials' values of `objs`, for those that have them all.
    fn points(&self, objs: &[Objective]) -> Vec<(usize, Vec<f64>)> {
        self.trials
            .iter()
            .filter(|t| t.finished())
            .filter_map(|t| {
                let v: Option<Vec<f64>> = objs.iter().map(|&o| t.value(o, self.metric)).collect();
                v.map(|v| (t.id, v))
            })
            .collect()
    }

    /// The Markdown summary.
    pub fn markdown(&self) -> String {
        let objs = self.objectives();
        // Objectives the main table does not already show.
        let extra: Vec<Objective> = objs
            .iter()
            .copied()
            .filter(|o| {
                !matches!(o, Objective::EnergyJ | Objective::Co2G)
                    && o.metric() != Some(self.metric)
            })
            .collect();
        let extra_head: String = extra
            .iter()
            .map(|o| format!(" {} |", heading(*o)))
            .collect();
        let mut s = format!(
            "# Sweep {} ({}, {} trials, seed {})\n\n| trial | status | epochs | {} | energy (J) | gCO2eq |{extra_head} params |\n|---|---|---|---|---|---|{}---|\n",
            self.name,
            self.strategy,
            self.trials.len(),
            self.seed,
            self.metric,
            "---|".repeat(extra.len())
        );
        for t in &self.trials {
            let extra_cells: String = extra
                .iter()
                .map(|&o| format!(" {} |", cell(o, t.value(o, self.metric))))
                .collect();
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |{extra_cells} {} |\n",
                t.id,
                t.status,
                t.epochs,
                cell(self.primary(), t.metric),
                cell(Objective::EnergyJ, t.energy_j),
                cell(Objective::Co2G, t.co2_g),
                params_text(&t.params)
            ));
        }
        if objs.len() > 1 {
            s.push_str(&self.pareto_markdown(&objs));
        }
        s.push_str(&self.closing_markdown(objs[0]));
        s
    }

    /// The Pareto table.
    fn pareto_markdown(&self, objs: &[Objective]) -> String {
        let dir = |o: &Objective| {
            let better = if o.maximise() { "higher" } else { "lower" };
            format!("{o} ({better} is better)")
        };
        let names: Vec<String> = objs.iter().map(dir).collect();
        let mut s = format!(
            "\n## Pareto front: {}\n\nThe finished trials that no other finished trial beats on every objective, best {} first.\n\n| trial |{} params |\n|---|{}---|\n",
            names.join(" against "),
            objs[0],
            objs.iter().map(|o| format!(" {} |", heading(*o))).collect::<String>(),
            "---|".repeat(objs.len())
        );
        for id in &self.pareto {
            let Some(t) = self.trials.iter().find(|t| t.id == *id) else {
                continue;
            };
            let cells: String = objs
                .iter()
                .map(|&o| format!(" {} |", cell(o, t.value(o, self.metric))))
                .collect();
            s.push_str(&format!(
                "| {} |{cells} {} |\n",
                t.id,
                params_text(&t.params)
            ));
        }
        if self.pareto.is_empty() {
            s.push_str("\nNo finished trial has a value for every objective yet.\n");
        }
        s
    }

    /// The best trial, the sweep's energy, ASHA's saving and the notes.
    fn closing_markdown(&self, primary: Objective) -> String {
        let mut s = String::new();
        let prov = self
            .provenance
            .map_or_else(|| "not metered".to_string(), |p| p.to_string());
        match self
            .best
            .and_then(|b| self.trials.iter().find(|t| t.id == b))
        {
            Some(b) => s.push_str(&format!(
                "\nBest: trial {} with {primary} {} ({}), run {}.\n",
                b.id,
                cell(primary, b.value(primary, self.metric)),
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
                "ASHA (rungs at epochs {:?}, on {}) pruned {} trial(s), saving {} epochs and about {} kWh (estimated from each pruned trial's own J/epoch).\n",
                a.rungs,
                self.metric,
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
            "trial,status,epochs,{},energy_j,co2_g,provenance,run_dir,test_accuracy,val_accuracy,wall_s,energy_to_target_j,pareto,{}\n",
            self.metric,
            keys.iter().map(|k| q(k)).collect::<Vec<_>>().join(",")
        );
        for t in &self.trials {
            let o = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
            s.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
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
                o(t.test_accuracy),
                o(t.val_accuracy),
                o(t.wall_s),
                o(t.target_energy_j),
                self.pareto.contains(&t.id),
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
            let mut fig = sweep_figure(&[self]);
            if let Some(p) = self.pareto_panel() {
                fig.panels.push(p);
            }
            crate::plots::write_figure(&fig, dir, "sweep")?;
        }
        Ok(())
    }
}

/// A table heading for an objective, with its unit.
fn heading(o: Objective) -> &'static str {
    match o {
        Objective::TestAccuracy => "test_accuracy",
        Objective::ValAccuracy => "val_accuracy",
        Objective::EnergyJ => "energy (J)",
        Objective::Co2G => "gCO2eq",
        Objective::WallS => "training (s)",
        Objective::EnergyToTarget => "energy to target (J)",
    }
}

/// A table cell: accuracies in percent, the rest to 4 significant figures.
fn cell(o: Objective, v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if o.maximise() => format!("{:.2}%", 100.0 * x),
        Some(x) => sig(x),
    }
}

impl SweepReport {
    /// The finished trials on the first two objectives, the front joined:
    /// `None` with fewer than two objectives.
    fn pareto_panel(&self) -> Option<Panel> {
        let objs = self.objectives();
        let [a, b] = [*objs.first()?, *objs.get(1)?];
        let pts = self.points(&[a, b]);
        // Energy on x reads like the other panels: cost across, result up.
        let (x, y) = if a.maximise() && !b.maximise() {
            (b, a)
        } else {
            (a, b)
        };
        let scale = |o: Objective| if o.maximise() { 100.0 } else { 1.0 };
        let xy = |v: &[f64]| {
            let (vx, vy) = if (x, y) == (a, b) {
                (v[0], v[1])
            } else {
                (v[1], v[0])
            };
            (vx * scale(x), vy * scale(y))
        };
        let mut front: Vec<(f64, f64)> = self
            .pareto
            .iter()
            .filter_map(|id| pts.iter().find(|p| p.0 == *id))
            .map(|p| xy(&p.1))
            .collect();
        front.sort_by(|p, q| p.0.total_cmp(&q.0));
        let label = |o: Objective| {
            if o.maximise() {
                format!("{} (%)", o.as_str().replace('_', " "))
            } else {
                heading(o).to_string()
            }
        };
        Some(Panel::Scatter(Scatter {
            title: "Pareto front of the finished trials".into(),
            x_label: label(x),
            y_label: label(y),
            points: Series {
                label: format!("{} finished trials", pts.len()),
                points: pts.iter().map(|p| xy(&p.1)).collect(),
            },
            marked: Series {
                label: format!("Pareto front ({})", front.len()),
                points: front,
            },
        }))
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
    r.provenance = greentrain_trainer::energy::weakest_provenance(
        r.trials.iter().filter_map(|t| t.provenance),
    );
    let objs = r.objectives();
    // Best on the primary objective alone (a trial missing another
    // objective's value can still be best); ties go to the lower id.
    r.best = pareto::front(&r.points(&objs[..1]), &[objs[0].maximise()])
        .first()
        .copied();
    let maximise: Vec<bool> = objs.iter().map(|o| o.maximise()).collect();
    r.pareto = pareto::front(&r.points(&objs), &maximise);
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
    metric.of(e)
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
