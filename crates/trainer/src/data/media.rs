//! The datasets read from a user's media: CIFAR-10's binary batches,
//! folders of images and text files, each becoming a [`Dataset`] with its
//! validation split, normalisation and augmentation.

use super::{cifar, images, relative_to, split_validation, text, Augment, DataError, Dataset};
use crate::config::{Config, DatasetKind};
use std::path::Path;

/// Loads the `cifar10`, `image_folder` or `text` dataset `config` names.
pub(crate) fn load(config: &Config, config_dir: &Path) -> Result<Dataset, DataError> {
    let d = &config.data;
    let seed = config.run.seed;
    let at = |p: &Option<std::path::PathBuf>| {
        relative_to(config_dir, p.as_deref().expect("validated: the key is set"))
    };
    let stem = |p: &Path| {
        p.file_name()
            .map_or(String::new(), |s| s.to_string_lossy().into_owned())
    };
    if d.dataset == DatasetKind::Text {
        let path = at(&d.path);
        let context = config
            .model
            .context
            .expect("validated: text sets model.context");
        let t = text::load(
            &path,
            d.tokens.unwrap_or_default(),
            context,
            d.test_fraction.unwrap_or(0.1),
        )?;
        let (train, val) = split_validation(t.train, context, d.val_fraction, seed);
        return Ok(Dataset {
            name: format!("text:{}", stem(&path)),
            sample_shape: vec![context],
            num_classes: t.vocab,
            train,
            val,
            test: t.test,
            class_names: t.chars,
            vocab: Some(t.vocab),
            augment: None,
            skipped: 0,
        });
    }
    let (name, train, test, channels, side, class_names, skipped) =
        if d.dataset == DatasetKind::Cifar10 {
            let folder = at(&d.path);
            let (train, test) = cifar::load(&folder)?;
            let names = cifar::CLASSES.iter().map(|c| c.to_string()).collect();
            ("cifar10".to_string(), train, test, 3, cifar::SIDE, names, 0)
        } else {
            let (train_dir, test_dir) = (at(&d.train), at(&d.test));
            let how = images::Read {
                side: d.image_size.unwrap_or(32),
                channels: d.channels.unwrap_or(3),
                skip_bad: d.skip_bad,
            };
            let classes = images::classes(&train_dir)?;
            let train = images::load(&train_dir, &classes, how)?;
            let test = images::load(&test_dir, &classes, how)?;
            let name = format!("image_folder:{}", stem(&train_dir));
            let skipped = train.skipped + test.skipped;
            (
                name,
                train.split,
                test.split,
                how.channels,
                how.side,
                classes,
                skipped,
            )
        };
    let plane = side * side;
    let features = channels * plane;
    let (mut train, mut val) = split_validation(train, features, d.val_fraction, seed);
    let mut test = test;
    let standardise = d.dataset == DatasetKind::Cifar10 || d.normalize;
    let fill = if standardise {
        let mut others: Vec<&mut super::Split> =
            std::iter::once(&mut test).chain(val.as_mut()).collect();
        super::user::standardize_groups(&mut train, &mut others, channels, plane)
    } else {
        vec![0.0; channels]
    };
    let augment = d
        .augment
        .unwrap_or(true)
        .then(|| Augment::new(channels, side, seed, fill));
    Ok(Dataset {
        name,
        sample_shape: vec![channels, side, side],
        num_classes: class_names.len(),
        train,
        val,
        test,
        class_names: Some(class_names),
        vocab: None,
        augment,
        skipped,
    })
}
