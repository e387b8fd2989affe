//! `[log] tensorboard = true`: the event files a run writes, read back by
//! the real `tensorboard` Python package (its EventAccumulator, what the
//! TensorBoard server itself reads with), against run.json. Without the
//! package the test says so and passes, except under CI, which installs it.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

mod harness;
use harness::{gt, text};

/// Every scalar of every event file in `dir`: tag -> [(step, value)], and
/// tag -> description, as TensorBoard reads them.
const READ: &str = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
acc.Reload()
out = {"scalars": {}, "descriptions": {}}
for tag in acc.Tags()["scalars"]:
    out["scalars"][tag] = [[e.step, e.value] for e in acc.Scalars(tag)]
    out["descriptions"][tag] = acc.SummaryMetadata(tag).summary_description
print(json.dumps(out))
"#;

fn tensorboard_ready() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import tensorboard"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must read the event files back with the tensorboard package"
        );
        eprintln!("no tensorboard Python package: the event files were not read back");
    }
    ok
}

fn read_back(dir: &Path) -> Value {
    let o = Command::new("python3")
        .arg("-c")
        .arg(READ)
        .arg(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn tensorboard_reads_back_what_run_json_records() {
    if !tensorboard_ready() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let o = gt()
        .args([
            "--config",
            "configs/digits_mlp.toml",
            "--set",
            "train.epochs=3",
            "--set",
            "log.tensorboard=true",
            "--set",
            "train.log_every=5",
            "--quiet",
        ])
        .out(out.path())
        .ok();
    let dir = std::path::PathBuf::from(
        text(&o.stdout)
            .lines()
            .last()
            .unwrap()
            .strip_prefix("run: ")
            .unwrap(),
    );
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
    let tb = read_back(&dir.join("tensorboard"));
    let scalars = &tb["scalars"];
    let epochs = r["epochs"].as_array().unwrap();
    for (tag, key) in [
        ("epoch/train_loss", "train_loss"),
        ("epoch/test_loss", "test_loss"),
        ("epoch/test_accuracy", "test_accuracy"),
        ("energy/joules", "energy_j"),
        ("carbon/co2_g", "co2_g"),
    ] {
        let got = scalars[tag]
            .as_array()
            .unwrap_or_else(|| panic!("no {tag}: {tb}"));
        assert_eq!(got.len(), epochs.len(), "{tag}");
        for (g, e) in got.iter().zip(epochs) {
            assert_eq!(g[0], e["epoch"], "{tag} step");
            let want = e[key].as_f64().unwrap();
            // TensorBoard keeps f32 scalars.
            assert_eq!(g[1].as_f64().unwrap(), want as f32 as f64, "{tag}");
        }
    }
    let prov = r["energy"]["provenance"].as_str().unwrap();
    let described = tb["descriptions"]["energy/joules"].as_str().unwrap();
    assert!(described.contains(prov), "{described} does not say {prov}");
    // Log steps: the loss at optimizer steps.
    let steps = scalars["train/loss"].as_array().unwrap();
    assert!(steps.len() >= 3, "{tb}");
    assert!(steps.iter().all(|s| s[1].as_f64().unwrap().is_finite()));
}
