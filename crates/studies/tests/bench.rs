//! Benchmark aggregation against hand-computed values.

use greentrain_amp::Precision;
use greentrain_energy::Provenance;
use greentrain_studies::bench::{aggregate, BenchRun};

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
            Provenance::Measured
        } else {
            Provenance::Estimated
        }),
        shortest_window_s: wall,
        estimated_only: false,
        train_samples: 1000,
        target_energy_j: None,
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
    assert!((v.samples_per_s.high.unwrap() - (1.7 + half)).abs() < 1e-9);
    // J/sample ratios 0.4, 0.6, 0.5 -> mean 0.5, sd 0.1.
    let j = v.j_per_sample.unwrap();
    assert!((j.mean - 0.5).abs() < 1e-12);
    assert!((j.low.unwrap() - (0.5 - 4.303 * 0.1 / 3f64.sqrt())).abs() < 1e-9);
    // The weakest provenance is reported.
    assert_eq!(f32r.provenance, Some(Provenance::Estimated));
    assert_eq!(h.provenance, Some(Provenance::Measured));
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

fn report(runs: Vec<BenchRun>, precisions: &[Precision]) -> greentrain_studies::bench::BenchReport {
    greentrain_studies::bench::BenchReport {
        schema: "greentrain.bench/1".into(),
        config: "x.toml".into(),
        device: "cpu".into(),
        repeats: 1,
        warmup_epochs: 1,
        min_window_s: 5.0,
        steps_per_epoch: None,
        short_windows: 0,
        results: aggregate(&runs, precisions),
        runs,
    }
}

/// The "vs fp32" cells of the Markdown table's rows, in order.
fn ratio_cells(md: &str) -> Vec<(String, String)> {
    md.lines()
        .filter(|l| l.starts_with("| fp") || l.starts_with("| bf"))
        .map(|l| {
            let c: Vec<&str> = l.split('|').map(str::trim).collect();
            (c[c.len() - 3].to_string(), c[c.len() - 2].to_string())
        })
        .collect()
}

#[test]
fn tables_print_na_for_ratios_never_computed() {
    // No fp32 baseline: no ratio at all.
    let r = report(
        vec![run(Precision::Fp16, 0, 1.0, 40.0, 0.9)],
        &[Precision::Fp16],
    );
    assert_eq!(ratio_cells(&r.markdown()), [("n/a".into(), "n/a".into())]);
    assert!(r.latex().contains("n/a & n/a"), "{}", r.latex());
    // No energy: samples/s ratios, but no J/sample ratio, fp32's included.
    let mut runs = vec![
        run(Precision::Fp32, 0, 2.0, 100.0, 0.9),
        run(Precision::Fp16, 0, 1.0, 40.0, 0.9),
    ];
    for r in runs.iter_mut() {
        r.energy_j = None;
        r.co2_g = None;
    }
    let r = report(runs, &[Precision::Fp32, Precision::Fp16]);
    let cells = ratio_cells(&r.markdown());
    assert_eq!(cells[0], ("1".to_string(), "n/a".to_string()));
    assert_eq!(cells[1].0, "2.000");
    assert_eq!(cells[1].1, "n/a");
    assert!(!r.latex().contains("& 1 \\\\"), "{}", r.latex());
}

/// One repeat gives ratios without an interval: bench.json says nothing of
/// one rather than writing a NaN that JSON cannot hold, and reads back.
#[test]
fn one_repeat_gives_a_readable_report_without_intervals() {
    let r = report(
        vec![
            run(Precision::Fp32, 0, 2.0, 100.0, 0.9),
            run(Precision::Fp16, 0, 1.0, 40.0, 0.9),
        ],
        &[Precision::Fp32, Precision::Fp16],
    );
    let json = serde_json::to_string_pretty(&r).unwrap();
    assert!(!json.contains("NaN") && !json.contains("\"low\""), "{json}");
    let back: greentrain_studies::bench::BenchReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    let v = back.results[1].vs_fp32.as_ref().unwrap();
    assert_eq!((v.samples_per_s.low, v.samples_per_s.high), (None, None));
    assert_eq!(v.samples_per_s.mean, 2.0);
}
