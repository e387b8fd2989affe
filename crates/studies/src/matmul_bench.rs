//! `greentrain matmul`: Burn's matrix product rate per dtype on a device,
//! the number the GPU benchmark sets beside PyTorch's, and, where training
//! multiplies with another kernel (`[kernels] matmul = "auto"`,
//! greentrain-matmul's table), that kernel's rate on a line of its own.
//!
//! Each product is chained to the last (`c = c @ b`, with `b` scaled so the
//! values stay finite), so no lazy or fused backend can drop one; time is
//! read only after the device has finished.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, FloatDType, Tensor};
use greentrain_amp::{AmpBackend, MatmulBackend, MatmulKernel};
use greentrain_trainer::device::DeviceSpec;
use greentrain_trainer::train::{dispatch, BackendTask};
use serde::Serialize;
use std::time::Instant;

/// One dtype's result.
#[derive(Clone, Debug, Serialize)]
pub struct MatmulResult {
    /// `f32`, `f16` or `bf16`.
    pub dtype: String,
    /// `burn` (Burn's product), or the cubek kernel training uses for this
    /// dtype on this device.
    pub kernel: String,
    /// The matrices are `size` x `size`.
    pub size: usize,
    /// Products timed.
    pub products: usize,
    /// Seconds they took, device-synchronised.
    pub seconds: f64,
    /// 2 n^3 floating-point operations per product.
    pub tflops: f64,
    /// Seconds of the first products (kernel compilation and autotune).
    pub warmup_s: f64,
}

struct Task {
    size: usize,
    dtype: FloatDType,
    seconds: f64,
}

impl BackendTask for Task {
    type Out = Vec<MatmulResult>;
    fn run<B: AmpBackend>(self, device: B::Device) -> Vec<MatmulResult> {
        type I<B> = <B as AutodiffBackend>::InnerBackend;
        let mut out = vec![rate::<I<B>>(
            &device,
            self.size,
            self.dtype,
            self.seconds,
            MatmulKernel::Burn,
        )];
        let auto = MatmulKernel::Auto;
        if I::<B>::gt_routes(&device, self.dtype.into(), auto) {
            out.push(rate::<I<B>>(
                &device,
                self.size,
                self.dtype,
                self.seconds,
                auto,
            ));
        }
        out
    }
}

/// Measures `c = c @ b` at `size` in `dtype` for about `seconds`, with
/// `kernel`'s product.
pub fn rate<B: MatmulBackend>(
    device: &B::Device,
    size: usize,
    dtype: FloatDType,
    seconds: f64,
    kernel: MatmulKernel,
) -> MatmulResult {
    let product = |c, b| greentrain_amp::matmul(c, b, kernel);
    let n = size;
    let scale = 1.0 / (n as f32).sqrt();
    let b = Tensor::<B, 2>::random([n, n], Distribution::Normal(0.0, 1.0), device)
        .mul_scalar(scale)
        .cast(dtype);
    let mut c = Tensor::<B, 2>::random([n, n], Distribution::Normal(0.0, 1.0), device).cast(dtype);
    let t = Instant::now();
    for _ in 0..3 {
        c = product(c, b.clone());
    }
    let _ = B::sync(device);
    let warmup_s = t.elapsed().as_secs_f64();
    let mut products = 0;
    let t = Instant::now();
    loop {
        for _ in 0..10 {
            c = product(c, b.clone());
        }
        products += 10;
        let _ = B::sync(device);
        if t.elapsed().as_secs_f64() >= seconds {
            break;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    MatmulResult {
        dtype: dtype_name(dtype),
        kernel: B::gt_choice(device, dtype.into(), kernel)
            .unwrap_or("burn")
            .to_string(),
        size: n,
        products,
        seconds: secs,
        tflops: tflops(n, products, secs),
        warmup_s,
    }
}

/// The name bench.json uses for a dtype: `f16`, `bf16`, `f32`.
pub(crate) fn dtype_name(dtype: FloatDType) -> String {
    format!("{dtype:?}").to_lowercase()
}

/// Rate of `products` n x n x n matrix products (2n^3 operations each).
pub(crate) fn tflops(n: usize, products: usize, seconds: f64) -> f64 {
    2.0 * (n as f64).powi(3) * products as f64 / seconds / 1e12
}

/// Runs the measurement on `spec` for each dtype.
pub fn run(
    spec: DeviceSpec,
    size: usize,
    dtypes: &[FloatDType],
    seconds: f64,
) -> Vec<MatmulResult> {
    dtypes
        .iter()
        .flat_map(|&dtype| {
            dispatch(
                spec,
                Task {
                    size,
                    dtype,
                    seconds,
                },
            )
        })
        .collect()
}

/// Parses `f32`, `f16` or `bf16`.
pub fn burn_dtype(s: &str) -> Result<FloatDType, String> {
    match s {
        "f32" | "fp32" => Ok(FloatDType::F32),
        "f16" | "fp16" => Ok(FloatDType::F16),
        "bf16" => Ok(FloatDType::BF16),
        _ => Err(format!("unknown dtype '{s}': expected f32, f16 or bf16")),
    }
}
