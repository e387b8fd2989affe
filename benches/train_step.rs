//! Training-step throughput of the MLP and the CNN per precision on the CPU.
//!
//! `cargo run -p greentrain-trainer --example train_step [-- EPOCHS_MLP EPOCHS_CNN]`
//! Runs `configs/mnist_mlp.toml` and `configs/mnist1d_cnn.toml` in fp32,
//! fp16 and bf16 with metering off. It prints training samples/s with
//! epoch 1 excluded (warm-up) and the ratio to fp32. `greentrain bench`
//! gives the same numbers with repeats, energy and confidence intervals.

use greentrain_trainer::{config, train, DeviceSpec, TrainRequest};
use std::path::PathBuf;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let epochs = [
        args.first().copied().unwrap_or(3),
        args.get(1).copied().unwrap_or(20),
    ];
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs"));
    let out = std::env::temp_dir().join(format!("greentrain-train-step-{}", std::process::id()));
    println!("| model | precision | samples/s (epoch 1 excluded) | vs fp32 |\n|---|---|---|---|");
    for (name, e) in ["mnist_mlp", "mnist1d_cnn"].into_iter().zip(epochs) {
        let mut base = None;
        for p in ["fp32", "fp16", "bf16"] {
            let o = vec![
                format!("train.epochs={}", e.max(2)),
                format!("precision.mode={p}"),
                "energy.enabled=false".into(),
            ];
            let outcome = train(TrainRequest {
                config: config::load(&root.join(format!("{name}.toml")), &o).unwrap(),
                device: DeviceSpec::Cpu,
                out_dir: out.clone(),
                quiet: true,
            })
            .unwrap();
            let timed = &outcome.record.epochs[1..];
            let sps = timed.iter().map(|e| e.samples as f64).sum::<f64>()
                / timed.iter().map(|e| e.wall_s).sum::<f64>();
            let b = *base.get_or_insert(sps);
            println!("| {name} | {p} | {sps:.0} | {:.2} |", sps / b);
        }
    }
    let _ = std::fs::remove_dir_all(out);
}
