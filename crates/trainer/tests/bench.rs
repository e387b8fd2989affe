//! Benchmark aggregation against hand-computed values.

use greentrain_amp::Precision;
use greentrain_trainer::bench::{aggregate, BenchRun};

fn run(p: Precision, repeat: usize, wall: f64, joules: f64, acc: f64) -> BenchRun {
    BenchRun {
        precision: p,
        repeat,
        seed: 42 + repeat as u64,
        run_dir: "x".into(),
        test_accuracy: acc,
        wall_s: wall,
        samples: 1000,
        energy_j: Some(joules),
        co2_g: Some(joules / 3.6e6 * 475.0),
        skipped_steps: repeat as u64,
        provenance: Some(if p == Precision::Fp16 {
            "measured".into()
        } else {
            "estimated".into()
        }),
    }
}

#[test]
fn paired_ratios_against_fp32() {
    let runs = vec![
        run(Precision::Fp32, 0, 2.0, 100.0, 0.90),
        run(Precision::Fp16, 0, 1.0, 40.0, 0.91),
        run(Precision::Fp32, 1, 2.0, 100.0, 0.92),
        run(Precision::Fp16, 1, 1.25, 60.0, 0.89),
        run(Precision::Fp32, 2, 2.0, 100.0, 0.94),
        run(Precision::Fp16, 2, 2.0 / 1.5, 50.0, 0.90),
    ];
    let r = aggregate(&runs, &[Precision::Fp32, Precision::Fp16]);
    assert_eq!(r.len(), 2);
    let f32r = &r[0];
    assert!((f32r.test_accuracy.mean - 0.92).abs() < 1e-12);
    assert!((f32r.test_accuracy.sd - 0.02).abs() < 1e-12);
    assert!(f32r.vs_fp32.is_none());
    let h = &r[1];
    assert_eq!(h.skipped_steps, 3);
    // samples/s ratios: 2.0, 1.6, 1.5 -> mean 1.7, sd sqrt(0.07), t(2)=4.303.
    let v = h.vs_fp32.as_ref().unwrap();
    assert!((v.samples_per_s.mean - 1.7).abs() < 1e-12);
    let half = 4.303 * 0.07f64.sqrt() / 3f64.sqrt();
    assert!((v.samples_per_s.high - (1.7 + half)).abs() < 1e-9);
    // J/sample ratios 0.4, 0.6, 0.5 -> mean 0.5, sd 0.1.
    let j = v.j_per_sample.unwrap();
    assert!((j.mean - 0.5).abs() < 1e-12);
    assert!((j.low - (0.5 - 4.303 * 0.1 / 3f64.sqrt())).abs() < 1e-9);
    // The weakest provenance is reported.
    assert_eq!(f32r.provenance.as_deref(), Some("estimated"));
    assert_eq!(h.provenance.as_deref(), Some("measured"));
}

#[test]
fn unpaired_repeats_are_left_out_of_ratios() {
    let runs = vec![
        run(Precision::Fp32, 0, 2.0, 100.0, 0.9),
        run(Precision::Bf16, 0, 1.0, 50.0, 0.9),
        run(Precision::Bf16, 1, 1.0, 50.0, 0.9),
    ];
    let r = aggregate(&runs, &[Precision::Fp32, Precision::Bf16]);
    assert_eq!(r[1].vs_fp32.as_ref().unwrap().samples_per_s.n, 1);
    assert_eq!(r[1].samples_per_s.n, 2);
}
