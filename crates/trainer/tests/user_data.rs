//! A user's own files: NumPy `.npz` and CSV tables, the shipped examples
//! trained on, and broken or crafted files refused with the file and what
//! is wrong (never a panic or an abort).

use greentrain_trainer::config;
use greentrain_trainer::data;
use greentrain_trainer::device::DeviceSpec;
use greentrain_trainer::{train, TrainRequest};
use std::io::Write;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// A `.npy` file (format 1.0) by hand: a test double of what NumPy writes.
fn npy(descr: &str, shape: &[usize], body: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend_from_slice(&(header.len() as u16).to_le_bytes());
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(body);
    v
}

/// An `.npz` (a zip of `.npy` members) at `path`.
fn npz(path: &Path, members: &[(&str, Vec<u8>)]) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in members {
        z.start_file(format!("{name}.npy"), zip::write::FileOptions::default())
            .unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
}

fn load(toml: &str, dir: &Path) -> Result<data::Dataset, data::DataError> {
    let f = dir.join("c.toml");
    std::fs::write(&f, toml).unwrap();
    let c = config::load(&f, &[]).unwrap();
    data::load(&c.config, dir)
}

fn npz_config(train: &str, test: &str) -> String {
    format!(
        "[run]\nname = \"t\"\n[data]\ndataset = \"npz\"\ntrain = \"{train}\"\ntest = \"{test}\"\nbatch_size = 8\n[model]\nkind = \"mlp\"\n[train]\nepochs = 1\noptimizer = \"adam\"\nlr = 0.001\n"
    )
}

#[test]
fn the_shipped_examples_load_alike() {
    let n = config::load(&root().join("configs/npz_digits.toml"), &[]).unwrap();
    let n = data::load(&n.config, &root().join("configs")).unwrap();
    assert_eq!(n.sample_shape, vec![8, 8]);
    assert_eq!((n.train.len(), n.test.len(), n.num_classes), (898, 899, 10));
    let c = config::load(&root().join("configs/csv_digits.toml"), &[]).unwrap();
    let c = data::load(&c.config, &root().join("configs")).unwrap();
    assert_eq!(c.sample_shape, vec![64]);
    let names = c.class_names.clone().unwrap();
    assert_eq!(names[0], "eight", "names in sorted order: {names:?}");
    // The same digits: CSV labels are the sorted names' indices.
    let digit = |s: &str| {
        [
            "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
        ]
        .iter()
        .position(|d| *d == s)
        .unwrap() as u8
    };
    let mapped: Vec<u8> = c
        .train
        .y
        .iter()
        .map(|&i| digit(&names[i as usize]))
        .collect();
    assert_eq!(mapped, n.train.y);
    // Both standardised from the same training values: the same features.
    for (a, b) in c.train.x.iter().zip(&n.train.x) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
}

#[test]
fn a_run_on_each_example_learns_and_records_its_classes() {
    for (file, min) in [("npz_digits", 0.85), ("csv_digits", 0.85)] {
        let out = tempfile::tempdir().unwrap();
        let path = root().join(format!("configs/{file}.toml"));
        let o = train(TrainRequest {
            config: config::load(&path, &["train.epochs=5".into()]).unwrap(),
            device: DeviceSpec::Cpu,
            out_dir: out.path().to_path_buf(),
            quiet: true,
        })
        .unwrap();
        let acc = o.record.final_.as_ref().unwrap().test_accuracy;
        assert!(acc > min, "{file}: accuracy {acc}");
        assert_eq!(o.record.dataset.num_classes, Some(10));
        assert_eq!(o.record.dataset.class_names.is_some(), file == "csv_digits");
    }
}

#[test]
fn broken_npz_files_name_the_file_and_the_array() {
    let d = tempfile::tempdir().unwrap();
    let x = npy("|u1", &[3, 2], &[0, 255, 1, 2, 3, 4]);
    let y = npy(
        "<i8",
        &[3],
        &[0u64, 1, 2]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    );
    let good = d.path().join("good.npz");
    npz(&good, &[("x", x.clone()), ("y", y.clone())]);
    let ok = load(&npz_config("good.npz", "good.npz"), d.path()).unwrap();
    assert_eq!(ok.train.x[..2], [0.0, 1.0], "uint8 scaled to [0, 1]");
    let huge = npy("<f4", &[1 << 40, 1 << 20], &[0; 64]);
    let labels300 = npy("<i2", &[3], &[0, 0, 44, 1, 1, 0]);
    type Members<'a> = Vec<(&'a str, Vec<u8>)>;
    let cases: Vec<(&str, Members, &str)> = vec![
        ("noy", vec![("x", x.clone())], "has no array `y`"),
        (
            "count",
            vec![("x", x.clone()), ("y", npy("<i8", &[2], &[0; 16]))],
            "3 samples, `y` 2 labels",
        ),
        (
            "label",
            vec![("x", x.clone()), ("y", labels300)],
            "label 300",
        ),
        (
            "huge",
            vec![("x", huge), ("y", y.clone())],
            "needs more bytes than the file holds",
        ),
        (
            "strings",
            vec![("x", npy("|S2", &[3], b"abcdef")), ("y", y.clone())],
            "array `x`",
        ),
    ];
    for (name, members, needle) in cases {
        let f = d.path().join(format!("{name}.npz"));
        npz(&f, &members);
        let e = load(&npz_config(&format!("{name}.npz"), "good.npz"), d.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("{name}.npz")) && e.contains(needle),
            "{name}: {e}"
        );
    }
    std::fs::write(d.path().join("text.npz"), "not a zip").unwrap();
    let e = load(&npz_config("text.npz", "good.npz"), d.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("text.npz") && e.contains("zip"), "{e}");
}

#[test]
fn broken_csv_tables_name_the_file_line_and_column() {
    let d = tempfile::tempdir().unwrap();
    let conf = |train: &str, test: &str| {
        format!(
            "[run]\nname = \"t\"\n[data]\ndataset = \"csv\"\ntrain = \"{train}\"\ntest = \"{test}\"\nlabel = \"kind\"\nbatch_size = 8\n[model]\nkind = \"mlp\"\n[train]\nepochs = 1\noptimizer = \"adam\"\nlr = 0.001\n"
        )
    };
    std::fs::write(
        d.path().join("good.csv"),
        "a,kind,b\n1,cat,2\n3,dog,4\n5,cat,6\n",
    )
    .unwrap();
    // Columns matched by name: the test table may order them otherwise.
    std::fs::write(d.path().join("test.csv"), "b,a,kind\n2,1,dog\n").unwrap();
    let ok = load(&conf("good.csv", "test.csv"), d.path()).unwrap();
    assert_eq!(
        ok.class_names,
        Some(vec!["cat".to_string(), "dog".to_string()])
    );
    assert_eq!(
        (ok.train.y.clone(), ok.test.x.clone(), ok.test.y.clone()),
        (vec![0, 1, 0], vec![1.0, 2.0], vec![1])
    );
    for (name, body, needle) in [
        (
            "missing",
            "a,kind,b\n1,cat,\n",
            "line 2, column `b`: missing",
        ),
        (
            "word",
            "a,kind,b\n1,cat,2\nx,dog,4\n",
            "line 3, column `a`: \"x\" is not a number",
        ),
        ("nolabel", "a,b\n1,2\n", "no column `kind`"),
        ("short", "a,kind,b\n1,cat\n", "line 2"),
    ] {
        std::fs::write(d.path().join(format!("{name}.csv")), body).unwrap();
        let e = load(&conf(&format!("{name}.csv"), "test.csv"), d.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("{name}.csv")) && e.contains(needle),
            "{name}: {e}"
        );
    }
    std::fs::write(d.path().join("bird.csv"), "a,kind,b\n1,bird,2\n").unwrap();
    let e = load(&conf("good.csv", "bird.csv"), d.path())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bird.csv")
            && e.contains("line 2")
            && e.contains("class the training table does not have"),
        "{e}"
    );
    // The npz/csv keys belong to those data sets.
    let f = d.path().join("bad.toml");
    std::fs::write(
        &f,
        conf("good.csv", "test.csv").replace("label = \"kind\"\n", ""),
    )
    .unwrap();
    let e = config::load(&f, &[]).unwrap_err().to_string();
    assert!(e.contains("data.label"), "{e}");
}
