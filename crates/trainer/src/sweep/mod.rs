//! `greentrain sweep`: hyperparameter search that counts its carbon.
//! Strategies: `random`, `tpe` (Tree-structured Parzen Estimator, Bergstra
//! et al. 2011, univariate as in Optuna) and `grid` (for comparison);
//! optional ASHA pruning (rungs by epoch, Optuna's promotion rule); trials
//! run `--parallel N` at a time; a sweep folder is resumed without rerunning
//! finished trials; `--emit-slurm` hands the trials to Slurm instead.

//!
//! The parts, one job each: [`spec`] (the sweep file and its checks),
//! [`search`] (random, TPE, grid, ASHA's rungs), [`run`] (trials on worker
//! threads, resuming, budgets), [`report`] (`sweep.json`, tables, figure)
//! and [`slurm`] (`--emit-slurm`).

pub mod report;
pub mod run;
pub mod search;
pub mod slurm;
pub mod spec;

pub use report::{sweep_figure, AshaSummary, SweepReport, Trial};
pub use run::{run, SweepRequest};
pub use search::{grid, promotable, rungs};
pub use slurm::emit_slurm;
pub use spec::{
    load, AshaSection, Dim, Metric, Params, Strategy, Sweep, SweepFile, SweepSection, Value,
};
