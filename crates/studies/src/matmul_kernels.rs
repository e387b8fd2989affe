//! `greentrain matmul --kernels`: each of CubeCL's matmul kernels timed on
//! its own, so that a GPU lease can tell which kernel Burn leaves unused.
//!
//! Burn 0.21 without autotune runs cubek's `Auto` strategy, a single-stage
//! WMMA kernel without TMA; its autotune tries a subset of the rest (no
//! double-buffered TMA, no async copies), and its public API picks none.
//! cubek's `launch_ref` on the backend's own buffers runs any of them. Every
//! kernel's product is compared with Burn's own, so a fast wrong kernel
//! shows as wrong, and a kernel the device cannot run says so instead of
//! being timed.

use crate::matmul_bench::{dtype_name, tflops};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Distribution, FloatDType, Tensor, TensorPrimitive};
use burn_cubecl::kernel::matmul::init_matmul_output;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeBackend, CubeRuntime};
use cubek::matmul::definition::{MatmulElems, MatmulGlobalElems, MatmulSetupError};
use cubek::matmul::launch::Strategy;
use cubek::std::InputBinding;
pub use greentrain_matmul::catalog;
use greentrain_trainer::device::DeviceSpec;
use serde::Serialize;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

/// The backend without fusion or autodiff, whose float primitive is the
/// `CubeTensor` that cubek launches on.
type Cube<R> = CubeBackend<R, f32, i32, u32>;

/// Picks kernels from the catalog: `all`, or names separated by commas.
pub fn select(names: &str) -> Result<Vec<(&'static str, Strategy)>, String> {
    let all = catalog();
    if names.trim() == "all" {
        return Ok(all);
    }
    names
        .split(',')
        .map(|n| {
            let n = n.trim();
            all.iter().find(|(k, _)| *k == n).cloned().ok_or_else(|| {
                let known: Vec<_> = all.iter().map(|(k, _)| *k).collect();
                format!("unknown kernel '{n}': expected all or {}", known.join(", "))
            })
        })
        .collect()
}

/// What became of one kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelStatus {
    /// It ran and was timed.
    Timed,
    /// cubek declined it for this device, shape or dtype (no launch).
    Unavailable,
    /// It was launched and failed (an error or a panic).
    Failed,
}

/// One kernel's result at one dtype.
#[derive(Clone, Debug, Serialize)]
pub struct KernelResult {
    pub kernel: String,
    /// `f32`, `f16` or `bf16`: inputs and output; cubek accumulates 16-bit
    /// products in f32, as cuBLAS's default does.
    pub dtype: String,
    pub size: usize,
    pub status: KernelStatus,
    /// cubek's reason, for `unavailable` and `failed`.
    pub detail: Option<String>,
    pub products: usize,
    pub seconds: f64,
    pub tflops: f64,
    /// The first launch: compilation (NVRTC) and the first product.
    pub warmup_s: f64,
    /// max |this kernel's product - Burn's| / max |Burn's|; none when
    /// the kernel did not run.
    pub max_rel_err: Option<f64>,
}

/// Times each kernel at `size` in `dtype` for about `seconds` on `spec`,
/// handing each result to `done` as soon as it is known, so that a sweep cut
/// short by a time limit keeps what it measured. Only the GPU backends have
/// these kernels.
pub fn run(
    spec: DeviceSpec,
    size: usize,
    dtype: FloatDType,
    seconds: f64,
    kernels: &[(&'static str, Strategy)],
    done: &mut dyn FnMut(KernelResult),
) -> Result<(), String> {
    match spec {
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(n) => {
            let device = burn::cubecl::cuda::CudaDevice::new(n);
            run_on::<burn::cubecl::cuda::CudaRuntime>(&device, size, dtype, seconds, kernels, done);
            Ok(())
        }
        #[cfg(feature = "wgpu")]
        DeviceSpec::Wgpu => {
            let device = Default::default();
            run_on::<burn::cubecl::wgpu::WgpuRuntime>(&device, size, dtype, seconds, kernels, done);
            Ok(())
        }
        other => Err(format!(
            "--kernels needs a GPU backend (cuda or wgpu), not {other}"
        )),
    }
}

fn run_on<R: CubeRuntime>(
    device: &R::Device,
    size: usize,
    dtype: FloatDType,
    seconds: f64,
    kernels: &[(&'static str, Strategy)],
    done: &mut dyn FnMut(KernelResult),
) {
    let random = || {
        Tensor::<Cube<R>, 2>::random([size, size], Distribution::Normal(0.0, 1.0), device)
            .mul_scalar(1.0 / (size as f32).sqrt())
            .cast(dtype)
    };
    let (lhs, rhs) = (random(), random());
    let reference = lhs.clone().matmul(rhs.clone()).cast(FloatDType::F32);
    let lhs = lhs.into_primitive().tensor();
    let rhs = rhs.into_primitive().tensor();
    for (name, strategy) in kernels {
        let mut r = KernelResult {
            kernel: name.to_string(),
            dtype: dtype_name(dtype),
            size,
            status: KernelStatus::Timed,
            detail: None,
            products: 0,
            seconds: 0.0,
            tflops: 0.0,
            warmup_s: 0.0,
            max_rel_err: None,
        };
        match measure(strategy, (&lhs, &rhs, &reference), seconds, device, &mut r) {
            Ok(()) => r.tflops = tflops(size, r.products, r.seconds),
            Err((status, detail)) => {
                r.status = status;
                r.detail = Some(detail);
                r.products = 0;
                r.seconds = 0.0;
            }
        }
        done(r);
    }
}

/// One launch of `strategy` writing `out`; a panic inside cubek is an error.
fn launch<R: CubeRuntime>(
    strategy: &Strategy,
    lhs: &CubeTensor<R>,
    rhs: &CubeTensor<R>,
    out: &CubeTensor<R>,
) -> Result<(), NotRun> {
    let dtype = lhs.dtype;
    let mut elems = MatmulElems::from_globals(&MatmulGlobalElems {
        lhs: dtype.into(),
        rhs: dtype.into(),
        out: out.dtype.into(),
    });
    let result = catch_unwind(AssertUnwindSafe(|| {
        cubek::matmul::launch::launch_ref(
            strategy,
            &out.client,
            InputBinding::new(lhs.clone().binding(), dtype.into()),
            InputBinding::new(rhs.clone().binding(), dtype.into()),
            out.clone().binding(),
            &mut elems,
        )
    }));
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(MatmulSetupError::Unavailable(e))) => Err((
            KernelStatus::Unavailable,
            format!("{e:?}").trim().to_string(),
        )),
        Ok(Err(e)) => Err((KernelStatus::Failed, format!("{e:?}").trim().to_string())),
        Err(panic) => Err((KernelStatus::Failed, panic_text(&panic))),
    }
}

/// A kernel that did not run: why, and cubek's (or the device's) words.
type NotRun = (KernelStatus, String);

fn measure<R: CubeRuntime>(
    strategy: &Strategy,
    (lhs, rhs, reference): (&CubeTensor<R>, &CubeTensor<R>, &Tensor<Cube<R>, 2>),
    seconds: f64,
    device: &R::Device,
    result: &mut KernelResult,
) -> Result<(), NotRun> {
    // A kernel that launched may still fail on the device: that surfaces
    // when the device is synchronised or read.
    let sync =
        || <Cube<R> as Backend>::sync(device).map_err(|e| (KernelStatus::Failed, format!("{e:?}")));
    let out = init_matmul_output(lhs, rhs, lhs.dtype);
    let t = Instant::now();
    launch(strategy, lhs, rhs, &out)?;
    sync()?;
    result.warmup_s = t.elapsed().as_secs_f64();
    let err = catch_unwind(AssertUnwindSafe(|| rel_err(&out, reference)));
    result.max_rel_err = Some(err.map_err(|p| (KernelStatus::Failed, panic_text(&p)))?);
    let t = Instant::now();
    loop {
        for _ in 0..10 {
            launch(strategy, lhs, rhs, &out)?;
        }
        result.products += 10;
        sync()?;
        if t.elapsed().as_secs_f64() >= seconds {
            break;
        }
    }
    result.seconds = t.elapsed().as_secs_f64();
    Ok(())
}

fn rel_err<R: CubeRuntime>(out: &CubeTensor<R>, reference: &Tensor<Cube<R>, 2>) -> f64 {
    let out = Tensor::<Cube<R>, 2>::from_primitive(TensorPrimitive::Float(out.clone()));
    let out = if out.dtype() == DType::F32 {
        out
    } else {
        out.cast(FloatDType::F32)
    };
    let diff: f32 = (out - reference.clone()).abs().max().into_scalar();
    let scale: f32 = reference.clone().abs().max().into_scalar();
    diff as f64 / scale as f64
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = panic.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_by_name_and_names_the_unknown() {
        let picked = select("auto, double-tma-mma").unwrap();
        let names: Vec<_> = picked.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["auto", "double-tma-mma"]);
        assert_eq!(select("all").unwrap().len(), catalog().len());
        let Err(err) = select("auto,tma") else {
            panic!("an unknown kernel was accepted")
        };
        assert!(err.contains("unknown kernel 'tma'"), "{err}");
        assert!(err.contains("specialized-tma-cmma"), "{err}");
    }

    #[test]
    fn catalog_names_are_unique() {
        let mut names: Vec<_> = catalog().iter().map(|(n, _)| *n).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    #[test]
    fn the_cpu_has_no_kernels_to_pick() {
        let mut timed = 0;
        let err = run(
            DeviceSpec::Cpu,
            64,
            FloatDType::F32,
            0.1,
            &catalog(),
            &mut |_| timed += 1,
        )
        .unwrap_err();
        assert!(err.contains("GPU backend"), "{err}");
        assert_eq!(timed, 0);
    }
}
