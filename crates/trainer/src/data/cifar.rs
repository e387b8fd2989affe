//! `dataset = "cifar10"`: the official binary version
//! (<https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz>), a folder of
//! `data_batch_1.bin` .. `data_batch_5.bin` and `test_batch.bin`, each
//! 10,000 records of a label byte and 3,072 pixel bytes (the red, green and
//! blue 32x32 planes, rows top to bottom).
//!
//! A file that is not exactly 10,000 records (a truncated download) is an
//! error naming it; records are read one at a time, so nothing beyond the
//! data set itself is held.

use super::{corrupt, DataError, Split};
use std::io::{BufReader, Read};
use std::path::Path;

/// Image side.
pub const SIDE: usize = 32;
/// Pixels per record (three planes).
pub const PIXELS: usize = 3 * SIDE * SIDE;
/// Records in each official file.
pub const RECORDS: usize = 10_000;
/// The class names of `batches.meta.txt`, in label order.
pub const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];
/// The training files, in order.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The test file.
pub const TEST_FILE: &str = "test_batch.bin";

/// The training and test splits in `folder`, pixels scaled to [0, 1].
pub(crate) fn load(folder: &Path) -> Result<(Split, Split), DataError> {
    let mut train = Split::new(Vec::new(), Vec::new());
    for name in TRAIN_FILES {
        read_batch(&folder.join(name), &mut train)?;
    }
    let mut test = Split::new(Vec::new(), Vec::new());
    read_batch(&folder.join(TEST_FILE), &mut test)?;
    Ok((train, test))
}

/// Appends the records of one file to `split`.
fn read_batch(path: &Path, split: &mut Split) -> Result<(), DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let want = (RECORDS * (1 + PIXELS)) as u64;
    let len = file.metadata().map_err(io)?.len();
    if len != want {
        return Err(corrupt(
            path,
            format!(
                "{len} bytes where the official file has {want} ({RECORDS} records of 1 + {PIXELS}): truncated or not a CIFAR-10 binary batch"
            ),
        ));
    }
    split.x.reserve(RECORDS * PIXELS);
    split.y.reserve(RECORDS);
    let mut reader = BufReader::new(file);
    let mut record = vec![0u8; 1 + PIXELS];
    for i in 0..RECORDS {
        reader.read_exact(&mut record).map_err(io)?;
        let label = record[0];
        if label as usize >= CLASSES.len() {
            return Err(corrupt(
                path,
                format!("record {i} has label {label}; CIFAR-10's are 0..9"),
            ));
        }
        split.y.push(label);
        split
            .x
            .extend(record[1..].iter().map(|&p| f32::from(p) / 255.0));
    }
    Ok(())
}
