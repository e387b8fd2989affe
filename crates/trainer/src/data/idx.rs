//! IDX files (MNIST's format): u8 (type 0x08) and big-endian f32 (0x0D),
//! every header field checked against the bytes that follow it.

use super::{corrupt, expected_sha, read_maybe_gz, verify, DataError, Split};
use std::path::Path;

/// Values of an IDX file.
#[derive(Clone, Debug, PartialEq)]
pub enum IdxData {
    /// Type 0x08.
    U8(Vec<u8>),
    /// Type 0x0D (big-endian f32).
    F32(Vec<f32>),
}

/// A parsed IDX file.
#[derive(Clone, Debug, PartialEq)]
pub struct Idx {
    /// Dimensions, first is the sample count.
    pub dims: Vec<usize>,
    /// Values.
    pub data: IdxData,
}

/// Parses IDX bytes (already decompressed). `path` is for messages.
pub fn parse_idx(path: &Path, b: &[u8]) -> Result<Idx, DataError> {
    if b.len() < 4 {
        return Err(corrupt(
            path,
            format!("too short for an IDX header ({} bytes)", b.len()),
        ));
    }
    if b[0] != 0 || b[1] != 0 {
        return Err(corrupt(
            path,
            format!(
                "wrong magic number 0x{:02x}{:02x}{:02x}{:02x}: not an IDX file",
                b[0], b[1], b[2], b[3]
            ),
        ));
    }
    let ty = b[2];
    let elem = match ty {
        0x08 => 1,
        0x0D => 4,
        0x09 | 0x0B | 0x0C | 0x0E => {
            return Err(corrupt(
                path,
                format!("IDX element type 0x{ty:02x} is not supported (use u8 0x08 or f32 0x0D)"),
            ))
        }
        _ => {
            return Err(corrupt(
                path,
                format!("wrong magic number: unknown IDX type byte 0x{ty:02x}"),
            ))
        }
    };
    let nd = b[3] as usize;
    if nd == 0 {
        return Err(corrupt(path, "IDX header declares 0 dimensions"));
    }
    let header = 4 + 4 * nd;
    if b.len() < header {
        return Err(corrupt(path, "truncated IDX header"));
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| u32::from_be_bytes(b[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    if let Some(i) = dims.iter().position(|&d| d == 0) {
        return Err(corrupt(
            path,
            format!("IDX dimension {i} of {dims:?} is 0: the file holds no data"),
        ));
    }
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| corrupt(path, "IDX dimensions overflow"))?;
    let need = count
        .checked_mul(elem)
        .and_then(|n| n.checked_add(header))
        .ok_or_else(|| corrupt(path, "IDX dimensions overflow"))?;
    if b.len() < need {
        return Err(corrupt(
            path,
            format!(
                "truncated: dimensions {dims:?} need {need} bytes, file has {}",
                b.len()
            ),
        ));
    }
    if b.len() > need {
        return Err(corrupt(
            path,
            format!(
                "{} trailing bytes after the data for dimensions {dims:?}",
                b.len() - need
            ),
        ));
    }
    let body = &b[header..];
    let data = if elem == 1 {
        IdxData::U8(body.to_vec())
    } else {
        let v: Vec<f32> = body
            .chunks_exact(4)
            .map(|c| f32::from_be_bytes(c.try_into().unwrap()))
            .collect();
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(corrupt(path, format!("value {i} is not finite")));
        }
        IdxData::F32(v)
    };
    Ok(Idx { dims, data })
}

fn load_idx(path: &Path, expected: Option<&str>) -> Result<Idx, DataError> {
    let bytes = read_maybe_gz(path)?;
    if let Some(sha) = expected {
        verify(path, &bytes, sha)?;
    }
    parse_idx(path, &bytes)
}

/// Images to features: u8 scaled to [0, 1] (then standardised by `norm`),
/// f32 kept as they are.
fn idx_images(
    path: &Path,
    idx: Idx,
    norm: Option<(f32, f32)>,
) -> Result<(Vec<f32>, Vec<usize>, usize), DataError> {
    if idx.dims.len() < 2 {
        return Err(corrupt(
            path,
            format!("images need at least 2 dimensions, got {:?}", idx.dims),
        ));
    }
    let n = idx.dims[0];
    let shape = idx.dims[1..].to_vec();
    let x = match idx.data {
        IdxData::U8(v) => {
            let (mean, std) = norm.unwrap_or((0.0, 1.0));
            v.into_iter()
                .map(|p| (p as f32 / 255.0 - mean) / std)
                .collect()
        }
        IdxData::F32(v) => v,
    };
    Ok((x, shape, n))
}

fn idx_labels(path: &Path, idx: Idx, num_classes: Option<usize>) -> Result<Vec<u8>, DataError> {
    if idx.dims.len() != 1 {
        return Err(corrupt(
            path,
            format!("labels must be 1-dimensional, got {:?}", idx.dims),
        ));
    }
    let IdxData::U8(y) = idx.data else {
        return Err(corrupt(path, "labels must be u8 (type 0x08)"));
    };
    if let Some(k) = num_classes {
        if let Some(i) = y.iter().position(|&l| l as usize >= k) {
            return Err(corrupt(
                path,
                format!("label {} at index {i} is out of range 0..{k}", y[i]),
            ));
        }
    }
    Ok(y)
}

pub(super) fn split_from_idx(
    images: &Path,
    labels: &Path,
    root_rel: Option<(&str, &str)>,
    norm: Option<(f32, f32)>,
    num_classes: Option<usize>,
) -> Result<(Split, Vec<usize>), DataError> {
    let (ish, lsh) = match root_rel {
        Some((i, l)) => (expected_sha(i), expected_sha(l)),
        None => (None, None),
    };
    let (x, shape, n) = idx_images(images, load_idx(images, ish)?, norm)?;
    let y = idx_labels(labels, load_idx(labels, lsh)?, num_classes)?;
    if y.len() != n {
        return Err(corrupt(
            labels,
            format!("{} labels for {n} images in {}", y.len(), images.display()),
        ));
    }
    Ok((Split::new(x, y), shape))
}
