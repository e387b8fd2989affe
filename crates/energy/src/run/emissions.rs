//! CodeCarbon's `emissions.csv` row for a run.

use super::{CarbonOut, EnergyRecord};
use crate::codecarbon::EmissionsRow;
use crate::{carbon, tracker, ComponentEnergy, ComponentInfo, ComponentKind};

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
    use crate::Provenance;

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
