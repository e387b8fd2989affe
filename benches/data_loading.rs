//! Data loading against training speed: is the loader ever the bottleneck?
//!
//! Run with `cargo run -p greentrain-trainer --example data_loading`. For
//! each format it times reading a data set from disk to its first batch
//! (decompression, checksums, parsing, decoding, normalisation: samples/s
//! from disk to the first batch), then the per-epoch batch path of the
//! trainer: the seeded shuffle, gathering rows into a contiguous buffer,
//! CIFAR-10's crops and flips, and building Burn tensors on the flex
//! device. Compare the batch rate with the training samples/s in a run's
//! `metrics.csv` (the `data_s` column there is the same path measured
//! inside real training).
//!
//! The shipped data sets and examples are read as they are; CIFAR-10 (not
//! shipped) is written first as a synthetic folder in the official binary
//! format, the size of the real one.

use burn::backend::Flex;
use burn::tensor::{Int, Tensor, TensorData};
use greentrain_trainer::{config, data};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// CIFAR-10's six binary batches of 10,000 records, written to `dir`.
fn synthetic_cifar(dir: &Path) -> PathBuf {
    let folder = dir.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&folder).unwrap();
    let names = [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ];
    for (k, name) in names.iter().enumerate() {
        let mut v = Vec::with_capacity(10_000 * 3073);
        for i in 0..10_000usize {
            v.push(((i + k) % 10) as u8);
            v.extend((0..3072usize).map(|p| ((i * 31 + p * 7 + k) % 251) as u8));
        }
        std::fs::write(folder.join(name), v).unwrap();
    }
    folder
}

/// Seconds from disk to the first batch, and batches/s over `reps` epochs.
fn measure(name: &str, cfg: &config::Config, dir: &Path) {
    let batch = cfg.data.batch_size;
    let device = Default::default();
    let t = Instant::now();
    let ds = data::load(cfg, dir).unwrap();
    let f = ds.features();
    let first = |ids: &[usize], epoch, step| {
        let (mut x, y) = data::gather(&ds.train, f, ids);
        if let Some(a) = &ds.augment {
            a.apply(&mut x, epoch, step);
        }
        let x = Tensor::<Flex, 2>::from_data(TensorData::new(x, [ids.len(), f]), &device);
        let y = Tensor::<Flex, 1, Int>::from_data(TensorData::new(y.clone(), [y.len()]), &device);
        x.dims()[0] + y.dims()[0]
    };
    let n = ds.train.len();
    let order = data::epoch_order(n, 42, 0);
    let mut sink = first(&order[..batch.min(n)], 0, 0);
    let to_first = t.elapsed().as_secs_f64();
    let all = n + ds.test.len() + ds.val.as_ref().map_or(0, |v| v.len());
    let reps = (100_000 / n).clamp(1, 20);
    let t = Instant::now();
    for epoch in 0..reps {
        let order = data::epoch_order(n, 42, epoch);
        for (step, ids) in order.chunks(batch).enumerate() {
            sink += first(ids, epoch, step);
        }
    }
    let rate = (reps * n) as f64 / t.elapsed().as_secs_f64();
    println!(
        "{name:20} {all:>7} samples  disk to first batch {to_first:7.3} s = {:>10.0} samples/s   batches of {batch:3}: {rate:>10.0} samples/s ({reps} epochs, {sink} rows)",
        all as f64 / to_first,
    );
}

fn main() {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs"));
    for name in [
        "mnist_mlp",
        "mnist1d_cnn",
        "digits_mlp",
        "npz_digits",
        "csv_digits",
        "image_folder_digits",
        "text_shakespeare",
    ] {
        let cfg = config::load(&root.join(format!("{name}.toml")), &[]).unwrap();
        measure(name, &cfg.config, &root);
    }
    let tmp = tempfile::tempdir().unwrap();
    let folder = synthetic_cifar(tmp.path());
    let path = format!("data.path=\"{}\"", folder.display());
    let cfg = config::load(
        &root.join("paper/cifar10_resnet20_fp32.toml"),
        std::slice::from_ref(&path),
    )
    .unwrap();
    measure("cifar10 (synthetic)", &cfg.config, &root);
    let cfg = config::load(
        &root.join("paper/cifar10_resnet20_fp32.toml"),
        &[path, "data.augment=false".into()],
    )
    .unwrap();
    measure("cifar10, no augment", &cfg.config, &root);
}
