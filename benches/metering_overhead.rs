//! Cost of energy metering: the same training with `[energy] enabled` on and
//! off, interleaved (on, off, on, off, ...) so that drift hits both alike.
//!
//! `cargo run -p greentrain-trainer --example metering_overhead [-- REPEATS]`
//! Prints the training wall time of each run and the mean on/off ratio.
//! The target is under 1% (recorded in docs/BENCHMARKS.md).

use greentrain_trainer::{config, train, DeviceSpec, TrainRequest};
use std::path::PathBuf;

fn main() {
    let repeats: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let cfg = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/mnist1d_cnn.toml"
    ));
    let out = std::env::temp_dir().join(format!("greentrain-overhead-{}", std::process::id()));
    let mut on = Vec::new();
    let mut off = Vec::new();
    for r in 0..repeats {
        for enabled in [true, false] {
            let o = vec![
                "train.epochs=30".to_string(),
                format!("energy.enabled={enabled}"),
            ];
            let outcome = train(TrainRequest {
                config: config::load(&cfg, &o).unwrap(),
                device: DeviceSpec::Cpu,
                out_dir: out.clone(),
                quiet: true,
            })
            .unwrap();
            let f = outcome.record.final_.unwrap();
            let eval: f64 = outcome.record.epochs.iter().map(|e| e.eval_s).sum();
            let t = f.wall_s + eval;
            println!(
                "repeat {r} metering {:3}: train+eval {t:.3} s, test accuracy {:.4}",
                if enabled { "on" } else { "off" },
                f.test_accuracy
            );
            if enabled {
                on.push(t)
            } else {
                off.push(t)
            }
        }
    }
    let ratios: Vec<f64> = on.iter().zip(&off).map(|(a, b)| a / b).collect();
    let n = ratios.len() as f64;
    let mean = ratios.iter().sum::<f64>() / n;
    let sd = (ratios.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (mon, moff) = (med(&mut on.clone()), med(&mut off.clone()));
    println!(
        "metering overhead: mean on/off ratio {mean:.4} (sd {sd:.4}, {repeats} pairs); medians {mon:.3} s on, {moff:.3} s off ({:+.2}%)",
        100.0 * (mon / moff - 1.0)
    );
    let _ = std::fs::remove_dir_all(out);
}
