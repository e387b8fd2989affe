//! `dataset = "npz"`: one NumPy `.npz` per split (what `np.savez` and
//! `np.savez_compressed` write) holding `x` (`[n, ...]`: uint8, scaled to
//! [0, 1], or float16/32/64, read as f32) and `y` (`[n]` integer labels).
//!
//! The file is untrusted: the zip member's size is checked against what the
//! machine can hold before anything is decompressed, the `.npy` header's
//! shape against the bytes that follow it, and every label against the
//! range a class index can take, each error naming the file and the array.

use super::{corrupt, DataError, Split};
use npyz::{DType, NpyFile, TypeChar};
use std::io::Read;
use std::path::Path;

/// Deflate cannot expand data more than this (zlib's bound is 1032:1): a
/// member claiming more per compressed byte is not a real archive.
const MAX_RATIO: u64 = 1032;

/// Classes a label may name (labels are stored as one byte).
const MAX_LABEL: i64 = 255;

/// The split in `path`, and the shape of one sample.
pub(crate) fn load(path: &Path) -> Result<(Split, Vec<usize>), DataError> {
    let file = std::fs::File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| corrupt(path, format!("not a NumPy .npz (zip) file: {e}")))?;
    let (x_shape, x) = read_x(path, &mut zip)?;
    let y = read_y(path, &mut zip)?;
    if x_shape.len() < 2 {
        return Err(corrupt(
            path,
            format!("array `x` has shape {x_shape:?}: it needs [samples, features...]"),
        ));
    }
    if x_shape[0] != y.len() {
        return Err(corrupt(
            path,
            format!(
                "array `x` holds {} samples, `y` {} labels",
                x_shape[0],
                y.len()
            ),
        ));
    }
    Ok((Split::new(x, y), x_shape[1..].to_vec()))
}

/// The bytes of member `name` (`x.npy`), bounded before they are read.
fn member(
    path: &Path,
    zip: &mut zip::ZipArchive<std::fs::File>,
    name: &str,
) -> Result<Vec<u8>, DataError> {
    let file = format!("{name}.npy");
    if !zip.file_names().any(|n| n == file) {
        let names: Vec<&str> = zip
            .file_names()
            .map(|n| n.trim_end_matches(".npy"))
            .collect();
        return Err(corrupt(
            path,
            format!("has no array `{name}` (its arrays: {})", names.join(", ")),
        ));
    }
    let mut f = zip
        .by_name(&file)
        .map_err(|e| corrupt(path, format!("array `{name}` cannot be opened: {e}")))?;
    let (size, packed) = (f.size(), f.compressed_size());
    if size > packed.saturating_mul(MAX_RATIO).max(1 << 20)
        || size > crate::memory::available_bytes()
    {
        return Err(corrupt(
            path,
            format!("array `{name}` claims {size} bytes from {packed} compressed: more than it can hold or this machine has"),
        ));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    f.by_ref()
        .take(size)
        .read_to_end(&mut bytes)
        .map_err(|e| corrupt(path, format!("array `{name}` cannot be read: {e}")))?;
    if bytes.len() as u64 != size {
        return Err(corrupt(path, format!("array `{name}` is truncated")));
    }
    Ok(bytes)
}

/// The `.npy` in `bytes`, its header checked against the data after it.
fn parse<'a>(
    path: &Path,
    name: &str,
    bytes: &'a [u8],
) -> Result<(NpyFile<&'a [u8]>, TypeChar, usize), DataError> {
    let bad = |why: String| corrupt(path, format!("array `{name}`: {why}"));
    let npy = NpyFile::new(bytes).map_err(|e| bad(format!("not a .npy array: {e}")))?;
    let DType::Plain(ts) = npy.dtype() else {
        return Err(bad(
            "a structured array; greentrain reads plain numbers".into()
        ));
    };
    if npy.order() == npyz::Order::Fortran && npy.shape().len() > 1 {
        return Err(bad(
            "stored in Fortran order; save it with np.ascontiguousarray".into(),
        ));
    }
    let width = ts.num_bytes().unwrap_or(0);
    let n = npy
        .shape()
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .and_then(|n| n.checked_mul(width as u64));
    match n {
        Some(n) if n <= bytes.len() as u64 => Ok((npy, ts.type_char(), width)),
        _ => Err(bad(format!(
            "shape {:?} needs more bytes than the file holds",
            npy.shape()
        ))),
    }
}

/// `x` as f32, with its shape.
fn read_x(
    path: &Path,
    zip: &mut zip::ZipArchive<std::fs::File>,
) -> Result<(Vec<usize>, Vec<f32>), DataError> {
    let bytes = member(path, zip, "x")?;
    let (npy, kind, width) = parse(path, "x", &bytes)?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let bad = |e: std::io::Error| corrupt(path, format!("array `x`: {e}"));
    let x = match (kind, width) {
        (TypeChar::Uint, 1) => npy
            .into_vec::<u8>()
            .map_err(bad)?
            .into_iter()
            .map(|v| f32::from(v) / 255.0)
            .collect(),
        (TypeChar::Float, 2) => npy
            .into_vec::<half::f16>()
            .map_err(bad)?
            .into_iter()
            .map(f32::from)
            .collect(),
        (TypeChar::Float, 4) => npy.into_vec::<f32>().map_err(bad)?,
        (TypeChar::Float, 8) => npy
            .into_vec::<f64>()
            .map_err(bad)?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        _ => {
            return Err(corrupt(
                path,
                format!(
                "array `x` is {kind:?} of {width} bytes: greentrain reads uint8 and float16/32/64"
            ),
            ))
        }
    };
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(corrupt(
            path,
            format!("array `x` has a non-finite value at flat index {i}"),
        ));
    }
    Ok((shape, x))
}

/// `y` as class indices.
fn read_y(path: &Path, zip: &mut zip::ZipArchive<std::fs::File>) -> Result<Vec<u8>, DataError> {
    let bytes = member(path, zip, "y")?;
    let (npy, kind, width) = parse(path, "y", &bytes)?;
    if npy.shape().len() != 1 {
        return Err(corrupt(
            path,
            format!("array `y` has shape {:?}: it needs [samples]", npy.shape()),
        ));
    }
    let bad = |e: std::io::Error| corrupt(path, format!("array `y`: {e}"));
    let y: Vec<i64> = match (kind, width) {
        (TypeChar::Uint, 1) => npy
            .into_vec::<u8>()
            .map_err(bad)?
            .into_iter()
            .map(i64::from)
            .collect(),
        (TypeChar::Uint, 2) => npy
            .into_vec::<u16>()
            .map_err(bad)?
            .into_iter()
            .map(i64::from)
            .collect(),
        (TypeChar::Uint, 4) => npy
            .into_vec::<u32>()
            .map_err(bad)?
            .into_iter()
            .map(i64::from)
            .collect(),
        (TypeChar::Uint, 8) => npy
            .into_vec::<u64>()
            .map_err(bad)?
            .into_iter()
            .map(|v| v.min(i64::MAX as u64) as i64)
            .collect(),
        (TypeChar::Int, 1) => npy
            .into_vec::<i8>()
            .map_err(bad)?
            .into_iter()
            .map(i64::from)
            .collect(),
        (TypeChar::Int, 2) => npy
            .into_vec::<i16>()
            .map_err(bad)?
            .into_iter()
            .map(i64::from)
            .collect(),
        (TypeChar::Int, 4) => npy
            .into_vec::<i32>()
            .map_err(bad)?
            .into_iter()
            .map(i64::from)
            .collect(),
        (TypeChar::Int, 8) => npy.into_vec::<i64>().map_err(bad)?,
        _ => {
            return Err(corrupt(
                path,
                format!("array `y` is {kind:?} of {width} bytes: labels are integers"),
            ))
        }
    };
    y.iter()
        .enumerate()
        .map(|(i, &v)| {
            u8::try_from(v)
                .ok()
                .filter(|_| v <= MAX_LABEL)
                .ok_or_else(|| {
                    corrupt(
                        path,
                        format!(
                            "label {v} at index {i} of `y` is not a class index 0..={MAX_LABEL}"
                        ),
                    )
                })
        })
        .collect()
}
