//! CIFAR-10's binary batches, folders of images and text files: loaded in
//! the shapes the models take, trained on, resumed exactly with their
//! augmentation, and refused with the file and what is wrong when broken.

use greentrain_trainer::config;
use greentrain_trainer::data;
use greentrain_trainer::device::DeviceSpec;
use greentrain_trainer::{train, Outcome, TrainRequest};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn write_config(dir: &Path, toml: &str) -> PathBuf {
    let f = dir.join("c.toml");
    std::fs::write(&f, toml).unwrap();
    f
}

/// A quiet run of the config at `path` with `sets`, in `out`, on `device`.
fn run_on(path: &Path, sets: &[&str], out: &Path, device: DeviceSpec) -> Outcome {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    train(TrainRequest {
        config: config::load(path, &sets).unwrap(),
        device,
        out_dir: out.to_path_buf(),
        quiet: true,
    })
    .unwrap()
}

fn load(dir: &Path, toml: &str) -> Result<data::Dataset, data::DataError> {
    let c = config::load(&write_config(dir, toml), &[]).unwrap();
    data::load(&c.config, dir)
}

/// A CIFAR-10 binary batch in the official format: 10,000 records of a
/// label byte and 3,072 pixel bytes. Label of record i: `(i + salt) % 10`;
/// the red plane is bright for even labels, so a model can learn it.
fn cifar_batch(path: &Path, salt: usize) {
    let mut v = Vec::with_capacity(10_000 * 3073);
    for i in 0..10_000usize {
        let label = ((i + salt) % 10) as u8;
        v.push(label);
        for p in 0..3072usize {
            let bright = p < 1024 && label.is_multiple_of(2);
            v.push(if bright {
                200
            } else {
                ((i * 7 + p * 13) % 97) as u8
            });
        }
    }
    std::fs::write(path, v).unwrap();
}

fn cifar_folder(dir: &Path) -> PathBuf {
    let f = dir.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&f).unwrap();
    for (k, name) in [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ]
    .iter()
    .enumerate()
    {
        cifar_batch(&f.join(name), k);
    }
    f
}

fn cifar_config(folder: &Path, extra: &str) -> String {
    format!(
        "[run]\nname = \"c\"\n[data]\ndataset = \"cifar10\"\npath = \"{}\"\nbatch_size = 16\neval_batch_size = 2000\n[model]\nkind = \"mlp\"\nhidden = [16]\n[train]\nepochs = 2\nsteps_per_epoch = 5\noptimizer = \"adam\"\nlr = 0.001\ncheckpoint_every = 1\n{extra}",
        folder.display()
    )
}

#[test]
fn cifar10_loads_channels_first_standardised_and_refuses_a_truncated_file() {
    let d = tempfile::tempdir().unwrap();
    let folder = cifar_folder(d.path());
    let ds = load(d.path(), &cifar_config(&folder, "")).unwrap();
    assert_eq!(ds.sample_shape, vec![3, 32, 32]);
    assert_eq!(
        (ds.train.len(), ds.test.len(), ds.num_classes),
        (50_000, 10_000, 10)
    );
    assert_eq!(ds.class_names.as_ref().unwrap()[0], "airplane");
    // Record 0 of data_batch_2 (salt 1): label 1; of test_batch (salt 5): 5.
    assert_eq!((ds.train.y[10_000], ds.test.y[0]), (1, 5));
    // Each channel has mean 0 and variance 1 over the training split.
    let plane = 1024;
    for c in 0..3 {
        let (mut s, mut q, mut n) = (0f64, 0f64, 0f64);
        for img in ds.train.x.chunks_exact(3 * plane) {
            for &v in &img[c * plane..(c + 1) * plane] {
                s += f64::from(v);
                q += f64::from(v) * f64::from(v);
                n += 1.0;
            }
        }
        let mean = s / n;
        assert!(mean.abs() < 1e-4 && (q / n - mean * mean - 1.0).abs() < 1e-3);
    }
    assert!(ds.augment.is_some(), "augmented by default");
    // One byte short: a truncated download, named.
    let short = folder.join("data_batch_3.bin");
    let mut bytes = std::fs::read(&short).unwrap();
    bytes.pop();
    std::fs::write(&short, &bytes).unwrap();
    let e = load(d.path(), &cifar_config(&folder, ""))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("data_batch_3.bin") && e.contains("truncated"),
        "{e}"
    );
    // A label past 9.
    bytes.push(0);
    bytes[3073] = 10;
    std::fs::write(&short, &bytes).unwrap();
    let e = load(d.path(), &cifar_config(&folder, ""))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("data_batch_3.bin") && e.contains("record 1 has label 10"),
        "{e}"
    );
    bytes[3073] = 9;
    std::fs::write(&short, &bytes).unwrap();
    std::fs::remove_file(folder.join("test_batch.bin")).unwrap();
    let e = load(d.path(), &cifar_config(&folder, ""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("test_batch.bin"), "{e}");
}

/// A short run trains on the crops and flips (mid-epoch resume with them is
/// tested in interrupt.rs); without them it sees other pixels.
#[test]
fn cifar10_trains_on_augmented_batches() {
    let d = tempfile::tempdir().unwrap();
    let folder = cifar_folder(d.path());
    let f = write_config(d.path(), &cifar_config(&folder, ""));
    let run = |sets: &[&str], out: &Path| run_on(&f, sets, out, DeviceSpec::Cpu);
    let augmented = run(&["train.epochs=1"], &d.path().join("a"));
    assert_eq!(augmented.record.dataset.augment, Some(true));
    assert_eq!(augmented.record.dataset.sample_shape, vec![3, 32, 32]);
    let again = run(&["train.epochs=1"], &d.path().join("b"));
    let plain = run(
        &["train.epochs=1", "data.augment=false"],
        &d.path().join("c"),
    );
    let loss = |o: &Outcome| o.record.epochs[0].train_loss;
    assert_eq!(loss(&augmented), loss(&again));
    assert_ne!(loss(&plain), loss(&augmented));
    assert_eq!(plain.record.dataset.augment, None);
}

fn png(path: &Path, rgb: [u8; 3], side: u32) {
    let img = image::RgbImage::from_pixel(side, side, image::Rgb(rgb));
    img.save(path).unwrap();
}

fn folder_config(extra: &str) -> String {
    format!(
        "[run]\nname = \"f\"\n[data]\ndataset = \"image_folder\"\ntrain = \"imgs/train\"\ntest = \"imgs/test\"\nimage_size = 6\nbatch_size = 4\n{extra}[model]\nkind = \"mlp\"\nhidden = [8]\n[train]\nepochs = 3\noptimizer = \"adam\"\nlr = 0.01\n"
    )
}

#[test]
fn image_folders_load_grey_or_rgb_and_name_a_bad_image() {
    let d = tempfile::tempdir().unwrap();
    for (split, n) in [("train", 4), ("test", 2)] {
        for (class, colour) in [("red", [250, 10, 10]), ("blue", [10, 10, 250])] {
            let dir = d.path().join(format!("imgs/{split}/{class}"));
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                png(&dir.join(format!("{i}.png")), colour, 9 + i);
            }
        }
    }
    std::fs::write(d.path().join("imgs/train/red/notes.txt"), "ignored").unwrap();
    let ds = load(d.path(), &folder_config("")).unwrap();
    assert_eq!(ds.sample_shape, vec![3, 6, 6]);
    assert_eq!((ds.train.len(), ds.test.len()), (8, 4));
    assert_eq!(ds.class_names, Some(vec!["blue".into(), "red".into()]));
    // Sorted classes: blue is 0; its red channel is dark, its blue bright.
    let first = &ds.train.x[..108];
    assert!((first[0] - 10.0 / 255.0).abs() < 1e-6 && (first[72] - 250.0 / 255.0).abs() < 1e-6);
    assert_eq!(ds.train.y[0], 0);
    let grey = load(d.path(), &folder_config("channels = 1\n")).unwrap();
    assert_eq!(grey.sample_shape, vec![1, 6, 6]);
    // A file that is not an image, and a class the training folder lacks.
    let bad = d.path().join("imgs/train/red/broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\n not really").unwrap();
    let e = load(d.path(), &folder_config("")).unwrap_err().to_string();
    assert!(
        e.contains("broken.png") && e.contains("not a readable"),
        "{e}"
    );
    let out = tempfile::tempdir().unwrap();
    let f = write_config(d.path(), &folder_config("skip_bad = true\n"));
    let o = run_on(&f, &[], out.path(), DeviceSpec::Cpu);
    assert_eq!(o.record.dataset.skipped_images, Some(1));
    assert_eq!(o.record.dataset.num_classes, Some(2));
    std::fs::create_dir_all(d.path().join("imgs/test/green")).unwrap();
    png(&d.path().join("imgs/test/green/0.png"), [0, 250, 0], 6);
    let e = load(d.path(), &folder_config("skip_bad = true\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("green") && e.contains("class the training folder does not have"),
        "{e}"
    );
}

#[test]
fn the_shipped_image_folder_example_learns() {
    let out = tempfile::tempdir().unwrap();
    let path = root().join("configs/image_folder_digits.toml");
    let o = run_on(&path, &[], out.path(), DeviceSpec::Cpu);
    assert_eq!(o.record.dataset.sample_shape, vec![1, 8, 8]);
    assert_eq!(
        (
            o.record.dataset.train_samples,
            o.record.dataset.test_samples
        ),
        (300, 150)
    );
    // 300 training images (full UCI digits: 0.8 and up); chance is 0.1.
    let acc = o.record.final_.as_ref().unwrap().test_accuracy;
    assert!(acc > 0.75, "accuracy {acc}");
}

fn text_config(extra: &str) -> String {
    format!(
        "[run]\nname = \"t\"\n[data]\ndataset = \"text\"\npath = \"t.txt\"\ntokens = \"char\"\nbatch_size = 8\n[model]\nkind = \"transformer\"\ncontext = 8\nd_model = 32\nheads = 2\nlayers = 1\n[train]\nepochs = 12\nsteps_per_epoch = 20\noptimizer = \"adamw\"\nlr = 0.003\n{extra}"
    )
}

#[test]
fn text_predicts_every_next_character_and_stops_at_a_target_loss() {
    let d = tempfile::tempdir().unwrap();
    // A repeating text: every character determines the next.
    let text = "the cat sat on a mat. ".repeat(60);
    std::fs::write(d.path().join("t.txt"), &text).unwrap();
    let ds = load(d.path(), &text_config("")).unwrap();
    let chars = ds.class_names.clone().unwrap();
    assert_eq!(chars.concat(), " .acehmnost");
    assert_eq!(
        (ds.num_classes, ds.vocab, ds.train.targets),
        (11, Some(11), 8)
    );
    // 1,320 characters: the last 132 held out, windows of 8 + 1.
    assert_eq!((ds.train.len(), ds.test.len()), (1187 / 8, 131 / 8));
    let id = |c: char| chars.iter().position(|s| s.starts_with(c)).unwrap() as f32;
    assert_eq!(&ds.train.x[..3], &[id('t'), id('h'), id('e')]);
    assert_eq!(ds.train.y[0] as f32, id('h'));
    let out = tempfile::tempdir().unwrap();
    let f = write_config(
        d.path(),
        &text_config("target_loss = 0.5\nstop_at_target = true\n"),
    );
    let o = run_on(&f, &[], out.path(), DeviceSpec::Cpu);
    let r = &o.record;
    assert_eq!(r.dataset.targets_per_sample, Some(8));
    let e = r.epochs.last().unwrap();
    assert_eq!(e.test_perplexity, Some(e.test_loss.exp()));
    // Per token: the first epoch starts near ln(11) nats, far from 0.
    assert!(r.epochs[0].train_loss > 0.5, "{}", r.epochs[0].train_loss);
    let t = r.target.as_ref().unwrap();
    assert!(
        t.reached && t.loss == Some(0.5) && t.metric == "test_loss",
        "{t:?}"
    );
    assert!(e.test_loss <= 0.5 && e.test_accuracy > 0.8, "{e:?}");
    assert_eq!(o.status.to_string(), "reached_target");
    // Not UTF-8: the offset of the first invalid byte.
    std::fs::write(d.path().join("t.txt"), b"abc\xffdef").unwrap();
    let e = load(d.path(), &text_config("")).unwrap_err().to_string();
    assert!(e.contains("t.txt") && e.contains("offset 3"), "{e}");
    std::fs::write(d.path().join("t.txt"), "tiny").unwrap();
    let e = load(d.path(), &text_config("")).unwrap_err().to_string();
    assert!(e.contains("too short"), "{e}");
}

#[test]
fn media_keys_belong_to_their_datasets() {
    let d = tempfile::tempdir().unwrap();
    let bad = |toml: String, key: &str| {
        let e = config::load(&write_config(d.path(), &toml), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "{key}: {e}");
    };
    bad(
        text_config("").replace("kind = \"transformer\"", "kind = \"mlp\""),
        "model.context",
    );
    bad(folder_config("tokens = \"byte\"\n"), "data.tokens");
    bad(folder_config("channels = 2\n"), "data.channels");
    bad(
        text_config("target_loss = 1.0\ntarget_accuracy = 0.5\n"),
        "train.target_loss",
    );
    bad(
        text_config("schedule = \"milestones\"\n"),
        "train.milestones",
    );
    bad(
        text_config("schedule = \"milestones\"\nmilestones = [5, 3]\n"),
        "train.milestones",
    );
    let c = config::load(
        &root().join("configs/paper/cifar10_resnet20_fp16.toml"),
        &[],
    )
    .unwrap();
    let t = &c.config.train;
    use greentrain_trainer::train::lr_at;
    let rates: Vec<f64> = [0, 31_999, 32_000, 47_999, 48_000, 64_000]
        .iter()
        .map(|&s| lr_at(&c.config, s, 64_124, 0))
        .collect();
    assert_eq!(
        rates,
        vec![
            0.1,
            0.1,
            0.1 * 0.1,
            0.1 * 0.1,
            0.1 * 0.1 * 0.1,
            0.1 * 0.1 * 0.1
        ]
    );
    assert_eq!(
        (t.milestones.clone(), c.config.data.batch_size),
        (vec![32_000, 48_000], 128)
    );
}

/// The GPU paths on wgpu (lavapipe here): text's `[n, context]` labels kept
/// on the device, and image batches cropped on the host and uploaded, train
/// as they do on flex.
#[test]
fn text_and_augmented_images_train_alike_on_wgpu() {
    if greentrain_trainer::device::check(DeviceSpec::Wgpu).is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the wgpu tests"
        );
        eprintln!("no wgpu adapter: the wgpu data paths were not tested");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("t.txt"), "the cat sat on a mat. ".repeat(60)).unwrap();
    let text = write_config(d.path(), &text_config(""));
    let images = root().join("configs/image_folder_digits.toml");
    for (file, sets) in [
        (&text, vec!["train.epochs=1", "train.steps_per_epoch=5"]),
        (&images, vec!["train.epochs=1", "data.augment=true"]),
    ] {
        let mut sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        // The same arithmetic on both: auto would take fp16 on the GPU.
        sets.push("precision.mode=fp32".into());
        let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
        let run = |device| {
            let out = tempfile::tempdir().unwrap();
            let o = run_on(file, &sets, out.path(), device);
            let e = &o.record.epochs[0];
            (e.train_loss, e.test_loss)
        };
        let (cpu, gpu) = (run(DeviceSpec::Cpu), run(DeviceSpec::Wgpu));
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-3 * a.abs().max(1.0);
        assert!(
            close(cpu.0, gpu.0) && close(cpu.1, gpu.1),
            "{file:?}: flex {cpu:?}, wgpu {gpu:?}"
        );
    }
}
