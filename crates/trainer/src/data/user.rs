//! A user's own files (`dataset = "npz"` or `"csv"`): both splits read,
//! checked against each other, and optionally standardised per feature.

use super::{corrupt, DataError, Split};
use crate::config::{DataSection, DatasetKind};
use std::path::{Path, PathBuf};

/// What the user's files hold.
pub(crate) struct UserData {
    pub(crate) name: String,
    pub(crate) train: Split,
    pub(crate) test: Split,
    pub(crate) shape: Vec<usize>,
    pub(crate) classes: usize,
    /// CSV class names, in index order.
    pub(crate) class_names: Option<Vec<String>>,
}

/// Reads the files `d` names (relative to `config_dir`).
pub(crate) fn load(d: &DataSection, config_dir: &Path) -> Result<UserData, DataError> {
    let at = |p: &Option<PathBuf>| {
        super::relative_to(
            config_dir,
            p.as_ref().expect("validated: npz and csv name both files"),
        )
    };
    let (train_path, test_path) = (at(&d.train), at(&d.test));
    let (train, test, shape, names, name) = if d.dataset == DatasetKind::Npz {
        let (train, shape) = super::npz::load(&train_path)?;
        let (test, tshape) = super::npz::load(&test_path)?;
        if tshape != shape {
            return Err(corrupt(
                &test_path,
                format!("sample shape {tshape:?} differs from the training file's {shape:?}"),
            ));
        }
        (train, test, shape, None, "npz")
    } else {
        let label = d.label.as_deref().expect("validated: csv names its label");
        let (train, test, features, names) = super::table::load(&train_path, &test_path, label)?;
        (train, test, vec![features], names, "csv")
    };
    let classes = match &names {
        Some(n) => n.len(),
        None => train.y.iter().copied().max().unwrap_or(0) as usize + 1,
    };
    if let Some((i, &y)) = test
        .y
        .iter()
        .enumerate()
        .find(|(_, &y)| y as usize >= classes)
    {
        return Err(corrupt(
            &test_path,
            format!(
                "label {y} of sample {i} is past the training labels' classes 0..{}",
                classes - 1
            ),
        ));
    }
    let stem = train_path
        .file_stem()
        .map_or(String::new(), |s| s.to_string_lossy().into_owned());
    Ok(UserData {
        name: format!("{name}:{stem}"),
        train,
        test,
        shape,
        classes,
        class_names: names,
    })
}

/// Each feature standardised with the mean and standard deviation of
/// `train` (a constant feature is only centred), applied to every split.
pub(crate) fn standardize(train: &mut Split, others: &mut [&mut Split], features: usize) {
    standardize_groups(train, others, features, 1);
}

/// Standardises each of `groups` consecutive runs of `len` values in a
/// sample (a feature: `len` 1; an image channel: its plane) with the mean
/// and standard deviation of `train` over all its values (a constant group
/// is only centred), in every split; returns what a 0 becomes in each group.
pub(crate) fn standardize_groups(
    train: &mut Split,
    others: &mut [&mut Split],
    groups: usize,
    len: usize,
) -> Vec<f32> {
    let n = (train.len() * len).max(1) as f64;
    let sample = groups * len;
    let mut mean = vec![0f64; groups];
    for row in train.x.chunks_exact(sample) {
        for (m, values) in mean.iter_mut().zip(row.chunks_exact(len)) {
            values.iter().for_each(|&v| *m += f64::from(v));
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let mut var = vec![0f64; groups];
    for row in train.x.chunks_exact(sample) {
        for ((s, values), m) in var.iter_mut().zip(row.chunks_exact(len)).zip(&mean) {
            values
                .iter()
                .for_each(|&v| *s += (f64::from(v) - m).powi(2));
        }
    }
    let scale: Vec<f64> = var
        .iter()
        .map(|s| {
            let sd = (s / n).sqrt();
            if sd > 1e-12 {
                1.0 / sd
            } else {
                1.0
            }
        })
        .collect();
    for split in std::iter::once(train).chain(others.iter_mut().map(|s| &mut **s)) {
        for row in split.x.chunks_exact_mut(sample) {
            for ((values, m), k) in row.chunks_exact_mut(len).zip(&mean).zip(&scale) {
                for v in values {
                    *v = ((f64::from(*v) - m) * k) as f32;
                }
            }
        }
    }
    mean.iter()
        .zip(&scale)
        .map(|(m, k)| (-m * k) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standardised_features_have_zero_mean_and_unit_variance_on_train() {
        let mut train = Split::new(vec![1.0, 5.0, 3.0, 5.0, 5.0, 5.0], vec![0, 1, 0]);
        let mut test = Split::new(vec![3.0, 7.0], vec![1]);
        standardize(&mut train, &mut [&mut test], 2);
        // Feature 0: mean 3, sd sqrt(8/3); feature 1 constant: centred only.
        let sd = (8.0f64 / 3.0).sqrt();
        let want = [-2.0 / sd, 0.0, 0.0, 0.0, 2.0 / sd, 0.0];
        for (g, w) in train.x.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{:?}", train.x);
        }
        assert_eq!(test.x, vec![0.0, 2.0]);
    }

    #[test]
    fn image_channels_are_standardised_on_the_training_split() {
        // Two 1x2 images of two channels: channel 0 values 0, 1, 0, 1;
        // channel 1 constant 0.5.
        let mut train = Split::new(vec![0.0, 1.0, 0.5, 0.5, 0.0, 1.0, 0.5, 0.5], vec![0, 1]);
        let mut test = Split::new(vec![1.0, 1.0, 0.5, 0.0], vec![0]);
        let fill = standardize_groups(&mut train, &mut [&mut test], 2, 2);
        assert_eq!(train.x, vec![-1.0, 1.0, 0.0, 0.0, -1.0, 1.0, 0.0, 0.0]);
        assert_eq!(test.x, vec![1.0, 1.0, 0.0, -0.5]);
        assert_eq!(fill, vec![-1.0, -0.5]);
    }
}
