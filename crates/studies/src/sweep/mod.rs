//! `greentrain sweep`: hyperparameter search that counts its carbon.
//! Strategies: `random`, `tpe` (Tree-structured Parzen Estimator, Bergstra
//! et al. 2011, univariate as in Optuna) and `grid` (for comparison);
//! optional ASHA pruning (rungs by epoch, Optuna's promotion rule); trials
//! run `--parallel N` at a time; a sweep folder is resumed without rerunning
//! finished trials; `--emit-slurm` hands the trials to Slurm instead.

//!
//! Several `objectives` (accuracy against joules, say) keep a Pareto front;
//! TPE then scalarises them with random weights per proposal (ParEGO).
//!
//! The parts, one job each: [`spec`] (the sweep file and its checks),
//! [`search`] (random, TPE, grid, ASHA's rungs), [`pareto`] (dominance,
//! the front, ParEGO's scalarisation), [`run`](mod@run) (trials on worker
//! threads, resuming, budgets), [`report`] (`sweep.json`, tables, figure)
//! and [`slurm`] (`--emit-slurm`).

pub mod pareto;
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
    load, AshaSection, Dim, Metric, Objective, Params, Strategy, Sweep, SweepFile, SweepSection,
    Value,
};
