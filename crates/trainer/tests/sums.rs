//! Sums in two stages on wgpu (`[kernels] sums`: bias gradients, layer and
//! batch norm, the loss's mean), against Burn's one reduction: the same
//! forward within f32 rounding, the same gradients, and flex untouched. Without a Vulkan driver the test says so
//! and passes, except under CI.

use burn::backend::{Autodiff, Flex, Wgpu};
use burn::nn::{BatchNormConfig, LayerNormConfig};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
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

/// Every pair of values within `tol` (relative, or absolute below 1): f32
/// rounding of sums taken in another order.
fn close_within(tol: f32, what: &str, two: &[Vec<f32>], one: &[Vec<f32>]) {
    assert_eq!(two.len(), one.len());
    for (k, (t, o)) in two.iter().zip(one).enumerate() {
        assert_eq!(t.len(), o.len(), "{what}, output {k}: lengths");
        for (a, b) in t.iter().zip(o) {
            assert!(
                (a - b).abs() <= tol * b.abs().max(1.0),
                "{what}, output {k}: {a} vs {b}"
            );
        }
    }
}

/// [`close_within`] for sums of up to a few thousand terms.
fn close(what: &str, two: &[Vec<f32>], one: &[Vec<f32>]) {
    close_within(2e-5, what, two, one);
}

fn read<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

/// Layer norm of `[rows, 3, 16]`: output, and the gradients of x, gamma
/// and beta.
fn layer_norm<B: MatmulBackend + AutodiffBackend>(
    ac: &Autocast,
    rows: usize,
    dev: &B::Device,
) -> Vec<Vec<f32>> {
    let ln = LayerNormConfig::new(16).init::<B>(dev);
    let x = matrix::<B>(rows * 3, 16, 5, dev)
        .reshape([rows, 3, 16])
        .require_grad();
    let y = ac.layer_norm(&ln, x.clone());
    let r = matrix::<B>(rows * 3, 16, 6, dev).reshape([rows, 3, 16]);
    let g = (y.clone() * r).sum().backward();
    let beta = ln.beta.as_ref().unwrap().val();
    vec![
        read(y.inner()),
        read(x.grad(&g).unwrap()),
        read(ln.gamma.val().grad(&g).unwrap()),
        read(beta.grad(&g).unwrap()),
    ]
}

/// Batch norm of `[n, 4, 8, 8]`: output, the gradients of x, gamma and beta,
/// and the running statistics after the step.
fn batch_norm<B: MatmulBackend + AutodiffBackend>(
    ac: &Autocast,
    n: usize,
    dev: &B::Device,
) -> Vec<Vec<f32>> {
    let bn = BatchNormConfig::new(4).init::<B>(dev);
    let x = matrix::<B>(n * 4, 64, 7, dev)
        .reshape([n, 4, 8, 8])
        .require_grad();
    let y = ac.batch_norm(&bn, x.clone());
    let r = matrix::<B>(n * 4, 64, 8, dev).reshape([n, 4, 8, 8]);
    let g = (y.clone() * r).sum().backward();
    vec![
        read(y.inner()),
        read(x.grad(&g).unwrap()),
        read(bn.gamma.val().grad(&g).unwrap()),
        read(bn.beta.val().grad(&g).unwrap()),
        read(bn.running_mean.value().inner()),
        read(bn.running_var.value().inner()),
    ]
}

/// Mean cross-entropy of `[n, 10]` logits: the loss and the logits' gradient.
fn loss<B: MatmulBackend + AutodiffBackend>(
    ac: &Autocast,
    n: usize,
    dev: &B::Device,
) -> Vec<Vec<f32>> {
    let logits = matrix::<B>(n, 10, 9, dev).mul_scalar(4.0).require_grad();
    let labels: Vec<i64> = (0..n as i64).map(|i| (i * 7) % 10).collect();
    let y = Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [n]), dev);
    let l = ac.cross_entropy(logits.clone(), y);
    let g = l.clone().backward();
    vec![read(l.inner()), read(logits.grad(&g).unwrap())]
}

/// Output, and the gradients of x, W and b, of `sum(linear(x) * r)`.
fn run<B: MatmulBackend + AutodiffBackend>(
    ac: &Autocast,
    rows: usize,
    dev: &B::Device,
) -> Vec<Vec<f32>> {
    let x = matrix::<B>(rows, 20, 1, dev).require_grad();
    let w = matrix::<B>(20, 30, 2, dev).require_grad();
    let b = matrix::<B>(1, 30, 3, dev).reshape([30]).require_grad();
    let y = ac.linear_raw(x.clone(), w.clone(), Some(b.clone()));
    let g = (y.clone() * matrix::<B>(rows, 30, 4, dev)).sum().backward();
    vec![
        read(y.inner()),
        read(x.grad(&g).unwrap()),
        read(w.grad(&g).unwrap()),
        read(b.grad(&g).unwrap()),
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
    // 1024 rows split 32 x 32, 1536 rows 48 x 32; 300 rows (short) and 7
    // (odd) are not split.
    for rows in [1024, 1536, 300, 7] {
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

#[test]
fn two_stage_norms_and_loss_match_burns_one_reduction() {
    let fp32 = Autocast::new(Precision::Fp32);
    let one = fp32.with_split_sums(false);
    if !wgpu_ready() {
        return;
    }
    let dev = Default::default();
    // Layer norm: 256 x 3 rows split 48 x 16; 12 x 3 are not split.
    for n in [256, 12] {
        let what = format!("layer norm, {n} x 3 rows");
        close(
            &what,
            &layer_norm::<A>(&fp32, n, &dev),
            &layer_norm::<A>(&one, n, &dev),
        );
    }
    // Batch norm: 1024 positions split 32 x 32, a batch of 512 32 x 16 (of
    // 2, not split).
    for n in [512, 2] {
        let what = format!("batch norm, batch {n}");
        // Gamma's gradient sums n x 1024 products (half a million at 512):
        // f32 rounding in another order is of order 1e-5 relative there; a
        // wrong split is off by far more.
        close_within(
            2e-4,
            &what,
            &batch_norm::<A>(&fp32, n, &dev),
            &batch_norm::<A>(&one, n, &dev),
        );
    }
    // The loss's mean: 1024 samples split 32 x 32; 12 are not split.
    for n in [1024, 12] {
        let what = format!("cross-entropy, batch {n}");
        close(&what, &loss::<A>(&fp32, n, &dev), &loss::<A>(&one, n, &dev));
    }
}

/// On flex the switch changes nothing: bit-identical norms and loss.
#[test]
fn flex_norms_and_loss_are_untouched_by_the_switch() {
    type F = Autodiff<Flex>;
    let fp32 = Autocast::new(Precision::Fp32);
    let one = fp32.with_split_sums(false);
    let dev = Default::default();
    assert_eq!(
        layer_norm::<F>(&fp32, 256, &dev),
        layer_norm::<F>(&one, 256, &dev)
    );
    assert_eq!(
        batch_norm::<F>(&fp32, 512, &dev),
        batch_norm::<F>(&one, 512, &dev)
    );
    assert_eq!(loss::<F>(&fp32, 1024, &dev), loss::<F>(&one, 1024, &dev));
}

type P = greentrain_amp::Amp<A>;

/// A linear layer, a layer norm and a batch norm in a row: through
/// [`Autocast`]'s methods on `B` (`plain` false), or as Burn's modules (and
/// `greentrain_amp::batch_norm`) called as a plain model calls them, on
/// `Amp<_>` under `ac.enter()` (`plain` true). The output, the input's and
/// every parameter's gradient, and the running mean.
fn layers<B: MatmulBackend + AutodiffBackend>(
    ac: &Autocast,
    plain: bool,
    rows: usize,
    dev: &B::Device,
) -> Vec<Vec<f32>> {
    use burn::module::Param;
    let _on = plain.then(|| ac.enter());
    let x = matrix::<B>(rows, 16, 1, dev).require_grad();
    let lin = burn::nn::Linear {
        weight: Param::from_tensor(matrix::<B>(16, 16, 2, dev)),
        bias: Some(Param::from_tensor(matrix::<B>(1, 16, 3, dev).reshape([16]))),
    };
    let ln = LayerNormConfig::new(16).init::<B>(dev);
    let bn = BatchNormConfig::new(4).init::<B>(dev);
    let h = match plain {
        true => lin.forward(x.clone()),
        false => ac.linear(&lin, x.clone()),
    };
    let h = h.reshape([rows / 4, 4, 16]);
    let h = match plain {
        true => ln.forward(h),
        false => ac.layer_norm(&ln, h),
    };
    let y = match plain {
        true => greentrain_amp::batch_norm(&bn, h),
        false => ac.batch_norm(&bn, h),
    };
    let r = matrix::<B>(rows, 16, 4, dev).reshape([rows / 4, 4, 16]);
    let g = (y.clone() * r).sum().backward();
    let grad = |p: &Param<Tensor<B, 1>>| read(p.val().grad(&g).unwrap());
    vec![
        read(y.inner()),
        read(x.grad(&g).unwrap()),
        read(lin.weight.val().grad(&g).unwrap()),
        grad(lin.bias.as_ref().unwrap()),
        grad(&ln.gamma),
        grad(ln.beta.as_ref().unwrap()),
        grad(&bn.gamma),
        grad(&bn.beta),
        read(bn.running_mean.value().inner()),
    ]
}

/// A plain model's layers on `Amp<B>` compute, bit for bit, what
/// greentrain's `Autocast` methods compute on `B`, once `B` is registered
/// (`use_kernels`): on wgpu that is the products through greentrain-matmul
/// and the bias, layer-norm and batch-norm sums in two stages; on flex,
/// Burn's ops. In fp32 and fp16, at 4096 rows (every sum split) and 12 (none).
#[test]
fn plain_layers_on_amp_take_greentrains_kernels() {
    type F = Autodiff<Flex>;
    greentrain_amp::use_kernels::<F>();
    let dev = Default::default();
    for p in [Precision::Fp32, Precision::Fp16] {
        let ac = Autocast::new(p);
        for rows in [4096, 12] {
            let (want, got) = (
                layers::<F>(&ac, false, rows, &dev),
                layers::<greentrain_amp::Amp<F>>(&ac, true, rows, &dev),
            );
            assert_eq!(got, want, "flex, {p}, {rows} rows");
        }
    }
    if !wgpu_ready() {
        return;
    }
    greentrain_amp::use_kernels::<A>();
    let dev = Default::default();
    for p in [Precision::Fp32, Precision::Fp16] {
        let ac = Autocast::new(p);
        for rows in [4096, 12] {
            let want = layers::<A>(&ac, false, rows, &dev);
            let got = layers::<P>(&ac, true, rows, &dev);
            assert_eq!(got, want, "wgpu, {p}, {rows} rows");
        }
    }
}
