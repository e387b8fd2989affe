//! greentrain-matmul on wgpu (Mesa's lavapipe in CI), with Burn's fusion and
//! without, against Burn's own product: the forward and both gradients under
//! autodiff. lavapipe has no tensor cores, so the kernel run here is cubek's
//! `simple-unit`; what the GPU table picks is measured on a lease. Without a
//! Vulkan driver the tests say so and pass, except under CI.

use burn::backend::wgpu::{WgpuDevice, WgpuRuntime};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use greentrain_matmul::{kernel_products, matmul, MatmulBackend, MatmulKernel};
use std::panic::{catch_unwind, AssertUnwindSafe};

type Fused = burn::backend::Wgpu;
type Plain = burn::backend::wgpu::CubeBackend<WgpuRuntime, f32, i32, u32>;

const UNIT: MatmulKernel = MatmulKernel::Named("simple-unit");

fn wgpu_ready() -> bool {
    let ok = catch_unwind(AssertUnwindSafe(|| {
        Tensor::<Plain, 1>::zeros([1], &WgpuDevice::default()).into_data();
    }))
    .is_ok();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the wgpu matmul tests (install mesa-vulkan-drivers)"
        );
        eprintln!("no wgpu adapter: the matmul tests did not run");
    }
    ok
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn matrix<B: Backend>(r: usize, c: usize, seed: u64, dev: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(values(r * c, seed), [r, c]), dev)
}

/// Runs `f` (which reads its results back) and checks that greentrain's
/// kernel computed at least `n` products in it, not Burn's fallback.
fn kernel_ran(what: &str, n: u64, f: impl FnOnce()) {
    let before = kernel_products();
    f();
    assert!(
        kernel_products() >= before + n,
        "{what}: the kernel did not compute the products"
    );
}

fn close(what: &str, got: Tensor<impl Backend, 2>, want: Tensor<impl Backend, 2>) {
    let g: Vec<f32> = got.into_data().to_vec().unwrap();
    let w: Vec<f32> = want.into_data().to_vec().unwrap();
    assert_eq!(g.len(), w.len(), "{what}: sizes");
    let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * scale,
            "{what}[{i}]: {a} vs Burn's {b}"
        );
    }
}

/// Odd sizes (no tile divides them) and a transposed operand (a view with
/// swapped strides, as the gradients use).
const SHAPES: [(usize, usize, usize); 3] = [(64, 32, 48), (37, 19, 53), (1, 128, 5)];

#[test]
fn products_match_burns_on_wgpu_with_and_without_fusion() {
    if !wgpu_ready() {
        return;
    }
    let dev = WgpuDevice::default();
    for (m, k, n) in SHAPES {
        let a = || matrix::<Fused>(m, k, 1, &dev);
        let b = || matrix::<Fused>(k, n, 2, &dev);
        kernel_ran("fused", 1, || {
            close(
                &format!("fused {m}x{k}x{n}"),
                matmul(a(), b(), UNIT),
                a().matmul(b()),
            )
        });
        let bt = || matrix::<Fused>(n, k, 3, &dev).transpose();
        kernel_ran("transposed", 1, || {
            close(
                &format!("fused transposed {m}x{k}x{n}"),
                matmul(a(), bt(), UNIT),
                a().matmul(bt()),
            )
        });
        let (pa, pb) = (
            matrix::<Plain>(m, k, 1, &dev),
            matrix::<Plain>(k, n, 2, &dev),
        );
        kernel_ran("plain", 1, || {
            close(
                &format!("plain {m}x{k}x{n}"),
                matmul(pa.clone(), pb.clone(), UNIT),
                pa.matmul(pb),
            )
        });
    }
}

#[test]
fn gradients_match_burns_autodiff() {
    if !wgpu_ready() {
        return;
    }
    type A = Autodiff<Fused>;
    let dev = WgpuDevice::default();
    for (m, k, n) in SHAPES {
        let run = |kernel: Option<MatmulKernel>| {
            let a = matrix::<A>(m, k, 4, &dev).require_grad();
            let b = matrix::<A>(k, n, 5, &dev).require_grad();
            let w = matrix::<A>(m, n, 6, &dev);
            let y = match kernel {
                Some(kern) => matmul(a.clone(), b.clone(), kern),
                None => a.clone().matmul(b.clone()),
            };
            let grads = (y.clone() * w).sum().backward();
            (y.inner(), a.grad(&grads).unwrap(), b.grad(&grads).unwrap())
        };
        let (y0, da0, db0) = run(None);
        // The forward and both gradients: three products.
        kernel_ran("autodiff", 3, || {
            let (y, da, db) = run(Some(UNIT));
            close(&format!("forward {m}x{k}x{n}"), y, y0);
            close(&format!("lhs gradient {m}x{k}x{n}"), da, da0);
            close(&format!("rhs gradient {m}x{k}x{n}"), db, db0);
        });
    }
}

#[test]
fn routes_only_where_a_kernel_is_chosen() {
    if !wgpu_ready() {
        return;
    }
    let dev = WgpuDevice::default();
    // Burn's product is never routed; a named kernel always is; `auto` on a
    // device without TMA (lavapipe) or for f32 keeps Burn's.
    assert!(!Fused::gt_routes(&dev, DType::F16, MatmulKernel::Burn));
    assert!(Fused::gt_routes(&dev, DType::F32, UNIT));
    assert!(!Fused::gt_routes(&dev, DType::F32, MatmulKernel::Auto));
    assert!(!Autodiff::<Fused>::gt_routes(
        &dev,
        DType::F16,
        MatmulKernel::Auto
    ));
    assert_eq!(
        MatmulKernel::auto_choice(true, true),
        Some("double-tma-mma")
    );
    assert_eq!(MatmulKernel::auto_choice(false, true), None);
    assert_eq!(MatmulKernel::auto_choice(true, false), None);
}

/// Flex's f16 products are the f32 product of the widened values rounded
/// once (Flex's own f16 product rounds after each depth block: with a
/// depth of 2,000 the two differ), forward and both gradients; Burn's
/// kernel stays Burn's.
#[test]
fn flex_f16_products_are_widened_and_rounded_once() {
    type F = burn_flex::Flex;
    let dev = Default::default();
    let (f16, f32) = (burn::tensor::FloatDType::F16, burn::tensor::FloatDType::F32);
    assert!(F::gt_routes(&dev, DType::F16, MatmulKernel::Auto));
    assert!(!F::gt_routes(&dev, DType::F16, MatmulKernel::Burn));
    assert!(!F::gt_routes(&dev, DType::F32, MatmulKernel::Burn));
    assert!(Autodiff::<F>::gt_routes(
        &dev,
        DType::F16,
        MatmulKernel::Auto
    ));
    let bits = |t: Tensor<F, 2>| -> Vec<u32> {
        let v = t.cast(f32).into_data().to_vec::<f32>().unwrap();
        v.into_iter().map(f32::to_bits).collect()
    };
    let a = matrix::<Autodiff<F>>(24, 2000, 1, &dev).require_grad();
    let b = matrix::<Autodiff<F>>(2000, 40, 2, &dev).require_grad();
    let r = matrix::<Autodiff<F>>(24, 40, 3, &dev).cast(f16);
    let ours = matmul(a.clone().cast(f16), b.clone().cast(f16), MatmulKernel::Auto);
    let wide = a
        .clone()
        .cast(f16)
        .cast(f32)
        .matmul(b.clone().cast(f16).cast(f32))
        .cast(f16);
    assert_eq!(ours.dtype(), DType::F16);
    assert_eq!(
        bits(ours.clone().inner()),
        bits(wide.clone().inner()),
        "forward"
    );
    let flexs = a
        .clone()
        .inner()
        .cast(f16)
        .matmul(b.clone().inner().cast(f16));
    assert_ne!(
        bits(flexs),
        bits(wide.clone().inner()),
        "Flex's own f16 product"
    );
    let g = (ours * r.clone()).sum().backward();
    let w = (wide * r).sum().backward();
    for (name, t) in [("lhs", &a), ("rhs", &b)] {
        let (g, w) = (t.grad(&g).unwrap(), t.grad(&w).unwrap());
        assert_eq!(bits(g), bits(w), "{name} gradient");
    }
}

/// Flex's f32 products go through greentrain's call to gemm (an output not
/// zeroed first): Burn's bits forward and in both gradients, for a
/// transposed operand too.
#[test]
fn flex_f32_products_are_burns_bits() {
    type F = burn_flex::Flex;
    let dev = Default::default();
    assert!(F::gt_routes(&dev, DType::F32, MatmulKernel::Auto));
    let bits = |t: Tensor<F, 2>| -> Vec<u32> {
        let v = t.into_data().to_vec::<f32>().unwrap();
        v.into_iter().map(f32::to_bits).collect()
    };
    let a = matrix::<Autodiff<F>>(300, 200, 1, &dev).require_grad();
    let b = matrix::<Autodiff<F>>(250, 200, 2, &dev).require_grad();
    let r = matrix::<Autodiff<F>>(300, 250, 3, &dev);
    let ours = matmul(a.clone(), b.clone().transpose(), MatmulKernel::Auto);
    let burns = a.clone().matmul(b.clone().transpose());
    assert_eq!(
        bits(ours.clone().inner()),
        bits(burns.clone().inner()),
        "forward"
    );
    let g = (ours * r.clone()).sum().backward();
    let w = (burns * r).sum().backward();
    for (name, t) in [("lhs", &a), ("rhs", &b)] {
        let (g, w) = (t.grad(&g).unwrap(), t.grad(&w).unwrap());
        assert_eq!(bits(g), bits(w), "{name} gradient");
    }
}

#[test]
fn kernel_names_parse_and_an_unknown_one_is_named() {
    assert_eq!("auto".parse::<MatmulKernel>(), Ok(MatmulKernel::Auto));
    assert_eq!("burn".parse::<MatmulKernel>(), Ok(MatmulKernel::Burn));
    assert_eq!(
        "double-tma-mma".parse::<MatmulKernel>(),
        Ok(MatmulKernel::Named("double-tma-mma"))
    );
    let err = "tma".parse::<MatmulKernel>().unwrap_err();
    assert!(
        err.contains("unknown matmul kernel 'tma'") && err.contains("simple-unit"),
        "{err}"
    );
    for k in [MatmulKernel::Auto, MatmulKernel::Burn, UNIT] {
        assert_eq!(k.to_string().parse::<MatmulKernel>(), Ok(k));
    }
}
