//! Energy and carbon accounting inside real (short) training runs.

use greentrain_trainer::{config, train, DeviceSpec, Outcome, TrainRequest};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn run(out: &Path, overrides: &[&str]) -> Outcome {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/digits_mlp.toml"
    ));
    let mut o: Vec<String> = vec!["train.epochs=3".into()];
    o.extend(overrides.iter().map(|s| s.to_string()));
    train(TrainRequest {
        config: config::load(&path, &o).unwrap(),
        device: DeviceSpec::Cpu,
        out_dir: out.to_path_buf(),
        quiet: true,
    })
    .unwrap()
}

fn json(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap()
}

#[test]
fn record_has_energy_with_provenance_and_consistent_carbon() {
    let out = tempfile::tempdir().unwrap();
    let o = run(
        out.path(),
        &[
            "carbon.zone=\"FRA\"",
            "carbon.pue=1.2",
            "carbon.embodied_g=5.0",
        ],
    );
    let r = json(&o.run_dir);
    let comps = r["energy"]["components"].as_array().unwrap();
    assert!(!comps.is_empty());
    for c in comps {
        let p = c["provenance"].as_str().unwrap();
        let m = c["method"].as_str().unwrap();
        assert!(["measured", "integrated", "estimated"].contains(&p));
        // Never an estimate presented as a measurement.
        if p == "measured" {
            assert!(m.starts_with("rapl") || m.starts_with("nvml"), "{m}");
        }
        if m.starts_with("estimate") {
            assert_eq!(p, "estimated", "{m}");
        }
        assert!(["gpu", "cpu", "dram", "ram"].contains(&c["kind"].as_str().unwrap()));
        assert!(c["joules"].as_f64().unwrap() >= 0.0);
    }
    let f = &r["final"];
    let kwh = f["energy_kwh"].as_f64().unwrap();
    let g = f["co2_g"].as_f64().unwrap();
    let c = &r["carbon"];
    assert_eq!(c["source"], "zone:FRA");
    assert_eq!(c["pue"], 1.2);
    let i = c["intensity_g_per_kwh"].as_f64().unwrap();
    assert!(
        (g - kwh * 1.2 * i).abs() <= 1e-9 * g.max(1e-12),
        "co2 {g} != {kwh} x 1.2 x {i}"
    );
    assert!((i - 56.039).abs() < 1e-6);
    assert!(f["j_per_sample"].as_f64().unwrap() > 0.0);
    assert!(c["sci_g_per_sample"].as_f64().unwrap() > 5.0 / 2694.0 * 0.99);
    for e in r["epochs"].as_array().unwrap() {
        assert!(e["energy_j"].as_f64().is_some() && e["co2_g"].as_f64().is_some());
    }
    let names: Vec<&str> = r["energy"]["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    for w in [
        "train/epoch-1",
        "eval/epoch-1",
        "checkpoint/epoch-1",
        "train/epoch-3",
    ] {
        assert!(names.contains(&w), "{names:?}");
    }
    let csv = std::fs::read_to_string(o.run_dir.join("emissions.csv")).unwrap();
    assert!(csv.starts_with("timestamp,project_name,run_id,experiment_id,duration,emissions,"));
    assert!(csv.contains(",France,FRA,"), "{csv}");
    let metrics = std::fs::read_to_string(o.run_dir.join("metrics.csv")).unwrap();
    assert!(metrics.lines().next().unwrap().ends_with(",energy_j,co2_g"));
}

#[test]
fn rapl_counters_are_used_when_readable() {
    let tree = tempfile::tempdir().unwrap();
    let z = tree.path().join("intel-rapl:0");
    std::fs::create_dir_all(&z).unwrap();
    std::fs::write(z.join("name"), "package-0\n").unwrap();
    std::fs::write(z.join("energy_uj"), "1000\n").unwrap();
    std::fs::write(z.join("max_energy_range_uj"), "262143328850\n").unwrap();
    let out = tempfile::tempdir().unwrap();
    let root = format!("energy.rapl_root=\"{}\"", tree.path().display());
    let o = run(out.path(), &[&root]);
    let r = json(&o.run_dir);
    let cpu = r["energy"]["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "cpu")
        .unwrap()
        .clone();
    assert_eq!(cpu["provenance"], "measured");
    assert_eq!(cpu["method"], "rapl package-0");
    // Overall provenance is the weakest part: RAM is still a model here.
    assert_eq!(r["energy"]["provenance"], "estimated");
}

#[test]
fn process_tracking_mode_is_recorded_in_run_json_and_emissions_csv() {
    let out = tempfile::tempdir().unwrap();
    let o = run(out.path(), &["energy.tracking_mode=\"process\""]);
    let r = json(&o.run_dir);
    assert_eq!(r["energy"]["tracking_mode"], "process");
    assert_eq!(r["config"]["energy"]["tracking_mode"], "process");
    for m in r["energy"]["meters"].as_array().unwrap() {
        let method = m["method"].as_str().unwrap();
        if method.starts_with("estimate") {
            assert!(method.contains("tracking_mode process"), "{method}");
        }
    }
    let csv = std::fs::read_to_string(o.run_dir.join("emissions.csv")).unwrap();
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    let col = rows
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "tracking_mode")
        .unwrap();
    let row = rows.records().next().unwrap().unwrap();
    assert_eq!(&row[col], "process");
    // The default stays CodeCarbon's: the whole machine.
    let r = json(&run(out.path(), &[]).run_dir);
    assert_eq!(r["energy"]["tracking_mode"], "machine");
}

#[test]
fn tiny_budget_stops_the_run_after_the_first_prediction() {
    let out = tempfile::tempdir().unwrap();
    let o = run(out.path(), &["budget.max_kwh=1e-15"]);
    assert_eq!(o.status, "stopped_budget");
    let r = json(&o.run_dir);
    assert_eq!(r["status"], "stopped_budget");
    assert_eq!(r["epochs"].as_array().unwrap().len(), 1);
    assert!(
        r["energy"]["prediction"]["energy_kwh"]["mean"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(o.run_dir.join("checkpoint.bin").exists());
    let o = run(out.path(), &["budget.max_co2_g=1e-12"]);
    assert_eq!(o.status, "stopped_budget");
}

#[test]
fn default_intensity_is_flagged_and_metering_can_be_off() {
    let out = tempfile::tempdir().unwrap();
    let r = json(&run(out.path(), &[]).run_dir);
    assert_eq!(r["carbon"]["source"], "world_default");
    assert_eq!(r["carbon"]["is_default"], true);
    assert_eq!(r["carbon"]["intensity_g_per_kwh"], 475.0);
    let o = run(out.path(), &["energy.enabled=false"]);
    let r = json(&o.run_dir);
    assert!(r.get("energy").is_none() && r["final"].get("co2_g").is_none());
    assert!(!o.run_dir.join("emissions.csv").exists());
}

#[test]
fn bad_intensity_sources_are_config_errors() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("i.csv");
    std::fs::write(
        &f,
        "timestamp,g_per_kwh\n2026-01-01T00:00:00Z,10\nnot-a-time,5\n",
    )
    .unwrap();
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/digits_mlp.toml"
    ));
    let cfg = config::load(
        &path,
        &[format!("carbon.intensity_file=\"{}\"", f.display())],
    )
    .unwrap();
    let e = train(TrainRequest {
        config: cfg,
        device: DeviceSpec::Cpu,
        out_dir: d.path().join("runs"),
        quiet: true,
    })
    .unwrap_err();
    assert!(matches!(e, greentrain_trainer::Failure::Usage(_)));
    let s = e.to_string();
    assert!(
        s.contains("i.csv line 3") && s.contains("bad timestamp"),
        "{s}"
    );
    assert!(!d.path().join("runs").exists());

    let cfg = config::load(&path, &["carbon.zone=\"Atlantis\"".into()]).unwrap();
    let e = train(TrainRequest {
        config: cfg,
        device: DeviceSpec::Cpu,
        out_dir: d.path().join("runs"),
        quiet: true,
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown carbon zone 'Atlantis'"), "{e}");
}
