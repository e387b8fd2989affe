//! Datasets: IDX (u8 and f32, gzipped or not) and the UCI digits CSV, with
//! sha256 verification of the shipped files; a user's own NumPy and CSV
//! files (`npz.rs`, `table.rs`, `user.rs`), CIFAR-10 (`cifar.rs`), image
//! folders (`images.rs`) and text (`text.rs`). Every failure names the
//! file.

mod augment;
mod cifar;
mod idx;
mod images;
mod media;
mod npz;
mod table;
mod text;
mod user;

pub use augment::Augment;
use idx::split_from_idx;
pub use idx::{parse_idx, Idx, IdxData};

use crate::config::{Config, DatasetKind, ModOp};
use flate2::read::MultiGzDecoder;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// A dataset problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is malformed or fails its checksum.
    #[error("{path}: {msg}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// No datasets folder was found.
    #[error(
        "cannot find the datasets folder (looked in: {0}); set data.root or GREENTRAIN_DATASETS"
    )]
    NoRoot(String),
}

fn corrupt(path: &Path, msg: impl Into<String>) -> DataError {
    DataError::Corrupt {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// One split: row-major features and labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    /// `n * features` values.
    pub x: Vec<f32>,
    /// `n * targets` labels.
    pub y: Vec<u8>,
    /// Labels per sample: 1 for classification, the context length for
    /// next-token prediction (one target per position).
    pub targets: usize,
}

impl Split {
    /// A split of one label per sample.
    pub fn new(x: Vec<f32>, y: Vec<u8>) -> Self {
        Split { x, y, targets: 1 }
    }
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.y.len() / self.targets.max(1)
    }
    /// Whether the split is empty.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
}

/// A loaded dataset.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Short name for records.
    pub name: String,
    /// Shape of one sample (e.g. `[28, 28]`, `[40]`, `[64]`).
    pub sample_shape: Vec<usize>,
    /// Number of classes.
    pub num_classes: usize,
    /// Training split (without the validation part).
    pub train: Split,
    /// Validation split, when `val_fraction > 0`.
    pub val: Option<Split>,
    /// Test split.
    pub test: Split,
    /// Class names in index order, where the labels were names (CSV).
    pub class_names: Option<Vec<String>>,
    /// Tokens, for datasets of token sequences (`modular`: p + 1).
    pub vocab: Option<usize>,
    /// Crops and flips for training batches (`cifar10`, `image_folder`).
    pub augment: Option<Augment>,
    /// Images skipped as unreadable (`image_folder` with `skip_bad`).
    pub skipped: usize,
}

impl Dataset {
    /// Features per sample.
    pub fn features(&self) -> usize {
        self.sample_shape.iter().product()
    }
}

/// sha256 of the raw (decompressed) bytes of each shipped file; for digits,
/// of the gzipped file itself (as in `shared/datasets/README.md`).
pub const CHECKSUMS: &[(&str, &str)] = &[
    (
        "digits/digits.csv.gz",
        "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22",
    ),
    (
        "mnist1d/train-x-idx2-f32",
        "cce539c5e530960c60af884a0521fa7f679757c52e432a248a164a2a8421ae2e",
    ),
    (
        "mnist1d/train-y-idx1-ubyte",
        "04df6139c6bdf779fdb90dc98075023b5c2fa91781847bee53f3a8c1211c64b2",
    ),
    (
        "mnist1d/test-x-idx2-f32",
        "254389086f72a70ad63e091934ca7eb67e128b1f80209ccaa368994f863c9dce",
    ),
    (
        "mnist1d/test-y-idx1-ubyte",
        "d44d4c5ce982a3b9aadd2f4fb62bc464e49fd92490d3a57d20ac76b34fc3a4a5",
    ),
    (
        "mnist/train-images-idx3-ubyte.gz",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    (
        "mnist/train-labels-idx1-ubyte.gz",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    (
        "mnist/t10k-images-idx3-ubyte.gz",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    (
        "mnist/t10k-labels-idx1-ubyte.gz",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
];

fn expected_sha(rel: &str) -> Option<&'static str> {
    CHECKSUMS.iter().find(|(p, _)| *p == rel).map(|(_, s)| *s)
}

/// Reads a file, gunzipping it when it starts with the gzip magic.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
        let mut out = Vec::new();
        MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| corrupt(path, format!("gzip stream is corrupt or truncated: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn verify(path: &Path, bytes: &[u8], expected: &str) -> Result<(), DataError> {
    let got = sha256_hex(bytes);
    if got != expected {
        return Err(corrupt(
            path,
            format!("sha256 mismatch: expected {expected}, got {got} (file damaged or replaced)"),
        ));
    }
    Ok(())
}

/// Parses the UCI digits CSV (64 pixel columns 0..16, then the label).
pub fn parse_digits_csv(path: &Path, text: &[u8]) -> Result<Split, DataError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text);
    let mut x = Vec::new();
    let mut y = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let line = i + 1;
        let rec = rec.map_err(|e| corrupt(path, format!("line {line}: {e}")))?;
        if rec.len() != 65 {
            return Err(corrupt(
                path,
                format!("line {line}: expected 65 columns, got {}", rec.len()),
            ));
        }
        for (j, field) in rec.iter().enumerate() {
            let v: f32 = field.trim().parse().map_err(|_| {
                corrupt(
                    path,
                    format!("line {line}, column {}: '{field}' is not a number", j + 1),
                )
            })?;
            if j < 64 {
                if !(0.0..=16.0).contains(&v) {
                    return Err(corrupt(
                        path,
                        format!("line {line}, column {}: pixel {v} outside 0..16", j + 1),
                    ));
                }
                x.push(v / 16.0);
            } else {
                if v.fract() != 0.0 || !(0.0..10.0).contains(&v) {
                    return Err(corrupt(
                        path,
                        format!("line {line}: label {v} is out of range 0..10"),
                    ));
                }
                y.push(v as u8);
            }
        }
    }
    if y.is_empty() {
        return Err(corrupt(path, "no rows"));
    }
    Ok(Split::new(x, y))
}

/// Finds the shipped `datasets/` folder.
pub fn find_root(config_dir: &Path, configured: Option<&Path>) -> Result<PathBuf, DataError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(r) = configured {
        let root = if r.is_absolute() {
            r.to_path_buf()
        } else {
            config_dir.join(r)
        };
        // A folder the user names is taken as it is.
        if root.is_dir() {
            return Ok(root);
        }
        candidates.push(root);
    } else {
        if let Ok(env) = std::env::var("GREENTRAIN_DATASETS") {
            candidates.push(PathBuf::from(env));
        }
        candidates.push(PathBuf::from("datasets"));
        candidates.push(config_dir.join("datasets"));
        candidates.push(config_dir.join("../datasets"));
        candidates.push(config_dir.join("../../datasets"));
        candidates.push(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../datasets"
        )));
    }
    for c in &candidates {
        if c.join("LICENSES.md").is_file() || c.join("mnist").is_dir() || c.join("digits").is_dir()
        {
            return Ok(c.clone());
        }
    }
    Err(DataError::NoRoot(
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    ))
}

const MNIST_NORM: (f32, f32) = (0.1307, 0.3081);

/// Loads the dataset a config names, splitting off validation data.
pub fn load(config: &Config, config_dir: &Path) -> Result<Dataset, DataError> {
    let d = &config.data;
    let mut class_names = None;
    let (name, train, test, shape, classes) = match d.dataset {
        DatasetKind::Cifar10 | DatasetKind::ImageFolder | DatasetKind::Text => {
            return media::load(config, config_dir);
        }
        DatasetKind::Npz | DatasetKind::Csv => {
            let u = user::load(d, config_dir)?;
            class_names = u.class_names;
            (u.name, u.train, u.test, u.shape, u.classes)
        }
        DatasetKind::Mnist => {
            let root = find_root(config_dir, d.root.as_deref())?;
            let f = |n: &str| root.join("mnist").join(n);
            let (train, shape) = split_from_idx(
                &f("train-images-idx3-ubyte.gz"),
                &f("train-labels-idx1-ubyte.gz"),
                Some((
                    "mnist/train-images-idx3-ubyte.gz",
                    "mnist/train-labels-idx1-ubyte.gz",
                )),
                Some(MNIST_NORM),
                Some(10),
            )?;
            let (test, _) = split_from_idx(
                &f("t10k-images-idx3-ubyte.gz"),
                &f("t10k-labels-idx1-ubyte.gz"),
                Some((
                    "mnist/t10k-images-idx3-ubyte.gz",
                    "mnist/t10k-labels-idx1-ubyte.gz",
                )),
                Some(MNIST_NORM),
                Some(10),
            )?;
            ("mnist".to_string(), train, test, shape, 10)
        }
        DatasetKind::Mnist1d => {
            let root = find_root(config_dir, d.root.as_deref())?;
            let f = |n: &str| root.join("mnist1d").join(n);
            let (train, shape) = split_from_idx(
                &f("train-x-idx2-f32"),
                &f("train-y-idx1-ubyte"),
                Some(("mnist1d/train-x-idx2-f32", "mnist1d/train-y-idx1-ubyte")),
                None,
                Some(10),
            )?;
            let (test, _) = split_from_idx(
                &f("test-x-idx2-f32"),
                &f("test-y-idx1-ubyte"),
                Some(("mnist1d/test-x-idx2-f32", "mnist1d/test-y-idx1-ubyte")),
                None,
                Some(10),
            )?;
            ("mnist1d".to_string(), train, test, shape, 10)
        }
        DatasetKind::Digits => {
            let root = find_root(config_dir, d.root.as_deref())?;
            let path = root.join("digits").join("digits.csv.gz");
            let raw = std::fs::read(&path).map_err(|source| DataError::Io {
                path: path.clone(),
                source,
            })?;
            verify(&path, &raw, expected_sha("digits/digits.csv.gz").unwrap())?;
            let text = read_maybe_gz(&path)?;
            let all = parse_digits_csv(&path, &text)?;
            // First half trains, second half tests (scikit-learn's example split).
            let half = all.len() / 2;
            let train = Split::new(all.x[..half * 64].to_vec(), all.y[..half].to_vec());
            let test = Split::new(all.x[half * 64..].to_vec(), all.y[half..].to_vec());
            ("digits".to_string(), train, test, vec![64], 10)
        }
        DatasetKind::Modular => {
            let p = d.modulus();
            let op = d.op.unwrap_or_default();
            let fraction = d.train_fraction.unwrap_or(0.3);
            let (train, test) = modular(p, op, fraction, config.run.seed);
            ("modular".to_string(), train, test, vec![3], p)
        }
        DatasetKind::Idx => {
            let p = |o: &Option<PathBuf>| relative_to(config_dir, o.as_ref().expect("validated"));
            let (train, shape) =
                split_from_idx(&p(&d.train_images), &p(&d.train_labels), None, None, None)?;
            let classes = train.y.iter().copied().max().unwrap_or(0) as usize + 1;
            let test_labels = p(&d.test_labels);
            let (test, tshape) =
                split_from_idx(&p(&d.test_images), &test_labels, None, None, Some(classes))?;
            if tshape != shape {
                return Err(corrupt(
                    &p(&d.test_images),
                    format!("sample shape {tshape:?} differs from the training images' {shape:?}"),
                ));
            }
            ("idx".to_string(), train, test, shape, classes)
        }
    };
    let vocab = (d.dataset == DatasetKind::Modular).then(|| d.modulus() + 1);
    let features: usize = shape.iter().product();
    let (mut train, mut val) = split_validation(train, features, d.val_fraction, config.run.seed);
    let mut test = test;
    if d.normalize {
        let mut others: Vec<&mut Split> = std::iter::once(&mut test).chain(val.as_mut()).collect();
        user::standardize(&mut train, &mut others, features);
    }
    Ok(Dataset {
        name,
        sample_shape: shape,
        num_classes: classes,
        train,
        val,
        test,
        vocab,
        class_names,
        augment: None,
        skipped: 0,
    })
}

impl Dataset {
    /// A warning when the training labels use under half of the classes
    /// the output layer gets (classes are the largest label + 1).
    pub fn label_warning(&self) -> Option<String> {
        let mut used = vec![false; self.num_classes];
        for &y in &self.train.y {
            if let Some(u) = used.get_mut(y as usize) {
                *u = true;
            }
        }
        let n = used.iter().filter(|&&u| u).count();
        (self.num_classes > 2 && 2 * n < self.num_classes).then(|| {
            format!(
                "the training labels use {n} of the {} classes 0..{} the output layer gets: \
                 a stray large label in the label file?",
                self.num_classes,
                self.num_classes - 1
            )
        })
    }
}

/// A path from the config: as it is when absolute, else relative to the
/// config file's folder.
pub(crate) fn relative_to(config_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config_dir.join(p)
    }
}

/// `b^e mod p`.
fn mod_pow(mut b: usize, mut e: usize, p: usize) -> usize {
    let mut r = 1;
    b %= p;
    while e > 0 {
        if e & 1 == 1 {
            r = r * b % p;
        }
        b = b * b % p;
        e >>= 1;
    }
    r
}

/// The algorithmic data of the grokking papers (Power et al. 2022; Nanda et
/// al. 2023): every pair (a, b) with a, b in 0..p (b != 0 for division),
/// labelled `a op b mod p`, as the tokens `[a, b, =]` with `=` the token p.
/// The pairs are shuffled with the seed and the first `train_fraction` of
/// them (rounded down) train; the rest test.
pub fn modular(p: usize, op: ModOp, train_fraction: f64, seed: u64) -> (Split, Split) {
    let mut rows: Vec<[usize; 3]> = Vec::with_capacity(p * p);
    for a in 0..p {
        for b in 0..p {
            let c = match op {
                ModOp::Add => (a + b) % p,
                ModOp::Sub => (a + p - b) % p,
                ModOp::Mul => a * b % p,
                ModOp::Div if b == 0 => continue,
                // Fermat: b^(p-2) is b's inverse modulo a prime.
                ModOp::Div => a * mod_pow(b, p - 2, p) % p,
            };
            rows.push([a, b, c]);
        }
    }
    // Its own stream of the seed: epoch orders use streams 1 and up.
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x006d_6f64_756c_6172);
    rows.shuffle(&mut rng);
    // Truncated, as the paper's `int(frac_train * len(pairs))`: 3,830 of 12,769.
    let n_train = ((rows.len() as f64 * train_fraction) as usize).clamp(1, rows.len() - 1);
    let split = |rows: &[[usize; 3]]| {
        Split::new(
            rows.iter()
                .flat_map(|r| [r[0] as f32, r[1] as f32, p as f32])
                .collect(),
            rows.iter().map(|r| r[2] as u8).collect(),
        )
    };
    (split(&rows[..n_train]), split(&rows[n_train..]))
}

/// Holds out `fraction` of the training split, chosen by a seeded shuffle
/// (stream 1 of the run's seed; data order uses the epoch's own stream).
pub(crate) fn split_validation(
    train: Split,
    features: usize,
    fraction: f64,
    seed: u64,
) -> (Split, Option<Split>) {
    let n_val = (train.len() as f64 * fraction).round() as usize;
    if n_val == 0 {
        return (train, None);
    }
    let mut idx: Vec<usize> = (0..train.len()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(u64::MAX);
    idx.shuffle(&mut rng);
    let t = train.targets;
    let take = |ids: &[usize]| {
        let mut s = Split {
            x: Vec::with_capacity(ids.len() * features),
            y: Vec::with_capacity(ids.len() * t),
            targets: t,
        };
        for &i in ids {
            s.x.extend_from_slice(&train.x[i * features..(i + 1) * features]);
            s.y.extend_from_slice(&train.y[i * t..(i + 1) * t]);
        }
        s
    };
    let (v, t) = idx.split_at(n_val);
    (take(t), Some(take(v)))
}

/// The sample order of one epoch: a permutation drawn from the run's seed
/// on the epoch's own stream, so resuming at any epoch needs no RNG state.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(1 + epoch as u64);
    idx.shuffle(&mut rng);
    idx
}

/// The batches of one epoch: one shuffled pass cut into batches, or, with
/// `steps` set, exactly that many batches from as many further shuffled
/// passes as they need (the last batch of each pass may be short).
pub fn epoch_batches(
    n: usize,
    batch: usize,
    seed: u64,
    epoch: usize,
    steps: Option<usize>,
) -> Vec<Vec<usize>> {
    let cut = |order: Vec<usize>| -> Vec<Vec<usize>> {
        order.chunks(batch).map(|c| c.to_vec()).collect()
    };
    let Some(steps) = steps else {
        return cut(epoch_order(n, seed, epoch));
    };
    let passes = steps.div_ceil(n.div_ceil(batch).max(1));
    let mut out = Vec::with_capacity(steps);
    for p in 0..passes {
        out.extend(cut(epoch_order(n, seed, epoch * passes + p)));
    }
    out.truncate(steps);
    out
}

/// Gathers the rows `ids` into one contiguous buffer (features, and
/// `targets` labels per row).
pub fn gather(split: &Split, features: usize, ids: &[usize]) -> (Vec<f32>, Vec<i64>) {
    let t = split.targets;
    let mut x = Vec::with_capacity(ids.len() * features);
    let mut y = Vec::with_capacity(ids.len() * t);
    for &i in ids {
        x.extend_from_slice(&split.x[i * features..(i + 1) * features]);
        y.extend(split.y[i * t..(i + 1) * t].iter().map(|&v| v as i64));
    }
    (x, y)
}
