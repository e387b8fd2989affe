//! NVIDIA GPUs through NVML (`nvml-wrapper`, which loads
//! `libnvidia-ml.so` at run time: no library means no GPU meter and one
//! informative line, never a crash).
//!
//! Primary reading: the total-energy counter (millijoules, Volta and newer),
//! read at window edges. Cross-check: instant power sampled by the
//! sampler's thread and integrated. Older GPUs get integration only.

use crate::meter::{ComponentInfo, ComponentKind, Meter, Provenance};
use std::sync::{Arc, Mutex};

/// Facts about one GPU.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuFacts {
    /// NVML index.
    pub index: u32,
    /// `GPU-...` UUID.
    pub uuid: String,
    /// Marketing name.
    pub name: String,
    /// Enforced power limit in watts.
    pub power_limit_w: Option<f64>,
}

/// The part of NVML greentrain uses. The real implementation wraps
/// `nvml-wrapper`; tests use a fake.
pub trait GpuApi: Send {
    /// Driver version.
    fn driver_version(&mut self) -> Option<String>;
    /// All GPUs NVML sees.
    fn devices(&mut self) -> Vec<GpuFacts>;
    /// Total energy since the driver loaded, in millijoules (Volta+).
    fn total_energy_mj(&mut self, index: u32) -> Option<u64>;
    /// Instant power in milliwatts (the instant field, else `power_usage`).
    fn power_mw(&mut self, index: u32) -> Option<u64>;
}

/// Picks the GPUs a CUDA program sees: `CUDA_VISIBLE_DEVICES` as indices
/// or UUID prefixes, or all of them when it is unset.
pub fn visible(devices: &[GpuFacts], cuda_visible: Option<&str>) -> Vec<GpuFacts> {
    let Some(spec) = cuda_visible else {
        return devices.to_vec();
    };
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim) {
        if item.is_empty() || item.starts_with('-') {
            break; // CUDA stops at the first invalid entry
        }
        let found = if let Ok(i) = item.parse::<u32>() {
            devices.iter().find(|d| d.index == i)
        } else {
            devices.iter().find(|d| d.uuid.starts_with(item))
        };
        match found {
            Some(d) if !out.contains(d) => out.push(d.clone()),
            _ => break,
        }
    }
    out
}

/// One GPU's meter over a shared API handle.
pub struct GpuMeter {
    api: Arc<Mutex<Box<dyn GpuApi>>>,
    facts: GpuFacts,
    driver: Option<String>,
    start_mj: Option<u64>,
}

impl GpuMeter {
    /// A meter per visible GPU.
    pub fn all(mut api: Box<dyn GpuApi>, cuda_visible: Option<&str>) -> Vec<GpuMeter> {
        let driver = api.driver_version();
        let devices = visible(&api.devices(), cuda_visible);
        let api = Arc::new(Mutex::new(api));
        devices
            .into_iter()
            .map(|facts| {
                let start_mj = api.lock().unwrap().total_energy_mj(facts.index);
                GpuMeter {
                    api: api.clone(),
                    facts,
                    driver: driver.clone(),
                    start_mj,
                }
            })
            .collect()
    }
}

impl Meter for GpuMeter {
    fn info(&self) -> ComponentInfo {
        let mut details = vec![
            ("gpu_name".to_string(), self.facts.name.clone()),
            ("uuid".to_string(), self.facts.uuid.clone()),
            ("nvml_index".to_string(), self.facts.index.to_string()),
        ];
        if let Some(p) = self.facts.power_limit_w {
            details.push(("power_limit_w".into(), format!("{p}")));
        }
        if let Some(d) = &self.driver {
            details.push(("driver_version".into(), d.clone()));
        }
        let (provenance, method) = if self.start_mj.is_some() {
            (
                Provenance::Measured,
                "nvml total_energy_consumption counter".to_string(),
            )
        } else {
            (
                Provenance::Integrated,
                "nvml power sampled and integrated (no energy counter before Volta)".to_string(),
            )
        };
        ComponentInfo {
            name: format!("gpu:{}", self.facts.uuid),
            kind: ComponentKind::Gpu,
            provenance,
            method,
            details,
        }
    }
    fn energy_j(&mut self) -> Option<f64> {
        let start = self.start_mj?;
        let now = self.api.lock().unwrap().total_energy_mj(self.facts.index)?;
        Some(now.saturating_sub(start) as f64 * 1e-3)
    }
    fn power_w(&mut self) -> Option<f64> {
        self.api
            .lock()
            .unwrap()
            .power_mw(self.facts.index)
            .map(|mw| mw as f64 * 1e-3)
    }
}

/// The real NVML, loaded at run time.
#[cfg(feature = "nvml")]
pub struct Nvml {
    nvml: nvml_wrapper::Nvml,
}

#[cfg(feature = "nvml")]
impl Nvml {
    /// Loads the library; the error says why there is no GPU meter.
    pub fn load() -> Result<Self, String> {
        nvml_wrapper::Nvml::init()
            .map(|nvml| Self { nvml })
            .map_err(|e| format!("NVML unavailable ({e}): no GPU energy meter"))
    }
}

/// `NVML_FI_DEV_POWER_INSTANT` from nvml.h: power now, not the driver's
/// one-second average that `power_usage` returns on recent GPUs.
#[cfg(feature = "nvml")]
const FI_DEV_POWER_INSTANT: u32 = 186;

#[cfg(feature = "nvml")]
impl GpuApi for Nvml {
    fn driver_version(&mut self) -> Option<String> {
        self.nvml.sys_driver_version().ok()
    }
    fn devices(&mut self) -> Vec<GpuFacts> {
        let n = self.nvml.device_count().unwrap_or(0);
        (0..n)
            .filter_map(|i| {
                let d = self.nvml.device_by_index(i).ok()?;
                Some(GpuFacts {
                    index: i,
                    uuid: d.uuid().ok()?,
                    name: d.name().unwrap_or_default(),
                    power_limit_w: d.enforced_power_limit().ok().map(|mw| mw as f64 / 1000.0),
                })
            })
            .collect()
    }
    fn total_energy_mj(&mut self, index: u32) -> Option<u64> {
        self.nvml
            .device_by_index(index)
            .ok()?
            .total_energy_consumption()
            .ok()
    }
    fn power_mw(&mut self, index: u32) -> Option<u64> {
        use nvml_wrapper::enums::device::SampleValue;
        use nvml_wrapper::structs::device::FieldId;
        let d = self.nvml.device_by_index(index).ok()?;
        if let Ok(values) = d.field_values_for(&[FieldId(FI_DEV_POWER_INSTANT)]) {
            if let Some(Ok(sample)) = values.into_iter().next() {
                let v = match sample.value {
                    Ok(SampleValue::U32(v)) => Some(v as u64),
                    Ok(SampleValue::U64(v)) => Some(v),
                    Ok(SampleValue::I64(v)) if v >= 0 => Some(v as u64),
                    Ok(SampleValue::F64(v)) if v >= 0.0 => Some(v as u64),
                    _ => None,
                };
                if let Some(v) = v.filter(|&v| v > 0) {
                    return Some(v);
                }
            }
        }
        d.power_usage().ok().map(u64::from)
    }
}
