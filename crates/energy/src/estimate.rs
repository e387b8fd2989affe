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

/// System-wide CPU utilisation from /proc/stat, between two reads.
#[derive(Debug, Default)]
pub struct CpuLoad {
    last: Option<(u64, u64)>,
}

impl CpuLoad {
    fn read() -> Option<(u64, u64)> {
        let s = std::fs::read_to_string("/proc/stat").ok()?;
        let line = s.lines().next()?;
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

    /// Utilisation in [0, 1] since the previous call (None on the first).
    pub fn sample(&mut self) -> Option<f64> {
        let now = Self::read()?;
        let out = self.last.and_then(|(i0, t0)| {
            let dt = now.1.saturating_sub(t0);
            (dt > 0).then(|| 1.0 - now.0.saturating_sub(i0) as f64 / dt as f64)
        });
        self.last = Some(now);
        out.map(|u| u.clamp(0.0, 1.0))
    }
}

/// CPU power = TDP x system utilisation (CodeCarbon's CPU-load model).
pub struct CpuEstimate {
    tdp_w: f64,
    source: String,
    load: CpuLoad,
    last_util: f64,
}

impl CpuEstimate {
    /// For the CPU named `model`.
    pub fn new(model: &str) -> Self {
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
        let mut load = CpuLoad::default();
        load.sample();
        Self {
            tdp_w,
            source,
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
        ComponentInfo {
            name: "cpu".into(),
            kind: ComponentKind::Cpu,
            provenance: Provenance::Estimated,
            method: format!("estimate tdp_x_utilisation ({})", self.source),
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

/// RAM power = 0.375 W/GB x installed GB (CodeCarbon's model).
pub struct RamEstimate {
    gb: f64,
}

impl RamEstimate {
    /// For `gb` gigabytes of memory.
    pub fn new(gb: f64) -> Self {
        Self { gb }
    }
}

impl Meter for RamEstimate {
    fn info(&self) -> ComponentInfo {
        ComponentInfo {
            name: "ram".into(),
            kind: ComponentKind::Ram,
            provenance: Provenance::Estimated,
            method: format!(
                "estimate ram_w_per_gb ({RAM_W_PER_GB} W/GB x {:.1} GB, CodeCarbon's model)",
                self.gb
            ),
            details: vec![],
        }
    }
    fn energy_j(&mut self) -> Option<f64> {
        None
    }
    fn power_w(&mut self) -> Option<f64> {
        Some(RAM_W_PER_GB * self.gb)
    }
    fn power_provenance(&self) -> Provenance {
        Provenance::Estimated
    }
}
