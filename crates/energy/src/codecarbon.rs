//! `emissions.csv` in CodeCarbon's exact columns and units, so that tools
//! reading CodeCarbon's file read ours.

use std::path::Path;

/// CodeCarbon's columns, in its order.
pub const COLUMNS: [&str; 38] = [
    "timestamp",
    "project_name",
    "run_id",
    "experiment_id",
    "duration",
    "emissions",
    "emissions_rate",
    "cpu_power",
    "gpu_power",
    "ram_power",
    "cpu_energy",
    "gpu_energy",
    "ram_energy",
    "energy_consumed",
    "water_consumed",
    "country_name",
    "country_iso_code",
    "region",
    "cloud_provider",
    "cloud_region",
    "os",
    "python_version",
    "codecarbon_version",
    "cpu_count",
    "cpu_model",
    "gpu_count",
    "gpu_model",
    "longitude",
    "latitude",
    "ram_total_size",
    "tracking_mode",
    "cpu_utilization_percent",
    "gpu_utilization_percent",
    "ram_utilization_percent",
    "ram_used_gb",
    "on_cloud",
    "pue",
    "wue",
];

/// One row. Units as CodeCarbon: seconds, kg CO2eq, kg/s, W, kWh, GB.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EmissionsRow {
    /// ISO 8601 time of the row.
    pub timestamp: String,
    /// Project name (greentrain: the run name).
    pub project_name: String,
    /// Run id (greentrain: the run directory name).
    pub run_id: String,
    /// Experiment id (empty unless set).
    pub experiment_id: String,
    /// Seconds.
    pub duration: f64,
    /// kg CO2eq.
    pub emissions: f64,
    /// Mean power per component over the run, W.
    pub cpu_power: f64,
    /// W.
    pub gpu_power: f64,
    /// W.
    pub ram_power: f64,
    /// kWh.
    pub cpu_energy: f64,
    /// kWh.
    pub gpu_energy: f64,
    /// kWh (RAPL DRAM or the RAM model).
    pub ram_energy: f64,
    /// Country name, when a country zone is known.
    pub country_name: String,
    /// ISO alpha-3.
    pub country_iso_code: String,
    /// Cloud provider, when a cloud zone was given.
    pub cloud_provider: String,
    /// Cloud region.
    pub cloud_region: String,
    /// CPU threads.
    pub cpu_count: usize,
    /// CPU model.
    pub cpu_model: String,
    /// GPUs metered.
    pub gpu_count: usize,
    /// GPU model names.
    pub gpu_model: String,
    /// GB.
    pub ram_total_size: f64,
    /// Whose share the estimates charged.
    pub tracking_mode: crate::estimate::TrackingMode,
    /// PUE.
    pub pue: f64,
}

impl EmissionsRow {
    fn fields(&self) -> Vec<String> {
        let energy = self.cpu_energy + self.gpu_energy + self.ram_energy;
        let rate = if self.duration > 0.0 {
            self.emissions / self.duration
        } else {
            0.0
        };
        let on_cloud = if self.cloud_provider.is_empty() {
            "N"
        } else {
            "Y"
        };
        vec![
            self.timestamp.clone(),
            self.project_name.clone(),
            self.run_id.clone(),
            self.experiment_id.clone(),
            self.duration.to_string(),
            self.emissions.to_string(),
            rate.to_string(),
            self.cpu_power.to_string(),
            self.gpu_power.to_string(),
            self.ram_power.to_string(),
            self.cpu_energy.to_string(),
            self.gpu_energy.to_string(),
            self.ram_energy.to_string(),
            energy.to_string(),
            "0.0".into(),
            self.country_name.clone(),
            self.country_iso_code.clone(),
            String::new(),
            self.cloud_provider.clone(),
            self.cloud_region.clone(),
            std::env::consts::OS.to_string(),
            String::new(),
            String::new(),
            self.cpu_count.to_string(),
            self.cpu_model.clone(),
            self.gpu_count.to_string(),
            self.gpu_model.clone(),
            String::new(),
            String::new(),
            self.ram_total_size.to_string(),
            self.tracking_mode.as_str().into(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            on_cloud.into(),
            self.pue.to_string(),
            "0.0".into(),
        ]
    }

    /// The CSV text (header and this row).
    pub fn to_csv(&self) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(COLUMNS).expect("in-memory csv");
        w.write_record(self.fields()).expect("in-memory csv");
        String::from_utf8(w.into_inner().expect("in-memory csv")).expect("utf-8")
    }

    /// Writes `emissions.csv` into `dir` atomically and fsync'd
    /// ([`crate::files::write_atomic`]: never through a symlink).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        crate::files::write_atomic(&dir.join("emissions.csv"), self.to_csv().as_bytes())
    }
}
