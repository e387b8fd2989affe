//! Energy and carbon accounting for any Rust program, with provenance on
//! every number: `measured` (hardware counter: RAPL, NVML total energy),
//! `integrated` (sampled hardware power) or `estimated` (a named model).
//!
//! No Burn dependency. The pieces:
//! - [`meter`]: the [`Meter`] trait and provenance;
//! - [`rapl`], [`nvml`], [`estimate`]: real meters and named estimates;
//! - [`tracker`]: a background sampler and nestable measurement windows;
//! - [`window`]: a training run's windows as a type ([`Window`]);
//! - [`carbon`]: intensity sources (constant, time series, zone, world
//!   average) integrated against the energy timeline;
//! - [`journal`]: fsync'd running totals that survive a killed process;
//! - [`run`]: a run-level tracker over all of it: start, stop, records with
//!   provenance, resumed runs, waiting kept apart, emissions.csv;
//! - [`budget`]: whole-run predictions and budgets;
//! - [`schedule`]: carbon-aware Flexible Start and Pause-and-Resume plans;
//! - [`codecarbon`]: `emissions.csv` in CodeCarbon's format;
//! - [`files`]: writes that never follow a symlink, synced to disk.
//!
//! ```
//! use greentrain_energy::{tracker, Provenance};
//! let mut t = tracker::Tracker::new(vec![Box::new(greentrain_energy::estimate::RamEstimate::new(16.0))], 0.0);
//! t.begin("work");
//! std::thread::sleep(std::time::Duration::from_millis(20));
//! let w = t.end("work").unwrap();
//! assert_eq!(w.provenance, Provenance::Estimated);
//! assert!(w.total_j > 0.0);
//! ```

pub mod budget;
pub mod carbon;
pub mod codecarbon;
pub mod estimate;
pub mod files;
pub mod journal;
pub mod meter;
pub mod nvml;
pub mod rapl;
pub mod run;
pub mod schedule;
pub mod tracker;
pub mod window;

pub use meter::{ComponentInfo, ComponentKind, Meter, Provenance};
pub use tracker::{ComponentEnergy, Tracker, WindowReport};
pub use window::Window;

/// The README's examples, compiled and run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
