//! The greentrain trainer: one run. Config, datasets, models, devices, the
//! training loop, checkpoints and run records. The studies over many runs
//! (bench, sweep, tune, reproduce, report) are `greentrain-studies`, built
//! on this crate's public API alone; the `greentrain` binary is a thin CLI
//! over both; mixed precision lives in `greentrain-amp`.

mod board;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod device;
pub mod energy;
pub mod files;
pub mod follow;
pub mod kernel_cache;
mod ledger;
pub mod memory;
pub mod model;
pub mod network;
pub mod num;
pub mod own;
pub mod record;
pub mod resume;
pub(crate) mod run;
pub mod status;
pub mod summary;
pub mod train;

pub use burn::tensor::FloatDType;
pub use config::{Config, ConfigError, LoadedConfig};
pub use device::DeviceSpec;
pub use train::{resume, resume_with, train, Failure, Outcome, TrainRequest};
