//! Run folders that someone edited, crafted or planted files in, and runs
//! killed before their first checkpoint: `resume` refuses with exit 2 and a
//! message, leaves run.json as it was, and never panics, aborts, trains
//! something other than what run.json says, or writes through a symlink.

use greentrain_trainer::checkpoint::Checkpoint;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

mod harness;
use harness::{gt, text};

fn run_dir_of(out: &Output) -> PathBuf {
    let stdout = text(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    PathBuf::from(last.strip_prefix("run: ").expect("last line is 'run: ...'"))
}

fn record(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap()
}

fn losses(r: &Value) -> Vec<String> {
    r["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{} {}", e["train_loss"], e["test_accuracy"]))
        .collect()
}

const DIGITS: [&str; 4] = [
    "--config",
    "configs/digits_mlp.toml",
    "--set",
    "train.epochs=3",
];

/// A 3-epoch digits run stopped by its energy budget after epoch 1:
/// resumable, with a checkpoint (exit 3).
fn stopped_run(out: &Path) -> PathBuf {
    let o = gt()
        .args(DIGITS)
        .args(["--set", "budget.max_kwh=1e-15"])
        .out(out)
        .code(3);
    let dir = run_dir_of(&o);
    assert_eq!(record(&dir)["status"], "stopped_budget");
    dir
}

/// `resume` with `args` exits 2, says `what`, and leaves run.json as it was.
fn refused(dir: &Path, args: &[&str], what: &str) {
    let before = std::fs::read(dir.join("run.json")).unwrap();
    let o = gt().arg("resume").arg(dir).args(args).code(2);
    let err = text(&o.stderr);
    assert!(err.contains(what), "expected {what:?} in: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let after = std::fs::read(dir.join("run.json")).unwrap();
    assert_eq!(
        before, after,
        "run.json changed by a refused resume ({what})"
    );
}

const RAISE: [&str; 2] = ["--set", "budget.max_kwh=1"];

#[test]
fn an_edited_config_is_refused_and_set_records_the_allowed_changes() {
    let out = tempfile::tempdir().unwrap();
    let dir = stopped_run(out.path());
    // A budget-stopped run resumed as it is would train past its budget.
    refused(&dir, &[], "stopped at its budget");
    // Editing config.toml: refused, whatever the key.
    let cfg = dir.join("config.toml");
    let original = std::fs::read_to_string(&cfg).unwrap();
    for (from, to) in [
        ("lr = 0.001", "lr = 0.5"),
        ("kind = \"mlp\"", "kind = \"resnet\""),
    ] {
        assert!(original.contains(from), "{original}");
        std::fs::write(&cfg, original.replace(from, to)).unwrap();
        refused(&dir, &RAISE, "changed since the run started");
    }
    std::fs::write(&cfg, &original).unwrap();
    // --set takes only what a resumed run can honour.
    refused(&dir, &["--set", "train.lr=0.5"], "can change only");
    refused(
        &dir,
        &["--set", "train.epochs=2", "--set", "budget.max_kwh=1"],
        "not fewer",
    );
    // Raising the budget and the epochs: trained, and recorded.
    gt().arg("resume")
        .arg(&dir)
        .args(RAISE)
        .args(["--set", "train.epochs=4", "--quiet"])
        .ok();
    let r = record(&dir);
    assert_eq!(r["status"], "completed");
    assert_eq!(r["epochs"].as_array().unwrap().len(), 4);
    assert_eq!(r["config"]["train"]["epochs"], 4);
    let change = &r["config_changes"][0];
    assert_eq!(change["set"][1], "train.epochs=4", "{change}");
    assert_eq!(change["after_epochs"], 1);
    let text = std::fs::read(&cfg).unwrap();
    assert_eq!(
        r["config_sha256"].as_str().unwrap(),
        greentrain_trainer::data::sha256_hex(&text),
        "run.json's sha256 is the config.toml now in the folder"
    );
}

#[test]
fn crafted_checkpoints_are_refused_before_run_json_is_touched() {
    let out = tempfile::tempdir().unwrap();
    let dir = stopped_run(out.path());
    let good = Checkpoint::load(&dir).unwrap();
    let craft = |f: &dyn Fn(&mut Checkpoint)| {
        let mut c = good.clone();
        f(&mut c);
        c.save(&dir).unwrap();
    };
    // Sealed (the seal is a plain sha256 anyone can recompute), but not a
    // point of this run.
    craft(&|c| c.state.epoch = 1_000_000);
    refused(&dir, &RAISE, "not a point of this run");
    craft(&|c| c.state.step = 1_000_000_000);
    refused(&dir, &RAISE, "not a point of this run");
    // A length field claiming a terabyte (a bincode varint: 0xfd, u64).
    let mut tib = vec![0xfd];
    tib.extend_from_slice(&(1u64 << 40).to_le_bytes());
    tib.extend_from_slice(&[0; 16]);
    craft(&|c| c.model = tib.clone());
    refused(&dir, &RAISE, "cannot be decoded");
    craft(&|c| c.model = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect());
    refused(&dir, &RAISE, "checkpoint.bin");
    craft(&|c| c.optim = vec![3; 100]);
    refused(&dir, &RAISE, "checkpoint.bin");
    // The weights of another model (hidden 32, not 100).
    let o = gt()
        .args(DIGITS)
        .args([
            "--set",
            "model.hidden=[32]",
            "--set",
            "budget.max_kwh=1e-15",
        ])
        .out(out.path().join("small"))
        .code(3);
    let small = Checkpoint::load(&run_dir_of(&o)).unwrap();
    craft(&|c| c.model = small.model.clone());
    refused(&dir, &RAISE, "the model the config builds");
    craft(&|c| c.optim = small.optim.clone());
    refused(&dir, &RAISE, "checkpoint.bin");
    // The genuine checkpoint resumes.
    good.save(&dir).unwrap();
    gt().arg("resume").arg(&dir).args(RAISE).arg("--quiet").ok();
    assert_eq!(record(&dir)["status"], "completed");
}

#[cfg(unix)]
#[test]
fn symlinks_planted_in_a_run_folder_are_not_written_through() {
    let out = tempfile::tempdir().unwrap();
    let dir = stopped_run(out.path());
    let victim = out.path().join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    for name in ["emissions.csv", "energy.journal", "run.lock"] {
        let p = dir.join(name);
        let _ = std::fs::remove_file(&p);
        std::os::unix::fs::symlink(&victim, &p).unwrap();
    }
    // run.lock is opened first: refused, nothing written.
    refused(&dir, &RAISE, "symlink");
    std::fs::remove_file(dir.join("run.lock")).unwrap();
    gt().arg("resume").arg(&dir).args(RAISE).arg("--quiet").ok();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let r = record(&dir);
    let warnings = r["energy"]["warnings"].to_string();
    assert!(
        warnings.contains("energy.journal is a symlink"),
        "{warnings}"
    );
    let csv = std::fs::symlink_metadata(dir.join("emissions.csv")).unwrap();
    assert!(csv.file_type().is_file(), "emissions.csv replaced the link");
    assert_eq!(record(&dir)["status"], "completed");
}

#[test]
fn a_run_killed_before_its_first_checkpoint_starts_again_from_step_0() {
    let out = tempfile::tempdir().unwrap();
    let whole = gt().args(DIGITS).out(out.path().join("whole")).ok();
    let want = losses(&record(&run_dir_of(&whole)));
    // SIGKILL as soon as the run folder has its record: before epoch 1 ends.
    let killed = out.path().join("killed");
    let mut child = gt().args(DIGITS).out(&killed).spawn_quiet();
    let dir = harness::wait_for_run_file(&killed, "run.json");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !dir.join("checkpoint.bin").exists(),
        "the kill came after the first checkpoint: this test needs it before"
    );
    assert_eq!(record(&dir)["status"], "running");
    let o = gt().arg("resume").arg(&dir).ok();
    assert!(
        text(&o.stderr).contains("from step 0"),
        "{}",
        text(&o.stderr)
    );
    let r = record(&dir);
    assert_eq!(r["status"], "completed");
    assert_eq!(r["resumed"], 1);
    assert_eq!(losses(&r), want, "a restart from step 0 is the same run");
}

#[test]
fn a_model_too_large_for_the_machine_is_refused_before_its_folder_exists() {
    let out = tempfile::tempdir().unwrap();
    let o = gt()
        .args(DIGITS)
        .args(["--set", "model.hidden=[1000000000]"])
        .out(out.path())
        .code(2);
    assert!(
        text(&o.stderr).contains("model.hidden"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "a run folder was left"
    );
}

/// A run whose disk fills while it trains ends `failed`, with the error, in
/// a run.json it can still write (the 1 MiB reserve it frees first), not
/// `running`. The disk is a small tmpfs, filled by the test once the run
/// has set its reserve aside; where this process may not mount one (not
/// root, or a container without the capability) the test says so and passes.
#[cfg(target_os = "linux")]
#[test]
fn a_run_whose_disk_fills_ends_failed() {
    use std::io::Write;
    let out = tempfile::tempdir().unwrap();
    let mnt = out.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&mnt)
        .output()
        .is_ok_and(|o| o.status.success());
    if !mounted {
        eprintln!("cannot mount a tmpfs here: the full-disk path was not tested");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(&mnt);
    let mut child = gt()
        .args([
            "--config",
            "configs/digits_mlp.toml",
            "--set",
            "train.epochs=200",
        ])
        .out(&mnt)
        .spawn_quiet();
    let dir = harness::wait_for_run_file(&mnt, ".greentrain-reserve");
    // Fill every byte left, as another process on a shared disk would.
    let mut filler = std::fs::File::create(mnt.join("filler")).unwrap();
    let block = vec![7u8; 64 << 10];
    while filler.write_all(&block).is_ok() {}
    let mut byte = [7u8; 1];
    while filler.write_all(&byte).is_ok() {
        byte[0] ^= 1;
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "a run that cannot write fails");
    let r = record(&dir);
    assert_eq!(r["status"], "failed");
    let error = r["error"].as_str().unwrap_or_default();
    assert!(error.contains("space"), "{error}");
}
