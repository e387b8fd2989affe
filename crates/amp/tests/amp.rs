//! The mixed-precision contract, test by test (numbers refer to the list
//! in the AMP issue and `crates/amp/README.md`).

use burn::module::Module;
use burn::nn::conv::{Conv1dConfig, Conv2dConfig, ConvTranspose1dConfig, ConvTranspose2dConfig};
use burn::nn::{BatchNormConfig, LayerNormConfig, Linear};
use burn::optim::{AdamConfig, Optimizer, SgdConfig};
use burn::tensor::{DType, FloatDType, Int, Tensor, TensorData};
use greentrain_amp::{grads, Autocast, GradScaler, Precision, ScalerConfig, ScalerState};

mod common;
use common::*;

// 1. An injected inf or NaN gradient skips the step.
#[test]
fn t01_non_finite_gradient_skips_step_and_backs_off() {
    for bad in [f32::INFINITY, f32::NAN, f32::NEG_INFINITY] {
        let ac = Autocast::new(Precision::Fp16);
        let mut optim = AdamConfig::new().init::<B, Linear<B>>();
        let mut scaler = GradScaler::new(ScalerConfig::default());
        let m = model();
        // One clean step first, so that Adam has moments and a step count.
        let g = grads_of(&m, scaler.scale_loss(loss(&m, &ac, 8, 0)));
        let (m, rep) = scaler.step(&mut optim, 1e-2, m, g, None);
        assert!(!rep.skipped);
        assert_eq!(scaler.growth_tracker(), 1);
        let p0 = params(&m);
        let (m_ref, mut o_ref) = (m.clone(), optim.clone());

        let g = poisoned(&m, bad);
        let (m, rep) = scaler.step(&mut optim, 1e-2, m, g, None);
        assert!(rep.skipped, "{bad} must skip");
        assert_eq!(
            params(&m),
            p0,
            "parameters changed on a skipped step ({bad})"
        );
        assert_eq!(optim.to_record().len(), o_ref.to_record().len());
        // The optimizer state (moments and Adam's step count, which drives
        // bias correction) is untouched: the same next step from the state
        // before the skip gives bit-identical weights.
        let fp32 = Autocast::new(Precision::Fp32);
        let g = grads_of(&m, loss(&m, &fp32, 8, 1));
        let g_ref = grads_of(&m_ref, loss(&m_ref, &fp32, 8, 1));
        let after = optim.step(1e-2, m.clone(), g);
        let after_ref = o_ref.step(1e-2, m_ref, g_ref);
        assert_eq!(
            params(&after),
            params(&after_ref),
            "optimizer state changed on a skipped step ({bad})"
        );
        assert_eq!(scaler.scale(), 32768.0);
        assert_eq!(scaler.growth_tracker(), 0);
    }
}

// 2. Power-of-two scaling is exact: gradients and update bit-identical.
#[test]
fn t02_power_of_two_scaling_is_exact_in_fp32() {
    let ac = Autocast::new(Precision::Fp32);
    let m = model();
    let plain = grads_of(&m, loss(&m, &ac, 8, 3));
    let cfg = ScalerConfig {
        init_scale: 1024.0,
        ..ScalerConfig::default()
    };
    let scaler = GradScaler::new(cfg.clone());
    let scaled = grads_of(&m, scaler.scale_loss(loss(&m, &ac, 8, 3)));
    let unscaled = scaler.unscale::<B, _>(&m, scaled);
    let a: Vec<u32> = grad_vec(&m, &plain).into_iter().map(f32::to_bits).collect();
    let b: Vec<u32> = grad_vec(&m, &unscaled)
        .into_iter()
        .map(f32::to_bits)
        .collect();
    assert_eq!(a, b);

    // And the whole step: scaled-and-unscaled update equals the plain update.
    let mut o1 = AdamConfig::new().init::<B, Linear<B>>();
    let mut o2 = AdamConfig::new().init::<B, Linear<B>>();
    let mut s2 = GradScaler::new(cfg);
    let m1 = model();
    let g1 = grads_of(&m1, loss(&m1, &ac, 8, 3));
    let m1 = o1.step(1e-2, m1, g1);
    let m2 = model();
    let g2 = grads_of(&m2, s2.scale_loss(loss(&m2, &ac, 8, 3)));
    let (m2, rep) = s2.step(&mut o2, 1e-2, m2, g2, None);
    assert!(!rep.skipped);
    assert_ne!(
        params(&m1),
        params(&model()),
        "the step must move the weights"
    );
    assert_eq!(params(&m1), params(&m2));
}

// 3. Growth after `growth_interval` clean steps; backoff restarts the count;
//    growth that would overflow f32 leaves the scale unchanged.
#[test]
fn t03_growth_and_backoff_schedule() {
    let mut s = GradScaler::new(ScalerConfig {
        growth_interval: 3,
        ..ScalerConfig::default()
    });
    for _ in 0..3 {
        s.update(false);
    }
    assert_eq!(s.scale(), 131072.0);
    assert_eq!(s.growth_tracker(), 0);
    s.update(false);
    s.update(false);
    s.update(true);
    assert_eq!(s.scale(), 65536.0);
    assert_eq!(s.growth_tracker(), 0);
    s.update(false);
    s.update(false);
    assert_eq!(s.scale(), 65536.0, "count restarted after the backoff");
    s.update(false);
    assert_eq!(s.scale(), 131072.0);

    let top = 2f64.powi(127); // largest power of two in f32
    let mut s = GradScaler::new(ScalerConfig {
        init_scale: top,
        growth_interval: 1,
        ..ScalerConfig::default()
    });
    s.update(false);
    assert_eq!(s.scale() as f64, top, "growth to inf must be refused");
    assert_eq!(s.growth_tracker(), 0);
}

// 4. Saving and restoring the scaler state mid-run continues exactly.
#[test]
fn t04_scaler_state_roundtrip_continues_exactly() {
    let pattern = [
        false, false, true, false, false, false, true, true, false, false, false, false,
    ];
    let cfg = ScalerConfig {
        growth_interval: 2,
        ..ScalerConfig::default()
    };
    let mut whole = GradScaler::new(cfg.clone());
    for &f in &pattern {
        whole.update(f);
    }
    let mut first = GradScaler::new(cfg);
    for &f in &pattern[..5] {
        first.update(f);
    }
    let json = serde_json::to_string(first.state()).unwrap();
    let restored: ScalerState = serde_json::from_str(&json).unwrap();
    let mut second = GradScaler::from_state(restored);
    for &f in &pattern[5..] {
        second.update(f);
    }
    assert_eq!(second.state(), whole.state());
}

// 5. Clipping happens after unscaling: the clipped update equals the one
//    without AMP.
#[test]
fn t05_clipping_after_unscale_matches_unscaled_clipping() {
    let ac = Autocast::new(Precision::Fp32);
    let max_norm = 0.05;
    let mut o1 = SgdConfig::new().init::<B, Linear<B>>();
    let mut plain = GradScaler::identity();
    let m1 = model();
    let g1 = grads_of(&m1, loss(&m1, &ac, 8, 1));
    let (m1, r1) = plain.step(&mut o1, 0.5, m1, g1, Some(max_norm));
    assert!(
        r1.clipped,
        "the test must actually clip (norm {:?})",
        r1.grad_norm
    );

    let mut o2 = SgdConfig::new().init::<B, Linear<B>>();
    let mut amp = GradScaler::new(ScalerConfig::default());
    let m2 = model();
    let g2 = grads_of(&m2, amp.scale_loss(loss(&m2, &ac, 8, 1)));
    let (m2, r2) = amp.step(&mut o2, 0.5, m2, g2, Some(max_norm));
    assert!(r2.clipped);
    assert_eq!(r1.grad_norm, r2.grad_norm);
    assert_eq!(params(&m1), params(&m2));
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

// 6. Four fp16 micro-batches accumulate to the fp32 full-batch gradient;
//    an inf in any micro-batch skips the whole step.
#[test]
fn t06_accumulation_matches_fp32_and_inf_skips_whole_step() {
    let m = model();
    let fp32 = Autocast::new(Precision::Fp32);
    let reference = grad_vec(&m, &grads_of(&m, loss(&m, &fp32, 32, 0)));

    let ac = Autocast::new(Precision::Fp16);
    let scaler = GradScaler::new(ScalerConfig::default());
    let mut acc = None;
    for k in 0..4 {
        let (x, y) = batch(32, 0);
        let x = x.slice([k * 8..(k + 1) * 8, 0..6]);
        let y = y.slice(k * 8..(k + 1) * 8);
        let l = ac.cross_entropy(ac.linear(&m, x), y).mul_scalar(0.25);
        let g = grads_of(&m, scaler.scale_loss(l));
        acc = Some(grads::accumulate::<B, _>(&m, acc, g));
    }
    let acc = scaler.unscale::<B, _>(&m, acc.unwrap());
    let got = grad_vec(&m, &acc);
    let d = max_rel_diff(&got, &reference);
    assert!(
        d < 5e-3,
        "accumulated fp16 gradient differs from fp32 by {d}"
    );

    // An overflowing micro-batch poisons the accumulated gradient.
    let mut scaler = GradScaler::new(ScalerConfig::default());
    let mut optim = AdamConfig::new().init::<B, Linear<B>>();
    let mut acc = None;
    for k in 0..4 {
        let (x, y) = batch(8, k * 8);
        let x = if k == 2 { x.mul_scalar(1e30) } else { x };
        let l = ac.cross_entropy(ac.linear(&m, x), y).mul_scalar(0.25);
        let g = grads_of(&m, scaler.scale_loss(l));
        acc = Some(grads::accumulate::<B, _>(&m, acc, g));
    }
    let before = params(&m);
    let (m, rep) = scaler.step(&mut optim, 1e-2, m, acc.unwrap(), None);
    assert!(rep.skipped);
    assert_eq!(params(&m), before);
    assert_eq!(scaler.scale(), 32768.0);
}

// 7. The op policy: matmul-class ops in f16, the rest in f32, and large
//    logits stay finite through the loss.
#[test]
fn t07_policy_dtypes_and_large_logits() {
    let ac = Autocast::new(Precision::Fp16);
    let d = dev();
    let m = model();
    let x = Tensor::<B, 2>::ones([3, 6], &d);
    assert_eq!(ac.linear(&m, x.clone()).dtype(), DType::F16);
    assert_eq!(
        ac.matmul(x.clone(), Tensor::ones([6, 2], &d)).dtype(),
        DType::F16
    );
    let c1 = Conv1dConfig::new(1, 2, 3).init::<B>(&d);
    assert_eq!(
        ac.conv1d(&c1, Tensor::ones([2, 1, 8], &d)).dtype(),
        DType::F16
    );
    let c2 = Conv2dConfig::new([1, 2], [3, 3]).init::<B>(&d);
    assert_eq!(
        ac.conv2d(&c2, Tensor::ones([2, 1, 5, 5], &d)).dtype(),
        DType::F16
    );
    let t1 = ConvTranspose1dConfig::new([1, 2], 3).init::<B>(&d);
    assert_eq!(
        ac.conv_transpose1d(&t1, Tensor::ones([2, 1, 8], &d))
            .dtype(),
        DType::F16
    );
    let t2 = ConvTranspose2dConfig::new([1, 2], [3, 3]).init::<B>(&d);
    assert_eq!(
        ac.conv_transpose2d(&t2, Tensor::ones([2, 1, 5, 5], &d))
            .dtype(),
        DType::F16
    );
    let q = Tensor::<B, 4>::ones([1, 2, 3, 4], &d);
    let att = ac.attention(q.clone(), q.clone(), q, None, None, Default::default());
    assert_eq!(att.dtype(), DType::F16);
    assert_eq!(att.dims(), [1, 2, 3, 4]);

    let h = ac.linear(&m, x);
    assert_eq!(
        ac.relu(h.clone()).dtype(),
        DType::F16,
        "relu keeps its input dtype"
    );
    assert_eq!(ac.softmax(h.clone(), 1).dtype(), DType::F32);
    assert_eq!(ac.log_softmax(h.clone(), 1).dtype(), DType::F32);
    assert_eq!(ac.exp(h.clone()).dtype(), DType::F32);
    assert_eq!(ac.sum(h.clone()).dtype(), DType::F32);
    assert_eq!(ac.mean(h.clone()).dtype(), DType::F32);
    let ln = LayerNormConfig::new(4).init::<B>(&d);
    assert_eq!(ac.layer_norm(&ln, h.clone()).dtype(), DType::F32);
    let bn = BatchNormConfig::new(2).init::<B>(&d);
    let img = ac.conv2d(&c2, Tensor::ones([2, 1, 5, 5], &d));
    assert_eq!(ac.batch_norm(&bn, img).dtype(), DType::F32);
    let (a, b) = ac.promote(h.clone(), Tensor::<B, 2>::ones([3, 4], &d));
    assert_eq!(
        (a.dtype(), b.dtype()),
        (DType::F32, DType::F32),
        "mixed inputs run in the wider dtype"
    );
    assert_eq!(
        ac.add(h.clone(), Tensor::ones([3, 4], &d)).dtype(),
        DType::F32
    );

    // Logits of 12 and more: e^12 = 162755 > 65504 overflows f16...
    let big: Vec<f32> = (0..8).map(|i| 12.0 + 2.0 * i as f32).collect();
    let logits = Tensor::<B, 2>::from_data(TensorData::new(big, [2, 4]), &d).cast(FloatDType::F16);
    let naive = logits
        .clone()
        .exp()
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap();
    assert!(
        naive.iter().any(|v| v.is_infinite()),
        "the overflow this test guards against"
    );
    // ...but the policy's loss runs in f32 and stays finite.
    let y = Tensor::<B, 1, Int>::from_ints([1, 3], &d);
    let l = ac.cross_entropy(logits, y);
    assert_eq!(l.dtype(), DType::F32);
    let v: f32 = l.into_scalar();
    assert!(v.is_finite() && v > 0.0, "loss {v}");
}

// 8. f32 parameter -> fp16 compute -> loss: the gradient is f32 and close
//    to the fp32 gradient.
#[test]
fn t08_master_gradients_are_f32_and_close() {
    let m = model();
    let g16 = grads_of(&m, loss(&m, &Autocast::new(Precision::Fp16), 16, 5));
    let g32 = grads_of(&m, loss(&m, &Autocast::new(Precision::Fp32), 16, 5));
    for g in grads::collect::<B, _>(&m, &g16) {
        assert_eq!(g.dtype(), DType::F32);
    }
    let d = max_rel_diff(&grad_vec(&m, &g16), &grad_vec(&m, &g32));
    assert!(d < 5e-3, "fp16 gradient differs from fp32 by {d}");
    let bf = grads_of(&m, loss(&m, &Autocast::new(Precision::Bf16), 16, 5));
    let d = max_rel_diff(&grad_vec(&m, &bf), &grad_vec(&m, &g32));
    assert!(d < 3e-2, "bf16 gradient differs from fp32 by {d}");
}

// 9. bf16 and fp32: the scaler is the identity and every step is taken.
#[test]
fn t09_bf16_and_fp32_never_scale_or_skip() {
    for p in [Precision::Fp32, Precision::Bf16] {
        let ac = Autocast::new(p);
        let mut s = GradScaler::for_precision(p, ScalerConfig::default());
        assert!(!s.is_enabled());
        assert_eq!(s.scale(), 1.0);
        let m = model();
        let l = loss(&m, &ac, 8, 0);
        let v1: f32 = l.clone().into_scalar();
        let v2: f32 = s.scale_loss(l).into_scalar();
        assert_eq!(v1.to_bits(), v2.to_bits());
        let mut o = SgdConfig::new().init::<B, Linear<B>>();
        let before = params(&m);
        let mut m = m;
        for k in 0..3 {
            let g = grads_of(&m, s.scale_loss(loss(&m, &ac, 8, k)));
            let (next, rep) = s.step(&mut o, 0.1, m, g, None);
            assert!(!rep.skipped);
            m = next;
        }
        assert_ne!(params(&m), before, "{p}: steps must be taken");
        // Even a non-finite gradient is applied: without scaling, an inf is
        // a real divergence (PyTorch behaves the same).
        let (_, rep) = s.step(&mut o, 0.1, m.clone(), poisoned(&m, f32::INFINITY), None);
        assert!(!rep.skipped);
        assert_eq!(s.scale(), 1.0);
    }
}

// 10. A dtype the device cannot do is a clear error, not a panic.
#[test]
fn t10_unsupported_precision_is_a_clear_error() {
    let e = Precision::Bf16
        .check_with(|d| d != DType::BF16, "wgpu<lavapipe>")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bf16") && e.contains("wgpu<lavapipe>") && e.contains("does not support"),
        "{e}"
    );
    assert!(Precision::Fp16.check_supported::<B>(&dev()).is_ok());
    assert!(Precision::Bf16.check_supported::<B>(&dev()).is_ok());
}

#[test]
fn scaler_config_validation_names_the_key() {
    let bad = ScalerConfig {
        backoff_factor: 1.5,
        ..ScalerConfig::default()
    };
    let e = bad.validate().unwrap_err();
    assert_eq!(e.key, "backoff_factor");
    assert!(e.to_string().starts_with("backoff_factor must be"), "{e}");
    let bad = ScalerConfig {
        growth_interval: 0,
        ..ScalerConfig::default()
    };
    assert_eq!(bad.validate().unwrap_err().key, "growth_interval");
    assert!(ScalerConfig::default().validate().is_ok());
}

#[test]
fn precision_parses_and_displays() {
    for p in Precision::ALL {
        assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
    }
    assert!("fp8".parse::<Precision>().is_err());
    // The fixture layer is the 6x4 + 4 it says it is.
    assert_eq!(Module::<B>::num_params(&model()), 28);
    // auto, and the modes themselves, through PrecisionChoice.
    use greentrain_amp::PrecisionChoice;
    assert_eq!(
        "AUTO".parse::<PrecisionChoice>().unwrap(),
        PrecisionChoice::Auto
    );
    assert_eq!(
        "bf16".parse::<PrecisionChoice>().unwrap(),
        PrecisionChoice::Fixed(Precision::Bf16)
    );
    let supports_all = |_| true;
    assert_eq!(
        PrecisionChoice::Auto.resolve(false, supports_all),
        Precision::Fp32
    );
    assert_eq!(
        PrecisionChoice::Auto.resolve(true, supports_all),
        Precision::Fp16
    );
    let bf16_only = |d| d == DType::BF16 || d == DType::F32;
    assert_eq!(
        PrecisionChoice::Auto.resolve(true, bf16_only),
        Precision::Bf16
    );
    assert_eq!(
        PrecisionChoice::Auto.resolve(true, |d| d == DType::F32),
        Precision::Fp32
    );
    assert_eq!(
        PrecisionChoice::Fixed(Precision::Fp16).resolve(false, supports_all),
        Precision::Fp16
    );
}

// A linear over a rank-3 input is the same as over its rows: values and
// gradients, in fp32 and fp16. (The rows are flattened so that the weight
// gradient is one matmul, not one matrix per batch element.)
#[test]
fn linear_over_rank_3_equals_linear_over_rows() {
    for precision in [Precision::Fp32, Precision::Fp16] {
        let ac = Autocast::new(precision);
        let m = model();
        let (x, _) = batch(6, 3);
        let rows = ac.linear(&m, x.clone());
        let cube = ac.linear(&m, x.reshape([2, 3, 6]));
        assert_eq!(cube.dims(), [2, 3, 4]);
        let flat: Vec<f32> = ac
            .full(cube.clone())
            .reshape([6, 4])
            .into_data()
            .to_vec()
            .unwrap();
        let want: Vec<f32> = ac.full(rows.clone()).into_data().to_vec().unwrap();
        assert_eq!(flat, want, "{precision:?} values");
        let g_rows = grad_vec(&m, &grads_of(&m, ac.full(rows).square().sum()));
        let g_cube = grad_vec(&m, &grads_of(&m, ac.full(cube).square().sum()));
        for (a, b) in g_rows.iter().zip(&g_cube) {
            assert!(
                (a - b).abs() <= 1e-6 * a.abs().max(1.0),
                "{precision:?} grads {a} vs {b}"
            );
        }
        assert_eq!(g_rows.len(), g_cube.len());
    }
}
