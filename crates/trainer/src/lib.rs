//! The greentrain trainer: config, datasets, models, the training loop,
//! checkpoints and run records. The `greentrain` binary is a thin CLI over
//! this crate; mixed precision lives in `greentrain-amp`.

pub mod bench;
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
pub mod matmul_bench;
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub mod matmul_kernels;
pub mod memory;
pub mod model;
pub mod num;
pub mod plots;
pub mod record;
pub mod report;
pub mod reproduce;
pub mod resume;
pub(crate) mod run;
pub mod stats;
pub mod status;
pub mod summary;
pub mod sweep;
pub mod train;
pub mod tune;

pub use burn::tensor::FloatDType;
pub use config::{Config, ConfigError, LoadedConfig};
pub use device::DeviceSpec;
pub use matmul_bench::burn_dtype;
pub use train::{resume, resume_with, train, Failure, Outcome, TrainRequest};
