//! `[data]`: which dataset, where its files are, and how it is read.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Which dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// MNIST 60k/10k, shipped in `datasets/mnist`.
    Mnist,
    /// MNIST-1D 4k/1k, shipped in `datasets/mnist1d`.
    Mnist1d,
    /// UCI digits 8x8, shipped in `datasets/digits` (first half train).
    Digits,
    /// Any four IDX files given by path.
    Idx,
    /// NumPy `.npz` files, one per split (`train`, `test`), holding `x` and `y`.
    Npz,
    /// CSV tables with a header, one per split (`train`, `test`), with a
    /// `label` column.
    Csv,
    /// CIFAR-10's official binary batches in the folder `path`
    /// (`data_batch_1.bin` .. `data_batch_5.bin`, `test_batch.bin`).
    Cifar10,
    /// `train/` and `test/` folders (`train`, `test`) with one subfolder of
    /// PNG or JPEG images per class, resized to `image_size`.
    #[serde(rename = "image_folder")]
    ImageFolder,
    /// A UTF-8 text file (`path`) for next-token prediction over
    /// `model.context` tokens; its tail (`test_fraction`) is held out.
    Text,
    /// The algorithmic data of the grokking papers: every pair (a, b) for a
    /// prime p, labelled (a op b) mod p, as tokens `[a, b, =]`; generated
    /// from the run's seed (`p`, `op`, `train_fraction`).
    Modular,
}

/// The operation of `dataset = "modular"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModOp {
    /// (a + b) mod p.
    #[default]
    Add,
    /// (a - b) mod p.
    Sub,
    /// (a * b) mod p.
    Mul,
    /// a * b^-1 mod p (b != 0).
    Div,
}

/// `[data]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// `mnist`, `mnist1d`, `digits`, `idx`, `npz`, `csv`, `cifar10`,
    /// `image_folder`, `text` or `modular`.
    pub dataset: DatasetKind,
    /// Mini-batch size for training.
    pub batch_size: usize,
    /// Batch size for evaluation (default 1000).
    #[serde(default = "default_eval_batch")]
    pub eval_batch_size: usize,
    /// Fraction of the training split held out for validation (default 0).
    #[serde(default)]
    pub val_fraction: f64,
    /// Folder holding the shipped datasets (default: `datasets/` found from
    /// the working directory, the config's folder or the install).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// IDX paths for `dataset = "idx"` (relative to the config file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_images: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub train_labels: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub test_images: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[allow(missing_docs)]
    pub test_labels: Option<PathBuf>,
    /// `npz` and `csv`: the training file; `image_folder`: the training
    /// folder (relative to the config file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<PathBuf>,
    /// `npz` and `csv`: the test file; `image_folder`: the test folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<PathBuf>,
    /// `csv`: the label column's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// `npz` and `csv`: standardise each feature with the training split's
    /// mean and standard deviation; `image_folder`: each channel (default
    /// false; `cifar10` always standardises its channels).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub normalize: bool,
    /// `cifar10`: the folder of the binary batches; `text`: the text file
    /// (relative to the config file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// `cifar10` and `image_folder`: random crops after 4-pixel zero
    /// padding and horizontal flips of training batches (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment: Option<bool>,
    /// `image_folder`: the side images are resized to (default 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<usize>,
    /// `image_folder`: 1 (grey) or 3 (RGB) channels (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<usize>,
    /// `image_folder`: skip images that cannot be decoded (counted in
    /// run.json) instead of stopping (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_bad: bool,
    /// `text`: `byte` (256 tokens, default) or `char` (one token per
    /// distinct character, at most 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Tokens>,
    /// `text`: the share of the file, at its end, held out for evaluation
    /// (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_fraction: Option<f64>,
    /// `modular`: the prime modulus (default 113).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<usize>,
    /// `modular`: the operation (default `add`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<ModOp>,
    /// `modular`: the share of all pairs that trains (default 0.3); the
    /// rest is the test split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_fraction: Option<f64>,
}

impl DataSection {
    /// `modular`'s modulus.
    pub fn modulus(&self) -> usize {
        self.p.unwrap_or(113)
    }
}

fn default_eval_batch() -> usize {
    1000
}

/// How `dataset = "text"` cuts its file into tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tokens {
    /// One token per UTF-8 byte: 256 tokens whatever the text.
    #[default]
    Byte,
    /// One token per distinct character, in code-point order.
    Char,
}
