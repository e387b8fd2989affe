//! CPU package and DRAM energy from the kernel's powercap RAPL files
//! (`/sys/class/powercap/intel-rapl:*`; AMD exposes the same tree).
//!
//! Package domains are summed once per socket; `psys` (the whole platform)
//! is never added on top of packages, and `core`/`uncore` subdomains are
//! never added on top of their package. DRAM is reported separately. Each
//! counter wraps at `max_energy_range_uj`; wraps are folded into a u64
//! accumulator, which needs a read at least twice per wrap period (the
//! sampler's 10 Hz is far more than that).

use crate::meter::{ComponentInfo, ComponentKind, Meter, Provenance};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// The kernel's powercap folder.
pub const DEFAULT_ROOT: &str = "/sys/class/powercap";

/// File reads, behind a trait so that tests can simulate what a fixture
/// tree cannot (a root user is never denied permission).
pub trait Fs: Send + Sync {
    /// Reads a whole file as text.
    fn read(&self, path: &Path) -> std::io::Result<String>;
}

/// The real filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

impl Fs for RealFs {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

#[derive(Clone)]
struct Domain {
    fs: std::sync::Arc<dyn Fs>,
    name: String,
    energy_file: PathBuf,
    max_range_uj: Option<u64>,
    last_raw: u64,
    acc_uj: u64,
}

impl Domain {
    fn read_raw(&self) -> std::io::Result<u64> {
        let s = self.fs.read(&self.energy_file)?;
        s.trim().parse().map_err(|e| {
            std::io::Error::new(
                ErrorKind::InvalidData,
                format!("{}: {e}", self.energy_file.display()),
            )
        })
    }

    /// Folds a new raw reading into the accumulator.
    fn update(&mut self, raw: u64) {
        let delta = if raw >= self.last_raw {
            raw - self.last_raw
        } else {
            match self.max_range_uj {
                // The counter passed max_energy_range_uj and restarted at 0.
                Some(max) => max.saturating_sub(self.last_raw) + raw,
                // Range unknown: count what is visible after the wrap
                // (undercounts by the part before it; warned at discovery).
                None => raw,
            }
        };
        self.acc_uj += delta;
        self.last_raw = raw;
    }
}

/// One RAPL component: the CPU packages, or DRAM.
pub struct RaplMeter {
    kind: ComponentKind,
    domains: Vec<Domain>,
}

impl RaplMeter {
    /// `None` when a read fails. Nothing latches: the next good read
    /// folds in everything counted meanwhile (the tracker degrades the
    /// windows that saw the failure).
    fn poll(&mut self) -> Option<f64> {
        let raws: Vec<u64> = self
            .domains
            .iter()
            .map(|d| d.read_raw())
            .collect::<std::io::Result<_>>()
            .ok()?;
        for (d, raw) in self.domains.iter_mut().zip(raws) {
            d.update(raw);
        }
        Some(self.domains.iter().map(|d| d.acc_uj as f64 * 1e-6).sum())
    }
}

impl Meter for RaplMeter {
    fn info(&self) -> ComponentInfo {
        let names: Vec<&str> = self.domains.iter().map(|d| d.name.as_str()).collect();
        ComponentInfo {
            name: match self.kind {
                ComponentKind::Dram => "dram".into(),
                _ => "cpu".into(),
            },
            kind: self.kind,
            provenance: Provenance::Measured,
            method: format!("rapl {}", names.join("+")),
            details: vec![],
        }
    }
    fn energy_j(&mut self) -> Option<f64> {
        self.poll()
    }
    fn power_w(&mut self) -> Option<f64> {
        None
    }
    /// Intel documents about 1 ms.
    fn counter_update_s(&self) -> Option<f64> {
        Some(0.001)
    }
}

/// What a look at the powercap tree found.
#[derive(Default)]
pub struct RaplDiscovery {
    /// The CPU meter (sum of packages), when readable.
    pub cpu: Option<RaplMeter>,
    /// The DRAM meter, when the platform exposes it.
    pub dram: Option<RaplMeter>,
    /// One line per problem, to show the user once.
    pub warnings: Vec<String>,
}

/// Looks for RAPL domains under `root` (normally [`DEFAULT_ROOT`]).
pub fn discover(root: &Path) -> RaplDiscovery {
    discover_with(root, std::sync::Arc::new(RealFs))
}

/// [`discover`] reading files through `fs`.
pub fn discover_with(root: &Path, fs: std::sync::Arc<dyn Fs>) -> RaplDiscovery {
    let read_trim = |p: &Path| fs.read(p).ok().map(|s| s.trim().to_string());
    let mut out = RaplDiscovery::default();
    let Ok(entries) = std::fs::read_dir(root) else {
        return out;
    };
    let mut zones: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("intel-rapl:") || n.starts_with("amd-rapl:"))
        })
        .collect();
    zones.sort();
    let mut packages = Vec::new();
    let mut drams = Vec::new();
    let mut psys = Vec::new();
    for z in &zones {
        let Some(name) = read_trim(&z.join("name")) else {
            continue;
        };
        let depth = z
            .file_name()
            .unwrap()
            .to_string_lossy()
            .matches(':')
            .count();
        let kind = if name.starts_with("package") {
            Some(ComponentKind::Cpu)
        } else if name == "dram" {
            Some(ComponentKind::Dram)
        } else if name == "psys" {
            psys.push(z.clone());
            None
        } else {
            None // core, uncore: already inside their package
        };
        let Some(kind) = kind else { continue };
        if kind == ComponentKind::Cpu && depth != 1 {
            continue;
        }
        let energy_file = z.join("energy_uj");
        let max_range_uj = read_trim(&z.join("max_energy_range_uj")).and_then(|s| s.parse().ok());
        if max_range_uj.is_none() {
            out.warnings.push(format!(
                "RAPL: {} has no readable max_energy_range_uj; energy across a counter wrap may be undercounted",
                z.display()
            ));
        }
        let raw = match fs.read(&energy_file) {
            Ok(s) => match s.trim().parse::<u64>() {
                Ok(v) => v,
                Err(_) => {
                    out.warnings
                        .push(format!("RAPL: {} is not a number", energy_file.display()));
                    continue;
                }
            },
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                out.warnings.push(format!(
                    "RAPL: permission denied reading {}; grant read access with `sudo chmod a+r {}/intel-rapl:*/energy_uj {}/intel-rapl:*/*/energy_uj` (or a udev rule), falling back to an estimate",
                    energy_file.display(),
                    root.display(),
                    root.display()
                ));
                return RaplDiscovery {
                    cpu: None,
                    dram: None,
                    warnings: out.warnings,
                };
            }
            Err(e) => {
                out.warnings
                    .push(format!("RAPL: cannot read {}: {e}", energy_file.display()));
                continue;
            }
        };
        let d = Domain {
            fs: fs.clone(),
            name,
            energy_file,
            max_range_uj,
            last_raw: raw,
            acc_uj: 0,
        };
        match kind {
            ComponentKind::Dram => drams.push(d),
            _ => packages.push(d),
        }
    }
    // psys covers the whole platform: used alone only when there is no package domain.
    if packages.is_empty() {
        for z in psys {
            let energy_file = z.join("energy_uj");
            if let Some(raw) = read_trim(&energy_file).and_then(|s| s.parse().ok()) {
                packages.push(Domain {
                    fs: fs.clone(),
                    name: "psys".into(),
                    energy_file,
                    max_range_uj: read_trim(&z.join("max_energy_range_uj"))
                        .and_then(|s| s.parse().ok()),
                    last_raw: raw,
                    acc_uj: 0,
                });
            }
        }
    }
    if !packages.is_empty() {
        out.cpu = Some(RaplMeter {
            kind: ComponentKind::Cpu,
            domains: packages,
        });
    }
    if !drams.is_empty() {
        out.dram = Some(RaplMeter {
            kind: ComponentKind::Dram,
            domains: drams,
        });
    }
    out
}
