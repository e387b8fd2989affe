//! The trainer's side of energy accounting: the run tracker's options from
//! the config, and the carbon intensity it names. The tracker itself, the
//! records and emissions.csv are `greentrain_energy::run`'s.

use crate::config::Config;
use greentrain_energy::carbon::{self, Intensity};
use greentrain_energy::nvml::GpuSelect;
use greentrain_energy::run::{BudgetOptions, RunOptions};
use std::path::Path;

pub use greentrain_energy::run::{
    emissions_row, weakest_provenance, CarbonOut, EnergyRecord, IdleRecord, Prior, RunTracker,
    WaitingRecord, JOURNAL, JOURNAL_EVERY_S,
};

/// Resolves the carbon intensity before training (a bad file or zone is a
/// config error).
pub fn intensity(c: &Config, config_dir: &Path) -> Result<Intensity, carbon::CarbonError> {
    let file = c.carbon.intensity_file.as_ref().map(|f| {
        if f.is_absolute() {
            f.clone()
        } else {
            config_dir.join(f)
        }
    });
    Intensity::resolve(
        c.carbon.intensity_g_per_kwh,
        file.as_deref(),
        c.carbon.zone.as_deref(),
    )
}

/// The tracker's options for a run in `run_dir` on the GPUs `gpus`.
pub fn options(c: &Config, run_dir: &Path, gpus: GpuSelect) -> RunOptions {
    RunOptions {
        rapl_root: c.energy.rapl_root.clone(),
        sample_hz: c.energy.sample_hz,
        gpus,
        idle_baseline_s: c.energy.idle_baseline_s,
        pue: c.carbon.pue,
        embodied_g: c.carbon.embodied_g,
        journal: Some(run_dir.join(JOURNAL)),
        tracking_mode: c.energy.tracking_mode,
    }
}

/// What the budgets need from the config.
pub fn budget(c: &Config) -> BudgetOptions {
    BudgetOptions {
        epochs: c.train.epochs,
        predict_after_epochs: c.budget.predict_after_epochs,
        max_kwh: c.budget.max_kwh,
        max_co2_g: c.budget.max_co2_g,
    }
}
