//! [`MatmulBackend`] for `CubeBackend`: cubek's `launch_ref` on Burn's own
//! buffers (as `greentrain matmul --kernels` times them), Burn's product
//! where the kernel is unavailable on the device, refuses the shape, or
//! panics.

use crate::{MatmulBackend, MatmulKernel};
use burn::tensor::ops::FloatTensor;
use burn::tensor::DType;
use burn_cubecl::cubecl;
use burn_cubecl::kernel::matmul::init_matmul_output;
use burn_cubecl::CubeRuntime;
use burn_cubecl::{BoolElement, CubeBackend, FloatElement, IntElement};
use cubek::matmul::components::tile::TileMatmulKind;
use cubek::matmul::definition::{MatmulElems, MatmulGlobalElems};
use cubek::matmul::launch::Strategy;
use cubek::matmul::routines::simple::SimpleArgs;
use cubek::matmul::routines::BlueprintStrategy;
use cubek::std::InputBinding;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The kernels worth timing, by the names the CLI takes: Burn's default,
/// the plane (tensor-core) families in their WMMA (`cmma`) and PTX `mma`
/// forms, and one kernel without tensor cores as a floor.
pub fn catalog() -> Vec<(&'static str, Strategy)> {
    use Strategy as S;
    let multi_rows = |tile_matmul| SimpleArgs {
        tile_matmul,
        multi_rows: true,
    };
    vec![
        ("auto", S::Auto),
        (
            "simple-cyclic-cmma",
            S::SimpleCyclicCmma(Default::default()),
        ),
        ("simple-cyclic-mma", S::SimpleCyclicMma(Default::default())),
        (
            "simple-cyclic-cmma-multirow",
            S::SimpleCyclicCmma(BlueprintStrategy::Inferred(multi_rows(
                TileMatmulKind::Cmma,
            ))),
        ),
        (
            "double-cyclic-cmma",
            S::DoubleCyclicCmma(Default::default()),
        ),
        ("double-cyclic-mma", S::DoubleCyclicMma(Default::default())),
        (
            "ordered-double-cmma",
            S::OrderedDoubleCmma(Default::default()),
        ),
        (
            "ordered-double-mma",
            S::OrderedDoubleMma(Default::default()),
        ),
        (
            "specialized-cyclic-cmma",
            S::SpecializedCyclicCmma(Default::default()),
        ),
        (
            "specialized-cyclic-mma",
            S::SpecializedCyclicMma(Default::default()),
        ),
        (
            "double-async-cyclic-cmma",
            S::DoubleAsyncCyclicCmma(Default::default()),
        ),
        ("simple-tma-cmma", S::SimpleTmaCmma(Default::default())),
        ("simple-tma-mma", S::SimpleTmaMma(Default::default())),
        (
            "simple-tma-mma-multirow",
            S::SimpleTmaMma(BlueprintStrategy::Inferred(multi_rows(TileMatmulKind::Mma))),
        ),
        ("double-tma-cmma", S::DoubleTmaCmma(Default::default())),
        ("double-tma-mma", S::DoubleTmaMma(Default::default())),
        (
            "specialized-tma-cmma",
            S::SpecializedTmaCmma(Default::default()),
        ),
        (
            "specialized-tma-mma",
            S::SpecializedTmaMma(Default::default()),
        ),
        ("simple-unit", S::SimpleUnit(Default::default())),
    ]
}

impl<R, F, I, BT> MatmulBackend for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn gt_matmul(
        lhs: FloatTensor<Self>,
        rhs: FloatTensor<Self>,
        kernel: MatmulKernel,
    ) -> FloatTensor<Self> {
        let rank2 = lhs.meta.num_dims() == 2 && rhs.meta.num_dims() == 2;
        let strategy = match strategy(&lhs.client, lhs.dtype, kernel) {
            Some(s) if rank2 && lhs.dtype == rhs.dtype => s,
            _ => return <Self as burn::tensor::ops::FloatTensorOps<Self>>::float_matmul(lhs, rhs),
        };
        match launch(&strategy, &lhs, &rhs) {
            Some(out) => out,
            None => <Self as burn::tensor::ops::FloatTensorOps<Self>>::float_matmul(lhs, rhs),
        }
    }

    fn gt_choice(
        device: &Self::Device,
        dtype: DType,
        kernel: MatmulKernel,
    ) -> Option<&'static str> {
        choice(&R::client(device), dtype, kernel)
    }

    fn gt_split_sums(_: &Self::Device) -> bool {
        true
    }
}

/// The kernel's name for `kernel` on this device and dtype; `None`:
/// Burn's product.
fn choice<R: CubeRuntime>(
    client: &cubecl::client::ComputeClient<R>,
    dtype: DType,
    kernel: MatmulKernel,
) -> Option<&'static str> {
    match kernel {
        MatmulKernel::Burn => None,
        MatmulKernel::Named(n) => Some(n),
        MatmulKernel::Auto => {
            let half = matches!(dtype, DType::F16 | DType::BF16);
            let tma = !client.properties().features.tma.is_empty();
            MatmulKernel::auto_choice(half, tma)
        }
    }
}

/// The strategy for `kernel` on this device and dtype; `None`: Burn's
/// product.
fn strategy<R: CubeRuntime>(
    client: &cubecl::client::ComputeClient<R>,
    dtype: DType,
    kernel: MatmulKernel,
) -> Option<Strategy> {
    let name = choice(client, dtype, kernel)?;
    catalog()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| s)
}

/// One product through `strategy` into a new output; `None` when cubek
/// declines it (unavailable, a shape it cannot take) or panics.
fn launch<R: CubeRuntime>(
    strategy: &Strategy,
    lhs: &burn_cubecl::tensor::CubeTensor<R>,
    rhs: &burn_cubecl::tensor::CubeTensor<R>,
) -> Option<burn_cubecl::tensor::CubeTensor<R>> {
    let dtype = lhs.dtype;
    let out = init_matmul_output(lhs, rhs, dtype);
    let mut elems = MatmulElems::from_globals(&MatmulGlobalElems {
        lhs: dtype.into(),
        rhs: dtype.into(),
        out: dtype.into(),
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
    let ran = matches!(result, Ok(Ok(())));
    if ran {
        crate::PRODUCTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    ran.then_some(out)
}
