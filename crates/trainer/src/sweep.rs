//! `greentrain sweep`: hyperparameter search that counts its carbon.
//! Strategies: `random`, `tpe` (Tree-structured Parzen Estimator, Bergstra
//! et al. 2011, univariate as in Optuna) and `grid` (for comparison);
//! optional ASHA pruning (rungs by epoch, Optuna's promotion rule); trials
//! run `--parallel N` at a time; a sweep folder is resumed without rerunning
//! finished trials; `--emit-slurm` hands the trials to Slurm instead.

use crate::config::{self, LoadedConfig};
use crate::device::DeviceSpec;
use crate::record::{sig, write_atomic, RunRecord};
use crate::train::{train_with, Failure, Hooks, TrainRequest};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The `[sweep]` table.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSection {
    /// Name (trial run names start with it).
    pub name: String,
    /// Base config, relative to the sweep file.
    pub base: PathBuf,
    /// `random`, `tpe` or `grid`.
    #[serde(default = "default_strategy")]
    pub strategy: String,
    /// Number of trials (grid: at most this many grid points).
    pub trials: usize,
    /// Seed of the search (trials keep the base config's training seed).
    #[serde(default)]
    pub seed: u64,
    /// Metric to maximise: `test_accuracy` or `val_accuracy`.
    #[serde(default = "default_metric")]
    pub metric: String,
    /// Stop launching trials once the sweep has used this much energy.
    #[serde(default)]
    pub max_kwh: Option<f64>,
    /// Or emitted this much CO2.
    #[serde(default)]
    pub max_co2_g: Option<f64>,
    /// Grid levels per numeric dimension (default: as many as `trials` allows).
    #[serde(default)]
    pub grid_points: Option<usize>,
    /// Random trials before TPE starts modelling (default: min(10, trials / 3), at least 2).
    #[serde(default)]
    pub tpe_startup: Option<usize>,
}

fn default_strategy() -> String {
    "random".into()
}
fn default_metric() -> String {
    "test_accuracy".into()
}

/// The `[asha]` table: successive halving with rungs at
/// `min_epochs x reduction^k` epochs.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AshaSection {
    /// First rung, in epochs.
    #[serde(default = "one")]
    pub min_epochs: usize,
    /// Reduction factor (keep the top 1/reduction at each rung).
    #[serde(default = "three")]
    pub reduction: usize,
}

fn one() -> usize {
    1
}
fn three() -> usize {
    3
}

/// One search dimension.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Dim {
    /// Log-uniform float in [low, high].
    LogUniform([f64; 2]),
    /// Uniform float in [low, high].
    Uniform([f64; 2]),
    /// Integer in [low, high].
    Int([i64; 2]),
    /// One of these values (any TOML values).
    Choice(Vec<toml::Value>),
}

/// A sweep file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    /// `[sweep]`.
    pub sweep: SweepSection,
    /// `[asha]`, when pruning.
    #[serde(default)]
    pub asha: Option<AshaSection>,
    /// `[space]`: config key -> dimension.
    pub space: BTreeMap<String, Dim>,
}

/// A loaded, checked sweep.
#[derive(Clone, Debug)]
pub struct Sweep {
    /// The file's content.
    pub file: SweepFile,
    /// Sweep file path.
    pub path: PathBuf,
    /// Base config path (resolved).
    pub base: PathBuf,
    /// sha256 of the sweep file (a resumed folder must hold the same sweep).
    pub sha256: String,
    /// Epochs of the base config.
    pub epochs: usize,
}

/// A sampled value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
    /// A choice, as TOML text.
    Text(String),
}

impl Value {
    /// The `--set` right-hand side.
    pub fn toml(&self) -> String {
        match self {
            Value::Int(i) => i.to_string(),
            Value::Float(f) => format!("{f:?}"),
            Value::Text(t) => t.clone(),
        }
    }
}

fn err(path: &Path, msg: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{}: {msg}", path.display())
}

/// Reads and checks a sweep file: every key must be a config key, every
/// range non-empty, and the base config must load with every choice and
/// both ends of every range, all before any trial runs.
pub fn load(path: &Path) -> anyhow::Result<Sweep> {
    let text = std::fs::read_to_string(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
    let de = toml::Deserializer::new(&text);
    let file: SweepFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        err(path, format!("key '{key}': {}", e.inner().message()))
    })?;
    let s = &file.sweep;
    if !["random", "tpe", "grid"].contains(&s.strategy.as_str()) {
        return Err(err(
            path,
            format!(
                "key 'sweep.strategy': '{}' is not one of random, tpe, grid",
                s.strategy
            ),
        ));
    }
    if !["test_accuracy", "val_accuracy"].contains(&s.metric.as_str()) {
        return Err(err(
            path,
            format!(
                "key 'sweep.metric': '{}' is not test_accuracy or val_accuracy",
                s.metric
            ),
        ));
    }
    if s.trials == 0 {
        return Err(err(path, "key 'sweep.trials': must be at least 1"));
    }
    if file.space.is_empty() {
        return Err(err(
            path,
            "[space] is empty: name at least one config key to search",
        ));
    }
    if let Some(a) = &file.asha {
        if a.min_epochs == 0 || a.reduction < 2 {
            return Err(err(
                path,
                "[asha]: min_epochs must be at least 1 and reduction at least 2",
            ));
        }
    }
    for (k, d) in &file.space {
        let bad = |m: &str| Err(err(path, format!("key 'space.\"{k}\"': {m}")));
        match d {
            Dim::LogUniform([a, b]) if !(*a > 0.0 && a < b) => {
                return bad("log_uniform needs 0 < low < high");
            }
            Dim::Uniform([a, b]) if a.partial_cmp(b) != Some(std::cmp::Ordering::Less) => {
                return bad("the range is empty: low must be below high");
            }
            Dim::Int([a, b]) if a > b => {
                return bad("the range is empty: low must not exceed high")
            }
            Dim::Choice(v) if v.is_empty() => return bad("choice needs at least one value"),
            _ => {}
        }
    }
    let base = path.parent().unwrap_or(Path::new(".")).join(&s.base);
    let first =
        config::load(&base, &[]).map_err(|e| err(path, format!("key 'sweep.base': {e}")))?;
    // Every value the search can produce at the edges must make a valid config.
    for (k, d) in &file.space {
        let probes: Vec<Value> = match d {
            Dim::LogUniform([a, b]) | Dim::Uniform([a, b]) => {
                vec![Value::Float(*a), Value::Float(*b)]
            }
            Dim::Int([a, b]) => vec![Value::Int(*a), Value::Int(*b)],
            Dim::Choice(v) => v.iter().map(|x| Value::Text(toml_text(x))).collect(),
        };
        for p in probes {
            config::load(&base, &[format!("{k}={}", p.toml())]).map_err(|e| {
                err(
                    path,
                    format!("key 'space.\"{k}\"' with value {}: {e}", p.toml()),
                )
            })?;
        }
    }
    let sha256 = crate::data::sha256_hex(text.as_bytes());
    // ASHA's rungs need the longest run: the base's epochs, or the top of
    // a searched epoch count.
    let epochs = match file.space.get("train.epochs") {
        Some(Dim::Int([_, b])) => *b as usize,
        Some(Dim::Choice(v)) => v
            .iter()
            .filter_map(|x| x.as_integer())
            .max()
            .map(|m| m as usize)
            .unwrap_or(first.config.train.epochs),
        _ => first.config.train.epochs,
    };
    Ok(Sweep {
        epochs,
        file,
        path: path.to_path_buf(),
        base,
        sha256,
    })
}

fn toml_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// Parameters of one trial.
pub type Params = BTreeMap<String, Value>;

/// One trial in `sweep.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// 0-based id.
    pub id: usize,
    /// The sampled values.
    pub params: Params,
    /// `running`, `completed`, `pruned`, `diverged`, `failed`,
    /// `interrupted` or `stopped_budget`.
    pub status: crate::status::RunStatus,
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
    pub provenance: Option<String>,
    /// Error, for failed trials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
    pub strategy: String,
    /// Search seed.
    pub seed: u64,
    /// Metric maximised.
    pub metric: String,
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
    pub provenance: Option<String>,
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
            .clone()
            .unwrap_or_else(|| "not metered".into());
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
                t.provenance.clone().unwrap_or_default(),
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
            crate::plots::write_figure(&crate::plots::sweep_figure(&[self]), dir, "sweep")?;
        }
        Ok(())
    }
}

fn params_text(p: &Params) -> String {
    p.iter()
        .map(|(k, v)| format!("{k}={}", v.toml()))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------- sampling ----------

fn sample_dim(d: &Dim, rng: &mut ChaCha8Rng) -> Value {
    match d {
        Dim::LogUniform([a, b]) => Value::Float((rng.random_range(a.ln()..=b.ln())).exp()),
        Dim::Uniform([a, b]) => Value::Float(rng.random_range(*a..=*b)),
        Dim::Int([a, b]) => Value::Int(rng.random_range(*a..=*b)),
        Dim::Choice(v) => Value::Text(toml_text(&v[rng.random_range(0..v.len())])),
    }
}

/// Trial `id`'s generator: its draws depend on the search seed and the
/// trial, not on which trials ran before it.
fn trial_rng(seed: u64, id: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ id as u64)
}

/// Random search's trial `id` (also TPE's start-up trials and the Slurm export).
fn random_params(space: &BTreeMap<String, Dim>, seed: u64, id: usize) -> Params {
    let mut rng = trial_rng(seed, id);
    space
        .iter()
        .map(|(k, d)| (k.clone(), sample_dim(d, &mut rng)))
        .collect()
}

/// Internal coordinate of a numeric value (log for log-uniform).
fn coord(d: &Dim, v: &Value) -> Option<f64> {
    match (d, v) {
        (Dim::LogUniform(_), Value::Float(x)) => Some(x.ln()),
        (Dim::Uniform(_), Value::Float(x)) => Some(*x),
        (Dim::Int(_), Value::Int(i)) => Some(*i as f64),
        _ => None,
    }
}

fn bounds(d: &Dim) -> (f64, f64) {
    match d {
        Dim::LogUniform([a, b]) => (a.ln(), b.ln()),
        Dim::Uniform([a, b]) => (*a, *b),
        Dim::Int([a, b]) => (*a as f64 - 0.5, *b as f64 + 0.5),
        Dim::Choice(_) => (0.0, 1.0),
    }
}

fn from_coord(d: &Dim, x: f64) -> Value {
    match d {
        Dim::LogUniform([a, b]) => Value::Float(x.exp().clamp(*a, *b)),
        Dim::Uniform([a, b]) => Value::Float(x.clamp(*a, *b)),
        Dim::Int([a, b]) => Value::Int((x.round() as i64).clamp(*a, *b)),
        Dim::Choice(_) => unreachable!("choices have no coordinate"),
    }
}

/// Standard normal CDF (Abramowitz and Stegun 7.1.26, error < 1.5e-7).
fn phi(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.3275911 * x);
    let y = 1.0
        - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
            + 0.254829592)
            * t
            * (-x * x).exp();
    if z >= 0.0 {
        0.5 * (1.0 + y)
    } else {
        0.5 * (1.0 - y)
    }
}

/// A Parzen estimator: truncated Gaussians at the observations plus a
/// prior Gaussian over the whole range, equally weighted.
struct Parzen {
    mus: Vec<f64>,
    sigmas: Vec<f64>,
    lo: f64,
    hi: f64,
}

impl Parzen {
    fn new(obs: &[f64], lo: f64, hi: f64) -> Self {
        let range = hi - lo;
        let mut mus: Vec<f64> = obs.to_vec();
        mus.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let n = mus.len();
        let min_s = range / (100.0f64).min(1.0 + n as f64);
        let mut sigmas = Vec::with_capacity(n + 1);
        for i in 0..n {
            let left = if i == 0 {
                mus[i] - lo
            } else {
                mus[i] - mus[i - 1]
            };
            let right = if i + 1 == n {
                hi - mus[i]
            } else {
                mus[i + 1] - mus[i]
            };
            sigmas.push(left.max(right).clamp(min_s, range));
        }
        mus.push(0.5 * (lo + hi));
        sigmas.push(range);
        Parzen {
            mus,
            sigmas,
            lo,
            hi,
        }
    }

    fn pdf(&self, x: f64) -> f64 {
        let k = self.mus.len() as f64;
        self.mus
            .iter()
            .zip(&self.sigmas)
            .map(|(&m, &s)| {
                let z = (x - m) / s;
                let mass = phi((self.hi - m) / s) - phi((self.lo - m) / s);
                (-0.5 * z * z).exp() / (s * (2.0 * std::f64::consts::PI).sqrt() * mass.max(1e-12))
            })
            .sum::<f64>()
            / k
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> f64 {
        let i = rng.random_range(0..self.mus.len());
        for _ in 0..100 {
            // Box-Muller.
            let u1: f64 = rng.random_range(f64::EPSILON..1.0);
            let u2: f64 = rng.random_range(0.0..1.0);
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            let x = self.mus[i] + self.sigmas[i] * z;
            if x >= self.lo && x <= self.hi {
                return x;
            }
        }
        self.mus[i].clamp(self.lo, self.hi)
    }
}

const TPE_CANDIDATES: usize = 24;

/// TPE: split finished trials at the top quarter of the metric; per
/// dimension, draw candidates from the good trials' density l(x) and keep
/// the one with the highest l(x)/g(x).
fn tpe_propose(
    space: &BTreeMap<String, Dim>,
    done: &[(Params, f64)],
    rng: &mut ChaCha8Rng,
) -> Params {
    let mut sorted: Vec<&(Params, f64)> = done.iter().collect();
    sorted.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    let n_good = done.len().div_ceil(4).max(1);
    let (good, bad) = sorted.split_at(n_good.min(sorted.len()));
    let mut out = Params::new();
    for (k, d) in space {
        let v = match d {
            Dim::Choice(vals) => {
                let texts: Vec<String> = vals.iter().map(toml_text).collect();
                let weights = |set: &[&(Params, f64)]| -> Vec<f64> {
                    let mut w = vec![1.0; texts.len()];
                    for (p, _) in set {
                        if let Some(Value::Text(t)) = p.get(k) {
                            if let Some(i) = texts.iter().position(|x| x == t) {
                                w[i] += 1.0;
                            }
                        }
                    }
                    let s: f64 = w.iter().sum();
                    w.iter().map(|x| x / s).collect()
                };
                let (l, g) = (weights(good), weights(bad));
                let mut best = (f64::NEG_INFINITY, 0);
                for _ in 0..TPE_CANDIDATES {
                    let mut r: f64 = rng.random_range(0.0..1.0);
                    let mut i = 0;
                    while i + 1 < l.len() && r >= l[i] {
                        r -= l[i];
                        i += 1;
                    }
                    let score = l[i].ln() - g[i].ln();
                    if score > best.0 {
                        best = (score, i);
                    }
                }
                Value::Text(texts[best.1].clone())
            }
            _ => {
                let (lo, hi) = bounds(d);
                let obs = |set: &[&(Params, f64)]| -> Vec<f64> {
                    set.iter()
                        .filter_map(|(p, _)| p.get(k).and_then(|v| coord(d, v)))
                        .collect()
                };
                let (l, g) = (
                    Parzen::new(&obs(good), lo, hi),
                    Parzen::new(&obs(bad), lo, hi),
                );
                let mut best = (f64::NEG_INFINITY, 0.5 * (lo + hi));
                for _ in 0..TPE_CANDIDATES {
                    let x = l.sample(rng);
                    let score = l.pdf(x).max(1e-300).ln() - g.pdf(x).max(1e-300).ln();
                    if score > best.0 {
                        best = (score, x);
                    }
                }
                from_coord(d, best.1)
            }
        };
        out.insert(k.clone(), v);
    }
    out
}

/// The grid, in a fixed order: every choice, and `levels` evenly spaced
/// values per numeric dimension (log-spaced for log-uniform), at most
/// `trials` points.
pub fn grid(space: &BTreeMap<String, Dim>, trials: usize, levels: Option<usize>) -> Vec<Params> {
    // A one-value integer range (a fixed setting) is not a dimension.
    let numeric = space
        .values()
        .filter(|d| match d {
            Dim::Choice(_) => false,
            Dim::Int([a, b]) => a < b,
            _ => true,
        })
        .count() as u32;
    let choice_points: usize = space
        .values()
        .map(|d| if let Dim::Choice(v) = d { v.len() } else { 1 })
        .product();
    let k = levels.unwrap_or_else(|| {
        if numeric == 0 {
            1
        } else {
            let mut k = 1usize;
            while (k + 1).pow(numeric) * choice_points <= trials {
                k += 1;
            }
            k.max(2)
        }
    });
    let axes: Vec<(String, Vec<Value>)> = space
        .iter()
        .map(|(key, d)| {
            let lin = |a: f64, b: f64| -> Vec<f64> {
                if k == 1 {
                    vec![0.5 * (a + b)]
                } else {
                    (0..k)
                        .map(|i| a + (b - a) * i as f64 / (k - 1) as f64)
                        .collect()
                }
            };
            let vals = match d {
                Dim::Choice(v) => v.iter().map(|x| Value::Text(toml_text(x))).collect(),
                Dim::LogUniform([a, b]) => lin(a.ln(), b.ln())
                    .into_iter()
                    .map(|x| Value::Float(x.exp()))
                    .collect(),
                Dim::Uniform([a, b]) => lin(*a, *b).into_iter().map(Value::Float).collect(),
                Dim::Int([a, b]) => {
                    let mut v: Vec<i64> = lin(*a as f64, *b as f64)
                        .into_iter()
                        .map(|x| x.round() as i64)
                        .collect();
                    v.dedup();
                    v.into_iter().map(Value::Int).collect()
                }
            };
            (key.clone(), vals)
        })
        .collect();
    let mut out = vec![Params::new()];
    for (key, vals) in &axes {
        let mut next = vec![];
        for p in &out {
            for v in vals {
                let mut q = p.clone();
                q.insert(key.clone(), v.clone());
                next.push(q);
            }
        }
        out = next;
    }
    out.truncate(trials);
    out
}

// ---------- ASHA ----------

/// Rung epochs: `min x reduction^k` below the run's epochs.
pub fn rungs(a: &AshaSection, epochs: usize) -> Vec<usize> {
    let mut v = vec![];
    let mut r = a.min_epochs;
    while r < epochs {
        v.push(r);
        r *= a.reduction;
    }
    v
}

/// Optuna's successive-halving rule: at a rung holding `n` values
/// (this one included), a trial goes on when its value is at least the
/// `max(n / reduction, 1)`-th best.
pub fn promotable(rung_values: &[f64], value: f64, reduction: usize) -> bool {
    let mut v = rung_values.to_vec();
    v.sort_by(|a, b| b.partial_cmp(a).unwrap_or(std::cmp::Ordering::Equal));
    let idx = (v.len() / reduction).max(1) - 1;
    value >= v[idx]
}

fn metric_of(e: &crate::record::EpochRecord, metric: &str) -> Option<f64> {
    if metric == "val_accuracy" {
        e.val_accuracy
    } else {
        Some(e.test_accuracy)
    }
}

fn epoch_metric(r: &RunRecord, metric: &str) -> Option<f64> {
    metric_of(r.epochs.last()?, metric)
}

// ---------- running ----------

/// How to run a sweep.
#[derive(Clone, Debug)]
pub struct SweepRequest {
    /// The sweep.
    pub sweep: Sweep,
    /// Output folder.
    pub out_dir: PathBuf,
    /// Trials at once.
    pub parallel: usize,
    /// Device.
    pub device: DeviceSpec,
    /// No progress output.
    pub quiet: bool,
}

struct Shared {
    report: SweepReport,
    next: usize,
    rungs: Vec<Vec<f64>>,
    plan: Vec<Option<Params>>,
}

fn trial_config(sweep: &Sweep, id: usize, params: &Params) -> Result<LoadedConfig, Failure> {
    let mut o: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", v.toml()))
        .collect();
    o.push(format!("run.name=\"{}-t{id:03}\"", sweep.file.sweep.name));
    config::load(&sweep.base, &o).map_err(|e| Failure::Usage(e.into()))
}

fn summarise(r: &mut SweepReport, asha: Option<&AshaSection>, epochs: usize) {
    r.total_energy_j = r.trials.iter().filter_map(|t| t.energy_j).sum();
    r.total_co2_g = r.trials.iter().filter_map(|t| t.co2_g).sum();
    r.provenance =
        crate::energy::weakest_provenance(r.trials.iter().filter_map(|t| t.provenance.as_deref()));
    r.best = r
        .trials
        .iter()
        .filter(|t| t.metric.is_some() && t.status == "completed")
        .max_by(|a, b| {
            a.metric
                .partial_cmp(&b.metric)
                .unwrap()
                .then(b.id.cmp(&a.id))
        })
        .map(|t| t.id);
    if let Some(a) = asha {
        let pruned: Vec<&Trial> = r.trials.iter().filter(|t| t.status == "pruned").collect();
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

/// Runs (or resumes) a sweep; writes its files after every trial.
pub fn run(req: SweepRequest) -> Result<SweepReport, Failure> {
    let sw = &req.sweep;
    let s = &sw.file.sweep;
    std::fs::create_dir_all(req.out_dir.join("trials")).map_err(|e| {
        Failure::Runtime(anyhow::anyhow!(
            "cannot create {}: {e}",
            req.out_dir.display()
        ))
    })?;
    let state_path = req.out_dir.join("sweep.json");
    let mut report = SweepReport {
        schema: "greentrain.sweep/1".into(),
        name: s.name.clone(),
        file: sw.path.clone(),
        file_sha256: sw.sha256.clone(),
        strategy: s.strategy.clone(),
        seed: s.seed,
        metric: s.metric.clone(),
        parallel: req.parallel.max(1),
        trials: vec![],
        best: None,
        total_energy_j: 0.0,
        total_co2_g: 0.0,
        provenance: None,
        asha: None,
        stopped: None,
        notes: vec![],
    };
    if state_path.exists() {
        let old: SweepReport = crate::record::read_json(&state_path, "a greentrain sweep file")
            .map_err(|e| Failure::Usage(anyhow::anyhow!("cannot resume: {e:#}")))?;
        if old.file_sha256 != sw.sha256 {
            return Err(Failure::Usage(anyhow::anyhow!(
                "{} holds a different sweep (its sweep file has changed): use another --out",
                req.out_dir.display()
            )));
        }
        // Finished trials stay; a trial cut off by a crash or Ctrl-C runs
        // again from the start with the same parameters.
        report.trials = old
            .trials
            .into_iter()
            .filter(|t| t.status != "running" && t.status != "interrupted")
            .collect();
        report.trials.sort_by_key(|t| t.id);
    }
    if report.parallel > 1 {
        report.notes.push(format!(
            "{} trials ran at once; each trial's energy record covers the whole machine (the CPU estimate uses whole-machine utilisation), so the sweep total over-counts the shared time",
            report.parallel
        ));
    }
    let mut plan: Vec<Option<Params>> = vec![None; s.trials];
    if s.strategy == "grid" {
        let g = grid(&sw.file.space, s.trials, s.grid_points);
        plan = g.into_iter().map(Some).collect();
    }
    for t in &report.trials {
        if t.id < plan.len() {
            plan[t.id] = Some(t.params.clone());
        }
    }
    let epochs = sw.epochs;
    let asha = sw.file.asha.clone();
    let rung_epochs = asha.as_ref().map(|a| rungs(a, epochs)).unwrap_or_default();
    let mut rung_values = vec![vec![]; rung_epochs.len()];
    // Rebuild the rungs from the finished trials' records.
    for t in &report.trials {
        if let Some(Ok(r)) = t.run_dir.as_ref().map(|d| RunRecord::load(d)) {
            for (k, &re) in rung_epochs.iter().enumerate() {
                if let Some(v) = r.epochs.get(re - 1).and_then(|e| metric_of(e, &s.metric)) {
                    rung_values[k].push(v);
                }
            }
        }
    }
    let shared = Arc::new(Mutex::new(Shared {
        report,
        next: 0,
        rungs: rung_values,
        plan,
    }));
    let n_trials = shared.lock().unwrap().plan.len();
    let worker = |_: usize| -> Result<(), Failure> {
        loop {
            // Pick the next trial and its parameters under the lock.
            let (id, params) = {
                let mut sh = shared.lock().unwrap();
                let mut id = sh.next;
                while id < n_trials && sh.report.trials.iter().any(|t| t.id == id) {
                    id += 1;
                }
                if id >= n_trials || sh.report.stopped.is_some() {
                    return Ok(());
                }
                let used_j: f64 = sh.report.trials.iter().filter_map(|t| t.energy_j).sum();
                let used_g: f64 = sh.report.trials.iter().filter_map(|t| t.co2_g).sum();
                if let Some(k) = s.max_kwh {
                    if used_j / 3.6e6 >= k {
                        sh.report.stopped = Some(format!("energy budget of {k} kWh reached"));
                        return Ok(());
                    }
                }
                if let Some(g) = s.max_co2_g {
                    if used_g >= g {
                        sh.report.stopped = Some(format!("carbon budget of {g} gCO2eq reached"));
                        return Ok(());
                    }
                }
                sh.next = id + 1;
                let params = match sh.plan[id].clone() {
                    Some(p) => p,
                    None => {
                        let startup = s.tpe_startup.unwrap_or((s.trials / 3).clamp(2, 10));
                        let done: Vec<(Params, f64)> = sh
                            .report
                            .trials
                            .iter()
                            .filter_map(|t| t.metric.map(|m| (t.params.clone(), m)))
                            .collect();
                        if s.strategy == "tpe" && done.len() >= startup {
                            tpe_propose(&sw.file.space, &done, &mut trial_rng(s.seed, id))
                        } else {
                            random_params(&sw.file.space, s.seed, id)
                        }
                    }
                };
                sh.plan[id] = Some(params.clone());
                sh.report.trials.push(Trial {
                    id,
                    params: params.clone(),
                    status: crate::status::RunStatus::Running,
                    run_dir: None,
                    metric: None,
                    epochs: 0,
                    energy_j: None,
                    co2_g: None,
                    provenance: None,
                    error: None,
                });
                sh.report.trials.sort_by_key(|t| t.id);
                let _ = sh.report.write(&req.out_dir);
                (id, params)
            };
            if !req.quiet {
                eprintln!("sweep {}: trial {id} {}", s.name, params_text(&params));
            }
            let mut hooks = Hooks::default();
            if let Some(a) = asha.clone() {
                let sh2 = shared.clone();
                let re = rung_epochs.clone();
                let metric = s.metric.clone();
                hooks.after_epoch = Some(Arc::new(move |r: &RunRecord| {
                    let e = r.epochs.len();
                    let k = re.iter().position(|&x| x == e)?;
                    let v = epoch_metric(r, &metric)?;
                    let mut sh = sh2.lock().unwrap();
                    sh.rungs[k].push(v);
                    if promotable(&sh.rungs[k], v, a.reduction) {
                        None
                    } else {
                        Some(crate::status::RunStatus::Pruned)
                    }
                }));
            }
            let outcome = trial_config(sw, id, &params).and_then(|config| {
                train_with(
                    TrainRequest {
                        config,
                        device: req.device,
                        out_dir: req.out_dir.join("trials"),
                        quiet: true,
                    },
                    hooks,
                )
            });
            let mut sh = shared.lock().unwrap();
            let t = sh
                .report
                .trials
                .iter_mut()
                .find(|t| t.id == id)
                .expect("trial");
            match outcome {
                Ok(o) => {
                    let r = &o.record;
                    t.status = o.status;
                    t.run_dir = Some(o.run_dir.clone());
                    t.epochs = r.epochs.len();
                    t.metric = epoch_metric(r, &s.metric);
                    t.energy_j = r.energy.as_ref().map(|e| e.total_j);
                    t.co2_g = r.carbon.as_ref().map(|c| c.operational.co2_g);
                    t.provenance = r.energy.as_ref().map(|e| e.provenance.to_string());
                    if !req.quiet {
                        eprintln!(
                            "sweep {}: trial {id} {} after {} epoch(s): {} {}",
                            s.name,
                            t.status,
                            t.epochs,
                            s.metric,
                            t.metric
                                .map(|m| format!("{:.2}%", 100.0 * m))
                                .unwrap_or_else(|| "-".into())
                        );
                    }
                    if o.status == "interrupted" {
                        sh.report.stopped =
                            Some("interrupted (Ctrl-C); run the same command to resume".into());
                    }
                }
                Err(e) => {
                    t.status = crate::status::RunStatus::Failed;
                    t.error = Some(e.to_string());
                    if matches!(e, Failure::Usage(_)) {
                        let _ = sh.report.write(&req.out_dir);
                        return Err(e);
                    }
                }
            }
            summarise(&mut sh.report, asha.as_ref(), epochs);
            sh.report
                .write(&req.out_dir)
                .map_err(|e| Failure::Runtime(anyhow::anyhow!("writing sweep files: {e:#}")))?;
        }
    };
    let results: Vec<Result<(), Failure>> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..req.parallel.max(1))
            .map(|i| scope.spawn(move || worker(i)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("sweep worker panicked"))
            .collect()
    });
    for r in results {
        r?;
    }
    let mut report = shared.lock().unwrap().report.clone();
    summarise(&mut report, asha.as_ref(), epochs);
    report
        .write(&req.out_dir)
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("writing sweep files: {e:#}")))?;
    Ok(report)
}

// ---------- Slurm ----------

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Writes `trials.txt` (one trial's arguments per line, shell-quoted) and
/// `sweep.sbatch` (an array job, one trial per task) into `dir`. Only
/// `random` and `grid` (their trials do not depend on each other's
/// results), and no ASHA.
pub fn emit_slurm(sw: &Sweep, dir: &Path, runs_dir: &Path) -> anyhow::Result<PathBuf> {
    let s = &sw.file.sweep;
    if s.strategy == "tpe" {
        anyhow::bail!("tpe chooses each trial from the results of the earlier ones, so it cannot be split into independent array tasks: use strategy = \"random\" or \"grid\" with --emit-slurm, or run `greentrain sweep` on one node");
    }
    if sw.file.asha.is_some() {
        anyhow::bail!("ASHA needs the trials to see each other's results: remove [asha] for --emit-slurm, or run `greentrain sweep` on one node");
    }
    std::fs::create_dir_all(dir)?;
    let params: Vec<Params> = if s.strategy == "grid" {
        grid(&sw.file.space, s.trials, s.grid_points)
    } else {
        (0..s.trials)
            .map(|id| random_params(&sw.file.space, s.seed, id))
            .collect()
    };
    let mut lines = String::new();
    for (id, p) in params.iter().enumerate() {
        let mut args: Vec<String> = p
            .iter()
            .flat_map(|(k, v)| ["--set".to_string(), format!("{k}={}", v.toml())])
            .collect();
        args.push("--set".into());
        args.push(format!("run.name=\"{}-t{id:03}\"", s.name));
        lines.push_str(
            &args
                .iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" "),
        );
        lines.push('\n');
    }
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    write_atomic(&dir.join("trials.txt"), lines.as_bytes())?;
    let script = format!(
        "#!/bin/bash\n\
# greentrain sweep '{name}' ({strategy}, {n} trials) as a Slurm array job.\n\
# Written by `greentrain sweep --emit-slurm`. Add your partition, GPU and\n\
# time limits below, then: sbatch {dir}/sweep.sbatch\n\
# Afterwards: greentrain report {runs}\n\
#SBATCH --job-name=gt-{name}\n\
#SBATCH --array=0-{last}\n\
#SBATCH --output={dir}/logs/%A_%a.out\n\
#SBATCH --ntasks=1\n\
set -euo pipefail\n\
ARGS=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" {dir}/trials.txt)\n\
eval \"exec ${{GREENTRAIN:-greentrain}} --config {base} $ARGS --out {runs} --quiet\"\n",
        name = s.name,
        strategy = s.strategy,
        n = params.len(),
        last = params.len().saturating_sub(1),
        dir = shell_quote(&abs(dir).display().to_string()),
        runs = shell_quote(&runs_dir.display().to_string()),
        base = shell_quote(&abs(&sw.base).display().to_string()),
    );
    std::fs::create_dir_all(dir.join("logs"))?;
    let path = dir.join("sweep.sbatch");
    write_atomic(&path, script.as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotion_follows_optunas_rule() {
        // Fewer than `reduction` values: only the best so far goes on.
        assert!(promotable(&[0.5], 0.5, 3));
        assert!(!promotable(&[0.9, 0.5], 0.5, 3));
        // Six values, reduction 3: the top two go on.
        let v = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6];
        assert!(promotable(&v, 0.5, 3));
        assert!(!promotable(&v, 0.4, 3));
    }

    #[test]
    fn rungs_grow_by_the_reduction_factor_below_the_epoch_count() {
        let a = AshaSection {
            min_epochs: 1,
            reduction: 3,
        };
        assert_eq!(rungs(&a, 30), vec![1, 3, 9, 27]);
        assert_eq!(rungs(&a, 9), vec![1, 3]);
    }

    #[test]
    fn the_grid_spans_each_range_and_stops_at_the_trial_count() {
        let mut space = BTreeMap::new();
        space.insert("train.lr".to_string(), Dim::LogUniform([1e-4, 1e-2]));
        space.insert(
            "model.hidden".to_string(),
            Dim::Choice(vec![toml::Value::Integer(1), toml::Value::Integer(2)]),
        );
        let g = grid(&space, 6, None);
        // 2 choices x 3 levels = 6.
        assert_eq!(g.len(), 6);
        let lrs: Vec<f64> = g
            .iter()
            .filter_map(|p| match p["train.lr"] {
                Value::Float(f) => Some(f),
                _ => None,
            })
            .collect();
        assert!(
            (lrs[0] - 1e-4).abs() < 1e-12
                && (lrs[1] - 1e-3).abs() < 1e-12
                && (lrs[2] - 1e-2).abs() < 1e-12,
            "{lrs:?}"
        );
        assert_eq!(grid(&space, 4, None).len(), 4);
    }

    #[test]
    fn tpe_moves_towards_the_good_region() {
        // Metric peaks at x = 0.8 in [0, 1]; after 20 random observations
        // TPE's proposals should sit closer to it than uniform ones do.
        let mut space = BTreeMap::new();
        space.insert("x".to_string(), Dim::Uniform([0.0, 1.0]));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let f = |x: f64| -(x - 0.8).powi(2);
        let mut done = vec![];
        for _ in 0..20 {
            let x: f64 = rng.random_range(0.0..1.0);
            let mut p = Params::new();
            p.insert("x".into(), Value::Float(x));
            done.push((p, f(x)));
        }
        let mut dist = 0.0;
        for _ in 0..50 {
            let p = tpe_propose(&space, &done, &mut rng);
            if let Value::Float(x) = p["x"] {
                dist += (x - 0.8).abs();
            }
        }
        // Uniform proposals would average |x - 0.8| = 0.34.
        assert!(dist / 50.0 < 0.15, "{}", dist / 50.0);
    }

    #[test]
    fn the_normal_cdf_is_accurate() {
        assert!((phi(0.0) - 0.5).abs() < 1e-7);
        assert!((phi(1.96) - 0.975).abs() < 1e-4);
        assert!((phi(-1.0) - 0.158_655_3).abs() < 1e-6);
    }
}
