//! Cost of energy metering: the same training with `[energy] enabled` on and
//! off, interleaved (on, off, on, off, ...) so that drift hits both alike.
//!
//! `cargo run -p greentrain-studies --example metering_overhead [-- PAIRS [EPOCHS]]`
//!
//! What is timed is the whole `train()` call: every step, every evaluation,
//! the window edges (each a meter read and, on GPUs, a device sync), the
//! checkpoints with their windows, the energy journal and the run.json
//! writes. It prints each run, and the mean on/off ratio with its Student-t
//! 95% interval over the pairs (docs/BENCHMARKS.md records the result).

use greentrain_studies::stats::paired_ratio;
use greentrain_trainer::{config, train, DeviceSpec, TrainRequest};
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let arg = |i: usize, default: usize| -> usize {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (pairs, epochs) = (arg(1, 10), arg(2, 30));
    let cfg = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/mnist1d_cnn.toml"
    ));
    let out = std::env::temp_dir().join(format!("greentrain-overhead-{}", std::process::id()));
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for r in 0..pairs {
        for enabled in [true, false] {
            let o = vec![
                format!("train.epochs={epochs}"),
                // A checkpoint every epoch: their windows are timed too.
                "train.checkpoint_every=1".to_string(),
                format!("energy.enabled={enabled}"),
            ];
            let request = TrainRequest {
                config: config::load(&cfg, &o).unwrap(),
                device: DeviceSpec::Cpu,
                out_dir: out.clone(),
                quiet: true,
            };
            let t0 = Instant::now();
            let outcome = train(request).unwrap();
            let t = t0.elapsed().as_secs_f64();
            let windows = outcome
                .record
                .energy
                .as_ref()
                .map_or(0, |e| e.windows.len());
            println!(
                "pair {r} metering {:3}: whole run {t:.3} s, {windows} windows, test accuracy {:.4}",
                if enabled { "on" } else { "off" },
                outcome.record.final_.unwrap().test_accuracy
            );
            if enabled {
                on.push(t)
            } else {
                off.push(t)
            }
        }
    }
    let r = paired_ratio(&on, &off);
    let pct = |x: f64| 100.0 * (x - 1.0);
    match (r.low, r.high) {
        (Some(lo), Some(hi)) => println!(
            "metering overhead: {:+.2}% (95% interval {:+.2}% to {:+.2}%, {} pairs of {epochs}-epoch runs)",
            pct(r.mean),
            pct(lo),
            pct(hi),
            r.n
        ),
        _ => println!(
            "metering overhead: {:+.2}% (one pair: no interval)",
            pct(r.mean)
        ),
    }
    let _ = std::fs::remove_dir_all(out);
}
