//! Bias gradients summed in two stages on wgpu (`[kernels] sums`), against
//! Burn's one reduction: the same forward, the same gradients within f32
//! rounding, and flex untouched. Without a Vulkan driver the test says so
//! and passes, except under CI.

use burn::backend::{Autodiff, Flex, Wgpu};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use greentrain_amp::{Autocast, MatmulBackend, Precision};
use std::panic::{catch_unwind, AssertUnwindSafe};

type A = Autodiff<Wgpu>;

fn wgpu_ready() -> bool {
    let ok = catch_unwind(AssertUnwindSafe(|| {
        Tensor::<Wgpu, 1>::zeros([1], &Default::default()).into_data();
    }))
    .is_ok();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the wgpu tests"
        );
        eprintln!("no wgpu adapter: the two-stage sums were not tested");
    }
    ok
}

fn matrix<B: Backend>(r: usize, c: usize, seed: usize, dev: &B::Device) -> Tensor<B, 2> {
    let v: Vec<f32> = (0..r * c)
        .map(|i| (((i * 7919 + seed * 104729) % 2003) as f32 - 1001.0) / 1001.0)
        .collect();
    Tensor::from_data(TensorData::new(v, [r, c]), dev)
}

/// Output, and the gradients of x, W and b, of `sum(linear(x) * r)`.
fn run<B: MatmulBackend + burn::tensor::backend::AutodiffBackend>(
    ac: &Autocast,
    rows: usize,
    dev: &B::Device,
) -> Vec<Vec<f32>> {
    let x = matrix::<B>(rows, 20, 1, dev).require_grad();
    let w = matrix::<B>(20, 30, 2, dev).require_grad();
    let b = matrix::<B>(1, 30, 3, dev).reshape([30]).require_grad();
    let y = ac.linear_raw(x.clone(), w.clone(), Some(b.clone()));
    let g = (y.clone() * matrix::<B>(rows, 30, 4, dev)).sum().backward();
    let read = |t: Tensor<B::InnerBackend, 2>| t.into_data().to_vec::<f32>().unwrap();
    vec![
        read(y.inner()),
        read(x.grad(&g).unwrap()),
        read(w.grad(&g).unwrap()),
        read(b.grad(&g).unwrap().unsqueeze_dim(0)),
    ]
}

#[test]
fn two_stage_bias_sums_match_burns_one_reduction() {
    let fp32 = Autocast::new(Precision::Fp32);
    let one = fp32.with_split_sums(false);
    assert!(!<Autodiff<Flex> as MatmulBackend>::gt_split_sums(
        &Default::default()
    ));
    if !wgpu_ready() {
        return;
    }
    let dev = Default::default();
    assert!(<A as MatmulBackend>::gt_split_sums(&dev));
    // 64 rows split 8 x 8; 96 rows 24 x 4; 7 rows (odd) are not split.
    for rows in [64, 96, 7] {
        let (two, burn) = (run::<A>(&fp32, rows, &dev), run::<A>(&one, rows, &dev));
        assert_eq!(two[0], burn[0], "{rows} rows: the forward changed");
        for (k, (t, o)) in two.iter().zip(&burn).enumerate().skip(1) {
            for (a, b) in t.iter().zip(o) {
                assert!(
                    (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                    "{rows} rows, gradient {k}: {a} vs {b}"
                );
            }
        }
    }
}
