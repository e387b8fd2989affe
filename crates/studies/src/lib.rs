//! Studies over many greentrain runs, built only on the public API of
//! `greentrain-trainer` (one run): `bench` (precisions side by side,
//! interleaved repeats, paired ratios), `sweep` (random, TPE and grid search
//! with ASHA and Pareto fronts), `tune` (batch size x precision to a target),
//! `reproduce` (a run again from its folder, compared), `report` (tables and
//! figures from run folders), with `plots` and `stats` beside them, and the
//! GPU matrix-product diagnostics (`matmul_bench`, `matmul_kernels`).

pub mod bench;
pub mod matmul_bench;
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub mod matmul_kernels;
pub mod plots;
pub mod report;
pub mod reproduce;
pub mod stats;
pub mod sweep;
pub mod tune;

pub use matmul_bench::burn_dtype;
