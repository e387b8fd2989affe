//! One run as the studies over many runs (bench, sweep, tune) read it: its
//! status, folder, last figures, energy, CO2 and target, extracted from the
//! outcome once, instead of by each study into its own struct.

use crate::record::{EpochRecord, TargetRecord};
use crate::run::{Failure, Outcome};
use crate::status::RunStatus;
use greentrain_energy::Provenance;
use std::path::PathBuf;

/// What a study keeps of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    /// How it ended (`failed` when it could not run).
    pub status: RunStatus,
    /// Its folder (none when it could not start).
    pub run_dir: Option<PathBuf>,
    /// Epochs trained.
    pub epochs: usize,
    /// The last epoch's record.
    pub last: Option<EpochRecord>,
    /// Training seconds over all epochs (none before the first ends).
    pub wall_s: Option<f64>,
    /// The run's energy, J, and its provenance.
    pub energy_j: Option<f64>,
    /// Its provenance.
    pub provenance: Option<Provenance>,
    /// Its operational emissions, gCO2eq.
    pub co2_g: Option<f64>,
    /// The target, when some epoch met it.
    pub reached: Option<TargetRecord>,
    /// Why it failed.
    pub error: Option<String>,
}

impl RunSummary {
    /// The summary of a run's outcome.
    pub fn of(outcome: &Result<Outcome, Failure>) -> Self {
        match outcome {
            Ok(o) => Self::of_run(o),
            Err(e) => RunSummary {
                status: RunStatus::Failed,
                run_dir: None,
                epochs: 0,
                last: None,
                wall_s: None,
                energy_j: None,
                provenance: None,
                co2_g: None,
                reached: None,
                error: Some(e.to_string()),
            },
        }
    }

    /// The summary of a run that ran.
    pub fn of_run(o: &Outcome) -> Self {
        let r = &o.record;
        let last = r.epochs.last().cloned();
        RunSummary {
            status: o.status,
            run_dir: Some(o.run_dir.clone()),
            epochs: r.epochs.len(),
            wall_s: last
                .as_ref()
                .map(|_| r.epochs.iter().map(|e| e.wall_s).sum()),
            last,
            energy_j: r.energy.as_ref().map(|e| e.total_j),
            provenance: r.energy.as_ref().map(|e| e.provenance),
            co2_g: r.carbon.as_ref().map(|c| c.operational.co2_g),
            reached: r.target.clone().filter(|t| t.reached),
            error: None,
        }
    }

    /// The last test accuracy.
    pub fn test_accuracy(&self) -> Option<f64> {
        self.last.as_ref().map(|e| e.test_accuracy)
    }

    /// The last validation accuracy.
    pub fn val_accuracy(&self) -> Option<f64> {
        self.last.as_ref().and_then(|e| e.val_accuracy)
    }
}
