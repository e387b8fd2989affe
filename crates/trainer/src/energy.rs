//! The trainer's use of `greentrain-energy`: one tracker per run session,
//! windows per epoch (train, eval, checkpoint), carbon, predictions and
//! budgets, and what goes into `run.json` and `emissions.csv`.

use crate::config::Config;
use greentrain_energy::budget::{self, BudgetVerdict, Prediction};
use greentrain_energy::carbon::{self, CarbonRecord, Intensity};
use greentrain_energy::codecarbon::EmissionsRow;
use greentrain_energy::tracker::{self, DetectOptions};
use greentrain_energy::{
    ComponentEnergy, ComponentInfo, ComponentKind, Provenance, Tracker, WindowReport,
};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Idle power measured before training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdleRecord {
    /// Seconds measured.
    pub seconds: f64,
    /// Mean idle power over all components, W.
    pub watts: f64,
    /// Provenance of the idle measurement.
    pub provenance: Provenance,
    /// Run energy minus idle power x training time, J.
    pub above_idle_j: f64,
}

/// The weakest of recorded provenance names (an unrecognised name counts
/// as `estimated`), or None when there are none.
pub fn weakest_provenance<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<String> {
    names
        .into_iter()
        .map(|n| n.parse().unwrap_or(Provenance::Estimated))
        .reduce(Provenance::weakest)
        .map(|p| p.to_string())
}

/// `run.json`'s `energy`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnergyRecord {
    /// Per component, over the whole run (all sessions if resumed).
    pub components: Vec<ComponentEnergy>,
    /// Sum over components, J.
    pub total_j: f64,
    /// Seconds metered (all sessions of a resumed run).
    #[serde(default)]
    pub duration_s: f64,
    /// Same in kWh.
    pub total_kwh: f64,
    /// Weakest provenance among the components.
    pub provenance: Provenance,
    /// The meters of the last session: method, and facts such as the GPU
    /// name, UUID, power limit and driver version.
    #[serde(default)]
    pub meters: Vec<greentrain_energy::ComponentInfo>,
    /// Sampling rate, Hz.
    pub sample_hz: f64,
    /// Idle baseline, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<IdleRecord>,
    /// Every measurement window (train/eval/checkpoint per epoch).
    pub windows: Vec<WindowReport>,
    /// Whole-run prediction made after the first epoch(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<Prediction>,
    /// What could not be measured, and why.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// `run.json`'s `carbon`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CarbonOut {
    /// Intensity, source, PUE, operational emissions.
    #[serde(flatten)]
    pub operational: CarbonRecord,
    /// Embodied emissions attributed to the run, g.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embodied_g: Option<f64>,
    /// Software Carbon Intensity: (E x I + M) / R, gCO2eq per training sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sci_g_per_sample: Option<f64>,
}

/// Resolves the carbon intensity before training (a bad file or zone is a
/// config error).
pub fn intensity(c: &Config, config_dir: &Path) -> Result<Intensity, carbon::CarbonError> {
    let file = c.carbon.intensity_file.as_ref().map(|f| {
        if f.is_absolute() {
            f.clone()
        } else {
            config_dir.join(f)
        }
    });
    Intensity::resolve(
        c.carbon.intensity_g_per_kwh,
        file.as_deref(),
        c.carbon.zone.as_deref(),
    )
}

/// One session's accounting.
pub struct Account {
    tracker: Tracker,
    intensity: Intensity,
    pue: f64,
    embodied_g: Option<f64>,
    prior: Option<(EnergyRecord, f64)>,
    windows: Vec<WindowReport>,
    idle: Option<WindowReport>,
    prediction: Option<Prediction>,
}

impl Account {
    /// Starts metering. `prior` is the record of earlier sessions of a
    /// resumed run (energy and grams), which this session adds to.
    pub fn start(c: &Config, intensity: Intensity, prior: Option<(EnergyRecord, f64)>) -> Self {
        let opts = DetectOptions {
            rapl_root: c.energy.rapl_root.clone(),
            sample_hz: c.energy.sample_hz,
            ..DetectOptions::default()
        };
        let tracker = tracker::detect(&opts, None);
        let (windows, idle_prior) = match &prior {
            Some((r, _)) => (r.windows.clone(), r.idle.clone()),
            None => (Vec::new(), None),
        };
        let mut a = Self {
            tracker,
            intensity,
            pue: c.carbon.pue,
            embodied_g: c.carbon.embodied_g,
            prior,
            windows,
            idle: None,
            prediction: None,
        };
        if idle_prior.is_none() && c.energy.idle_baseline_s > 0.0 {
            a.idle = Some(a.tracker.idle_baseline(c.energy.idle_baseline_s));
        }
        a
    }

    /// Setup problems to show once.
    pub fn warnings(&self) -> &[String] {
        &self.tracker.warnings
    }

    /// One line per component: what is metered and how.
    pub fn describe(&self) -> Vec<String> {
        self.tracker
            .components()
            .iter()
            .map(|c| format!("{} [{}]: {}", c.name, c.provenance, c.method))
            .collect()
    }

    /// The weakest provenance over the metered components, for figures
    /// printed without their breakdown.
    pub fn provenance(&self) -> Provenance {
        self.tracker
            .components()
            .iter()
            .map(|c| c.provenance)
            .reduce(Provenance::weakest)
            .unwrap_or(Provenance::Estimated)
    }

    /// Sets the device synchronisation called at window edges.
    pub fn set_sync(&mut self, f: impl Fn() + Send + 'static) {
        self.tracker.set_sync(f);
    }

    /// Opens a window.
    pub fn begin(&mut self, name: &str) {
        self.tracker.begin(name);
    }

    /// Closes a window; returns its joules.
    pub fn end(&mut self, name: &str) -> f64 {
        match self.tracker.end(name) {
            Some(w) => {
                let j = w.total_j;
                self.windows.push(w);
                j
            }
            None => 0.0,
        }
    }

    /// gCO2eq of `joules` used between two unix times.
    pub fn co2_g(&self, joules: f64, start_unix: f64, end_unix: f64) -> f64 {
        let rec = self.intensity.account(
            &[(start_unix, 0.0), (end_unix.max(start_unix), joules)],
            self.pue,
        );
        rec.co2_g
    }

    fn totals(&mut self) -> (Vec<ComponentEnergy>, CarbonRecord, f64) {
        let total = self.tracker.total();
        let duration = total.duration_s + self.prior.as_ref().map_or(0.0, |p| p.0.duration_s);
        let timeline = self.tracker.timeline();
        let mut carbon = self.intensity.account(&timeline, self.pue);
        // The timeline's sampled total can trail the last edge read; scale
        // grams to the edge total so co2 = kWh x PUE x intensity exactly.
        let tl_j = timeline.last().map_or(0.0, |p| p.1);
        if tl_j > 0.0 {
            carbon.co2_g *= total.total_j / tl_j;
        } else {
            carbon.co2_g = total.total_j / 3.6e6 * self.pue * carbon.intensity_g_per_kwh;
        }
        let mut comps = total.components;
        if let Some((prior, prior_g)) = &self.prior {
            for p in &prior.components {
                match comps.iter_mut().find(|c| c.name == p.name) {
                    Some(c) => {
                        c.joules += p.joules;
                        c.integrated_j = match (c.integrated_j, p.integrated_j) {
                            (Some(a), Some(b)) => Some(a + b),
                            (a, b) => a.or(b),
                        };
                        c.provenance = c.provenance.weakest(p.provenance);
                    }
                    None => comps.push(p.clone()),
                }
            }
            let j: f64 = comps.iter().fold(0.0, |a, c| a + c.joules);
            let g = carbon.co2_g + prior_g;
            carbon.co2_g = g;
            if j > 0.0 {
                carbon.intensity_g_per_kwh = g / (j / 3.6e6) / self.pue;
            }
        }
        (comps, carbon, duration)
    }

    /// After an epoch: predict the run and check the budgets.
    pub fn check_budget(
        &mut self,
        c: &Config,
        epoch_s: &[f64],
        epoch_j: &[f64],
        used_j: f64,
        used_g: f64,
    ) -> BudgetVerdict {
        if epoch_s.len() >= c.budget.predict_after_epochs {
            self.prediction = Some(budget::predict(
                epoch_s,
                epoch_j,
                c.train.epochs,
                self.intensity.nominal(),
                self.pue,
            ));
        }
        budget::check(
            used_j / 3.6e6,
            used_g,
            self.prediction.as_ref(),
            c.budget.max_kwh,
            c.budget.max_co2_g,
        )
    }

    /// The latest prediction.
    pub fn prediction(&self) -> Option<&Prediction> {
        self.prediction.as_ref()
    }

    /// The record parts, as of now.
    pub fn record(&mut self, samples: u64, train_wall_s: f64) -> (EnergyRecord, CarbonOut) {
        let (components, operational, duration_s) = self.totals();
        let total_j: f64 = components.iter().fold(0.0, |a, c| a + c.joules);
        let provenance = components
            .iter()
            .map(|c| c.provenance)
            .fold(Provenance::Measured, Provenance::weakest);
        let idle = match (
            &self.idle,
            self.prior.as_ref().and_then(|p| p.0.idle.clone()),
        ) {
            (_, Some(prev)) => Some(IdleRecord {
                above_idle_j: total_j - prev.watts * train_wall_s,
                ..prev
            }),
            (Some(w), None) => {
                let watts = w.total_j / w.duration_s.max(1e-9);
                Some(IdleRecord {
                    seconds: w.duration_s,
                    watts,
                    provenance: w.provenance,
                    above_idle_j: total_j - watts * train_wall_s,
                })
            }
            (None, None) => None,
        };
        let energy = EnergyRecord {
            components,
            total_j,
            duration_s,
            total_kwh: total_j / 3.6e6,
            provenance,
            meters: self.tracker.components(),
            sample_hz: self.tracker.sample_hz(),
            idle,
            windows: self.windows.clone(),
            prediction: self.prediction.clone(),
            warnings: self.tracker.warnings.clone(),
        };
        let sci = greentrain_energy::carbon::sci(
            operational.co2_g,
            self.embodied_g.unwrap_or(0.0),
            samples as f64,
        );
        let carbon = CarbonOut {
            operational,
            embodied_g: self.embodied_g,
            sci_g_per_sample: self.embodied_g.and(sci),
        };
        (energy, carbon)
    }
}

/// CodeCarbon's `gpu_model`: "N x NAME" per distinct GPU name (from NVML's
/// `gpu_name` detail), the meter name when NVML gave none.
fn gpu_model<'a>(meters: &[ComponentInfo], gpus: impl Iterator<Item = &'a str>) -> String {
    let mut names: Vec<(String, usize)> = Vec::new();
    for g in gpus {
        let name = meters
            .iter()
            .find(|m| m.name == g)
            .and_then(|m| m.details.iter().find(|(k, _)| k == "gpu_name"))
            .map_or(g, |(_, v)| v.as_str())
            .to_string();
        match names.iter_mut().find(|(n, _)| *n == name) {
            Some((_, count)) => *count += 1,
            None => names.push((name, 1)),
        }
    }
    let parts: Vec<String> = names.iter().map(|(n, c)| format!("{c} x {n}")).collect();
    parts.join(", ")
}

/// The CodeCarbon-format row for a run. `cpu_model` is the host CPU's
/// name, whatever device trained.
pub fn emissions_row(
    name: &str,
    run_id: &str,
    energy: &EnergyRecord,
    carbon: &CarbonOut,
    zone: Option<&str>,
    cpu_model: &str,
) -> EmissionsRow {
    let kwh = |kinds: &[ComponentKind]| -> f64 {
        energy
            .components
            .iter()
            .filter(|c| kinds.contains(&c.kind))
            .fold(0.0, |a, c| a + c.joules)
            / 3.6e6
    };
    let duration_s = energy.duration_s;
    let watts = |k: f64| {
        if duration_s > 0.0 {
            k * 3.6e6 / duration_s
        } else {
            0.0
        }
    };
    let (cpu, gpu, ram) = (
        kwh(&[ComponentKind::Cpu]),
        kwh(&[ComponentKind::Gpu]),
        kwh(&[ComponentKind::Ram, ComponentKind::Dram]),
    );
    let gpus: Vec<&ComponentEnergy> = energy
        .components
        .iter()
        .filter(|c| c.kind == ComponentKind::Gpu)
        .collect();
    let z = zone.and_then(|z| carbon::zone(z).ok());
    let (country_name, iso, provider, region) = match &z {
        Some(z) if z.kind == "country" => {
            (z.name.clone(), z.code.clone(), String::new(), String::new())
        }
        Some(z) => (String::new(), String::new(), z.kind.clone(), z.code.clone()),
        None => Default::default(),
    };
    EmissionsRow {
        timestamp: carbon::format_time(tracker::unix_now()),
        project_name: name.to_string(),
        run_id: run_id.to_string(),
        experiment_id: String::new(),
        duration: duration_s,
        emissions: carbon.operational.co2_g / 1000.0,
        cpu_power: watts(cpu),
        gpu_power: watts(gpu),
        ram_power: watts(ram),
        cpu_energy: cpu,
        gpu_energy: gpu,
        ram_energy: ram,
        country_name,
        country_iso_code: iso,
        cloud_provider: provider,
        cloud_region: region,
        cpu_count: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu_model: cpu_model.to_string(),
        gpu_count: gpus.len(),
        gpu_model: gpu_model(&energy.meters, gpus.iter().map(|g| g.name.as_str())),
        ram_total_size: greentrain_energy::estimate::total_ram_gb().unwrap_or(0.0),
        pue: carbon.operational.pue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(name: &str, model: Option<&str>) -> ComponentInfo {
        ComponentInfo {
            name: name.into(),
            kind: ComponentKind::Gpu,
            provenance: Provenance::Measured,
            method: "nvml total_energy_consumption".into(),
            details: model
                .map(|m| vec![("gpu_name".to_string(), m.to_string())])
                .unwrap_or_default(),
        }
    }

    /// CodeCarbon's columns name the GPU model, not its UUID.
    #[test]
    fn gpu_model_names_the_gpus_as_codecarbon_does() {
        let h = "NVIDIA H100 80GB HBM3";
        let meters = [
            gpu("gpu:GPU-1", Some(h)),
            gpu("gpu:GPU-2", Some(h)),
            gpu("gpu:GPU-3", None),
        ];
        let names = ["gpu:GPU-1", "gpu:GPU-2", "gpu:GPU-3"];
        assert_eq!(
            gpu_model(&meters, names.into_iter()),
            format!("2 x {h}, 1 x gpu:GPU-3")
        );
        assert_eq!(gpu_model(&meters, std::iter::empty()), "");
    }
}
