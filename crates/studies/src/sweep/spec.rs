//! The sweep file: `[sweep]`, `[asha]` and `[space]`, read and checked
//! before any trial runs.

use greentrain_trainer::config;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The `[sweep]` table.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSection {
    /// Name (trial run names start with it).
    pub name: String,
    /// Base config, relative to the sweep file.
    pub base: PathBuf,
    /// How trials are chosen.
    #[serde(default)]
    pub strategy: Strategy,
    /// Number of trials (grid: at most this many grid points).
    pub trials: usize,
    /// Seed of the search (trials keep the base config's training seed).
    #[serde(default)]
    pub seed: u64,
    /// Metric to maximise (default `test_accuracy`); or give `objectives`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<Metric>,
    /// Several objectives: the sweep keeps their Pareto front, and the
    /// first is the primary one (ASHA prunes on it, `best` is best on it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objectives: Option<Vec<Objective>>,
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

/// How a sweep chooses its trials.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Independent draws from the space.
    #[default]
    Random,
    /// Tree-structured Parzen Estimator after a few random trials.
    Tpe,
    /// A grid over the space (for comparison).
    Grid,
}

impl Strategy {
    /// Whether each trial's parameters are known before any trial runs
    /// (what a Slurm array job needs).
    pub fn is_independent(self) -> bool {
        self != Strategy::Tpe
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Strategy::Random => "random",
            Strategy::Tpe => "tpe",
            Strategy::Grid => "grid",
        })
    }
}

pub use greentrain_trainer::record::Metric;

/// What a sweep optimises: each is maximised or minimised as its name
/// implies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
pub enum Objective {
    /// Test accuracy after the last epoch (maximised).
    #[serde(rename = "test_accuracy")]
    TestAccuracy,
    /// Validation accuracy after the last epoch (maximised).
    #[serde(rename = "val_accuracy")]
    ValAccuracy,
    /// The run's energy, J (minimised).
    #[serde(rename = "energy_j")]
    EnergyJ,
    /// The run's operational emissions, gCO2eq (minimised).
    #[serde(rename = "co2_g")]
    Co2G,
    /// The run's training time, s (minimised).
    #[serde(rename = "wall_s")]
    WallS,
    /// Energy up to the epoch that met `train.target_accuracy`, J
    /// (minimised; a trial that never met it has no value).
    #[serde(rename = "energy_to_target")]
    EnergyToTarget,
}

impl Objective {
    /// The name in sweep files, records and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Objective::TestAccuracy => "test_accuracy",
            Objective::ValAccuracy => "val_accuracy",
            Objective::EnergyJ => "energy_j",
            Objective::Co2G => "co2_g",
            Objective::WallS => "wall_s",
            Objective::EnergyToTarget => "energy_to_target",
        }
    }

    /// Whether larger is better.
    pub fn maximise(self) -> bool {
        self.metric().is_some()
    }

    /// The accuracy metric this objective is, if it is one.
    pub fn metric(self) -> Option<Metric> {
        match self {
            Objective::TestAccuracy => Some(Metric::TestAccuracy),
            Objective::ValAccuracy => Some(Metric::ValAccuracy),
            _ => None,
        }
    }
}

impl Objective {
    /// The objective that maximises an accuracy metric (None for a loss:
    /// sweeps maximise).
    pub fn of_metric(m: Metric) -> Option<Self> {
        match m {
            Metric::TestAccuracy => Some(Objective::TestAccuracy),
            Metric::ValAccuracy => Some(Objective::ValAccuracy),
            Metric::TestLoss | Metric::ValLoss => None,
        }
    }
}

impl std::fmt::Display for Objective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
    /// The base config's text, read once: each trial is it plus overrides.
    pub base_src: String,
    /// sha256 of the sweep file (a resumed folder must hold the same sweep).
    pub sha256: String,
    /// Epochs of the base config.
    pub epochs: usize,
    /// The objectives, primary first (`[metric]` when the file names none).
    pub objectives: Vec<Objective>,
    /// The accuracy in the tables and ASHA's rungs: the first accuracy
    /// objective, else `test_accuracy`.
    pub metric: Metric,
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
    /// The value as TOML text (the `--set` right-hand side).
    pub fn toml(&self) -> String {
        match self {
            Value::Int(i) => i.to_string(),
            Value::Float(f) => format!("{f:?}"),
            Value::Text(t) => t.clone(),
        }
    }

    /// The value as a TOML value, for a typed override.
    pub fn to_toml(&self) -> toml::Value {
        match self {
            Value::Int(i) => toml::Value::Integer(*i),
            Value::Float(f) => toml::Value::Float(*f),
            Value::Text(t) => config::toml_value(t),
        }
    }
}

/// The overrides that make trial `id`'s config from the base: its
/// parameters and its run name.
pub fn overrides(sweep: &Sweep, id: usize, params: &Params) -> Vec<config::Override> {
    let mut o: Vec<config::Override> = params
        .iter()
        .map(|(k, v)| config::Override {
            key: k.clone(),
            value: v.to_toml(),
        })
        .collect();
    o.push(config::Override {
        key: "run.name".into(),
        value: toml::Value::String(format!("{}-t{id:03}", sweep.file.sweep.name)),
    });
    o
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
    let (objectives, metric) =
        resolve_objectives(&file, &first.config).map_err(|m| err(path, m))?;
    let base_src = std::fs::read_to_string(&base)
        .map_err(|e| err(path, format!("key 'sweep.base': cannot read: {e}")))?;
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
            let o = config::Override {
                key: k.clone(),
                value: p.to_toml(),
            };
            // The error is the sweep file's, not a command line's `--set`.
            config::parse_with(&base_src, &base.display().to_string(), &[o]).map_err(|e| {
                let whose = if e.file == "--set" {
                    String::new()
                } else {
                    format!(
                        " (in {}{})",
                        e.file,
                        e.line.map_or(String::new(), |l| format!(" line {l}"))
                    )
                };
                err(
                    path,
                    format!(
                        "key 'space.\"{k}\"' with value {}: {}{whose}",
                        p.toml(),
                        e.msg
                    ),
                )
            })?;
        }
    }
    let sha256 = greentrain_trainer::data::sha256_hex(text.as_bytes());
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
        objectives,
        metric,
        file,
        path: path.to_path_buf(),
        base,
        base_src,
        sha256,
    })
}

/// The objectives (primary first) and the accuracy metric, checked: no
/// duplicates, `metric` and `objectives` not both, `energy_to_target` only
/// with a target, `val_accuracy` only with a validation split, and ASHA
/// only on an accuracy.
fn resolve_objectives(
    file: &SweepFile,
    base: &config::Config,
) -> Result<(Vec<Objective>, Metric), String> {
    let s = &file.sweep;
    let objectives = match (&s.objectives, s.metric) {
        (Some(_), Some(_)) => {
            return Err(
                "keys 'sweep.metric' and 'sweep.objectives': give one of them (the first objective is the primary metric)".into(),
            )
        }
        (Some(o), None) => o.clone(),
        (None, m) => {
            let m = m.unwrap_or_default();
            vec![Objective::of_metric(m).ok_or_else(|| {
                format!("key 'sweep.metric': a sweep maximises test_accuracy or val_accuracy, not {m}")
            })?]
        }
    };
    let key = "key 'sweep.objectives'";
    if objectives.is_empty() {
        return Err(format!("{key}: name at least one objective"));
    }
    for (i, o) in objectives.iter().enumerate() {
        if objectives[..i].contains(o) {
            return Err(format!("{key}: '{o}' is named twice"));
        }
    }
    let searched = |k: &str| file.space.contains_key(k);
    if objectives.contains(&Objective::EnergyToTarget)
        && base.train.target_accuracy.is_none()
        && !searched("train.target_accuracy")
    {
        return Err(format!(
            "{key}: 'energy_to_target' needs 'train.target_accuracy' in the base config"
        ));
    }
    if objectives.contains(&Objective::ValAccuracy)
        && base.data.val_fraction <= 0.0
        && !searched("data.val_fraction")
    {
        return Err(format!(
            "{}: 'val_accuracy' needs a validation split ('data.val_fraction' in the base config)",
            if s.objectives.is_some() {
                key
            } else {
                "key 'sweep.metric'"
            }
        ));
    }
    if file.asha.is_some() && objectives[0].metric().is_none() {
        return Err(format!(
            "{key}: ASHA prunes on the first objective, which must then be test_accuracy or val_accuracy (it is '{}')",
            objectives[0]
        ));
    }
    let metric = objectives
        .iter()
        .find_map(|o| o.metric())
        .unwrap_or_default();
    Ok((objectives, metric))
}

pub(super) fn toml_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// Parameters of one trial.
pub type Params = BTreeMap<String, Value>;
