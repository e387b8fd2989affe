//! The tracker: a background sampler over a set of meters and named,
//! nestable measurement windows (`begin("train/epoch-3")` ... `end(..)`),
//! after Zeus's measurement-window API.
//!
//! Window edges call a synchronise hook first, so that on asynchronous
//! backends (GPUs) the work launched inside a window is finished before its
//! energy is read.

use crate::meter::{ComponentInfo, Meter, Provenance};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Counter and integrated power disagreeing by more than this is flagged.
pub const CROSS_CHECK_TOLERANCE: f64 = 0.05;

/// Windows shorter than this are not cross-checked: NVML's averaged power
/// lags by up to a second and its counter moves in 100 ms steps, so over a
/// short window the two differ for reasons that are not errors.
pub const CROSS_CHECK_MIN_S: f64 = 5.0;

/// A window is too short for a counter when two of its update periods (one
/// at each edge) exceed this share of the window.
pub const RESOLUTION_TOLERANCE: f64 = 0.05;

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Energy of one component over a window or a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComponentEnergy {
    /// Component name (`cpu`, `dram`, `ram`, `gpu:<uuid>`).
    pub name: String,
    /// `gpu`, `cpu`, `dram` or `ram`.
    pub kind: crate::ComponentKind,
    /// Joules.
    pub joules: f64,
    /// How `joules` was obtained.
    pub provenance: Provenance,
    /// The meter's method (and model, for estimates).
    pub method: String,
    /// Integrated sampled power over the same span, when the component has
    /// both a counter and a power reading (the cross-check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrated_j: Option<f64>,
    /// `|counter - integrated| / counter > 5%` over a window of at least
    /// [`CROSS_CHECK_MIN_S`] (shorter windows are not cross-checked).
    #[serde(default)]
    pub cross_check_disagrees: bool,
    /// How often the counter updates, s: the resolution `joules` has in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter_update_s: Option<f64>,
    /// The window is too short to trust the counter: two update periods
    /// are more than 5% of it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub too_short: bool,
    /// Counter reads that failed during the window. When non-zero, `joules`
    /// is integrated power (`integrated`) or, for a meter without power
    /// readings, the counter up to its last good read (`estimated`, an
    /// undercount).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub read_failures: u64,
}

/// One finished window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowReport {
    /// Window name.
    pub name: String,
    /// Unix seconds at the start.
    pub start_unix: f64,
    /// Unix seconds at the end.
    pub end_unix: f64,
    /// Seconds.
    pub duration_s: f64,
    /// Per component.
    pub components: Vec<ComponentEnergy>,
    /// Sum over components, in joules.
    pub total_j: f64,
    /// Weakest provenance among the components.
    pub provenance: Provenance,
}

impl WindowReport {
    /// The window this report measured, read from its recorded name.
    pub fn window(&self) -> crate::Window {
        self.name.parse().unwrap_or_else(|never| match never {})
    }
}

struct Comp {
    info: ComponentInfo,
    meter: Box<dyn Meter>,
    /// The last good counter reading (kept through failed reads).
    counter_j: Option<f64>,
    /// Whether the first read found a counter: a `None` after that is a
    /// failed read, not a meter without one.
    has_counter: Option<bool>,
    failures: u64,
    integrated_j: f64,
    has_power: bool,
    last_power: Option<(Instant, f64)>,
}

impl Comp {
    /// Reads the meter; a new warning when a counter read fails for the
    /// first time.
    fn poll(&mut self, now: Instant) -> Option<String> {
        let mut warning = None;
        match (self.meter.energy_j(), self.has_counter) {
            (Some(e), _) => {
                self.counter_j = Some(e);
                self.has_counter.get_or_insert(true);
            }
            (None, None) => self.has_counter = Some(false),
            (None, Some(false)) => {}
            (None, Some(true)) => {
                self.failures += 1;
                if self.failures == 1 {
                    warning = Some(format!(
                        "{}: a counter read failed at {}; the windows it affects are marked and their provenance lowered",
                        self.info.name,
                        crate::carbon::format_time(unix_now())
                    ));
                }
            }
        }
        if let Some(p) = self.meter.power_w() {
            self.has_power = true;
            if let Some((t0, p0)) = self.last_power {
                let dt = now.saturating_duration_since(t0).as_secs_f64();
                self.integrated_j += 0.5 * (p0 + p) * dt;
            }
            self.last_power = Some((now, p));
        }
        warning
    }

    /// One component's energy between two readings, with its provenance.
    fn between(&self, i: usize, a: &Reading, b: &Reading, min_check_s: f64) -> ComponentEnergy {
        let integrated = b.integrated[i] - a.integrated[i];
        let failures = b.failures[i] - a.failures[i];
        let delta = match (a.counter[i], b.counter[i]) {
            (Some(x), Some(y)) => Some(y - x),
            _ => None,
        };
        let duration = (b.unix - a.unix).max(0.0);
        let (joules, integrated_j, provenance) = match delta {
            Some(j) if failures == 0 => (
                j,
                self.has_power.then_some(integrated),
                Provenance::Measured,
            ),
            _ if failures > 0 && self.has_power => (integrated, None, Provenance::Integrated),
            Some(j) => (j, None, Provenance::Estimated),
            None => (integrated, None, self.meter.power_provenance()),
        };
        let counted = provenance == Provenance::Measured;
        let update = self.meter.counter_update_s().filter(|_| counted);
        let disagrees = match integrated_j {
            Some(ij) if joules > 0.0 && duration >= min_check_s => {
                ((joules - ij) / joules).abs() > CROSS_CHECK_TOLERANCE
            }
            _ => false,
        };
        ComponentEnergy {
            name: self.info.name.clone(),
            kind: self.info.kind,
            joules,
            provenance,
            method: self.info.method.clone(),
            integrated_j,
            cross_check_disagrees: disagrees,
            counter_update_s: update,
            too_short: update.is_some_and(|u| 2.0 * u > RESOLUTION_TOLERANCE * duration),
            read_failures: failures,
        }
    }
}

#[derive(Clone, Debug)]
struct Reading {
    unix: f64,
    counter: Vec<Option<f64>>,
    integrated: Vec<f64>,
    failures: Vec<u64>,
}

struct Inner {
    comps: Vec<Comp>,
    /// (unix seconds, cumulative joules over all components)
    timeline: Vec<(f64, f64)>,
    /// Problems found while sampling, not yet taken by the tracker.
    warnings: Vec<String>,
}

impl Inner {
    fn read(&mut self) -> Reading {
        let now = Instant::now();
        for c in &mut self.comps {
            if let Some(w) = c.poll(now) {
                self.warnings.push(w);
            }
        }
        let r = Reading {
            unix: unix_now(),
            counter: self.comps.iter().map(|c| c.counter_j).collect(),
            integrated: self.comps.iter().map(|c| c.integrated_j).collect(),
            failures: self.comps.iter().map(|c| c.failures).collect(),
        };
        let total = self
            .comps
            .iter()
            .map(|c| c.counter_j.unwrap_or(c.integrated_j))
            .sum();
        self.timeline.push((r.unix, total));
        r
    }
}

/// Unix time in seconds, with fractions.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

type SyncHook = Box<dyn Fn() + Send>;

/// Samples meters in the background and measures named windows.
pub struct Tracker {
    inner: Arc<Mutex<Inner>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    sync: Option<SyncHook>,
    open: HashMap<String, Reading>,
    start: Reading,
    sample_hz: f64,
    cross_check_min_s: f64,
    /// Problems found while setting up meters, to show once.
    pub warnings: Vec<String>,
}

impl Tracker {
    /// Starts sampling `meters` at `sample_hz` (10-20 Hz is the intended
    /// range; 0 disables the thread and reads only at window edges).
    pub fn new(meters: Vec<Box<dyn Meter>>, sample_hz: f64) -> Self {
        let comps: Vec<Comp> = meters
            .into_iter()
            .map(|m| Comp {
                info: m.info(),
                meter: m,
                counter_j: None,
                has_counter: None,
                failures: 0,
                integrated_j: 0.0,
                has_power: false,
                last_power: None,
            })
            .collect();
        let mut inner = Inner {
            comps,
            timeline: Vec::new(),
            warnings: Vec::new(),
        };
        let start = inner.read();
        let inner = Arc::new(Mutex::new(inner));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = (sample_hz > 0.0).then(|| {
            let (inner, stop) = (inner.clone(), stop.clone());
            let period = Duration::from_secs_f64(1.0 / sample_hz);
            std::thread::Builder::new()
                .name("greentrain-energy".into())
                .spawn(move || {
                    // Parked rather than asleep, so that dropping the
                    // tracker wakes it at once instead of a period later.
                    let mut next = Instant::now() + period;
                    loop {
                        let now = Instant::now();
                        if now < next {
                            std::thread::park_timeout(next - now);
                        }
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        if Instant::now() >= next {
                            inner.lock().unwrap().read();
                            next = (next + period).max(Instant::now());
                        }
                    }
                })
                .expect("spawn energy sampler")
        });
        Self {
            inner,
            stop,
            thread,
            sync: None,
            open: HashMap::new(),
            start,
            sample_hz,
            cross_check_min_s: CROSS_CHECK_MIN_S,
            warnings: Vec::new(),
        }
    }

    /// Sets the shortest window that is cross-checked (default
    /// [`CROSS_CHECK_MIN_S`]).
    pub fn set_cross_check_min_s(&mut self, secs: f64) {
        self.cross_check_min_s = secs;
    }

    /// Sets the hook called at every window edge (e.g. the device's sync).
    pub fn set_sync(&mut self, hook: impl Fn() + Send + 'static) {
        self.sync = Some(Box::new(hook));
    }

    /// Sampling rate in Hz.
    pub fn sample_hz(&self) -> f64 {
        self.sample_hz
    }

    /// The components being metered.
    pub fn components(&self) -> Vec<ComponentInfo> {
        self.inner
            .lock()
            .unwrap()
            .comps
            .iter()
            .map(|c| c.info.clone())
            .collect()
    }

    fn edge(&mut self) -> Reading {
        if let Some(s) = &self.sync {
            s();
        }
        self.inner.lock().unwrap().read()
    }

    /// Opens window `name`. Windows nest and overlap freely; reopening an
    /// open name restarts it.
    pub fn begin(&mut self, name: &str) {
        let r = self.edge();
        self.open.insert(name.to_string(), r);
    }

    /// Closes window `name` and reports it; `None` if it was not open.
    pub fn end(&mut self, name: &str) -> Option<WindowReport> {
        let start = self.open.remove(name)?;
        let end = self.edge();
        Some(self.report(name, &start, &end))
    }

    /// Energy since the tracker started.
    pub fn total(&mut self) -> WindowReport {
        let end = self.edge();
        self.report("total", &self.start, &end)
    }

    /// [`Tracker::total`] without the synchronise hook: for running totals
    /// taken mid-work (a journal), which may trail queued device work.
    pub fn total_unsynced(&mut self) -> WindowReport {
        let end = self.inner.lock().unwrap().read();
        self.report("total", &self.start, &end)
    }

    /// Problems found while sampling since the last call (each also kept in
    /// [`Tracker::warnings`]), to show once.
    pub fn new_warnings(&mut self) -> Vec<String> {
        let new = std::mem::take(&mut self.inner.lock().unwrap().warnings);
        self.warnings.extend(new.iter().cloned());
        new
    }

    /// Cumulative energy over time: `(unix seconds, joules since start)`.
    pub fn timeline(&self) -> Vec<(f64, f64)> {
        let inner = self.inner.lock().unwrap();
        let base = inner.timeline.first().map_or(0.0, |p| p.1);
        inner.timeline.iter().map(|&(t, j)| (t, j - base)).collect()
    }

    fn report(&self, name: &str, a: &Reading, b: &Reading) -> WindowReport {
        let inner = self.inner.lock().unwrap();
        let components: Vec<ComponentEnergy> = (0..inner.comps.len())
            .map(|i| inner.comps[i].between(i, a, b, self.cross_check_min_s))
            .collect();
        let total_j = components.iter().map(|c| c.joules).sum();
        let provenance = components
            .iter()
            .map(|c| c.provenance)
            .fold(Provenance::Measured, Provenance::weakest);
        WindowReport {
            name: name.to_string(),
            start_unix: a.unix,
            end_unix: b.unix,
            duration_s: (b.unix - a.unix).max(0.0),
            components,
            total_j,
            provenance,
        }
    }

    /// Measures idle power for `secs` seconds before any work: watts per
    /// component, to subtract as a baseline.
    pub fn idle_baseline(&mut self, secs: f64) -> WindowReport {
        self.begin("idle");
        std::thread::sleep(Duration::from_secs_f64(secs));
        self.end("idle").expect("idle window is open")
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Where to look for meters.
#[derive(Clone, Debug)]
pub struct DetectOptions {
    /// powercap root (the real one is `/sys/class/powercap`).
    pub rapl_root: std::path::PathBuf,
    /// Try NVML.
    pub nvml: bool,
    /// `CUDA_VISIBLE_DEVICES`.
    pub cuda_visible: Option<String>,
    /// Which GPUs to meter: those the work runs on.
    pub gpus: crate::nvml::GpuSelect,
    /// CPU model name, for the TDP estimate.
    pub cpu_model: String,
    /// Sampling rate.
    pub sample_hz: f64,
    /// Whose share the estimates charge (counters always cover the device).
    pub tracking_mode: crate::estimate::TrackingMode,
}

impl Default for DetectOptions {
    fn default() -> Self {
        Self {
            rapl_root: crate::rapl::DEFAULT_ROOT.into(),
            nvml: true,
            cuda_visible: std::env::var("CUDA_VISIBLE_DEVICES").ok(),
            gpus: crate::nvml::GpuSelect::Visible,
            cpu_model: cpu_model(),
            sample_hz: 20.0,
            tracking_mode: crate::estimate::TrackingMode::Machine,
        }
    }
}

/// The CPU model from /proc/cpuinfo.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Builds the best meters this machine offers: NVML for GPUs, RAPL for CPU
/// and DRAM, and named estimates for whatever cannot be read.
pub fn detect(opts: &DetectOptions, gpu_api: Option<Box<dyn crate::nvml::GpuApi>>) -> Tracker {
    let mut meters: Vec<Box<dyn Meter>> = Vec::new();
    let mut warnings = Vec::new();
    let wants_gpu = opts.gpus != crate::nvml::GpuSelect::NoGpu;
    let api = match gpu_api {
        Some(a) => Some(a),
        None if opts.nvml && wants_gpu => load_nvml(&mut warnings),
        None => None,
    };
    if let Some(api) = api {
        let (gpus, w) =
            crate::nvml::GpuMeter::selected(api, &opts.gpus, opts.cuda_visible.as_deref());
        warnings.extend(w);
        for m in gpus {
            meters.push(Box::new(m));
        }
    }
    let rapl = crate::rapl::discover(&opts.rapl_root);
    warnings.extend(rapl.warnings);
    let process = opts.tracking_mode == crate::estimate::TrackingMode::Process;
    if process && (rapl.cpu.is_some() || rapl.dram.is_some()) {
        warnings.push("tracking_mode process: RAPL counters measure the whole CPU package and DRAM, other processes' work included; only estimates are per process".into());
    }
    match rapl.cpu {
        Some(m) => meters.push(Box::new(m)),
        None => {
            if !warnings.iter().any(|w| w.contains("permission denied")) {
                warnings.push(format!(
                    "no readable RAPL counters under {}: CPU energy is estimated",
                    opts.rapl_root.display()
                ));
            }
            meters.push(Box::new(crate::estimate::CpuEstimate::new(
                &opts.cpu_model,
                opts.tracking_mode,
            )));
        }
    }
    match rapl.dram {
        Some(m) => meters.push(Box::new(m)),
        None if process => meters.push(Box::new(crate::estimate::RamEstimate::process())),
        None => meters.push(Box::new(crate::estimate::RamEstimate::new(
            crate::estimate::total_ram_gb().unwrap_or(8.0),
        ))),
    }
    let mut t = Tracker::new(meters, opts.sample_hz);
    t.warnings = warnings;
    t
}

#[cfg(feature = "nvml")]
fn load_nvml(warnings: &mut Vec<String>) -> Option<Box<dyn crate::nvml::GpuApi>> {
    match crate::nvml::Nvml::load() {
        Ok(n) => Some(Box::new(n)),
        Err(e) => {
            warnings.push(e);
            None
        }
    }
}

#[cfg(not(feature = "nvml"))]
fn load_nvml(warnings: &mut Vec<String>) -> Option<Box<dyn crate::nvml::GpuApi>> {
    warnings.push("built without the `nvml` feature: no GPU energy meter".into());
    None
}
