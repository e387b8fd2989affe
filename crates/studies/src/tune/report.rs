//! The tune's records: one per run, a summary per setting, the choice and
//! its saving, and the files (`tune.json`, `tune.md`, `tune.csv`, the
//! figure and `chosen.toml`).

use super::{Setting, TuneRequest};
use crate::stats::{paired_log_ratio, summary, Ratio, Summary};
use greentrain_amp::{Precision, PrecisionChoice};
use greentrain_energy::Provenance;
use greentrain_plot::{Bar, Bars, Figure, Panel};
use greentrain_trainer::config::Override;
use greentrain_trainer::files::write_atomic;
use greentrain_trainer::record::sig;
use greentrain_trainer::status::RunStatus;
use greentrain_trainer::summary::RunSummary;
use greentrain_trainer::train::{Failure, Outcome};
use greentrain_trainer::LoadedConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One run of one setting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TuneRun {
    /// Training batch size.
    pub batch_size: usize,
    /// Precision that ran.
    pub precision: Precision,
    /// Training seed.
    pub seed: u64,
    /// How it ended: `reached_target`, or `completed` at the epoch limit
    /// without reaching it, `diverged`, `stopped_budget`, `failed`, ...
    pub status: RunStatus,
    /// Run directory.
    pub run_dir: Option<PathBuf>,
    /// Epochs trained.
    pub epochs: usize,
    /// Whether the target was met.
    pub reached: bool,
    /// The first epoch that met it.
    pub target_epoch: Option<usize>,
    /// Energy up to the end of that epoch, J.
    pub energy_to_target_j: Option<f64>,
    /// Training seconds up to then.
    pub wall_to_target_s: Option<f64>,
    /// Energy of the whole run, J (what an unreached run spent).
    pub energy_j: Option<f64>,
    /// Provenance of the energy.
    pub provenance: Option<Provenance>,
    /// The accuracy compared with the target, after the last epoch.
    pub accuracy: Option<f64>,
    /// Error, for failed runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TuneRun {
    pub(super) fn from_outcome(s: Setting, seed: u64, outcome: Result<Outcome, Failure>) -> Self {
        let mut run = TuneRun {
            batch_size: s.batch_size,
            precision: s.precision,
            seed,
            status: RunStatus::Failed,
            run_dir: None,
            epochs: 0,
            reached: false,
            target_epoch: None,
            energy_to_target_j: None,
            wall_to_target_s: None,
            energy_j: None,
            provenance: None,
            accuracy: None,
            error: None,
        };
        let sum = RunSummary::of(&outcome);
        let t = sum.reached.as_ref();
        run.status = sum.status;
        run.run_dir = sum.run_dir.clone();
        run.epochs = sum.epochs;
        run.reached = t.is_some();
        run.target_epoch = t.and_then(|t| t.epoch);
        run.energy_to_target_j = t.and_then(|t| t.energy_j);
        run.wall_to_target_s = t.and_then(|t| t.wall_s);
        run.energy_j = sum.energy_j;
        run.provenance = sum.provenance;
        run.accuracy = sum.val_accuracy().or(sum.test_accuracy());
        run.error = sum.error;
        run
    }

    fn setting(&self) -> Setting {
        Setting {
            batch_size: self.batch_size,
            precision: self.precision,
        }
    }

    /// One progress line.
    pub fn line(&self) -> String {
        match (self.reached, &self.error) {
            (true, _) => format!(
                "reached the target at epoch {} with {} J",
                self.target_epoch.unwrap_or(0),
                self.energy_to_target_j
                    .map(sig)
                    .unwrap_or_else(|| "-".into())
            ),
            (false, Some(e)) => format!("failed: {e}"),
            (false, None) => format!(
                "{} after {} epoch(s) without reaching the target ({} J)",
                self.status,
                self.epochs,
                self.energy_j.map(sig).unwrap_or_else(|| "-".into())
            ),
        }
    }
}

/// One setting's summary over its runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SettingSummary {
    /// Training batch size.
    pub batch_size: usize,
    /// Precision.
    pub precision: Precision,
    /// The config's own setting, which the saving is measured against.
    pub baseline: bool,
    /// Runs made.
    pub runs: usize,
    /// Runs that reached the target.
    pub reached: usize,
    /// Joules to the target over the runs that reached it.
    pub energy_to_target_j: Option<Summary>,
    /// Epochs to the target over the same runs.
    pub epochs_to_target: Option<Summary>,
    /// Training seconds to the target over the same runs.
    pub wall_to_target_s: Option<Summary>,
    /// Joules to the target against the baseline's, paired by seed (pairs
    /// where both reached it): the geometric mean of the per-seed ratios,
    /// with a 95% interval (on the log scale) from two pairs on.
    pub ratio: Option<Ratio>,
}

impl SettingSummary {
    fn label(&self) -> String {
        format!("batch {} {}", self.batch_size, self.precision)
    }

    fn setting(&self) -> Setting {
        Setting {
            batch_size: self.batch_size,
            precision: self.precision,
        }
    }
}

/// The chosen setting against the config's own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Saving {
    /// The chosen setting.
    pub chosen: String,
    /// The config's own.
    pub baseline: String,
    /// Chosen joules-to-target over the baseline's, per seed.
    pub ratio: Ratio,
    /// Energy saved, percent: `100 x (1 - ratio)`.
    pub saved_percent: f64,
    /// Provenance of the joules (the weakest of the runs').
    pub provenance: Option<Provenance>,
}

/// A precision the device refused: reported, not hidden.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Refused {
    /// What was asked for.
    pub precision: String,
    /// Why it cannot run here.
    pub reason: String,
}

/// `tune.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TuneReport {
    /// `greentrain.tune/1`.
    pub schema: String,
    /// The config's run name.
    pub name: String,
    /// The config file.
    pub config: PathBuf,
    /// Its sha256.
    pub config_sha256: String,
    /// `--device`.
    pub device: String,
    /// The accuracy to reach.
    pub target_accuracy: f64,
    /// What is compared with it (`val_accuracy` or `test_accuracy`).
    pub metric: Option<String>,
    /// Epoch limit per run.
    pub max_epochs: usize,
    /// Seeds, one run per setting each.
    pub seeds: Vec<u64>,
    /// Precisions the device refused.
    pub refused: Vec<Refused>,
    /// Every setting, the baseline first.
    pub settings: Vec<SettingSummary>,
    /// Every run, in the order they ran.
    pub runs: Vec<TuneRun>,
    /// Index in `settings` of the chosen one.
    pub chosen: Option<usize>,
    /// The chosen setting against the baseline.
    pub saving: Option<Saving>,
    /// Energy of every run, J.
    pub total_energy_j: f64,
    /// Weakest provenance among the runs.
    pub provenance: Option<Provenance>,
    /// Why the tune stopped early, if it did.
    pub stopped: Option<String>,
    /// Caveats.
    pub notes: Vec<String>,
    /// `chosen.toml`'s text, written with the other files.
    #[serde(skip)]
    pub chosen_toml: Option<String>,
}

impl TuneReport {
    pub(super) fn new(
        req: &TuneRequest,
        src: &str,
        base: &LoadedConfig,
        settings: &[Setting],
        refused: &[(PrecisionChoice, String)],
    ) -> Self {
        TuneReport {
            schema: "greentrain.tune/1".into(),
            name: base.config.run.name.clone(),
            config: req.config_path.clone(),
            config_sha256: greentrain_trainer::data::sha256_hex(src.as_bytes()),
            device: req.device.to_string(),
            target_accuracy: req.target_accuracy,
            metric: None,
            max_epochs: req.max_epochs.unwrap_or(base.config.train.epochs),
            seeds: (0..req.repeats as u64)
                .map(|r| base.config.run.seed + r)
                .collect(),
            refused: refused
                .iter()
                .map(|(p, why)| Refused {
                    precision: p.to_string(),
                    reason: why.clone(),
                })
                .collect(),
            settings: settings
                .iter()
                .enumerate()
                .map(|(i, s)| SettingSummary {
                    batch_size: s.batch_size,
                    precision: s.precision,
                    baseline: i == 0,
                    runs: 0,
                    reached: 0,
                    energy_to_target_j: None,
                    epochs_to_target: None,
                    wall_to_target_s: None,
                    ratio: None,
                })
                .collect(),
            runs: vec![],
            chosen: None,
            saving: None,
            total_energy_j: 0.0,
            provenance: None,
            stopped: None,
            notes: vec![],
            chosen_toml: None,
        }
    }

    /// Why no more runs start, if the budget says so.
    pub(super) fn budget_reached(&self, max_kwh: Option<f64>) -> Option<String> {
        max_kwh
            .filter(|&k| self.total_energy_j / 3.6e6 >= k)
            .map(|k| format!("energy budget of {k} kWh reached"))
    }

    /// Adds a run (with the metric its target was checked on) and updates
    /// the summaries.
    pub(super) fn add(&mut self, run: TuneRun, metric: Option<String>) {
        if self.metric.is_none() {
            self.metric = metric;
        }
        self.runs.push(run);
        self.summarise();
    }

    fn summarise(&mut self) {
        self.total_energy_j = self.runs.iter().filter_map(|r| r.energy_j).sum();
        self.provenance = greentrain_trainer::energy::weakest_provenance(
            self.runs.iter().filter_map(|r| r.provenance),
        );
        let base = self.settings[0].setting();
        let joules = |s: Setting, seed: u64| {
            self.runs
                .iter()
                .find(|r| r.setting() == s && r.seed == seed)
                .and_then(|r| r.energy_to_target_j.filter(|_| r.reached))
        };
        let mut out = self.settings.clone();
        for st in &mut out {
            let runs: Vec<&TuneRun> = self
                .runs
                .iter()
                .filter(|r| r.setting() == st.setting())
                .collect();
            let reached: Vec<&&TuneRun> = runs.iter().filter(|r| r.reached).collect();
            let sum_of = |f: &dyn Fn(&TuneRun) -> Option<f64>| {
                let v: Vec<f64> = reached.iter().filter_map(|r| f(r)).collect();
                (!v.is_empty()).then(|| summary(&v))
            };
            st.runs = runs.len();
            st.reached = reached.len();
            st.energy_to_target_j = sum_of(&|r| r.energy_to_target_j);
            st.epochs_to_target = sum_of(&|r| r.target_epoch.map(|e| e as f64));
            st.wall_to_target_s = sum_of(&|r| r.wall_to_target_s);
            let pairs: Vec<(f64, f64)> = self
                .seeds
                .iter()
                .filter_map(|&seed| Some((joules(st.setting(), seed)?, joules(base, seed)?)))
                .collect();
            st.ratio = (!pairs.is_empty()).then(|| {
                let (a, b): (Vec<f64>, Vec<f64>) = pairs.into_iter().unzip();
                paired_log_ratio(&a, &b)
            });
        }
        self.settings = out;
    }

    /// The choice: the lowest mean joules-to-target among the settings that
    /// reached the target in every repeat; its saving; `chosen.toml`.
    pub(super) fn finish(&mut self, src: &str, base: &LoadedConfig, req: &TuneRequest) {
        self.summarise();
        let full = self.seeds.len();
        self.chosen = self
            .settings
            .iter()
            .enumerate()
            .filter(|(_, s)| s.runs == full && s.reached == full)
            .filter_map(|(i, s)| s.energy_to_target_j.map(|e| (i, e.mean)))
            .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
            .map(|(i, _)| i);
        let Some(c) = self.chosen else {
            return;
        };
        let chosen = &self.settings[c];
        if let Some(ratio) = chosen.ratio {
            self.saving = Some(Saving {
                chosen: chosen.label(),
                baseline: self.settings[0].label(),
                ratio,
                saved_percent: 100.0 * (1.0 - ratio.mean),
                provenance: self.provenance,
            });
        } else {
            self.notes.push(
                "the config's own setting never reached the target, so there is no saving to state"
                    .into(),
            );
        }
        if self.settings.len() > 1 && full > 0 {
            self.notes.push(format!(
                "the choice and its saving come from the same {full} seed(s): picking the lowest of {} settings favours the chosen one (selection bias); rerun both with other seeds (--set run.seed=...) to confirm",
                self.settings.len()
            ));
        }
        let header = format!(
            "# Written by `greentrain tune` from {}: the batch size and precision that\n# reached {} {} on the fewest joules (mean over seeds {:?}; see tune.md).\n",
            req.config_path.display(),
            self.metric.as_deref().unwrap_or("accuracy"),
            self.target_accuracy,
            self.seeds
        );
        match chosen_config(src, base, req, chosen.setting()) {
            Ok(text) => self.chosen_toml = Some(header + &text),
            Err(e) => self
                .notes
                .push(format!("chosen.toml could not be written: {e:#}")),
        }
    }

    /// Writes tune.json, tune.md, tune.csv, the figure and chosen.toml.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        write_atomic(
            &dir.join("tune.json"),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )?;
        write_atomic(&dir.join("tune.md"), self.markdown().as_bytes())?;
        write_atomic(&dir.join("tune.csv"), self.csv().as_bytes())?;
        if let Some(t) = &self.chosen_toml {
            write_atomic(&dir.join("chosen.toml"), t.as_bytes())?;
        }
        if self.settings.iter().any(|s| s.energy_to_target_j.is_some()) {
            crate::plots::write_figure(&self.figure(), dir, "tune")?;
        }
        Ok(())
    }

    /// Joules to the target per setting, mean with the sd as error bar.
    fn figure(&self) -> Figure {
        let bars = self
            .settings
            .iter()
            .filter_map(|s| {
                let e = s.energy_to_target_j?;
                Some(Bar {
                    label: format!("{} {}", s.batch_size, s.precision),
                    value: e.mean,
                    error: (e.n > 1).then_some(e.sd),
                    text: sig(e.mean),
                })
            })
            .collect();
        Figure {
            title: format!(
                "Energy to {} {}",
                self.metric.as_deref().unwrap_or("accuracy"),
                self.target_accuracy
            ),
            panels: vec![Panel::Bars(Bars {
                title: "per setting (batch size, precision)".into(),
                y_label: "energy to target (J)".into(),
                bars,
            })],
            note: Some(format!(
                "mean over the runs that reached the target (error bar: sd); energy: {}",
                self.provenance
                    .map_or_else(|| "not metered".to_string(), |p| p.to_string())
            )),
        }
    }
}

/// The base config's own text (comments kept) with the chosen setting, the
/// `--set` overrides and the target; relative paths made absolute, since
/// the file lives in the tune's folder.
fn chosen_config(
    src: &str,
    base: &LoadedConfig,
    req: &TuneRequest,
    s: Setting,
) -> anyhow::Result<String> {
    let mut doc: toml_edit::DocumentMut = src.parse()?;
    let mut set = |o: &Override| -> anyhow::Result<()> {
        let v: toml_edit::Value = o.value.to_string().parse()?;
        let mut parts = o.key.split('.').collect::<Vec<_>>();
        let last = parts.pop().unwrap_or_default();
        let mut item = doc.as_item_mut();
        for p in parts {
            item = &mut item[p];
        }
        item[last] = toml_edit::Item::Value(v);
        Ok(())
    };
    let mut all = super::setting_overrides(req, s);
    all.push(super::ov(
        "run.name",
        toml::Value::String(format!("{}-tuned", base.config.run.name)),
    ));
    let dir = std::fs::canonicalize(base.base_dir()).unwrap_or_else(|_| base.base_dir());
    let c = &base.config;
    let paths = [
        ("data.root", c.data.root.as_ref()),
        ("data.train_images", c.data.train_images.as_ref()),
        ("data.train_labels", c.data.train_labels.as_ref()),
        ("data.test_images", c.data.test_images.as_ref()),
        ("data.test_labels", c.data.test_labels.as_ref()),
        ("carbon.intensity_file", c.carbon.intensity_file.as_ref()),
    ];
    for (key, p) in paths {
        if let Some(p) = p.filter(|p| p.is_relative()) {
            let abs = dir.join(p).display().to_string();
            all.push(super::ov(key, toml::Value::String(abs)));
        }
    }
    for o in &all {
        set(o)?;
    }
    Ok(doc.to_string())
}

impl TuneReport {
    /// The Markdown summary: the table, the choice and the saving.
    pub fn markdown(&self) -> String {
        let metric = self.metric.as_deref().unwrap_or("accuracy");
        let mut s = format!(
            "# Tune {}: energy to {metric} >= {}\n\nEach setting trained from seeds {:?} until the target was met or {} epochs passed. Energy: {}.\n\n| batch size | precision | reached | epochs to target | energy to target (J) | training to target (s) | vs the config's own (95% interval) |\n|---|---|---|---|---|---|---|\n",
            self.name,
            self.target_accuracy,
            self.seeds,
            self.max_epochs,
            self.provenance
                .map_or_else(|| "not metered".to_string(), |p| p.to_string())
        );
        let ms = |v: Option<Summary>| match v {
            Some(x) if x.n > 1 => format!("{} ± {}", sig(x.mean), sig(x.sd)),
            Some(x) => sig(x.mean),
            None => "-".into(),
        };
        for (i, st) in self.settings.iter().enumerate() {
            let mut name = format!("{}", st.batch_size);
            if st.baseline {
                name.push_str(" (config)");
            }
            if self.chosen == Some(i) {
                name.push_str(" **chosen**");
            }
            let unreached = self.unreached_text(st);
            s.push_str(&format!(
                "| {name} | {} | {}/{}{unreached} | {} | {} | {} | {} |\n",
                st.precision,
                st.reached,
                st.runs,
                ms(st.epochs_to_target),
                ms(st.energy_to_target_j),
                ms(st.wall_to_target_s),
                if st.baseline {
                    "baseline".into()
                } else {
                    st.ratio.map(ratio_text).unwrap_or_else(|| "-".into())
                }
            ));
        }
        for r in &self.refused {
            s.push_str(&format!(
                "| - | {} | refused: {} | - | - | - | - |\n",
                r.precision, r.reason
            ));
        }
        s.push_str(&self.verdict());
        s
    }

    /// What the runs that missed the target spent, for the table.
    fn unreached_text(&self, st: &SettingSummary) -> String {
        let missed: Vec<&TuneRun> = self
            .runs
            .iter()
            .filter(|r| r.setting() == st.setting() && !r.reached)
            .collect();
        if missed.is_empty() {
            return String::new();
        }
        let j: f64 = missed.iter().filter_map(|r| r.energy_j).sum();
        let why: Vec<String> = missed
            .iter()
            .map(|r| match r.status {
                RunStatus::Completed => "epoch limit".to_string(),
                other => other.to_string(),
            })
            .collect();
        format!(" (missed: {}, {} J spent)", why.join(", "), sig(j))
    }

    fn verdict(&self) -> String {
        let mut s = String::new();
        match (self.chosen, &self.saving) {
            (Some(c), Some(sv)) if self.settings[c].baseline => s.push_str(&format!(
                "\nChosen: {}, the config's own setting; `chosen.toml` holds it.\n",
                sv.chosen
            )),
            (Some(_), Some(sv)) => s.push_str(&format!(
                "\nChosen: {} (`chosen.toml`). Against the config's own {}: {} of its joules to the target, {} saved ({}).\n",
                sv.chosen,
                sv.baseline,
                ratio_text(sv.ratio),
                pct(sv.saved_percent),
                sv.provenance
                    .map_or_else(|| "not metered".to_string(), |p| p.to_string())
            )),
            (Some(c), None) => s.push_str(&format!(
                "\nChosen: {} (`chosen.toml`).\n",
                self.settings[c].label()
            )),
            (None, _) => s.push_str(&format!(
                "\nNothing was chosen: no setting reached {} in every repeat within {} epochs.\n",
                self.target_accuracy, self.max_epochs
            )),
        }
        s.push_str(&format!(
            "The tune used {} kWh over {} runs.\n",
            sig(self.total_energy_j / 3.6e6),
            self.runs.len()
        ));
        if let Some(w) = &self.stopped {
            s.push_str(&format!("Stopped early: {w}.\n"));
        }
        for n in &self.notes {
            s.push_str(&format!("Note: {n}.\n"));
        }
        s
    }

    /// `tune.csv`: one row per run.
    pub fn csv(&self) -> String {
        let mut s = String::from("batch_size,precision,seed,status,reached,target_epoch,energy_to_target_j,wall_to_target_s,energy_j,provenance,accuracy,run_dir\n");
        let o = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
        for r in &self.runs {
            s.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{},\"{}\"\n",
                r.batch_size,
                r.precision,
                r.seed,
                r.status,
                r.reached,
                r.target_epoch.map(|e| e.to_string()).unwrap_or_default(),
                o(r.energy_to_target_j),
                o(r.wall_to_target_s),
                o(r.energy_j),
                r.provenance.map(|p| p.to_string()).unwrap_or_default(),
                o(r.accuracy),
                r.run_dir
                    .as_ref()
                    .map(|p| p.display().to_string().replace('"', "\"\""))
                    .unwrap_or_default()
            ));
        }
        s
    }
}

fn pct(x: f64) -> String {
    format!("{x:.1}%")
}

/// `0.62x [0.55, 0.70]`, or without the interval from one pair.
fn ratio_text(r: Ratio) -> String {
    match (r.low, r.high) {
        (Some(l), Some(h)) => format!("{:.3}x [{:.3}, {:.3}] (n={})", r.mean, l, h, r.n),
        _ => format!("{:.3}x (n={}, no interval)", r.mean, r.n),
    }
}
