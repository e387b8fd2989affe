//! What a meter is, and where its numbers come from.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How an energy number was obtained. Never present an estimate as a
/// measurement: every figure greentrain reports carries one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Provenance {
    /// Read from a hardware energy counter (RAPL, NVML total energy).
    Measured,
    /// Sampled hardware power, integrated over time.
    Integrated,
    /// From a model (named in `method`), not from the hardware.
    Estimated,
}

impl Provenance {
    /// The weakest of two (measured > integrated > estimated): a sum is
    /// only as good as its worst part.
    pub fn weakest(self, other: Provenance) -> Provenance {
        self.max(other)
    }
}

impl std::str::FromStr for Provenance {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "measured" => Ok(Provenance::Measured),
            "integrated" => Ok(Provenance::Integrated),
            "estimated" => Ok(Provenance::Estimated),
            other => Err(format!(
                "'{other}' is not measured, integrated or estimated"
            )),
        }
    }
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provenance::Measured => "measured",
            Provenance::Integrated => "integrated",
            Provenance::Estimated => "estimated",
        })
    }
}

/// What a component is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentKind {
    /// A GPU.
    Gpu,
    /// CPU packages.
    Cpu,
    /// DRAM as RAPL measures it.
    Dram,
    /// Memory as a model estimates it.
    Ram,
}

/// Facts about one metered component.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComponentInfo {
    /// Unique name, e.g. `gpu:GPU-1234...`, `cpu`, `dram`, `ram`.
    pub name: String,
    /// Kind.
    pub kind: ComponentKind,
    /// Provenance of the primary reading.
    pub provenance: Provenance,
    /// How it is obtained, e.g. `nvml total_energy_consumption`,
    /// `rapl package-0+package-1`, `tdp_x_utilisation (AMD EPYC 7B13, 240 W)`.
    pub method: String,
    /// Free-form facts (GPU name, power limit, driver version, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<(String, String)>,
}

/// A source of energy readings for one component.
///
/// A meter offers a cumulative energy counter, instantaneous power, or both.
/// The sampler reads counters at window edges and on every tick (so counter
/// wraparound is seen at least twice per wrap period), and integrates power
/// over time with the trapezoid rule.
pub trait Meter: Send {
    /// Facts about the component.
    fn info(&self) -> ComponentInfo;
    /// Cumulative energy in joules since the meter was created, from a
    /// hardware counter; `None` when the meter has no counter.
    fn energy_j(&mut self) -> Option<f64>;
    /// Power in watts now; `None` when the meter cannot tell.
    fn power_w(&mut self) -> Option<f64>;
    /// Provenance of the integrated power (`Integrated` for hardware power,
    /// `Estimated` for a model).
    fn power_provenance(&self) -> Provenance {
        Provenance::Integrated
    }
    /// How often the hardware updates the counter, in seconds: a window
    /// must be many of these long for its difference to mean much.
    fn counter_update_s(&self) -> Option<f64> {
        None
    }
}
