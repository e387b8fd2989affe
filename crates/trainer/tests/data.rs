//! Dataset loading: good files, broken files, checksums. Every error names
//! the file.

use flate2::write::GzEncoder;
use greentrain_trainer::config;
use greentrain_trainer::data::{self, IdxData};
use std::io::Write;
use std::path::{Path, PathBuf};

fn idx_u8(dims: &[u32], body: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(body);
    v
}

fn idx_f32(dims: &[u32], body: &[f32]) -> Vec<u8> {
    let mut v = vec![0, 0, 0x0D, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    for x in body {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v
}

fn gz(b: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn p() -> PathBuf {
    PathBuf::from("f.idx")
}

#[test]
fn parses_u8_and_f32() {
    let i = data::parse_idx(&p(), &idx_u8(&[2, 2], &[1, 2, 3, 4])).unwrap();
    assert_eq!(i.dims, vec![2, 2]);
    assert_eq!(i.data, IdxData::U8(vec![1, 2, 3, 4]));
    let f = data::parse_idx(&p(), &idx_f32(&[1, 3], &[0.5, -1.0, 2.25])).unwrap();
    assert_eq!(f.data, IdxData::F32(vec![0.5, -1.0, 2.25]));
}

#[test]
fn broken_idx_files_are_named_errors() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![0, 0], "too short"),
        (vec![1, 2, 8, 1, 0, 0, 0, 1, 5], "wrong magic"),
        (vec![0, 0, 0x42, 1, 0, 0, 0, 1, 5], "wrong magic"),
        (vec![0, 0, 0x0C, 1, 0, 0, 0, 1, 0, 0, 0, 5], "not supported"),
        (idx_u8(&[3, 2], &[1, 2, 3]), "truncated"),
        (idx_u8(&[1], &[1, 2]), "trailing"),
        (vec![0, 0, 8, 3, 0, 0], "truncated IDX header"),
        (idx_f32(&[2], &[1.0, f32::NAN]), "not finite"),
        (idx_u8(&[0, 2], &[]), "dimension 0 of [0, 2] is 0"),
        (idx_u8(&[2, 0], &[]), "dimension 1 of [2, 0] is 0"),
    ];
    for (bytes, want) in cases {
        let e = data::parse_idx(Path::new("bad/file.idx"), &bytes)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bad/file.idx:"), "{e}");
        assert!(e.contains(want), "expected '{want}' in: {e}");
    }
}

#[test]
fn truncated_gzip_is_a_named_error() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("x.gz");
    let z = gz(&idx_u8(&[4], &[1, 2, 3, 4]));
    std::fs::write(&f, &z[..z.len() / 2]).unwrap();
    let e = data::read_maybe_gz(&f).unwrap_err().to_string();
    assert!(e.contains("x.gz") && e.contains("gzip"), "{e}");
    std::fs::write(&f, &z).unwrap();
    assert_eq!(
        data::read_maybe_gz(&f).unwrap(),
        idx_u8(&[4], &[1, 2, 3, 4])
    );
}

#[test]
fn digits_csv_errors_name_line_and_column() {
    let ok = format!("{}0\n", "1,".repeat(64));
    assert_eq!(
        data::parse_digits_csv(Path::new("d.csv"), ok.as_bytes())
            .unwrap()
            .len(),
        1
    );
    let bad_label = format!("{}12\n", "1,".repeat(64));
    let e = data::parse_digits_csv(Path::new("d.csv"), bad_label.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("d.csv") && e.contains("line 1") && e.contains("out of range"),
        "{e}"
    );
    let short = "1,2,3\n";
    let e = data::parse_digits_csv(Path::new("d.csv"), short.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(e.contains("65 columns"), "{e}");
    let nan = format!("x,{}0\n", "1,".repeat(63));
    let e = data::parse_digits_csv(Path::new("d.csv"), nan.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(e.contains("column 1"), "{e}");
}

fn idx_config(dir: &Path) -> String {
    format!(
        r#"
[run]
name = "idx"
[data]
dataset = "idx"
batch_size = 2
train_images = "{0}/tri.gz"
train_labels = "{0}/trl"
test_images = "{0}/tei"
test_labels = "{0}/tel"
[model]
kind = "mlp"
hidden = [4]
[train]
epochs = 1
optimizer = "sgd"
lr = 0.1
"#,
        dir.display()
    )
}

#[test]
fn custom_idx_dataset_loads_and_checks_labels() {
    let d = tempfile::tempdir().unwrap();
    let w = |n: &str, b: Vec<u8>| std::fs::write(d.path().join(n), b).unwrap();
    w(
        "tri.gz",
        gz(&idx_u8(
            &[3, 2, 2],
            &[0, 255, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100],
        )),
    );
    w("trl", idx_u8(&[3], &[0, 1, 2]));
    w("tei", idx_u8(&[1, 2, 2], &[1, 2, 3, 4]));
    w("tel", idx_u8(&[1], &[2]));
    let c = config::parse(&idx_config(d.path()), "c.toml", &[]).unwrap();
    let ds = data::load(&c, d.path()).unwrap();
    assert_eq!(ds.sample_shape, vec![2, 2]);
    assert_eq!(ds.num_classes, 3);
    assert_eq!(ds.train.len(), 3);
    assert_eq!(ds.train.x[1], 1.0);

    // A test label the training set never had.
    w("tel", idx_u8(&[1], &[7]));
    let e = data::load(&c, d.path()).unwrap_err().to_string();
    assert!(e.contains("tel") && e.contains("out of range"), "{e}");
    // Image and label counts disagree.
    w("tel", idx_u8(&[2], &[0, 1]));
    let e = data::load(&c, d.path()).unwrap_err().to_string();
    assert!(e.contains("2 labels for 1 images"), "{e}");
    // Missing file.
    std::fs::remove_file(d.path().join("tel")).unwrap();
    let e = data::load(&c, d.path()).unwrap_err().to_string();
    assert!(e.contains("tel") && e.contains("cannot read"), "{e}");
}

fn shipped() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../datasets"))
}

#[test]
fn shipped_datasets_verify_and_have_the_published_sizes() {
    let cfg = |ds: &str| {
        config::parse(
            &format!(
                "[run]\nname = \"x\"\n[data]\ndataset = \"{ds}\"\nbatch_size = 8\nroot = \"{}\"\n[model]\nkind = \"mlp\"\n[train]\nepochs = 1\noptimizer = \"sgd\"\nlr = 0.1\n",
                shipped().display()
            ),
            "c.toml",
            &[],
        )
        .unwrap()
    };
    let d = data::load(&cfg("digits"), Path::new(".")).unwrap();
    assert_eq!(
        (d.train.len(), d.test.len(), d.sample_shape.clone()),
        (898, 899, vec![64])
    );
    let d = data::load(&cfg("mnist1d"), Path::new(".")).unwrap();
    assert_eq!(
        (d.train.len(), d.test.len(), d.sample_shape.clone()),
        (4000, 1000, vec![40])
    );
    let d = data::load(&cfg("mnist"), Path::new(".")).unwrap();
    assert_eq!(
        (d.train.len(), d.test.len(), d.sample_shape.clone()),
        (60000, 10000, vec![28, 28])
    );
}

#[test]
fn damaged_shipped_file_fails_its_checksum() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("mnist1d")).unwrap();
    for f in [
        "train-x-idx2-f32",
        "train-y-idx1-ubyte",
        "test-x-idx2-f32",
        "test-y-idx1-ubyte",
    ] {
        std::fs::copy(
            shipped().join("mnist1d").join(f),
            d.path().join("mnist1d").join(f),
        )
        .unwrap();
    }
    let victim = d.path().join("mnist1d/train-y-idx1-ubyte");
    let mut b = std::fs::read(&victim).unwrap();
    b[100] = 3 - (b[100] % 3);
    std::fs::write(&victim, &b).unwrap();
    let c = config::parse(
        &format!(
            "[run]\nname = \"x\"\n[data]\ndataset = \"mnist1d\"\nbatch_size = 8\nroot = \"{}\"\n[model]\nkind = \"mlp\"\n[train]\nepochs = 1\noptimizer = \"sgd\"\nlr = 0.1\n",
            d.path().display()
        ),
        "c.toml",
        &[],
    )
    .unwrap();
    let e = data::load(&c, Path::new(".")).unwrap_err().to_string();
    assert!(
        e.contains("train-y-idx1-ubyte") && e.contains("sha256 mismatch"),
        "{e}"
    );
}

#[test]
fn epoch_order_is_a_seeded_permutation() {
    let a = data::epoch_order(100, 7, 0);
    assert_eq!(a, data::epoch_order(100, 7, 0));
    assert_ne!(a, data::epoch_order(100, 7, 1));
    assert_ne!(a, data::epoch_order(100, 8, 0));
    let mut s = a.clone();
    s.sort();
    assert_eq!(s, (0..100).collect::<Vec<_>>());
}

/// One stray label of 255 among labels 0..9 builds 256 outputs: the
/// dataset says so (run.json's `dataset.label_warning`); labels using all
/// their classes do not.
#[test]
fn a_stray_large_label_is_warned_about() {
    let split = |y: Vec<u8>| data::Split::new(vec![0.0; y.len()], y);
    let mut y: Vec<u8> = (0..100).map(|i| (i % 10) as u8).collect();
    let ok = data::Dataset {
        name: "idx".into(),
        sample_shape: vec![1],
        num_classes: 10,
        train: split(y.clone()),
        val: None,
        test: split(vec![0]),
        vocab: None,
        class_names: None,
        augment: None,
        skipped: 0,
    };
    assert_eq!(ok.label_warning(), None);
    y.push(255);
    let stray = data::Dataset {
        num_classes: 256,
        train: split(y),
        ..ok
    };
    let w = stray.label_warning().expect("a warning");
    assert!(w.contains("11 of the 256 classes"), "{w}");
}
