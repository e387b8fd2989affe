//! The device-resident scaler and optimizers: the same contract as the host
//! `GradScaler` (tests in amp.rs), with no read back inside a step.

use burn::nn::Linear;
use burn::optim::{AdamConfig, AdamWConfig, Optimizer, SgdConfig};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::{Tensor, TensorData};
use greentrain_amp::{
    readback, Autocast, DeviceOptimizer, DeviceScaler, GradScaler, OptimizerSpec, Precision,
    ScalerConfig,
};

mod common;
use common::*;

const ADAM: OptimizerSpec = OptimizerSpec::Adam {
    beta1: 0.9,
    beta2: 0.999,
    epsilon: 1e-8,
    weight_decay: 0.0,
};

fn scaler(cfg: ScalerConfig) -> DeviceScaler<I> {
    DeviceScaler::from_state(GradScaler::new(cfg).state(), &dev())
}

// A non-finite gradient skips the step on the device: parameters, Adam's
// moments and its step count stay bit-identical, and nothing is read back.
#[test]
fn d01_skip_is_a_device_select_and_reads_nothing() {
    for bad in [f32::INFINITY, f32::NAN, f32::NEG_INFINITY] {
        let ac = Autocast::new(Precision::Fp16);
        let mut optim = DeviceOptimizer::<B>::new(ADAM, &dev());
        let mut s = scaler(ScalerConfig::default());
        let m = model();
        let g = grads_of(&m, s.scale_loss(loss(&m, &ac, 8, 0)));
        let m = s.step(&mut optim, 1e-2, m, g, None);
        let p0 = params(&m);
        let (m_ref, mut o_ref) = (m.clone(), optim.clone());

        let reads = readback::count();
        let bad_grads = poisoned(&m, bad);
        let m = s.step(&mut optim, 1e-2, m, bad_grads, Some(1.0));
        assert_eq!(readback::count(), reads, "a step read back ({bad})");
        assert_eq!(
            params(&m),
            p0,
            "parameters changed on a skipped step ({bad})"
        );

        // Same next step from the state before the skip: bit-identical, so
        // moments and step count (bias correction) were untouched.
        let fp32 = Autocast::new(Precision::Fp32);
        let g = grads_of(&m, loss(&m, &fp32, 8, 1));
        let g_ref = grads_of(&m_ref, loss(&m_ref, &fp32, 8, 1));
        let after = optim.step(1e-2, m, g, None);
        let after_ref = o_ref.step(1e-2, m_ref, g_ref, None);
        assert_eq!(
            params(&after),
            params(&after_ref),
            "optimizer state changed ({bad})"
        );
        let snap = s.sync();
        assert_eq!(snap.scale, 32768.0);
        assert_eq!(snap.growth_tracker, 0);
        assert_eq!(snap.skipped, 1);
    }
}

// The device update follows the host scaler's rules step for step,
// including growth refused at the top of f32's range.
#[test]
fn d02_device_update_matches_host_schedule() {
    let pattern = [
        false, false, true, false, false, false, true, true, false, false, false, false,
    ];
    for cfg in [
        ScalerConfig {
            growth_interval: 2,
            ..ScalerConfig::default()
        },
        ScalerConfig {
            init_scale: f32::MAX as f64 / 2.0,
            growth_interval: 1,
            ..ScalerConfig::default()
        },
    ] {
        let mut host = GradScaler::new(cfg.clone());
        let mut device = scaler(cfg);
        for (i, &f) in pattern.iter().enumerate() {
            host.update(f);
            let flag =
                Tensor::<I, 1>::from_data(TensorData::new(vec![f as u8 as f32], [1]), &dev())
                    .greater_elem(0.5);
            device.update(flag);
            let snap = device.sync();
            assert_eq!(
                snap.scale.to_bits(),
                host.scale().to_bits(),
                "scale at step {i}"
            );
            assert_eq!(
                snap.growth_tracker,
                host.growth_tracker(),
                "tracker at step {i}"
            );
        }
        assert_eq!(device.state(), *host.state());
    }
}

fn run_burn<O: Optimizer<Linear<B>, B>>(mut o: O, steps: usize) -> Vec<f32> {
    let ac = Autocast::new(Precision::Fp32);
    let mut m = model();
    for k in 0..steps {
        let g = grads_of(&m, loss(&m, &ac, 8, k));
        m = o.step(0.05, m, g);
    }
    params(&m).into_iter().map(f32::from_bits).collect()
}

fn run_device(spec: OptimizerSpec, steps: usize) -> Vec<f32> {
    let ac = Autocast::new(Precision::Fp32);
    let mut o = DeviceOptimizer::<B>::new(spec, &dev());
    let mut m = model();
    for k in 0..steps {
        let g = grads_of(&m, loss(&m, &ac, 8, k));
        m = o.step(0.05, m, g, None);
    }
    params(&m).into_iter().map(f32::from_bits).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

// The device optimizers compute what Burn's do (the arithmetic is Burn's;
// only the bias-correction powers are computed on the device).
#[test]
fn d03_device_optimizers_match_burn() {
    use burn::optim::decay::WeightDecayConfig;
    use burn::optim::momentum::MomentumConfig;
    let steps = 6;
    let cases: Vec<(&str, Vec<f32>, Vec<f32>)> = vec![
        (
            "adam",
            run_burn(AdamConfig::new().with_epsilon(1e-8).init(), steps),
            run_device(ADAM, steps),
        ),
        (
            "adam+l2",
            run_burn(
                AdamConfig::new()
                    .with_epsilon(1e-8)
                    .with_weight_decay(Some(WeightDecayConfig::new(0.1)))
                    .init(),
                steps,
            ),
            run_device(
                OptimizerSpec::Adam {
                    beta1: 0.9,
                    beta2: 0.999,
                    epsilon: 1e-8,
                    weight_decay: 0.1,
                },
                steps,
            ),
        ),
        (
            "adamw",
            run_burn(
                AdamWConfig::new()
                    .with_epsilon(1e-8)
                    .with_weight_decay(0.1)
                    .init(),
                steps,
            ),
            run_device(
                OptimizerSpec::AdamW {
                    beta1: 0.9,
                    beta2: 0.999,
                    epsilon: 1e-8,
                    weight_decay: 0.1,
                },
                steps,
            ),
        ),
        (
            "momentum",
            run_burn(
                SgdConfig::new()
                    .with_momentum(Some(MomentumConfig {
                        momentum: 0.9,
                        dampening: 0.0,
                        nesterov: false,
                    }))
                    .init(),
                steps,
            ),
            run_device(
                OptimizerSpec::Sgd {
                    momentum: Some(0.9),
                    weight_decay: 0.0,
                },
                steps,
            ),
        ),
        (
            "sgd",
            run_burn(SgdConfig::new().init(), steps),
            run_device(
                OptimizerSpec::Sgd {
                    momentum: None,
                    weight_decay: 0.0,
                },
                steps,
            ),
        ),
    ];
    let start: Vec<f32> = params(&model()).into_iter().map(f32::from_bits).collect();
    for (name, burn, ours) in cases {
        assert!(
            max_abs_diff(&burn, &start) > 1e-3,
            "{name}: the test must move the weights"
        );
        let d = max_abs_diff(&burn, &ours);
        assert!(
            d < 1e-6,
            "{name}: device optimizer differs from Burn's by {d}"
        );
    }
}

// Clipping after unscaling on the device equals clipping without scaling.
#[test]
fn d04_device_clipping_after_unscale() {
    let ac = Autocast::new(Precision::Fp32);
    let sgd = OptimizerSpec::Sgd {
        momentum: None,
        weight_decay: 0.0,
    };
    let mut o1 = DeviceOptimizer::<B>::new(sgd, &dev());
    let mut plain = DeviceScaler::<I>::from_state(GradScaler::identity().state(), &dev());
    let m1 = model();
    let g1 = grads_of(&m1, loss(&m1, &ac, 8, 1));
    let m1 = plain.step(&mut o1, 0.5, m1, g1, Some(0.05));
    let n1 = plain.sync();

    let mut o2 = DeviceOptimizer::<B>::new(sgd, &dev());
    let mut amp = scaler(ScalerConfig::default());
    let m2 = model();
    let g2 = grads_of(&m2, amp.scale_loss(loss(&m2, &ac, 8, 1)));
    let m2 = amp.step(&mut o2, 0.5, m2, g2, Some(0.05));
    let n2 = amp.sync();
    assert!(n1.grad_norm.unwrap() > 0.05, "the test must clip");
    assert_eq!(n1.grad_norm, n2.grad_norm);
    assert_eq!(params(&m1), params(&m2));
    assert_eq!(n1.skipped + n2.skipped, 0);
}

// Saved optimizer state continues exactly; another optimizer's is refused.
#[test]
fn d05_optimizer_record_roundtrip_continues_exactly() {
    let ac = Autocast::new(Precision::Fp32);
    let rec = BinBytesRecorder::<FullPrecisionSettings>::default();
    let mut whole = DeviceOptimizer::<B>::new(ADAM, &dev());
    let mut m = model();
    for k in 0..3 {
        let g = grads_of(&m, loss(&m, &ac, 8, k));
        m = whole.step(0.05, m, g, None);
    }
    let bytes = Recorder::<I>::record(&rec, whole.to_record(), ()).unwrap();
    let m_saved = m.clone();
    let g = grads_of(&m, loss(&m, &ac, 8, 3));
    let m_whole = whole.step(0.05, m, g, None);

    let loaded = Recorder::<I>::load(&rec, bytes.clone(), &dev()).unwrap();
    let mut again = DeviceOptimizer::<B>::new(ADAM, &dev())
        .load_record(loaded)
        .unwrap();
    let g = grads_of(&m_saved, loss(&m_saved, &ac, 8, 3));
    let m_again = again.step(0.05, m_saved, g, None);
    assert_eq!(params(&m_whole), params(&m_again));

    let loaded = Recorder::<I>::load(&rec, bytes, &dev()).unwrap();
    let sgd = OptimizerSpec::Sgd {
        momentum: None,
        weight_decay: 0.0,
    };
    let err = DeviceOptimizer::<B>::new(sgd, &dev())
        .load_record(loaded)
        .unwrap_err();
    assert!(err.contains("adam"), "{err}");
}
