//! Data loading against training speed: is the loader ever the bottleneck?
//!
//! Run with `cargo run -p greentrain-trainer --example data_loading`. It
//! times loading and verifying each shipped dataset (gunzip, sha256, parse)
//! and the per-epoch batch path of the trainer: the seeded shuffle, gathering
//! rows into a contiguous buffer, and building Burn tensors on the flex
//! device. Compare the samples/s it prints with the training samples/s in
//! a run's `metrics.csv` (the `data_s` column there is the same path measured
//! inside real training).

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use greentrain_trainer::{config, data};
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs"));
    for (name, batch) in [
        ("mnist_mlp", 128usize),
        ("mnist1d_cnn", 100),
        ("digits_mlp", 32),
    ] {
        let cfg = config::load(&root.join(format!("{name}.toml")), &[]).unwrap();
        let t = Instant::now();
        let ds = data::load(&cfg.config, &root).unwrap();
        let load_s = t.elapsed().as_secs_f64();
        let f = ds.features();
        let n = ds.train.len();
        let device = Default::default();
        let reps = (200_000 / n).max(1);
        let t = Instant::now();
        let mut sink = 0usize;
        for epoch in 0..reps {
            let order = data::epoch_order(n, 42, epoch);
            for ids in order.chunks(batch) {
                let (x, y) = data::gather(&ds.train, f, ids);
                let x = Tensor::<Flex, 2>::from_data(TensorData::new(x, [ids.len(), f]), &device);
                let y = Tensor::<Flex, 1, Int>::from_data(TensorData::new(y, [ids.len()]), &device);
                sink += x.dims()[0] + y.dims()[0];
            }
        }
        let s = t.elapsed().as_secs_f64();
        let rate = (reps * n) as f64 / s;
        println!(
            "{name:12} load+verify {load_s:6.3} s   batches of {batch:3}: {rate:>12.0} samples/s ({} epochs, {sink} rows)",
            reps
        );
    }
}
