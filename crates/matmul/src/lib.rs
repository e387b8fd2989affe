//! The fastest matrix product the card has, for Burn 0.21.
//!
//! Without autotune, Burn's CubeCL backends multiply with cubek's `Auto`
//! strategy (`SimpleCyclicCmma`: single-stage WMMA, no TMA). On an H200 it
//! ran 109 TFLOP/s in f16 where cubek's double-buffered TMA kernel ran 230.5
//! on the same buffers with identical products (docs/BENCHMARKS.md,
//! 2026-12-04). [`MatmulBackend::gt_matmul`] launches the kernel
//! [`MatmulKernel`] names (by default the [`auto`](MatmulKernel::Auto) table
//! below) on Burn's own buffers, and Burn's product wherever a kernel is
//! unavailable, refuses a shape, or the backend has no kernels (Flex):
//! - `CubeBackend` (feature `cube`): cubek's `launch_ref`;
//! - `Fusion<B>` (feature `fusion`): a custom fusion operation running B's;
//! - `Autodiff<B>`: a backward op whose two gradients are the same products.

use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, FloatTensorOps};
use burn::tensor::{DType, FloatDType, Tensor, TensorPrimitive};
use std::fmt;

mod autodiff;
#[cfg(feature = "cube")]
mod cube;
#[cfg(feature = "fusion")]
mod fusion;

#[cfg(feature = "cube")]
pub use cube::catalog;

/// Products a greentrain-matmul kernel computed in this process (not Burn's
/// fallback): lets a test or benchmark tell the two apart.
pub fn kernel_products() -> u64 {
    PRODUCTS.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg_attr(not(feature = "cube"), allow(dead_code))]
pub(crate) static PRODUCTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Which kernel computes a product.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MatmulKernel {
    /// Burn's own product (`float_matmul`): what greentrain ran before.
    Burn,
    /// The table in [`MatmulKernel::auto_choice`]: a measured faster kernel
    /// where one is known for the device and dtype, else Burn's.
    #[default]
    Auto,
    /// One kernel of [`catalog`] by name (for benchmarks and tests).
    Named(&'static str),
}

impl MatmulKernel {
    /// The kernel `Auto` picks for 16-bit inputs on a device that has the
    /// tensor memory accelerator (Hopper and later), with the figures it
    /// came from; `None` (Burn's product) everywhere else, f32 included
    /// (no measurement says a cubek kernel is faster or as exact there).
    ///
    /// | device | dtype | kernel | TFLOP/s | Burn's default | measured |
    /// |---|---|---|---|---|---|
    /// | H200 | f16 | `double-tma-mma` | 230.5 | 109 | 2026-12-04, 4096^3, identical products |
    pub fn auto_choice(half: bool, tma: bool) -> Option<&'static str> {
        (half && tma).then_some("double-tma-mma")
    }
}

impl fmt::Display for MatmulKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MatmulKernel::Burn => f.write_str("burn"),
            MatmulKernel::Auto => f.write_str("auto"),
            MatmulKernel::Named(n) => f.write_str(n),
        }
    }
}

impl std::str::FromStr for MatmulKernel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "burn" => Ok(MatmulKernel::Burn),
            "auto" => Ok(MatmulKernel::Auto),
            _ => named(s),
        }
    }
}

#[cfg(feature = "cube")]
fn named(s: &str) -> Result<MatmulKernel, String> {
    let all = catalog();
    all.iter()
        .find(|(n, _)| *n == s)
        .map(|(n, _)| MatmulKernel::Named(n))
        .ok_or_else(|| {
            let names: Vec<_> = all.iter().map(|(n, _)| *n).collect();
            format!(
                "unknown matmul kernel '{s}': expected auto, burn or one of {}",
                names.join(", ")
            )
        })
}

#[cfg(not(feature = "cube"))]
fn named(s: &str) -> Result<MatmulKernel, String> {
    Err(format!(
        "unknown matmul kernel '{s}': expected auto or burn (this build has no GPU kernels)"
    ))
}

/// `a · b` through `kernel` where the backend routes it
/// ([`MatmulBackend::gt_routes`]: a rank-2 product and a kernel chosen for
/// the device and dtype); Burn's `matmul` otherwise, so nothing changes where
/// no kernel is chosen.
pub fn matmul<B: MatmulBackend, const D: usize>(
    a: Tensor<B, D>,
    b: Tensor<B, D>,
    kernel: MatmulKernel,
) -> Tensor<B, D> {
    if D != 2 || !B::gt_routes(&a.device(), a.dtype(), kernel) {
        return a.matmul(b);
    }
    let (a, b) = (a.into_primitive().tensor(), b.into_primitive().tensor());
    Tensor::from_primitive(TensorPrimitive::Float(B::gt_matmul(a, b, kernel)))
}

/// Backends whose matrix products can go through a chosen kernel. Every
/// method has a default (Burn's product), so any backend can implement
/// this trait with an empty `impl`.
pub trait MatmulBackend: Backend {
    /// `lhs · rhs` through `kernel`; Burn's `float_matmul` where the kernel
    /// cannot take the inputs.
    fn gt_matmul(
        lhs: FloatTensor<Self>,
        rhs: FloatTensor<Self>,
        kernel: MatmulKernel,
    ) -> FloatTensor<Self> {
        let _ = kernel;
        Self::float_matmul(lhs, rhs)
    }

    /// The cubek kernel `gt_matmul` runs for `dtype` inputs on `device`
    /// (by its [`catalog`] name); `None`: Burn's product.
    fn gt_choice(
        device: &Self::Device,
        dtype: DType,
        kernel: MatmulKernel,
    ) -> Option<&'static str> {
        let _ = (device, dtype, kernel);
        None
    }

    /// Whether a long sum is better split in two on this backend: true on
    /// the CubeCL backends, whose reductions (Burn 0.21 without autotune)
    /// run one thread per output element looping over the whole reduced
    /// axis, so that a bias gradient (a sum over the batch) runs on as many
    /// threads as the layer has outputs. Flex and others: false.
    fn gt_split_sums(device: &Self::Device) -> bool {
        let _ = device;
        false
    }

    /// Whether `gt_matmul` runs something other than Burn's product: when
    /// not, callers keep Burn's own ops (`linear` included), so that nothing
    /// changes, fusion included, where no kernel is chosen.
    fn gt_routes(device: &Self::Device, dtype: DType, kernel: MatmulKernel) -> bool {
        Self::gt_choice(device, dtype, kernel).is_some()
    }
}

/// Burn's CPU backend: Flex's own f32 product (its gemm call) into an
/// output not zeroed first, which gemm overwrites unread (Flex's memset of
/// it was 3-4% of a CPU transformer step); f16 products widened to f32
/// (exactly), multiplied so and rounded once, as Flex's own bf16 product
/// does and as a GPU's f16 products accumulate. Flex's f16 product (gemm's
/// f16 kernels) rounds its sum to f16 after each depth block and was about
/// 40% of an MNIST MLP fp16 step (docs/BENCHMARKS.md). Every other
/// product, and every product with [`MatmulKernel::Burn`], is Burn's.
impl MatmulBackend for burn_flex::Flex {
    fn gt_matmul(
        lhs: FloatTensor<Self>,
        rhs: FloatTensor<Self>,
        kernel: MatmulKernel,
    ) -> FloatTensor<Self> {
        let routed = Self::gt_routes(&Default::default(), lhs.dtype(), kernel);
        if !routed || rhs.dtype() != lhs.dtype() {
            return Self::float_matmul(lhs, rhs);
        }
        let product = |a: FloatTensor<Self>, b: FloatTensor<Self>| {
            greentrain_flexconv::matmul::matmul(&a, &b).unwrap_or_else(|| Self::float_matmul(a, b))
        };
        if lhs.dtype() == DType::F32 {
            return product(lhs, rhs);
        }
        let wide = |t| greentrain_flexconv::cast::<Self>(t, FloatDType::F32);
        greentrain_flexconv::cast::<Self>(product(wide(lhs), wide(rhs)), FloatDType::F16)
    }

    /// f32 and f16 products, unless Burn's product is asked for.
    fn gt_routes(_: &Self::Device, dtype: DType, kernel: MatmulKernel) -> bool {
        matches!(dtype, DType::F32 | DType::F16) && kernel != MatmulKernel::Burn
    }
}
