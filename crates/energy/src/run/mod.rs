//! A run-level energy tracker: the meters of one process of a run, merged
//! with what the run's earlier processes left (a resumed run), the time
//! spent waiting for a carbon-aware slot kept apart, running totals
//! journalled so that a killed process loses at most a few seconds,
//! carbon, predictions and budgets, and the records a run keeps
//! (`run.json`'s `energy` and `carbon`, CodeCarbon's `emissions.csv`).
//!
//! CodeCarbon's start/stop, with provenance:
//!
//! ```
//! use greentrain_energy::carbon::Intensity;
//! use greentrain_energy::run::{RunOptions, RunTracker};
//! let intensity = Intensity::resolve(Some(300.0), None, None).unwrap();
//! let tracker = RunTracker::start(&RunOptions::default(), intensity, None);
//! std::thread::sleep(std::time::Duration::from_millis(50));
//! let (energy, carbon) = tracker.stop();
//! println!("{} kWh, {} gCO2eq [{}]", energy.total_kwh, carbon.operational.co2_g, energy.provenance);
//! assert!(energy.total_j > 0.0 && carbon.operational.co2_g > 0.0);
//! ```

mod emissions;
mod resumed;

pub use emissions::emissions_row;
pub use resumed::Prior;
use resumed::{merge_waiting, recover, JournalEntry};

use crate::budget::{self, BudgetVerdict, Prediction};
use crate::carbon::{CarbonRecord, Intensity};
use crate::estimate::TrackingMode;
use crate::journal::Journal;
use crate::nvml::GpuSelect;
use crate::tracker::{self, DetectOptions};
use crate::window::Window;
use crate::{ComponentEnergy, ComponentKind, Provenance, Tracker, WindowReport};
use serde::{Deserialize, Serialize};

/// The journal of running totals in a run folder (JSON lines).
pub const JOURNAL: &str = "energy.journal";

/// Seconds between journal entries: at most this much of a killed
/// process's energy is lost.
pub const JOURNAL_EVERY_S: f64 = 5.0;

/// Energy used while a scheduled run waited for a slot of its plan: kept
/// out of the run's totals, its epochs and its budgets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WaitingRecord {
    /// Seconds waited (all sessions).
    pub seconds: f64,
    /// Joules used meanwhile, all components.
    pub joules: f64,
    /// gCO2eq of those joules.
    pub co2_g: f64,
    /// Weakest provenance of those joules.
    pub provenance: Provenance,
}

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

/// The weakest of some provenances (a sum is only as good as its worst
/// part), or None when there are none.
pub fn weakest_provenance(items: impl IntoIterator<Item = Provenance>) -> Option<Provenance> {
    items.into_iter().reduce(Provenance::weakest)
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
    /// Whose share the estimates charged: the whole machine's or this
    /// process's (records before this field were all `machine`).
    #[serde(default)]
    pub tracking_mode: TrackingMode,
    /// The meters of the last session: method, and facts such as the GPU
    /// name, UUID, power limit and driver version.
    #[serde(default)]
    pub meters: Vec<crate::ComponentInfo>,
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
    /// Energy while waiting for a plan's slots, not in `total_j`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<WaitingRecord>,
    /// Upper bound on seconds of the run no meter covered: for each process
    /// killed mid-run, the journal interval after its last journal entry.
    #[serde(default)]
    pub unmetered_s: f64,
    /// Unix time these totals are as of (to compare with the journal).
    #[serde(default)]
    pub as_of_unix: f64,
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

/// This session's waiting, per component.
#[derive(Default)]
struct Waiting {
    components: Vec<ComponentEnergy>,
    seconds: f64,
    co2_g: f64,
}

/// Where and how to meter a run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// powercap root (the real one is `/sys/class/powercap`).
    pub rapl_root: std::path::PathBuf,
    /// Sampling rate, Hz.
    pub sample_hz: f64,
    /// Which GPUs: those the run uses.
    pub gpus: GpuSelect,
    /// Seconds of idle power to measure first (0: none).
    pub idle_baseline_s: f64,
    /// Power usage effectiveness applied to the grams.
    pub pue: f64,
    /// Embodied emissions attributed to the run, g (for SCI).
    pub embodied_g: Option<f64>,
    /// The journal file of running totals; none: no journal.
    pub journal: Option<std::path::PathBuf>,
    /// Whose share the estimates charge.
    pub tracking_mode: TrackingMode,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            rapl_root: crate::rapl::DEFAULT_ROOT.into(),
            sample_hz: 20.0,
            gpus: GpuSelect::Visible,
            idle_baseline_s: 0.0,
            pue: 1.0,
            embodied_g: None,
            journal: None,
            tracking_mode: TrackingMode::Machine,
        }
    }
}

/// What budgets and predictions need to know about a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BudgetOptions {
    /// Epochs the run will train.
    pub epochs: usize,
    /// Predict the whole run after this many epochs.
    pub predict_after_epochs: usize,
    /// Stop when the run reaches or is predicted to pass this, kWh.
    pub max_kwh: Option<f64>,
    /// Or this, gCO2eq.
    pub max_co2_g: Option<f64>,
}

/// One process's accounting of a run.
pub struct RunTracker {
    tracker: Tracker,
    intensity: Intensity,
    pue: f64,
    embodied_g: Option<f64>,
    prior: Option<(EnergyRecord, f64)>,
    windows: Vec<WindowReport>,
    idle: Option<WindowReport>,
    prediction: Option<Prediction>,
    waiting: Waiting,
    journal: Option<Journal>,
    unmetered_s: f64,
    tracking_mode: TrackingMode,
    /// Warnings found since the caller last took them: the caller shows
    /// them (or not, under `--quiet`); this crate prints nothing.
    to_show: Vec<String>,
}

impl RunTracker {
    /// Starts metering the GPUs in `gpus`, the CPU and memory. `prior` is
    /// what earlier processes of a resumed run left, which this session
    /// adds to; running totals are journalled in `run_dir`.
    pub fn start(opts: &RunOptions, intensity: Intensity, prior: Option<Prior>) -> Self {
        let detect = DetectOptions {
            rapl_root: opts.rapl_root.clone(),
            sample_hz: opts.sample_hz,
            gpus: opts.gpus.clone(),
            tracking_mode: opts.tracking_mode,
            ..DetectOptions::default()
        };
        let mut tracker = tracker::detect(&detect, None);
        let prior = prior.and_then(|p| recover(p, opts.journal.as_deref(), &mut tracker.warnings));
        let unmetered_s = prior.as_ref().map_or(0.0, |p| p.0.unmetered_s);
        let every = std::time::Duration::from_secs_f64(JOURNAL_EVERY_S);
        let journal = opts.journal.as_ref().and_then(|path| match Journal::open(path, every) {
            Ok(j) => Some(j),
            Err(e) => {
                tracker.warnings.push(format!(
                    "{}: cannot journal the energy ({e}); a killed run loses its energy since the last epoch",
                    path.display()
                ));
                None
            }
        });
        let (windows, idle_prior) = match &prior {
            Some((r, _)) => (r.windows.clone(), r.idle.clone()),
            None => (Vec::new(), None),
        };
        let mut a = Self {
            tracker,
            intensity,
            pue: opts.pue,
            embodied_g: opts.embodied_g,
            prior,
            windows,
            idle: None,
            prediction: None,
            waiting: Waiting::default(),
            journal,
            unmetered_s,
            tracking_mode: opts.tracking_mode,
            to_show: Vec::new(),
        };
        if idle_prior.is_none() && opts.idle_baseline_s > 0.0 {
            a.idle = Some(a.tracker.idle_baseline(opts.idle_baseline_s));
        }
        a
    }

    /// Stops metering: the energy and carbon records over the whole
    /// tracked time (CodeCarbon's `stop()`).
    pub fn stop(mut self) -> (EnergyRecord, CarbonOut) {
        self.record(0, 0.0)
    }

    /// One line for the start of a run: each meter with its provenance, and
    /// where the details are. A run on an NVIDIA GPU (`on_nvidia_gpu`)
    /// without a GPU meter also gets a warning, to show and in run.json.
    pub fn summary_line(&mut self, on_nvidia_gpu: bool) -> String {
        let comps = self.tracker.components();
        let has_gpu = comps.iter().any(|c| c.kind == ComponentKind::Gpu);
        if on_nvidia_gpu && !has_gpu {
            let w = "this CUDA run has no GPU energy meter (NVML missing, or the GPU not found): its energy leaves the GPU out".to_string();
            self.to_show.push(w.clone());
            self.tracker.warnings.push(w);
        }
        let parts: Vec<String> = comps
            .iter()
            .map(|c| {
                let name = c
                    .details
                    .iter()
                    .find(|(k, _)| k == "gpu_name")
                    .map_or(c.name.clone(), |(_, n)| format!("gpu {n}"));
                format!("{name} [{}]", c.provenance)
            })
            .collect();
        let mut line = format!("energy meters: {}", parts.join(", "));
        let notes = self.tracker.warnings.len();
        if notes > 0 {
            line.push_str(&format!("; {notes} note(s) in run.json energy.warnings"));
        }
        line.push_str(" (details: greentrain meters)");
        line
    }

    /// Setup problems to show once.
    pub fn warnings(&self) -> &[String] {
        &self.tracker.warnings
    }

    /// Problems found since the last call (a meter that failed, a journal
    /// that cannot be written), each once, for the caller to show.
    pub fn take_warnings(&mut self) -> Vec<String> {
        let new = self.tracker.new_warnings();
        self.to_show.extend(new);
        std::mem::take(&mut self.to_show)
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
    pub fn begin(&mut self, window: &Window) {
        self.tracker.begin(&window.to_string());
    }

    /// Closes a window and returns its report (None when it was not open).
    /// A [`Window::Wait`] is recorded and kept out of the run's totals.
    /// Meter problems found meanwhile wait in [`RunTracker::take_warnings`].
    pub fn end(&mut self, window: &Window) -> Option<WindowReport> {
        let w = self.tracker.end(&window.to_string())?;
        let new = self.tracker.new_warnings();
        self.to_show.extend(new);
        if window.is_wait() {
            self.add_waiting(&w);
        }
        self.windows.push(w.clone());
        Some(w)
    }

    /// Adds a waiting window to the waiting totals.
    fn add_waiting(&mut self, w: &WindowReport) {
        self.waiting.co2_g += self.co2_g(w.total_j, w.start_unix, w.end_unix);
        self.waiting.seconds += w.duration_s;
        for c in &w.components {
            match self
                .waiting
                .components
                .iter_mut()
                .find(|x| x.name == c.name)
            {
                Some(x) => {
                    x.joules += c.joules;
                    x.provenance = x.provenance.weakest(c.provenance);
                }
                None => self.waiting.components.push(c.clone()),
            }
        }
    }

    /// Appends the run's totals to the journal when one is due (every
    /// [`JOURNAL_EVERY_S`]); cheap otherwise. Reads the meters without
    /// synchronising the device.
    pub fn journal_if_due(&mut self) {
        if !self.journal.as_ref().is_some_and(Journal::due) {
            return;
        }
        let (components, carbon, duration_s, waiting) = self.totals(false);
        let entry = JournalEntry {
            unix: tracker::unix_now(),
            components,
            duration_s,
            co2_g: carbon.co2_g,
            waiting,
            unmetered_s: self.unmetered_s,
        };
        if let Some(Err(e)) = self.journal.as_mut().map(|j| j.append(&entry)) {
            let w = format!("the energy journal cannot be written ({e}); journalling stops");
            self.to_show.push(w.clone());
            self.tracker.warnings.push(w);
            self.journal = None;
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

    /// The run's totals (earlier sessions included, waiting left out),
    /// read with the device synchronised or not.
    fn totals(
        &mut self,
        synced: bool,
    ) -> (
        Vec<ComponentEnergy>,
        CarbonRecord,
        f64,
        Option<WaitingRecord>,
    ) {
        let total = if synced {
            self.tracker.total()
        } else {
            self.tracker.total_unsynced()
        };
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
        for w in &self.waiting.components {
            if let Some(c) = comps.iter_mut().find(|c| c.name == w.name) {
                c.joules -= w.joules;
            }
        }
        carbon.co2_g -= self.waiting.co2_g;
        let mut duration = total.duration_s - self.waiting.seconds;
        let mut waiting = self.session_waiting();
        if let Some((prior, prior_g)) = &self.prior {
            duration += prior.duration_s;
            waiting = merge_waiting(prior.waiting.clone(), waiting);
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
        (comps, carbon, duration, waiting)
    }

    fn session_waiting(&self) -> Option<WaitingRecord> {
        let w = &self.waiting;
        (!w.components.is_empty()).then(|| WaitingRecord {
            seconds: w.seconds,
            joules: w.components.iter().map(|c| c.joules).sum(),
            co2_g: w.co2_g,
            provenance: w
                .components
                .iter()
                .map(|c| c.provenance)
                .fold(Provenance::Measured, Provenance::weakest),
        })
    }

    /// After an epoch: predict the run and check the budgets.
    pub fn check_budget(
        &mut self,
        b: &BudgetOptions,
        epoch_s: &[f64],
        epoch_j: &[f64],
        used_j: f64,
        used_g: f64,
    ) -> BudgetVerdict {
        if epoch_s.len() >= b.predict_after_epochs {
            self.prediction = Some(budget::predict(
                epoch_s,
                epoch_j,
                b.epochs,
                self.intensity.nominal(),
                self.pue,
            ));
        }
        budget::check(
            used_j / 3.6e6,
            used_g,
            self.prediction.as_ref(),
            b.max_kwh,
            b.max_co2_g,
        )
    }

    /// The latest prediction.
    pub fn prediction(&self) -> Option<&Prediction> {
        self.prediction.as_ref()
    }

    /// The record parts, as of now.
    pub fn record(&mut self, samples: u64, train_wall_s: f64) -> (EnergyRecord, CarbonOut) {
        let (components, operational, duration_s, waiting) = self.totals(true);
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
            tracking_mode: self.tracking_mode,
            meters: self.tracker.components(),
            sample_hz: self.tracker.sample_hz(),
            idle,
            windows: self.windows.clone(),
            prediction: self.prediction.clone(),
            warnings: self.tracker.warnings.clone(),
            waiting,
            unmetered_s: self.unmetered_s,
            as_of_unix: tracker::unix_now(),
        };
        let sci = crate::carbon::sci(
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
