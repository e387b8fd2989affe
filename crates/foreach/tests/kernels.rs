//! The foreach kernels on wgpu (Mesa's lavapipe in CI: the kernels a GPU
//! runs), with Burn's fusion and without, against the tensor-op reference on
//! Flex. Without a Vulkan driver the tests say so and pass, except under CI,
//! where `.ci/run` installs one and they must run. Flex's own single-pass
//! steps are held to the reference's bits here too (no driver needed).

use burn::backend::wgpu::{WgpuDevice, WgpuRuntime};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor, TensorData};
use burn_flex::Flex;
use greentrain_foreach::{
    kernel_launches, reference, AdamStep, ForeachBackend, Group, ScaleRule, ScaleState, SgdStep,
};
use std::panic::{catch_unwind, AssertUnwindSafe};

type Fused = burn::backend::Wgpu;
type Plain = burn_cubecl::CubeBackend<WgpuRuntime, f32, i32, u32>;

/// Lengths that leave partial cubes, loop more than once per thread (the
/// grid is capped at 1024 cubes of 256) and hold a single value.
const LENS: [usize; 5] = [1, 7, 300, 4099, 300_001];

fn wgpu_ready() -> bool {
    let ok = catch_unwind(AssertUnwindSafe(|| {
        Tensor::<Plain, 1>::zeros([1], &WgpuDevice::default()).into_data();
    }))
    .is_ok();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the wgpu kernel tests (install mesa-vulkan-drivers)"
        );
        eprintln!("no wgpu adapter: the foreach kernel tests did not run");
    }
    ok
}

/// Deterministic values in about [-2, 2], different per `seed`.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

fn list<B: Backend>(seed: u64, dev: &B::Device) -> Vec<Tensor<B, 1>> {
    LENS.iter()
        .enumerate()
        .map(|(i, &n)| vec1::<B>(values(n, seed * 31 + i as u64), dev))
        .collect()
}

fn vec1<B: Backend>(v: Vec<f32>, dev: &B::Device) -> Tensor<B, 1> {
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), dev)
}

fn read<B: Backend>(ts: Vec<Tensor<B, 1>>) -> Vec<Vec<f32>> {
    ts.into_iter()
        .map(|t| t.into_data().to_vec::<f32>().unwrap())
        .collect()
}

fn read_group<B: Backend>(g: Group<B>) -> Vec<Vec<Vec<f32>>> {
    let mut out = vec![read(g.params)];
    out.extend(g.first.map(read));
    out.extend(g.second.map(read));
    out
}

/// Every value within `tol` relative (and 1e-7 absolute) of the reference.
fn assert_close(what: &str, got: &[Vec<Vec<f32>>], want: &[Vec<Vec<f32>>], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lists");
    for (l, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: tensors in list {l}");
        for (t, (g, w)) in g.iter().zip(w).enumerate() {
            assert_eq!(g.len(), w.len(), "{what}: length of tensor {t}");
            for (i, (a, b)) in g.iter().zip(w).enumerate() {
                assert!(
                    (a - b).abs() <= tol * b.abs() + 1e-7,
                    "{what}: list {l} tensor {t} [{i}]: {a} vs reference {b}"
                );
            }
        }
    }
}

fn unscale<B: ForeachBackend>(dev: &B::Device, plant: Option<f32>) -> (Vec<Vec<f32>>, f32) {
    let mut grads = list::<B>(1, dev);
    if let Some(v) = plant {
        let mut x = values(LENS[3], 99);
        x[4000] = v;
        grads[3] = vec1::<B>(x, dev);
    }
    let inv = vec1::<B>(vec![0.25], dev);
    let (out, found) = B::foreach_unscale_check(grads, inv);
    (read(out), found.into_data().to_vec::<f32>().unwrap()[0])
}

/// Runs `f` and checks that it launched at least one foreach kernel (so a
/// comparison is with the kernel, not the tensor-op fallback).
fn launched<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let before = kernel_launches();
    let out = f();
    assert!(kernel_launches() > before, "{what}: no foreach kernel ran");
    out
}

#[test]
fn unscale_check_matches_the_reference_and_finds_every_non_finite() {
    if !wgpu_ready() {
        return;
    }
    let dev = WgpuDevice::default();
    for plant in [
        None,
        Some(f32::INFINITY),
        Some(f32::NEG_INFINITY),
        Some(f32::NAN),
    ] {
        let (want, want_flag) = unscale::<Flex>(&Default::default(), plant);
        let fused = launched("fused unscale", || unscale::<Fused>(&dev, plant));
        let plain = launched("plain unscale", || unscale::<Plain>(&dev, plant));
        for (name, (got, flag)) in [("fused", fused), ("plain", plain)] {
            assert_eq!(flag, want_flag, "{name} flag with {plant:?}");
            if plant.is_none() {
                // One multiply by a power of two: exact on every backend.
                assert_eq!(got, want, "{name} unscaled values");
            }
        }
        assert_eq!(want_flag, if plant.is_some() { 1.0 } else { 0.0 });
    }
}

#[test]
fn a_large_finite_value_that_overflows_when_unscaled_is_found() {
    if !wgpu_ready() {
        return;
    }
    let dev = WgpuDevice::default();
    let inv = || vec1::<Fused>(vec![4.0], &dev);
    let (_, found) =
        Fused::foreach_unscale_check(vec![vec1::<Fused>(vec![1.0, 1e38], &dev)], inv());
    assert_eq!(found.into_data().to_vec::<f32>().unwrap(), vec![1.0]);
    let (_, found) =
        Fused::foreach_unscale_check(vec![vec1::<Fused>(vec![1.0, 1e37], &dev)], inv());
    assert_eq!(found.into_data().to_vec::<f32>().unwrap(), vec![0.0]);
}

#[test]
fn f16_gradients_fall_back_to_the_tensor_ops_and_agree() {
    if !wgpu_ready() {
        return;
    }
    let dev = WgpuDevice::default();
    let g = vec1::<Fused>(vec![1.5, -2.0, 65504.0], &dev).cast(FloatDType::F16);
    let (out, found) = Fused::foreach_unscale_check(vec![g], vec1::<Fused>(vec![0.5], &dev));
    assert_eq!(read(out), vec![vec![0.75, -1.0, 32752.0]]);
    assert_eq!(found.into_data().to_vec::<f32>().unwrap(), vec![0.0]);
}

/// Adam through the backend's foreach kernel, or (`kernel` false) through
/// Burn's tensor ops on the same backend.
fn adam_run<B: ForeachBackend>(
    dev: &B::Device,
    kernel: bool,
    decoupled: bool,
    weight_decay: f64,
    state: bool,
    skip: Option<f32>,
) -> Vec<Vec<Vec<f32>>> {
    let params = list::<B>(2, dev);
    let step = AdamStep {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.999,
        weight_decay,
        decoupled,
        epsilon: 1e-8,
        steps: vec1::<B>(vec![3.0], dev),
    };
    let group = Group {
        params,
        first: state.then(|| list::<B>(3, dev)),
        second: state.then(|| list::<B>(4, dev).into_iter().map(|t| t.abs()).collect()),
    };
    let skip = skip.map(|s| vec1::<B>(vec![s], dev));
    let grads = list::<B>(5, dev);
    read_group(if kernel {
        B::foreach_adam(&step, group, grads, skip)
    } else {
        reference::adam(&step, group, grads, skip)
    })
}

#[test]
fn adam_and_adamw_match_the_reference() {
    if !wgpu_ready() {
        return;
    }
    let dev = WgpuDevice::default();
    for decoupled in [false, true] {
        for wd in [0.0, 0.1] {
            for state in [false, true] {
                for skip in [None, Some(0.0)] {
                    // Burn's own ops on the same device: the bias corrections' `1 - b^t`
                    // amplifies any difference in `powf` between devices.
                    let want = adam_run::<Fused>(&dev, false, decoupled, wd, state, skip);
                    let what =
                        format!("adam decoupled={decoupled} wd={wd} state={state} skip={skip:?}");
                    let fused = launched(&what, || {
                        adam_run::<Fused>(&dev, true, decoupled, wd, state, skip)
                    });
                    let plain = launched(&what, || {
                        adam_run::<Plain>(&dev, true, decoupled, wd, state, skip)
                    });
                    assert_close(&format!("fused {what}"), &fused, &want, 1e-5);
                    assert_close(&format!("plain {what}"), &plain, &want, 1e-5);
                }
            }
        }
    }
}

#[test]
fn a_skipped_step_returns_parameters_and_state_bit_for_bit() {
    if !wgpu_ready() {
        return;
    }
    let dev = WgpuDevice::default();
    let host = |seed| read(list::<Flex>(seed, &Default::default()));
    let abs = |v: Vec<Vec<f32>>| {
        v.into_iter()
            .map(|t| t.into_iter().map(f32::abs).collect())
            .collect()
    };
    for state in [false, true] {
        let got = launched("skipped adam", || {
            adam_run::<Fused>(&dev, true, true, 0.1, state, Some(1.0))
        });
        assert_eq!(got[0], host(2), "params kept");
        let zeros: Vec<Vec<f32>> = LENS.iter().map(|&n| vec![0.0; n]).collect();
        assert_eq!(
            got[1],
            if state { host(3) } else { zeros.clone() },
            "first moment"
        );
        assert_eq!(
            got[2],
            if state { abs(host(4)) } else { zeros },
            "second moment"
        );
    }
    for momentum in [None, Some(0.9)] {
        let got = launched("skipped sgd", || {
            sgd_run::<Fused>(&dev, true, momentum, 1e-4, true, Some(1.0))
        });
        assert_eq!(got[0], host(2), "sgd params kept");
        if momentum.is_some() {
            assert_eq!(got[1], host(3), "momentum buffer kept");
        }
    }
}

fn sgd_run<B: ForeachBackend>(
    dev: &B::Device,
    kernel: bool,
    momentum: Option<f64>,
    weight_decay: f64,
    state: bool,
    skip: Option<f32>,
) -> Vec<Vec<Vec<f32>>> {
    let step = SgdStep {
        lr: 0.1,
        momentum,
        weight_decay,
    };
    let group = Group {
        params: list::<B>(2, dev),
        first: (state && momentum.is_some()).then(|| list::<B>(3, dev)),
        second: None,
    };
    let skip = skip.map(|s| vec1::<B>(vec![s], dev));
    let grads = list::<B>(5, dev);
    read_group(if kernel {
        B::foreach_sgd(&step, group, grads, skip)
    } else {
        reference::sgd(&step, group, grads, skip)
    })
}

#[test]
fn sgd_with_and_without_momentum_matches_the_reference() {
    if !wgpu_ready() {
        return;
    }
    let dev = WgpuDevice::default();
    for momentum in [None, Some(0.9)] {
        for wd in [0.0, 5e-4] {
            for state in [false, true] {
                for skip in [None, Some(0.0)] {
                    let want =
                        sgd_run::<Flex>(&Default::default(), false, momentum, wd, state, skip);
                    let what =
                        format!("sgd momentum={momentum:?} wd={wd} state={state} skip={skip:?}");
                    let fused = launched(&what, || {
                        sgd_run::<Fused>(&dev, true, momentum, wd, state, skip)
                    });
                    let plain = launched(&what, || {
                        sgd_run::<Plain>(&dev, true, momentum, wd, state, skip)
                    });
                    assert_close(&format!("fused {what}"), &fused, &want, 1e-6);
                    assert_close(&format!("plain {what}"), &plain, &want, 1e-6);
                }
            }
        }
    }
}

#[test]
fn hundreds_of_tensors_in_one_call_match_the_reference() {
    // More tensors than one launch can bind on most devices (7 bindings
    // each): the kernel takes them in groups.
    if !wgpu_ready() {
        return;
    }
    fn run<B: ForeachBackend>(dev: &B::Device, kernel: bool) -> Vec<Vec<Vec<f32>>> {
        let many = |seed: u64| -> Vec<Tensor<B, 1>> {
            (0..300)
                .map(|i| vec1::<B>(values(3 + i % 50, seed * 1000 + i as u64), dev))
                .collect()
        };
        let step = AdamStep {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.99,
            weight_decay: 0.0,
            decoupled: false,
            epsilon: 1e-8,
            steps: vec1::<B>(vec![1.0], dev),
        };
        let group = Group {
            params: many(1),
            first: Some(many(2)),
            second: Some(many(3).into_iter().map(|t| t.abs()).collect()),
        };
        read_group(if kernel {
            B::foreach_adam(&step, group, many(4), None)
        } else {
            reference::adam(&step, group, many(4), None)
        })
    }
    let dev = WgpuDevice::default();
    let want = run::<Fused>(&dev, false);
    let got = launched("300 tensors", || run::<Fused>(&dev, true));
    assert_close("300 tensors", &got, &want, 1e-5);
}

fn update<B: ForeachBackend>(
    dev: &B::Device,
    s: f32,
    t: f32,
    found: f32,
    rule: &ScaleRule,
) -> Vec<f32> {
    let one = |v: f32| vec1::<B>(vec![v], dev);
    let state = ScaleState {
        scale: one(s),
        tracker: one(t),
        skipped: one(3.0),
    };
    let n = B::amp_update_scale(state, one(found), rule);
    read(vec![n.scale, n.tracker, n.skipped]).concat()
}

#[test]
fn the_scale_update_matches_the_reference_bit_for_bit() {
    if !wgpu_ready() {
        return;
    }
    let dev = WgpuDevice::default();
    let rule = ScaleRule {
        growth_factor: 2.0,
        backoff_factor: 0.5,
        growth_interval: 3,
    };
    // (scale, tracker, found): clean, clean to a growth, overflow, growth
    // past f32's range (kept), overflow on the growth step.
    let cases = [
        (65536.0, 0.0, 0.0),
        (65536.0, 2.0, 0.0),
        (65536.0, 1.0, 1.0),
        (3e38, 2.0, 0.0),
        (1024.0, 2.0, 1.0),
    ];
    for (s, t, f) in cases {
        let want = update::<Flex>(&Default::default(), s, t, f, &rule);
        let fused = launched("scale update", || update::<Fused>(&dev, s, t, f, &rule));
        let plain = launched("scale update", || update::<Plain>(&dev, s, t, f, &rule));
        assert_eq!(fused, want, "fused, scale {s} tracker {t} found {f}");
        assert_eq!(plain, want, "plain, scale {s} tracker {t} found {f}");
    }
    // The rules themselves, as PyTorch's GradScaler has them.
    assert_eq!(
        update::<Flex>(&Default::default(), 65536.0, 2.0, 0.0, &rule),
        vec![131072.0, 0.0, 3.0]
    );
    assert_eq!(
        update::<Flex>(&Default::default(), 65536.0, 1.0, 1.0, &rule),
        vec![32768.0, 0.0, 4.0]
    );
    assert_eq!(
        update::<Flex>(&Default::default(), 3e38, 2.0, 0.0, &rule),
        vec![3e38, 0.0, 3.0]
    );
}

/// Each value's bits, so that -0 and 0 differ and NaN equals NaN.
fn bits(v: Vec<Vec<Vec<f32>>>) -> Vec<Vec<Vec<u32>>> {
    v.into_iter()
        .map(|l| {
            l.into_iter()
                .map(|t| t.into_iter().map(f32::to_bits).collect())
                .collect()
        })
        .collect()
}

#[test]
fn flex_single_pass_steps_give_the_tensor_ops_bits() {
    let dev = Default::default();
    for decoupled in [false, true] {
        for wd in [0.0, 0.1] {
            for state in [false, true] {
                for skip in [None, Some(0.0), Some(1.0)] {
                    let what =
                        format!("adam decoupled={decoupled} wd={wd} state={state} skip={skip:?}");
                    let want = adam_run::<Flex>(&dev, false, decoupled, wd, state, skip);
                    let got = adam_run::<Flex>(&dev, true, decoupled, wd, state, skip);
                    assert!(bits(got) == bits(want), "{what}");
                }
            }
        }
    }
    for momentum in [None, Some(0.9)] {
        for wd in [0.0, 5e-4] {
            for state in [false, true] {
                for skip in [None, Some(0.0), Some(1.0)] {
                    let what =
                        format!("sgd momentum={momentum:?} wd={wd} state={state} skip={skip:?}");
                    let want = sgd_run::<Flex>(&dev, false, momentum, wd, state, skip);
                    let got = sgd_run::<Flex>(&dev, true, momentum, wd, state, skip);
                    assert!(bits(got) == bits(want), "{what}");
                }
            }
        }
    }
}

/// Flex's one-pass unscale-and-check against the tensor ops: the same bits
/// (a scale that rounds, not a power of two) and the same flag for every
/// non-finite value, one only non-finite once unscaled, none; a gradient
/// held elsewhere keeps its values; f16 gradients go to the tensor ops.
#[test]
fn flex_unscale_check_gives_the_tensor_ops_bits_and_flags() {
    use greentrain_foreach::reference;
    let dev = Default::default();
    for (plant, inv) in [
        (None, 1.0 / 3.0),
        (Some(f32::INFINITY), 1.0 / 3.0),
        (Some(f32::NEG_INFINITY), 0.25),
        (Some(f32::NAN), 0.25),
        (Some(1e38), 4.0), // finite, but not once unscaled
        (Some(1e37), 4.0),
    ] {
        let grads = || {
            let mut g = list::<Flex>(1, &dev);
            if let Some(v) = plant {
                let mut x = values(LENS[4], 99);
                x[40_000] = v; // past the first 16k-element chunk
                g[4] = vec1::<Flex>(x, &dev);
            }
            g
        };
        let inv = || vec1::<Flex>(vec![inv], &dev);
        let (want, want_flag) = reference::unscale_check(grads(), inv());
        let want = (
            bits(vec![read(want)]),
            want_flag.into_data().to_vec::<f32>().unwrap(),
        );
        let case = format!("{plant:?} times {:?}", inv().into_data());
        // Gradients the step holds alone (written over), then clones of
        // gradients the caller keeps (copied).
        let held = grads();
        let before = read(held.clone());
        for given in [grads(), held.clone()] {
            let (got, flag) = Flex::foreach_unscale_check(given, inv());
            let got = (
                bits(vec![read(got)]),
                flag.into_data().to_vec::<f32>().unwrap(),
            );
            assert!(got == want, "{case}: values or flag");
        }
        let kept = bits(vec![read(held)]) == bits(vec![before]); // NaN != NaN
        assert!(kept, "{case}: the caller's gradients kept");
    }
    let g = vec1::<Flex>(vec![1.5, -2.0, 65504.0], &dev).cast(FloatDType::F16);
    let (out, found) = Flex::foreach_unscale_check(vec![g], vec1::<Flex>(vec![0.5], &dev));
    assert_eq!(read(out), vec![vec![0.75, -1.0, 32752.0]]);
    assert_eq!(found.into_data().to_vec::<f32>().unwrap(), vec![0.0]);
}

#[test]
fn flex_steps_leave_buffers_held_elsewhere_as_they_were() {
    // The pass writes over the gradient and the state where the step holds
    // them alone; a clone held by the caller must keep its values.
    let dev = Default::default();
    let step = AdamStep {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.999,
        weight_decay: 0.0,
        decoupled: false,
        epsilon: 1e-8,
        steps: vec1::<Flex>(vec![3.0], &dev),
    };
    let first = list::<Flex>(3, &dev);
    let second: Vec<_> = list::<Flex>(4, &dev).into_iter().map(|t| t.abs()).collect();
    let grads = list::<Flex>(5, &dev);
    let before = (
        read(grads.clone()),
        read(first.clone()),
        read(second.clone()),
    );
    let group = Group {
        params: list::<Flex>(2, &dev),
        first: Some(first.clone()),
        second: Some(second.clone()),
    };
    let moved = Flex::foreach_adam(&step, group, grads.clone(), None);
    assert_eq!((read(grads), read(first), read(second)), before);
    assert_ne!(
        read(moved.params),
        read(list::<Flex>(2, &dev)),
        "the step moved the parameters"
    );
}
