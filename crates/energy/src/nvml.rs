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
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuFacts {
    /// NVML index.
    pub index: u32,
    /// `GPU-...` UUID.
    pub uuid: String,
    /// Marketing name.
    pub name: String,
    /// Enforced power limit in watts.
    pub power_limit_w: Option<f64>,
    /// PCI bus id (`00000000:65:00.0`): what ties a CUDA device to it,
    /// since CUDA ordinals are not NVML indices.
    pub pci_bus_id: String,
    /// MIG mode is on: its counter covers every instance on the GPU.
    pub mig: bool,
}

/// Which GPUs to meter.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum GpuSelect {
    /// Every GPU a CUDA program would see (`CUDA_VISIBLE_DEVICES`).
    #[default]
    Visible,
    /// The GPUs at these PCI bus ids (the devices a run uses).
    PciBusIds(Vec<String>),
    /// None: the work runs on no GPU.
    NoGpu,
}

/// A PCI bus id as numbers (domain, bus, device, function): NVML writes
/// `00000000:65:00.0`, CUDA `0000:65:00.0`.
pub fn parse_bus_id(s: &str) -> Option<(u32, u32, u32, u32)> {
    let (rest, function) = s.trim().rsplit_once('.')?;
    let mut parts = rest.split(':');
    let (d, b, dev) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |x: &str| u32::from_str_radix(x, 16).ok();
    Some((hex(d)?, hex(b)?, hex(dev)?, hex(function)?))
}

/// The GPUs `select` names among `devices`, and a line for each problem
/// (a GPU NVML does not know, a MIG instance metered as its whole GPU).
pub fn select(
    devices: &[GpuFacts],
    select: &GpuSelect,
    cuda_visible: Option<&str>,
) -> (Vec<GpuFacts>, Vec<String>) {
    let mut warnings = Vec::new();
    let chosen = match select {
        GpuSelect::NoGpu => vec![],
        GpuSelect::Visible => {
            let v = visible(devices, cuda_visible);
            if v.is_empty() && !devices.is_empty() {
                warnings.push(format!(
                    "CUDA_VISIBLE_DEVICES={} names no GPU NVML knows (MIG instances are named by the run's device instead): no GPU energy meter",
                    cuda_visible.unwrap_or("")
                ));
            }
            v
        }
        GpuSelect::PciBusIds(ids) => {
            let mut out: Vec<GpuFacts> = Vec::new();
            for id in ids {
                let want = parse_bus_id(id);
                match devices
                    .iter()
                    .find(|d| want.is_some() && parse_bus_id(&d.pci_bus_id) == want)
                {
                    Some(d) if !out.contains(d) => out.push(d.clone()),
                    Some(_) => {}
                    None => warnings.push(format!(
                        "the run's GPU at PCI {id} is not among the GPUs NVML sees: no GPU energy meter for it"
                    )),
                }
            }
            out
        }
    };
    for g in chosen.iter().filter(|g| g.mig) {
        warnings.push(format!(
            "{} is in MIG mode: its energy counter covers the whole GPU, every instance on it",
            g.name
        ));
    }
    (chosen, warnings)
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
    pub fn all(api: Box<dyn GpuApi>, cuda_visible: Option<&str>) -> Vec<GpuMeter> {
        Self::selected(api, &GpuSelect::Visible, cuda_visible).0
    }

    /// A meter per GPU `which` names, and the problems found.
    pub fn selected(
        mut api: Box<dyn GpuApi>,
        which: &GpuSelect,
        cuda_visible: Option<&str>,
    ) -> (Vec<GpuMeter>, Vec<String>) {
        let driver = api.driver_version();
        let (devices, warnings) = select(&api.devices(), which, cuda_visible);
        let api = Arc::new(Mutex::new(api));
        let meters = devices
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
            .collect();
        (meters, warnings)
    }
}

impl Meter for GpuMeter {
    fn info(&self) -> ComponentInfo {
        let mut details = vec![
            ("gpu_name".to_string(), self.facts.name.clone()),
            ("uuid".to_string(), self.facts.uuid.clone()),
            ("nvml_index".to_string(), self.facts.index.to_string()),
        ];
        if !self.facts.pci_bus_id.is_empty() {
            details.push(("pci_bus_id".into(), self.facts.pci_bus_id.clone()));
        }
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
    /// About every 100 ms (measured on Hopper by the H200 run: the
    /// counter read exactly 0 J over some 57 ms windows).
    fn counter_update_s(&self) -> Option<f64> {
        self.start_mj.is_some().then_some(0.1)
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
                    pci_bus_id: d.pci_info().map(|p| p.bus_id).unwrap_or_default(),
                    mig: d.mig_mode().is_ok_and(|m| m.current == 1),
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
