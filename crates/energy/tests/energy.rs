//! Meters on fixture trees and a fake NVML, carbon integration against
//! hand-computed values, parsers, emissions.csv, budgets.

use greentrain_energy::carbon::{self, Intensity, Series};
use greentrain_energy::codecarbon::{EmissionsRow, COLUMNS};
use greentrain_energy::nvml::{GpuApi, GpuFacts, GpuMeter};
use greentrain_energy::rapl::{self, Fs, RealFs};
use greentrain_energy::{budget, ComponentKind, Meter, Provenance, Tracker};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

fn zone(root: &Path, dir: &str, name: &str, energy: u64, max: Option<u64>) {
    let z = root.join(dir);
    std::fs::create_dir_all(&z).unwrap();
    std::fs::write(z.join("name"), format!("{name}\n")).unwrap();
    std::fs::write(z.join("energy_uj"), format!("{energy}\n")).unwrap();
    if let Some(m) = max {
        std::fs::write(z.join("max_energy_range_uj"), format!("{m}\n")).unwrap();
    }
}

fn set(root: &Path, dir: &str, energy: u64) {
    std::fs::write(root.join(dir).join("energy_uj"), format!("{energy}\n")).unwrap();
}

#[test]
fn rapl_two_sockets_dram_and_wraparound() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    let max = 262_143_328_850u64;
    zone(r, "intel-rapl:0", "package-0", max - 1_000_000, Some(max));
    zone(r, "intel-rapl:0/intel-rapl:0:0", "core", 5, Some(max));
    zone(r, "intel-rapl:0/intel-rapl:0:1", "dram", 100, Some(max));
    zone(r, "intel-rapl:1", "package-1", 50_000_000, Some(max));
    zone(r, "intel-rapl:2", "psys", 7, Some(max));
    // The kernel also lists subzones at the top level.
    std::fs::create_dir_all(r.join("intel-rapl:0:1")).unwrap();
    std::fs::write(r.join("intel-rapl:0:1/name"), "dram\n").unwrap();
    std::fs::write(r.join("intel-rapl:0:1/energy_uj"), "100\n").unwrap();
    std::fs::write(
        r.join("intel-rapl:0:1/max_energy_range_uj"),
        format!("{max}\n"),
    )
    .unwrap();
    let found = rapl::discover(r);
    assert!(found.warnings.is_empty(), "{:?}", found.warnings);
    let mut cpu = found.cpu.unwrap();
    let mut dram = found.dram.unwrap();
    assert_eq!(
        cpu.info().method,
        "rapl package-0+package-1",
        "psys and core are never added"
    );
    assert_eq!(cpu.info().provenance, Provenance::Measured);
    assert_eq!(cpu.energy_j(), Some(0.0));
    // package-0 wraps: max-1e6 -> 2e6 is 3 J; package-1 adds 5 J.
    set(r, "intel-rapl:0", 2_000_000);
    set(r, "intel-rapl:1", 55_000_000);
    let e = cpu.energy_j().unwrap();
    assert!((e - 8.0).abs() < 1e-9, "{e}");
    // A second wrap later keeps accumulating in u64.
    set(r, "intel-rapl:0", max - 1);
    set(r, "intel-rapl:0", max - 1);
    cpu.energy_j();
    set(r, "intel-rapl:0", 1);
    let e2 = cpu.energy_j().unwrap();
    let expect = 8.0 + (max - 1 - 2_000_000) as f64 * 1e-6 + 2e-6;
    assert!((e2 - expect).abs() < 1e-6, "{e2} vs {expect}");
    // DRAM separately.
    set(r, "intel-rapl:0:1", 1_000_100);
    set(r, "intel-rapl:0/intel-rapl:0:1", 1_000_100);
    assert_eq!(dram.info().kind, ComponentKind::Dram);
    let dj = dram.energy_j().unwrap();
    assert!((dj - 1.0).abs() < 1e-9, "DRAM counted once: {dj}");
}

/// A RAPL read that fails is never 0 J labelled measured: the window that
/// saw it is an estimate (the counter up to its last good read), a warning
/// is raised once, and the next good read catches up what was counted.
#[test]
fn failed_rapl_reads_lower_the_provenance_of_their_windows_only() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    zone(r, "intel-rapl:0", "package-0", 1_000_000, Some(1 << 40));
    let cpu = rapl::discover(r).cpu.unwrap();
    let mut t = Tracker::new(vec![Box::new(cpu)], 0.0);
    t.begin("good");
    set(r, "intel-rapl:0", 3_000_000);
    let w = t.end("good").unwrap();
    assert_eq!(w.provenance, Provenance::Measured);
    assert!((w.total_j - 2.0).abs() < 1e-9);
    assert_eq!(w.components[0].counter_update_s, Some(0.001));
    t.begin("broken");
    std::fs::write(r.join("intel-rapl:0/energy_uj"), "garbage\n").unwrap();
    let w = t.end("broken").unwrap();
    let c = &w.components[0];
    assert_eq!(c.provenance, Provenance::Estimated, "{c:?}");
    assert!(c.read_failures >= 1 && c.joules == 0.0, "{c:?}");
    assert_eq!(t.new_warnings().len(), 1);
    set(r, "intel-rapl:0", 10_000_000);
    t.begin("recovered");
    set(r, "intel-rapl:0", 11_000_000);
    let w = t.end("recovered").unwrap();
    assert_eq!(w.provenance, Provenance::Measured);
    assert!((w.total_j - 1.0).abs() < 1e-9, "{}", w.total_j);
    let total = t.total();
    assert_eq!(
        total.provenance,
        Provenance::Estimated,
        "the run saw a failure"
    );
    assert!((total.total_j - 10.0).abs() < 1e-9, "{}", total.total_j);
}

#[test]
fn rapl_psys_only_and_missing_max_file() {
    let d = tempfile::tempdir().unwrap();
    zone(d.path(), "intel-rapl:0", "psys", 10, Some(1000));
    let found = rapl::discover(d.path());
    assert_eq!(found.cpu.unwrap().info().method, "rapl psys");

    let d = tempfile::tempdir().unwrap();
    zone(d.path(), "intel-rapl:0", "package-0", 10, None);
    let found = rapl::discover(d.path());
    assert!(
        found
            .warnings
            .iter()
            .any(|w| w.contains("max_energy_range_uj")),
        "{:?}",
        found.warnings
    );
    let mut cpu = found.cpu.unwrap();
    set(d.path(), "intel-rapl:0", 4_000_010);
    assert!((cpu.energy_j().unwrap() - 4.0).abs() < 1e-9);

    let empty = tempfile::tempdir().unwrap();
    let found = rapl::discover(empty.path());
    assert!(found.cpu.is_none() && found.dram.is_none());
}

struct DenyEnergy;
impl Fs for DenyEnergy {
    fn read(&self, p: &Path) -> std::io::Result<String> {
        if p.ends_with("energy_uj") {
            Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
        } else {
            RealFs.read(p)
        }
    }
}

#[test]
fn rapl_permission_denied_warns_once_with_the_fix_and_falls_back() {
    let d = tempfile::tempdir().unwrap();
    zone(d.path(), "intel-rapl:0", "package-0", 10, Some(1000));
    zone(d.path(), "intel-rapl:1", "package-1", 10, Some(1000));
    let found = rapl::discover_with(d.path(), Arc::new(DenyEnergy));
    assert!(found.cpu.is_none());
    assert_eq!(found.warnings.len(), 1, "{:?}", found.warnings);
    assert!(found.warnings[0].contains("permission denied") && found.warnings[0].contains("chmod"));
    // The tracker then estimates the CPU, and says so.
    let opts = greentrain_energy::tracker::DetectOptions {
        rapl_root: PathBuf::from("/nonexistent/powercap"),
        nvml: false,
        cuda_visible: None,
        gpus: Default::default(),
        cpu_model: "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz".into(),
        sample_hz: 0.0,
        tracking_mode: Default::default(),
    };
    let t = greentrain_energy::tracker::detect(&opts, None);
    let comps = t.components();
    let cpu = comps.iter().find(|c| c.name == "cpu").unwrap();
    assert_eq!(cpu.provenance, Provenance::Estimated);
    assert!(
        cpu.method.contains("Gold 6248") && cpu.method.contains("150"),
        "{}",
        cpu.method
    );
    assert!(comps
        .iter()
        .any(|c| c.kind == ComponentKind::Ram && c.provenance == Provenance::Estimated));
}

/// A fake NVML: a counter and a power reading the test controls.
#[derive(Clone)]
struct FakeNvml {
    state: Arc<Mutex<(u64, u64)>>, // (energy mJ, power mW)
    has_counter: bool,
}

impl GpuApi for FakeNvml {
    fn driver_version(&mut self) -> Option<String> {
        Some("555.42".into())
    }
    fn devices(&mut self) -> Vec<GpuFacts> {
        (0..2)
            .map(|i| GpuFacts {
                index: i,
                uuid: format!("GPU-000{i}-abcd"),
                name: "Fake H100".into(),
                power_limit_w: Some(700.0),
                pci_bus_id: format!("00000000:{:02X}:00.0", 0x18 + i),
                mig: i == 1,
            })
            .collect()
    }
    fn total_energy_mj(&mut self, _i: u32) -> Option<u64> {
        self.has_counter.then(|| self.state.lock().unwrap().0)
    }
    fn power_mw(&mut self, _i: u32) -> Option<u64> {
        Some(self.state.lock().unwrap().1)
    }
}

/// A fake NVML whose counter reads fail while the flag is set.
struct Flaky(FakeNvml, Arc<Mutex<bool>>);

impl GpuApi for Flaky {
    fn driver_version(&mut self) -> Option<String> {
        self.0.driver_version()
    }
    fn devices(&mut self) -> Vec<GpuFacts> {
        self.0.devices()
    }
    fn total_energy_mj(&mut self, i: u32) -> Option<u64> {
        if *self.1.lock().unwrap() {
            None
        } else {
            self.0.total_energy_mj(i)
        }
    }
    fn power_mw(&mut self, i: u32) -> Option<u64> {
        self.0.power_mw(i)
    }
}

/// CUDA ordinals are not NVML indices: a run's GPU is found by its PCI bus
/// id, whatever the spelling, and what cannot be found is said.
#[test]
fn gpus_are_chosen_by_pci_bus_id_and_mig_is_named() {
    use greentrain_energy::nvml::{parse_bus_id, select, GpuSelect};
    let mut fake = FakeNvml {
        state: Arc::new(Mutex::new((0, 0))),
        has_counter: true,
    };
    let devices = fake.devices();
    assert_eq!(
        parse_bus_id("0000:19:00.0"),
        parse_bus_id("00000000:19:00.0")
    );
    assert_eq!(parse_bus_id("0000:19:00.0"), Some((0, 0x19, 0, 0)));
    assert_eq!(parse_bus_id("junk"), None);
    let (g, w) = select(
        &devices,
        &GpuSelect::PciBusIds(vec!["0000:18:00.0".into()]),
        Some("1"),
    );
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].index, 0, "by bus id, not by CUDA_VISIBLE_DEVICES");
    assert!(w.is_empty(), "{w:?}");
    let (g, w) = select(
        &devices,
        &GpuSelect::PciBusIds(vec!["0000:19:00.0".into()]),
        None,
    );
    assert_eq!(g[0].index, 1);
    assert!(w.iter().any(|w| w.contains("MIG")), "{w:?}");
    let (g, w) = select(
        &devices,
        &GpuSelect::PciBusIds(vec!["0000:AA:00.0".into()]),
        None,
    );
    assert!(g.is_empty() && w[0].contains("0000:AA:00.0"), "{w:?}");
    let (g, w) = select(&devices, &GpuSelect::Visible, Some("MIG-1234"));
    assert!(
        g.is_empty() && w[0].contains("no GPU energy meter"),
        "{w:?}"
    );
    let (g, w) = select(&devices, &GpuSelect::NoGpu, None);
    assert!(g.is_empty() && w.is_empty());
}

#[test]
fn nvml_counter_is_primary_and_integration_cross_checks() {
    let fake = FakeNvml {
        state: Arc::new(Mutex::new((1_000_000, 300_000))),
        has_counter: true,
    };
    let meters = GpuMeter::all(Box::new(fake.clone()), Some("1"));
    assert_eq!(meters.len(), 1, "CUDA_VISIBLE_DEVICES=1 shows one GPU");
    let info = meters[0].info();
    assert_eq!(info.name, "gpu:GPU-0001-abcd");
    assert_eq!(info.provenance, Provenance::Measured);
    assert!(info
        .details
        .iter()
        .any(|(k, v)| k == "power_limit_w" && v == "700"));
    assert!(info
        .details
        .iter()
        .any(|(k, v)| k == "driver_version" && v == "555.42"));
    let mut t = Tracker::new(
        meters
            .into_iter()
            .map(|m| Box::new(m) as Box<dyn Meter>)
            .collect(),
        0.0,
    );
    t.begin("w");
    std::thread::sleep(std::time::Duration::from_millis(200));
    // 300 W for ~0.2 s would be ~60 J; the counter says 61 J.
    fake.state.lock().unwrap().0 += 61_000;
    let w = t.end("w").unwrap();
    let c = &w.components[0];
    assert_eq!(c.provenance, Provenance::Measured);
    assert!((c.joules - 61.0).abs() < 1e-9);
    let ij = c.integrated_j.unwrap();
    assert!(ij > 50.0 && ij < 80.0, "{ij}");

    // 0.2 s is far too short for a counter that moves every 100 ms, and
    // too short to cross-check against a 1 s power average.
    assert_eq!(c.counter_update_s, Some(0.1));
    assert!(c.too_short && !c.cross_check_disagrees, "{c:?}");

    // A counter far from the integrated power is flagged, over a window
    // long enough to cross-check (shortened here from 5 s).
    t.begin("bad");
    std::thread::sleep(std::time::Duration::from_millis(100));
    fake.state.lock().unwrap().0 += 100_000;
    let w = t.end("bad").unwrap();
    assert!(
        !w.components[0].cross_check_disagrees,
        "default: 5 s windows and up"
    );
    t.set_cross_check_min_s(0.05);
    t.begin("bad");
    std::thread::sleep(std::time::Duration::from_millis(100));
    fake.state.lock().unwrap().0 += 100_000;
    let w = t.end("bad").unwrap();
    assert!(w.components[0].cross_check_disagrees);

    // A failed counter read never becomes measured joules: the window
    // falls back to integrated power and says so, and a warning is raised
    // once.
    let flaky = FakeNvml {
        state: Arc::new(Mutex::new((5_000_000, 200_000))),
        has_counter: true,
    };
    let failing = Arc::new(Mutex::new(false));
    let m = GpuMeter::all(Box::new(Flaky(flaky.clone(), failing.clone())), Some("0"));
    let mut t = Tracker::new(
        m.into_iter()
            .map(|m| Box::new(m) as Box<dyn Meter>)
            .collect(),
        0.0,
    );
    t.begin("ok");
    flaky.state.lock().unwrap().0 += 1_000;
    let w = t.end("ok").unwrap();
    assert_eq!(
        (w.provenance, w.components[0].read_failures),
        (Provenance::Measured, 0)
    );
    *failing.lock().unwrap() = true;
    t.begin("broken");
    std::thread::sleep(std::time::Duration::from_millis(50));
    flaky.state.lock().unwrap().0 += 999_000;
    let w = t.end("broken").unwrap();
    let c = &w.components[0];
    assert_eq!(c.provenance, Provenance::Integrated, "{c:?}");
    assert!(
        c.read_failures >= 1 && c.joules > 0.0 && c.joules < 100.0,
        "{c:?}"
    );
    assert_eq!(t.new_warnings().len(), 1);
    t.begin("still broken");
    let w = t.end("still broken").unwrap();
    assert_eq!(w.components[0].provenance, Provenance::Integrated);
    assert!(t.new_warnings().is_empty(), "warned once");
    assert_eq!(t.warnings.len(), 1);

    // Before Volta: no counter, integration only.
    let old = FakeNvml {
        state: Arc::new(Mutex::new((0, 100_000))),
        has_counter: false,
    };
    let m = GpuMeter::all(Box::new(old), None);
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].info().provenance, Provenance::Integrated);
    let mut t = Tracker::new(
        m.into_iter()
            .map(|m| Box::new(m) as Box<dyn Meter>)
            .collect(),
        0.0,
    );
    t.begin("w");
    std::thread::sleep(std::time::Duration::from_millis(100));
    let w = t.end("w").unwrap();
    assert_eq!(w.provenance, Provenance::Integrated);
    assert!(w.components[0].joules > 5.0, "100 W for 0.1 s");
}

#[test]
fn missing_nvml_library_is_one_line_not_a_crash() {
    let opts = greentrain_energy::tracker::DetectOptions {
        rapl_root: PathBuf::from("/nonexistent"),
        nvml: true,
        cuda_visible: None,
        gpus: Default::default(),
        cpu_model: "x".into(),
        sample_hz: 0.0,
        tracking_mode: Default::default(),
    };
    let t = greentrain_energy::tracker::detect(&opts, None);
    let gpus: Vec<_> = t
        .components()
        .into_iter()
        .filter(|c| c.kind == ComponentKind::Gpu)
        .collect();
    if Path::new("/proc/driver/nvidia/version").exists() {
        // A driver: the GPUs are metered by NVML, never estimated.
        assert!(!gpus.is_empty(), "{:?}", t.warnings);
        assert!(gpus.iter().all(|c| c.provenance != Provenance::Estimated));
    } else {
        // No driver: one warning, and no GPU pretended.
        assert!(
            t.warnings
                .iter()
                .any(|w| w.contains("NVML") || w.contains("nvml")),
            "{:?}",
            t.warnings
        );
        assert!(gpus.is_empty(), "{gpus:?}");
    }
}

#[test]
fn windows_nest_and_sum() {
    let mut t = Tracker::new(
        vec![Box::new(greentrain_energy::estimate::RamEstimate::new(8.0))],
        0.0,
    );
    t.begin("outer");
    t.begin("inner");
    std::thread::sleep(std::time::Duration::from_millis(50));
    let inner = t.end("inner").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let outer = t.end("outer").unwrap();
    assert!(outer.total_j > inner.total_j);
    // 3 W for the window's duration.
    assert!(
        (inner.total_j - 3.0 * inner.duration_s).abs() < 0.02,
        "{inner:?}"
    );
    assert!(t.end("never").is_none());
    assert_eq!(outer.provenance, Provenance::Estimated);
}

#[test]
fn tdp_lookup() {
    assert_eq!(
        greentrain_energy::estimate::lookup_tdp("AMD EPYC 7B13 64-Core Processor").map(|x| x.0),
        None
    );
    let (name, tdp) =
        greentrain_energy::estimate::lookup_tdp("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz")
            .unwrap();
    assert!(name.contains("6248"), "{name}");
    assert_eq!(tdp, 150.0);
    assert!(
        greentrain_energy::estimate::lookup_tdp("AMD EPYC").is_none(),
        "a family name alone is not enough"
    );
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn carbon_integration_over_a_time_series_matches_hand_computation() {
    let d = tempfile::tempdir().unwrap();
    let f = write(
        d.path(),
        "i.csv",
        "timestamp,g_per_kwh\n2026-01-01T00:00:00Z,100\n2026-01-01T01:00:00Z,300\n2026-01-01T02:00:00Z,200\n",
    );
    let s = Series::load(&f).unwrap();
    assert_eq!(s.step_s, 3600.0);
    let t0 = carbon::parse_time("2026-01-01T00:30:00Z").unwrap();
    // 1 kWh between 00:30 and 01:00 (100 g/kWh), 2 kWh between 01:00 and 01:30 (300 g/kWh).
    let timeline = vec![(t0, 0.0), (t0 + 1800.0, 3.6e6), (t0 + 3600.0, 3.0 * 3.6e6)];
    let rec = Intensity::Series(s).account(&timeline, 1.5);
    let g = 1.0 * 100.0 + 2.0 * 300.0;
    assert!((rec.co2_g - g * 1.5).abs() < 1e-9, "{rec:?}");
    assert!((rec.intensity_g_per_kwh - g / 3.0).abs() < 1e-9);
    assert_eq!(rec.uncovered_s, Some(0.0));
    assert!(
        rec.source_detail.contains("2026-01-01T00:00:00Z"),
        "{}",
        rec.source_detail
    );

    // Constant, zone and default.
    let tl = vec![(0.0, 0.0), (10.0, 7.2e6)];
    assert!((Intensity::Constant(50.0).account(&tl, 1.0).co2_g - 100.0).abs() < 1e-9);
    let fra = Intensity::resolve(None, None, Some("FRA")).unwrap();
    let r = fra.account(&tl, 1.0);
    assert!(
        r.source == "zone:FRA" && r.source_detail.contains("2023"),
        "{r:?}"
    );
    assert!((r.co2_g - 2.0 * 56.039).abs() < 1e-6);
    let r = Intensity::resolve(None, None, Some("gcp:europe-west1"))
        .unwrap()
        .account(&tl, 1.0);
    assert!((r.co2_g - 244.0).abs() < 1e-9, "{r:?}");
    let r = Intensity::WorldDefault.account(&tl, 1.0);
    assert!(r.is_default && (r.co2_g - 950.0).abs() < 1e-9);
    // final co2 = kWh x PUE x intensity, exactly as the record states it.
    let r = Intensity::Constant(475.0).account(&tl, 1.2);
    assert!((r.co2_g - 2.0 * 1.2 * r.intensity_g_per_kwh).abs() < 1e-9);
}

#[test]
fn electricity_maps_both_headers_and_uk_json() {
    let d = tempfile::tempdir().unwrap();
    for header in [
        "Carbon Intensity gCO₂eq/kWh (direct)",
        "Carbon intensity gCO₂eq/kWh (direct)",
    ] {
        let lca = if header.starts_with("Carbon Intensity") {
            "Carbon Intensity gCO₂eq/kWh (LCA)"
        } else {
            "Carbon intensity gCO₂eq/kWh (Life cycle)"
        };
        let f = write(
            d.path(),
            "em.csv",
            &format!(
                "Datetime (UTC),Country,Zone Name,Zone Id,{header},{lca},Low Carbon Percentage\n2024-01-01 00:00:00,France,France,FR,30.5,45.1,95\n2024-01-01 01:00:00,France,France,FR,32.0,47.0,94\n"
            ),
        );
        let s = Series::load(&f).unwrap();
        assert_eq!(s.format, "electricity-maps");
        assert_eq!(s.points, vec![(1704067200.0, 30.5), (1704070800.0, 32.0)]);
    }
    let f = write(
        d.path(),
        "uk.json",
        r#"{"data":[{"from":"2024-01-01T00:30Z","to":"2024-01-01T01:00Z","intensity":{"forecast":120,"actual":null,"index":"low"}},{"from":"2024-01-01T00:00Z","to":"2024-01-01T00:30Z","intensity":{"forecast":110,"actual":100,"index":"low"}}]}"#,
    );
    let s = Series::load(&f).unwrap();
    assert_eq!(s.points, vec![(1704067200.0, 100.0), (1704069000.0, 120.0)]);
    let f = write(
        d.path(),
        "ukr.json",
        r#"{"data":[{"regionid":13,"shortname":"London","data":[{"from":"2024-01-01T00:00Z","to":"2024-01-01T00:30Z","intensity":{"forecast":90,"index":"low"}}]}]}"#,
    );
    assert_eq!(Series::load(&f).unwrap().points, vec![(1704067200.0, 90.0)]);
}

#[test]
fn broken_intensity_files_name_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let cases = [
        (
            "timestamp,g_per_kwh\n2024-01-01T00:00:00Z,1\nyesterday,2\n",
            "line 3",
            "bad timestamp",
        ),
        (
            "time,value\n2024-01-01T00:00:00Z,1\n",
            "line 1",
            "missing column",
        ),
        (
            "timestamp,g_per_kwh\n2024-01-01T01:00:00Z,1\n2024-01-01T00:00:00Z,2\n",
            "line 3",
            "sorted",
        ),
        (
            "timestamp,g_per_kwh\n2024-01-01T00:00:00Z,abc\n",
            "line 2",
            "bad intensity",
        ),
        ("timestamp,g_per_kwh\n", "", "no data rows"),
        ("{\"data\": 5}", "", "missing column"),
    ];
    for (i, (text, line, what)) in cases.iter().enumerate() {
        let f = write(d.path(), &format!("bad{i}.csv"), text);
        let e = Series::load(&f).unwrap_err().to_string();
        assert!(
            e.contains(&format!("bad{i}.csv")) && e.contains(line) && e.contains(what),
            "{e}"
        );
    }
    let e = carbon::zone("XYZ").unwrap_err().to_string();
    assert!(
        e.contains("unknown carbon zone") && e.contains("FRA"),
        "{e}"
    );
}

#[test]
fn uncovered_part_of_a_run_is_reported() {
    let d = tempfile::tempdir().unwrap();
    let f = write(
        d.path(),
        "s.csv",
        "timestamp,g_per_kwh\n2024-01-01T00:00:00Z,100\n2024-01-01T01:00:00Z,200\n",
    );
    let s = Series::load(&f).unwrap();
    let t = carbon::parse_time("2024-01-01T01:30:00Z").unwrap();
    // The series covers up to 02:00; a run from 01:30 to 02:30 has 1800 s uncovered.
    let rec = Intensity::Series(s).account(&[(t, 0.0), (t + 3600.0, 3.6e6)], 1.0);
    assert_eq!(rec.uncovered_s, Some(1800.0));
    assert!((rec.co2_g - 200.0).abs() < 1e-9, "held at the last value");
}

#[test]
fn time_parsing() {
    assert_eq!(carbon::parse_time("1970-01-01T00:00:00Z"), Some(0.0));
    assert_eq!(
        carbon::parse_time("2024-01-01T01:00:00+01:00"),
        Some(1704067200.0)
    );
    assert_eq!(carbon::parse_time("2024-02-29 12:00"), Some(1709208000.0));
    assert_eq!(
        carbon::parse_time("2024-01-01T00:00:00.5Z"),
        Some(1704067200.5)
    );
    assert_eq!(carbon::parse_time("2024-13-01T00:00:00Z"), None);
    assert_eq!(carbon::parse_time("nonsense"), None);
    // Non-ASCII where digits or an offset should be: None, not a panic.
    for bad in [
        "2024-01-01T01:0é",
        "2024-01-01T01:00é00",
        "2024-01-01T01:00+é:00",
        "2024-01-01T01:00+0é0",
        "2024-01-01T01:00+01:é",
        "２０２４-01-01T01:00:00Z",
    ] {
        assert_eq!(carbon::parse_time(bad), None, "{bad}");
    }
    assert_eq!(carbon::format_time(1704067200.0), "2024-01-01T00:00:00Z");
}

#[test]
fn emissions_csv_has_codecarbons_exact_header() {
    let expected = "timestamp,project_name,run_id,experiment_id,duration,emissions,emissions_rate,cpu_power,gpu_power,ram_power,cpu_energy,gpu_energy,ram_energy,energy_consumed,water_consumed,country_name,country_iso_code,region,cloud_provider,cloud_region,os,python_version,codecarbon_version,cpu_count,cpu_model,gpu_count,gpu_model,longitude,latitude,ram_total_size,tracking_mode,cpu_utilization_percent,gpu_utilization_percent,ram_utilization_percent,ram_used_gb,on_cloud,pue,wue";
    assert_eq!(COLUMNS.join(","), expected);
    let row = EmissionsRow {
        duration: 10.0,
        emissions: 0.002,
        cpu_energy: 0.001,
        ram_energy: 0.0005,
        pue: 1.0,
        ..Default::default()
    };
    let csv = row.to_csv();
    let mut lines = csv.lines();
    assert_eq!(lines.next().unwrap(), expected);
    let fields: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(fields.len(), COLUMNS.len());
    assert_eq!(fields[6], "0.0002", "emissions_rate = kg / s");
    assert_eq!(
        fields[13], "0.0015",
        "energy_consumed = cpu + gpu + ram kWh"
    );
    assert_eq!(fields[35], "N");
}

#[test]
fn prediction_and_budgets() {
    let p = budget::predict(&[10.0, 12.0], &[3.6e6, 3.6e6 * 1.2], 10, 100.0, 1.0);
    assert!((p.time_s.mean - 22.0 - 8.0 * 11.0).abs() < 1e-9);
    assert!((p.energy_kwh.mean - (2.2 + 8.0 * 1.1)).abs() < 1e-9);
    assert!(p.energy_kwh.low < p.energy_kwh.mean && p.energy_kwh.high > p.energy_kwh.mean);
    assert!((p.co2_g.mean - p.energy_kwh.mean * 100.0).abs() < 1e-9);
    assert_eq!(
        budget::check(2.2, 220.0, Some(&p), Some(100.0), None),
        budget::BudgetVerdict::Ok
    );
    assert!(
        matches!(budget::check(2.2, 220.0, Some(&p), Some(5.0), None), budget::BudgetVerdict::Stop(m) if m.contains("predicted"))
    );
    assert!(
        matches!(budget::check(2.2, 220.0, None, None, Some(200.0)), budget::BudgetVerdict::Stop(m) if m.contains("carbon budget reached"))
    );
}

#[test]
fn process_mode_warns_that_rapl_is_whole_package_and_estimates_ram_per_process() {
    let tree = tempfile::tempdir().unwrap();
    zone(
        tree.path(),
        "intel-rapl:0",
        "package-0",
        1000,
        Some(262143328850),
    );
    let opts = |mode| greentrain_energy::tracker::DetectOptions {
        rapl_root: tree.path().to_path_buf(),
        nvml: false,
        cuda_visible: None,
        gpus: Default::default(),
        cpu_model: "x".into(),
        sample_hz: 0.0,
        tracking_mode: mode,
    };
    use greentrain_energy::estimate::TrackingMode;
    let t = greentrain_energy::tracker::detect(&opts(TrackingMode::Process), None);
    assert!(
        t.warnings
            .iter()
            .any(|w| w.contains("tracking_mode process") && w.contains("whole CPU package")),
        "{:?}",
        t.warnings
    );
    let comps = t.components();
    let cpu = comps.iter().find(|c| c.name == "cpu").unwrap();
    assert_eq!(cpu.provenance, Provenance::Measured);
    let ram = comps.iter().find(|c| c.name == "ram").unwrap();
    assert!(ram.method.contains("resident memory"), "{}", ram.method);
    let t = greentrain_energy::tracker::detect(&opts(TrackingMode::Machine), None);
    assert!(!t.warnings.iter().any(|w| w.contains("tracking_mode")));
    let ram = t
        .components()
        .into_iter()
        .find(|c| c.name == "ram")
        .unwrap();
    assert!(!ram.method.contains("resident memory"), "{}", ram.method);
}
