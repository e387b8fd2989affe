//! A run folder's records and their one writer: `run.json` (the record),
//! `metrics.csv` (a row per epoch, from the record's epochs) and
//! `emissions.csv` (CodeCarbon's row). Each write is atomic (an exclusive
//! temporary file beside the target, then a rename, never through a
//! symlink); nothing else in greentrain writes these files.

use crate::files::write_atomic;
use crate::record::{EpochRecord, RunRecord};
use anyhow::Context;
use greentrain_energy::codecarbon::EmissionsRow;
use std::path::{Path, PathBuf};

/// `metrics.csv`'s columns.
pub(crate) const METRICS_HEADER: &str = "epoch,train_loss,train_accuracy,test_loss,test_accuracy,val_loss,val_accuracy,wall_s,eval_s,samples_per_s,lr,loss_scale,skipped_steps,data_s,energy_j,co2_g";

/// The writer of one run folder's records.
#[derive(Clone, Debug)]
pub(crate) struct Ledger {
    dir: PathBuf,
}

impl Ledger {
    /// The ledger of the run folder `dir`.
    pub(crate) fn new(dir: &Path) -> Self {
        Ledger {
            dir: dir.to_path_buf(),
        }
    }

    /// Writes `run.json`.
    pub(crate) fn record(&self, r: &RunRecord) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(r).expect("record serialises");
        write_atomic(&self.dir.join("run.json"), text.as_bytes()).context("writing run.json")
    }

    /// An epoch ended: `metrics.csv` from the record's epochs, then
    /// `run.json`.
    pub(crate) fn epoch(&self, r: &RunRecord) -> anyhow::Result<()> {
        write_atomic(&self.dir.join("metrics.csv"), metrics(&r.epochs).as_bytes())
            .context("writing metrics.csv")?;
        self.record(r)
    }

    /// Writes `emissions.csv`.
    pub(crate) fn emissions(&self, row: &EmissionsRow) -> anyhow::Result<()> {
        row.write(&self.dir).context("writing emissions.csv")
    }
}

/// `metrics.csv`'s text: a row per epoch.
fn metrics(epochs: &[EpochRecord]) -> String {
    let mut s = String::from(METRICS_HEADER);
    s.push('\n');
    let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    for e in epochs {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{:.4},{:.4},{:.1},{},{},{},{:.4},{},{}\n",
            e.epoch,
            e.train_loss,
            opt(e.train_accuracy),
            e.test_loss,
            e.test_accuracy,
            opt(e.val_loss),
            opt(e.val_accuracy),
            e.wall_s,
            e.eval_s,
            e.samples_per_s,
            e.lr,
            e.loss_scale,
            e.skipped_steps,
            e.data_s,
            opt(e.energy_j),
            opt(e.co2_g)
        ));
    }
    s
}
