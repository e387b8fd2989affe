//! Estimates for machines where nothing can be read (VMs, no RAPL, no
//! NVML). Every estimate names its model; none is ever called measured.

use crate::meter::{ComponentInfo, ComponentKind, Meter, Provenance};

/// CPU TDP table (`Name,TDP` in watts), derived from `cpu_power.csv` in the
/// `codecarbon` 3.3.2 wheel on PyPI (MIT licence, (c) the CodeCarbon
/// authors); see `crates/energy/data/ATTRIBUTION.md`.
pub const CPU_TDP_CSV: &str = include_str!("../data/cpu_tdp.csv");

/// TDP assumed when the CPU is not in the table (CodeCarbon's fallback).
pub const DEFAULT_TDP_W: f64 = 85.0;

/// CodeCarbon's RAM model: 3 W per 8 GB.
pub const RAM_W_PER_GB: f64 = 3.0 / 8.0;

/// Finds the TDP of `model` (as in /proc/cpuinfo): the longest table name
/// that appears in the model string, as whole words.
pub fn lookup_tdp(model: &str) -> Option<(String, f64)> {
    let norm = |s: &str| {
        s.replace("(R)", "")
            .replace("(TM)", "")
            .replace("(tm)", "")
            .replace("CPU", "")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    let m = format!(" {} ", norm(model));
    let mut best: Option<(String, f64)> = None;
    for line in CPU_TDP_CSV.lines().skip(1) {
        let Some((name, tdp)) = line.rsplit_once(',') else {
            continue;
        };
        let Ok(tdp) = tdp.trim().parse::<f64>() else {
            continue;
        };
        let n = norm(name);
        // Require a model number: a bare family name ("AMD EPYC") says nothing about power.
        if n.len() < 4 || !n.chars().any(|c| c.is_ascii_digit()) {
            continue;
        }
        if m.contains(&format!(" {n} ")) && best.as_ref().is_none_or(|(b, _)| n.len() > b.len()) {
            best = Some((name.trim().to_string(), tdp));
        }
    }
    best
}

/// Whose share of the machine an estimate charges to the run (CodeCarbon's
/// `tracking_mode`). Measured counters (RAPL, NVML) always cover the whole
/// package or GPU; only the estimates change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackingMode {
    /// Whole-machine CPU utilisation and installed RAM: right when the
    /// machine runs nothing else, and it then counts the run's side work
    /// (data loading in other processes, the driver).
    #[default]
    Machine,
    /// This process's CPU time (all its threads) as a share of the machine's,
    /// and its resident memory: right on a shared machine, where other work
    /// would otherwise be charged to the run.
    Process,
}

impl TrackingMode {
    /// The name in configs and in emissions.csv.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Machine => "machine",
            Self::Process => "process",
        }
    }
}

/// Idle and total ticks of the machine, from the `cpu` line of /proc/stat
/// (all CPUs summed, in USER_HZ ticks).
pub fn parse_proc_stat(s: &str) -> Option<(u64, u64)> {
    let line = s.lines().next()?;
    if !line.starts_with("cpu ") {
        return None;
    }
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 4 {
        return None;
    }
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    let total: u64 = v.iter().take(8).sum();
    Some((idle, total))
}

/// User plus system ticks of a process, from /proc/PID/stat. The command
/// name may hold spaces and parentheses, so fields are counted after the
/// last `)`: utime and stime are fields 14 and 15 of proc(5).
pub fn parse_pid_stat(s: &str) -> Option<u64> {
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident memory in GB, from the `VmRSS:` line (kB) of /proc/PID/status.
pub fn parse_vm_rss_gb(s: &str) -> Option<f64> {
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0 / 1024.0)
}

#[derive(Clone, Copy, Debug)]
struct Ticks {
    idle: u64,
    total: u64,
    process: u64,
}

/// CPU utilisation between two reads: the machine's busy share, or this
/// process's share of all CPU time.
#[derive(Debug, Default)]
pub struct CpuLoad {
    mode: TrackingMode,
    last: Option<Ticks>,
}

impl CpuLoad {
    /// Utilisation as `mode` counts it.
    pub fn new(mode: TrackingMode) -> Self {
        Self { mode, last: None }
    }

    fn read(&self) -> Option<Ticks> {
        let (idle, total) = parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)?;
        let process = match self.mode {
            TrackingMode::Machine => 0,
            TrackingMode::Process => {
                parse_pid_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?
            }
        };
        Some(Ticks {
            idle,
            total,
            process,
        })
    }

    /// Utilisation in [0, 1] since the previous call (None on the first).
    pub fn sample(&mut self) -> Option<f64> {
        let now = self.read()?;
        let out = self.last.and_then(|t0| {
            let dt = now.total.saturating_sub(t0.total);
            let busy = match self.mode {
                TrackingMode::Machine => dt.saturating_sub(now.idle.saturating_sub(t0.idle)),
                TrackingMode::Process => now.process.saturating_sub(t0.process),
            };
            (dt > 0).then(|| busy as f64 / dt as f64)
        });
        self.last = Some(now);
        out.map(|u| u.clamp(0.0, 1.0))
    }
}

/// CPU power = TDP x utilisation (CodeCarbon's CPU-load model).
pub struct CpuEstimate {
    tdp_w: f64,
    source: String,
    mode: TrackingMode,
    load: CpuLoad,
    last_util: f64,
}

impl CpuEstimate {
    /// For the CPU named `model`, utilisation counted as `mode` says.
    pub fn new(model: &str, mode: TrackingMode) -> Self {
        let (tdp_w, source) = match lookup_tdp(model) {
            Some((name, tdp)) => (
                tdp,
                format!("TDP {tdp} W of {name} from CodeCarbon's table"),
            ),
            None => (
                DEFAULT_TDP_W,
                format!("'{model}' not in CodeCarbon's TDP table: default TDP {DEFAULT_TDP_W} W"),
            ),
        };
        let mut load = CpuLoad::new(mode);
        load.sample();
        Self {
            tdp_w,
            source,
            mode,
            load,
            last_util: 0.5,
        }
    }

    /// The TDP in use.
    pub fn tdp_w(&self) -> f64 {
        self.tdp_w
    }
}

impl Meter for CpuEstimate {
    fn info(&self) -> ComponentInfo {
        let share = match self.mode {
            TrackingMode::Machine => String::new(),
            TrackingMode::Process => {
                "; utilisation = this process's share of all CPU time (tracking_mode process)"
                    .into()
            }
        };
        ComponentInfo {
            name: "cpu".into(),
            kind: ComponentKind::Cpu,
            provenance: Provenance::Estimated,
            method: format!("estimate tdp_x_utilisation ({}{share})", self.source),
            details: vec![],
        }
    }
    fn energy_j(&mut self) -> Option<f64> {
        None
    }
    fn power_w(&mut self) -> Option<f64> {
        if let Some(u) = self.load.sample() {
            self.last_util = u;
        }
        Some(self.tdp_w * self.last_util)
    }
    fn power_provenance(&self) -> Provenance {
        Provenance::Estimated
    }
}

/// Total memory in GB from /proc/meminfo.
pub fn total_ram_gb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0 / 1024.0)
}

/// RAM power = 0.375 W/GB x GB (CodeCarbon's model): installed memory in
/// machine mode, this process's resident memory in process mode.
pub struct RamEstimate {
    gb: f64,
    process: bool,
}

impl RamEstimate {
    /// For `gb` gigabytes of installed memory (machine mode).
    pub fn new(gb: f64) -> Self {
        Self { gb, process: false }
    }

    /// For this process's resident memory, read at every sample.
    pub fn process() -> Self {
        Self {
            gb: Self::rss_gb().unwrap_or(0.0),
            process: true,
        }
    }

    fn rss_gb() -> Option<f64> {
        parse_vm_rss_gb(&std::fs::read_to_string("/proc/self/status").ok()?)
    }
}

impl Meter for RamEstimate {
    fn info(&self) -> ComponentInfo {
        let method = if self.process {
            format!("estimate ram_w_per_gb ({RAM_W_PER_GB} W/GB x this process's resident memory, CodeCarbon's model, tracking_mode process)")
        } else {
            format!(
                "estimate ram_w_per_gb ({RAM_W_PER_GB} W/GB x {:.1} GB, CodeCarbon's model)",
                self.gb
            )
        };
        ComponentInfo {
            name: "ram".into(),
            kind: ComponentKind::Ram,
            provenance: Provenance::Estimated,
            method,
            details: vec![],
        }
    }
    fn energy_j(&mut self) -> Option<f64> {
        None
    }
    fn power_w(&mut self) -> Option<f64> {
        if self.process {
            if let Some(gb) = Self::rss_gb() {
                self.gb = gb;
            }
        }
        Some(RAM_W_PER_GB * self.gb)
    }
    fn power_provenance(&self) -> Provenance {
        Provenance::Estimated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_counts_idle_and_iowait_as_idle() {
        let s = "cpu  100 5 50 1000 20 3 2 7 9 0\ncpu0 50 2 25 500 10 1 1 3 4 0\n";
        assert_eq!(parse_proc_stat(s), Some((1020, 1187)));
        assert_eq!(parse_proc_stat("cpu0 1 2 3 4\n"), None);
        assert_eq!(parse_proc_stat("cpu  1 2\n"), None);
    }

    #[test]
    fn pid_stat_fields_are_counted_after_the_last_parenthesis() {
        // A command name with spaces and a ") (" inside: utime 1234, stime 56.
        let s = "4242 (my ) (trainer x) R 1 4242 4242 0 -1 4194304 900 0 0 0 1234 56 7 8 20 0 3 0 100 0 0";
        assert_eq!(parse_pid_stat(s), Some(1290));
        assert_eq!(parse_pid_stat("4242 (x) R 1 2"), None);
        assert_eq!(parse_pid_stat("no parenthesis 1 2 3"), None);
    }

    #[test]
    fn vm_rss_is_read_in_gigabytes() {
        let s = "Name:\tgreentrain\nVmPeak:\t 9999 kB\nVmRSS:\t 2097152 kB\n";
        assert_eq!(parse_vm_rss_gb(s), Some(2.0));
        assert_eq!(parse_vm_rss_gb("Name: x\n"), None);
    }

    #[test]
    fn tracking_mode_names_are_codecarbons() {
        for (m, name) in [
            (TrackingMode::Machine, "machine"),
            (TrackingMode::Process, "process"),
        ] {
            assert_eq!(m.as_str(), name);
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{name}\""));
        }
        assert_eq!(TrackingMode::default(), TrackingMode::Machine);
    }
}
