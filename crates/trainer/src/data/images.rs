//! `dataset = "image_folder"`: `train/` and `test/` folders holding one
//! subfolder per class (the name is the class; classes in sorted order, as
//! torchvision's `ImageFolder` has them), of PNG and JPEG files decoded
//! with the `image` crate, resized to `side x side` and stored channels
//! first, grey or RGB, scaled to [0, 1].
//!
//! Files are untrusted: each decoder is bounded (dimensions and memory),
//! and an image that does not decode is an error naming its path, or, with
//! `skip_bad`, skipped and counted. Images are decoded one at a time.

use super::{corrupt, DataError, Split};
use image::imageops::FilterType;
use image::{ImageReader, Limits};
use std::path::{Path, PathBuf};

/// Larger images are refused before they are decoded.
const MAX_SIDE: u32 = 16_384;
/// The decoder's memory for one image.
const MAX_ALLOC: u64 = 512 << 20;
/// Labels are bytes.
const MAX_CLASSES: usize = 256;

/// What one folder held.
pub(crate) struct Folder {
    pub(crate) split: Split,
    /// Images that did not decode and were skipped (`skip_bad`).
    pub(crate) skipped: usize,
}

/// How images are read.
#[derive(Clone, Copy)]
pub(crate) struct Read {
    pub(crate) side: usize,
    pub(crate) channels: usize,
    pub(crate) skip_bad: bool,
}

/// The class names of the training folder: its subfolders, sorted.
pub(crate) fn classes(root: &Path) -> Result<Vec<String>, DataError> {
    let mut names = Vec::new();
    for entry in list(root)? {
        if entry.is_dir() {
            let name = entry.file_name().map(|n| n.to_string_lossy().into_owned());
            names.extend(name.filter(|n| !n.starts_with('.')));
        }
    }
    names.sort();
    if names.is_empty() {
        return Err(corrupt(root, "holds no class folders (one per class)"));
    }
    if names.len() > MAX_CLASSES {
        return Err(corrupt(
            root,
            format!("{} class folders; at most {MAX_CLASSES}", names.len()),
        ));
    }
    Ok(names)
}

/// Reads `root`'s class folders; a class folder that is not in `classes`
/// is an error (its images would have no label).
pub(crate) fn load(root: &Path, classes: &[String], how: Read) -> Result<Folder, DataError> {
    let mut split = Split::new(Vec::new(), Vec::new());
    let mut skipped = 0;
    for dir in list(root)? {
        let Some(name) = dir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        if !dir.is_dir() || name.starts_with('.') {
            continue;
        }
        let Some(label) = classes.iter().position(|c| *c == name) else {
            return Err(corrupt(
                &dir,
                "a class the training folder does not have".to_string(),
            ));
        };
        let files: Vec<PathBuf> = list(&dir)?.into_iter().filter(|p| is_image(p)).collect();
        for file in files {
            match decode(&file, how) {
                Ok(pixels) => {
                    split.x.extend(pixels);
                    split.y.push(label as u8);
                }
                Err(_) if how.skip_bad => skipped += 1,
                Err(e) => return Err(e),
            }
        }
    }
    if split.is_empty() {
        return Err(corrupt(root, "holds no PNG or JPEG images"));
    }
    Ok(Folder { split, skipped })
}

fn is_image(p: &Path) -> bool {
    let ext = p
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg")) && p.is_file()
}

fn list(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let io = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        out.push(entry.map_err(io)?.path());
    }
    // The order of the disk's directory is no order: sorted, so that the
    // same folder gives the same split everywhere.
    out.sort();
    Ok(out)
}

/// One image, resized and channels first, in [0, 1].
fn decode(path: &Path, how: Read) -> Result<Vec<f32>, DataError> {
    let bad = |e: String| corrupt(path, format!("not a readable PNG or JPEG image: {e}"));
    let mut reader = ImageReader::open(path)
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| bad(e.to_string()))?;
    let s = how.side as u32;
    let plane = how.side * how.side;
    let mut out = vec![0f32; how.channels * plane];
    if how.channels == 1 {
        let g = image::imageops::resize(&img.to_luma8(), s, s, FilterType::Triangle);
        for (o, p) in out.iter_mut().zip(g.pixels()) {
            *o = f32::from(p.0[0]) / 255.0;
        }
    } else {
        let rgb = image::imageops::resize(&img.to_rgb8(), s, s, FilterType::Triangle);
        for (i, p) in rgb.pixels().enumerate() {
            for c in 0..3 {
                out[c * plane + i] = f32::from(p.0[c]) / 255.0;
            }
        }
    }
    Ok(out)
}
