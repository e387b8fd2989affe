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

use crate::budget::{self, BudgetVerdict, Prediction};
use crate::carbon::{self, CarbonRecord, Intensity};
use crate::codecarbon::EmissionsRow;
use crate::estimate::TrackingMode;
use crate::journal::Journal;
use crate::nvml::GpuSelect;
use crate::tracker::{self, DetectOptions};
use crate::{ComponentEnergy, ComponentInfo, ComponentKind, Provenance, Tracker, WindowReport};
use serde::{Deserialize, Serialize};
use std::path::Path;

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

/// What an earlier process of a resumed run left.
pub struct Prior {
    /// Its energy record (run.json as last saved; none when it was killed
    /// before its first save).
    pub energy: Option<EnergyRecord>,
    /// Its grams.
    pub co2_g: f64,
    /// Whether it ended without saving a final state (killed): its journal
    /// then says more than run.json, and up to one journal interval after
    /// the journal's last entry went unmetered.
    pub killed: bool,
}

/// One journal line: the run's totals as of `unix`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct JournalEntry {
    unix: f64,
    components: Vec<ComponentEnergy>,
    duration_s: f64,
    co2_g: f64,
    #[serde(default)]
    waiting: Option<WaitingRecord>,
    #[serde(default)]
    unmetered_s: f64,
}

impl JournalEntry {
    /// Why this entry cannot be a running total a meter wrote (a crafted or
    /// damaged file): `None` when every figure is finite and not negative.
    fn implausible(&self) -> Option<String> {
        let bad = |x: f64| !x.is_finite() || x < 0.0;
        if !self.unix.is_finite() || self.unix <= 0.0 {
            return Some(format!("time {}", self.unix));
        }
        if let Some(c) = self.components.iter().find(|c| bad(c.joules)) {
            return Some(format!("{} J for {}", c.joules, c.name));
        }
        for (what, x) in [
            ("duration_s", self.duration_s),
            ("co2_g", self.co2_g),
            ("unmetered_s", self.unmetered_s),
        ] {
            if bad(x) {
                return Some(format!("{what} {x}"));
            }
        }
        None
    }
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
    /// where the details are. A CUDA run without a GPU meter also gets a
    /// warning, on stderr and in run.json.
    pub fn summary_line(&mut self, backend: &str) -> String {
        let comps = self.tracker.components();
        let has_gpu = comps.iter().any(|c| c.kind == ComponentKind::Gpu);
        if backend == "cuda" && !has_gpu {
            let w = "this CUDA run has no GPU energy meter (NVML missing, or the GPU not found): its energy leaves the GPU out".to_string();
            eprintln!("energy: warning: {w}");
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

    /// Closes a window; returns its joules. Meter problems found since the
    /// last window are shown (once each).
    pub fn end(&mut self, name: &str) -> f64 {
        let j = match self.tracker.end(name) {
            Some(w) => {
                let j = w.total_j;
                self.windows.push(w);
                j
            }
            None => 0.0,
        };
        for w in self.tracker.new_warnings() {
            eprintln!("energy: warning: {w}");
        }
        j
    }

    /// Closes a waiting window: recorded, and kept out of the run's totals.
    pub fn end_waiting(&mut self, name: &str) {
        let Some(w) = self.tracker.end(name) else {
            return;
        };
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
        self.windows.push(w);
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
            eprintln!("energy: warning: {w}");
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

fn merge_waiting(a: Option<WaitingRecord>, b: Option<WaitingRecord>) -> Option<WaitingRecord> {
    match (a, b) {
        (Some(a), Some(b)) => Some(WaitingRecord {
            seconds: a.seconds + b.seconds,
            joules: a.joules + b.joules,
            co2_g: a.co2_g + b.co2_g,
            provenance: a.provenance.weakest(b.provenance),
        }),
        (a, b) => a.or(b),
    }
}

/// The totals an earlier process left: run.json's, or its journal's when
/// the journal is newer (the process was killed after its last save), plus
/// the unmetered interval of a killed process.
fn recover(
    p: Prior,
    journal: Option<&Path>,
    warnings: &mut Vec<String>,
) -> Option<(EnergyRecord, f64)> {
    let as_of = p.energy.as_ref().map_or(0.0, |e| e.as_of_unix);
    let newer = journal
        .and_then(Journal::last::<JournalEntry>)
        .filter(|j| j.unix > as_of)
        .filter(|j| match j.implausible() {
            None => true,
            Some(why) => {
                warnings.push(format!(
                    "{JOURNAL}: its last entry is not a running total ({why}); ignored, the energy since the last saved record is unmetered"
                ));
                false
            }
        });
    let (mut e, g) = match (p.energy, newer) {
        (e, Some(j)) => {
            warnings.push(format!(
                "the previous process stopped without saving its energy; its totals up to {} come from {JOURNAL}",
                crate::carbon::format_time(j.unix)
            ));
            (from_journal(e, j.clone()), j.co2_g)
        }
        (Some(e), None) => (e, p.co2_g),
        (None, None) => return None,
    };
    if p.killed {
        e.unmetered_s += JOURNAL_EVERY_S;
        warnings.push(format!(
            "the previous process was killed: up to {JOURNAL_EVERY_S} s of it after {} went unmetered (energy.unmetered_s)",
            crate::carbon::format_time(e.as_of_unix)
        ));
    }
    Some((e, g))
}

/// A record with a journal entry's totals (and the rest of `base`, or
/// nothing, when the process was killed before its first save).
fn from_journal(base: Option<EnergyRecord>, j: JournalEntry) -> EnergyRecord {
    let total_j: f64 = j.components.iter().map(|c| c.joules).sum();
    let provenance = j
        .components
        .iter()
        .map(|c| c.provenance)
        .fold(Provenance::Measured, Provenance::weakest);
    let base = base.unwrap_or(EnergyRecord {
        components: vec![],
        total_j: 0.0,
        duration_s: 0.0,
        total_kwh: 0.0,
        provenance,
        tracking_mode: TrackingMode::Machine,
        meters: vec![],
        sample_hz: 0.0,
        idle: None,
        windows: vec![],
        prediction: None,
        warnings: vec![],
        waiting: None,
        unmetered_s: 0.0,
        as_of_unix: 0.0,
    });
    EnergyRecord {
        total_j,
        total_kwh: total_j / 3.6e6,
        provenance,
        components: j.components,
        duration_s: j.duration_s,
        waiting: j.waiting,
        unmetered_s: j.unmetered_s,
        as_of_unix: j.unix,
        ..base
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
        ram_total_size: crate::estimate::total_ram_gb().unwrap_or(0.0),
        tracking_mode: energy.tracking_mode,
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

    /// A journal whose last line claims negative joules (or a NaN) is not
    /// taken as the run's energy: a warning, and no record from it.
    #[test]
    fn an_implausible_journal_entry_is_ignored_with_a_warning() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(JOURNAL);
        let line = |j: f64| {
            format!(
                "{{\"unix\":1.8e9,\"components\":[{{\"name\":\"cpu\",\"kind\":\"cpu\",\"joules\":{j},\"provenance\":\"estimated\",\"method\":\"tdp\"}}],\"duration_s\":10.0,\"co2_g\":0.1}}\n"
            )
        };
        let prior = || Prior {
            energy: None,
            co2_g: 0.0,
            killed: true,
        };
        std::fs::write(&path, line(-2.0e6)).unwrap();
        let mut warnings = vec![];
        assert!(recover(prior(), Some(&path), &mut warnings).is_none());
        assert!(warnings[0].contains("-2000000 J for cpu"), "{warnings:?}");
        std::fs::write(&path, line(500.0)).unwrap();
        let (e, _) = recover(prior(), Some(&path), &mut vec![]).unwrap();
        assert_eq!(e.total_j, 500.0);
    }
}
