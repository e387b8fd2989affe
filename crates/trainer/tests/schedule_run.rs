//! A run following a carbon-aware plan in simulated time: it waits for the
//! first slot, checkpoints and pauses at the slot's end, resumes at the next
//! slot, ends with the same metrics as a run without a plan, and records the
//! times it ran and the forecast intensity over them.

use greentrain_energy::carbon::{format_time, parse_time, Series};
use greentrain_energy::schedule::{mean_over, Plan, SimClock, Slot};
use greentrain_trainer::follow::FollowPlan;
use greentrain_trainer::train::{train_with, Hooks};
use greentrain_trainer::{config, DeviceSpec, TrainRequest};
use std::path::PathBuf;
use std::sync::Arc;

fn request(out: &std::path::Path) -> TrainRequest {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/digits_mlp.toml"
    ));
    TrainRequest {
        config: config::load(&path, &["train.epochs=3".into()]).unwrap(),
        device: DeviceSpec::Cpu,
        out_dir: out.to_path_buf(),
        quiet: true,
    }
}

#[test]
fn a_scheduled_run_waits_pauses_resumes_and_records_what_it_ran_under() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = parse_time("2026-12-01T00:00:00Z").unwrap();
    // Forecast: 100 g/kWh in hour 0 and 1, 300 in hour 2, 50 afterwards.
    let fc = dir.path().join("forecast.csv");
    let mut csv = String::from("timestamp,g_per_kwh\n");
    for h in 0..48 {
        let g = match h {
            0 | 1 => 100,
            2 => 300,
            _ => 50,
        };
        csv.push_str(&format!("{},{g}\n", format_time(t0 + h as f64 * 3600.0)));
    }
    std::fs::write(&fc, csv).unwrap();
    // Slot 1 opens 10 minutes in and holds 50 steps of 60 simulated
    // seconds; slot 2 opens at 03:00 and is long enough for the rest.
    let slots = vec![
        Slot {
            start: format_time(t0 + 600.0),
            end: format_time(t0 + 600.0 + 50.0 * 60.0),
        },
        Slot {
            start: format_time(t0 + 3.0 * 3600.0),
            end: format_time(t0 + 40.0 * 3600.0),
        },
    ];
    let plan = Plan {
        mode: "pause_resume".into(),
        slots: slots.clone(),
        expected_g_per_kwh: 60.0,
        run_now_g_per_kwh: 100.0,
        duration_s: 3600.0,
        earliest_start: format_time(t0),
        finish_by: format_time(t0 + 40.0 * 3600.0),
        forecast: "forecast.csv".into(),
    };
    let plan_path = dir.path().join("plan.json");
    std::fs::write(&plan_path, serde_json::to_string(&plan).unwrap()).unwrap();
    let clock = Arc::new(SimClock::new(t0, 60.0));
    let (fp, warning) = FollowPlan::load(&plan_path, clock).unwrap();
    assert!(warning.is_none(), "{warning:?}");

    let planned = train_with(
        request(&dir.path().join("planned")),
        Hooks {
            schedule: Some(fp),
            ..Default::default()
        },
    )
    .unwrap();
    let plain = greentrain_trainer::train(request(&dir.path().join("plain"))).unwrap();

    assert_eq!(planned.status, "completed");
    let s = planned.record.schedule.clone().expect("schedule record");
    assert_eq!(s.mode, "pause_resume");
    assert_eq!(s.planned, slots);
    assert_eq!(s.pauses, 1, "{s:?}");
    assert_eq!(s.ran.len(), 2, "{s:?}");
    // It waited for slot 1 and did not start before it.
    assert!(s.waited_s >= 600.0, "{s:?}");
    let ran: Vec<(f64, f64)> = s
        .ran
        .iter()
        .map(|x| (parse_time(&x.start).unwrap(), parse_time(&x.end).unwrap()))
        .collect();
    assert!(
        ran[0].0 >= t0 + 600.0 && ran[0].1 <= t0 + 600.0 + 3000.0,
        "{ran:?}"
    );
    assert!(ran[1].0 >= t0 + 3.0 * 3600.0, "{ran:?}");
    assert_eq!(s.overrun_s, 0.0);
    // The intensity it ran under is the forecast over those spans: 100 in
    // slot 1, 50 in slot 2, so strictly between the two.
    let series = Series::load(&fc).unwrap();
    let g = s.forecast_g_per_kwh.unwrap();
    assert_eq!(g, mean_over(&series, &ran));
    assert!(g > 50.0 && g < 100.0, "{g}");
    // Pausing changes nothing in the training itself.
    let m = |r: &greentrain_trainer::record::RunRecord| -> Vec<(u64, u64)> {
        r.epochs
            .iter()
            .map(|e| (e.train_loss.to_bits(), e.test_accuracy.to_bits()))
            .collect()
    };
    assert_eq!(m(&planned.record), m(&plain.record));
    assert!(planned
        .run_dir
        .join(greentrain_trainer::checkpoint::FILE)
        .exists());
    // Waiting has windows of its own, is reported apart and is in neither
    // the totals nor the epochs; an epoch cut by a pause keeps the energy
    // from before the pause (both of its training windows count).
    let e = planned.record.energy.as_ref().unwrap();
    let waits: Vec<_> = e
        .windows
        .iter()
        .filter(|w| w.name.starts_with("wait/"))
        .collect();
    assert_eq!(waits.len(), 2, "the first slot, and the pause");
    let waiting = e.waiting.as_ref().expect("waiting reported");
    let wait_j: f64 = waits.iter().map(|w| w.total_j).sum();
    assert!((waiting.joules - wait_j).abs() < 1e-9);
    let comps: f64 = e.components.iter().map(|c| c.joules).sum();
    assert!((e.total_j - comps).abs() < 1e-9);
    for ep in &planned.record.epochs {
        let of = |prefix: &str| -> f64 {
            let name = format!("{prefix}/epoch-{}", ep.epoch);
            e.windows
                .iter()
                .filter(|w| w.name == name)
                .map(|w| w.total_j)
                .sum()
        };
        let want = of("train") + of("eval");
        let got = ep.energy_j.unwrap();
        assert!(
            (got - want).abs() <= 1e-9 * want.max(1.0),
            "epoch {}: {got} vs {want}",
            ep.epoch
        );
    }
    let train_windows = e
        .windows
        .iter()
        .filter(|w| w.name.starts_with("train/"))
        .count();
    assert_eq!(
        train_windows, 5,
        "3 epochs; the wait for the first slot and the pause each cut one"
    );
}

#[test]
fn a_plan_that_is_not_json_or_has_overlapping_slots_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("plan.json");
    std::fs::write(&p, "not json").unwrap();
    let clock = Arc::new(SimClock::new(0.0, 1.0));
    let e = FollowPlan::load(&p, clock.clone()).unwrap_err().to_string();
    assert!(
        e.contains("plan.json") && e.contains("greentrain schedule --json"),
        "{e}"
    );
    let plan = serde_json::json!({
        "mode": "pause_resume",
        "slots": [
            {"start": "2026-12-01T02:00:00Z", "end": "2026-12-01T04:00:00Z"},
            {"start": "2026-12-01T03:00:00Z", "end": "2026-12-01T05:00:00Z"}
        ],
        "expected_g_per_kwh": 1.0, "run_now_g_per_kwh": 2.0, "duration_s": 3600.0,
        "earliest_start": "2026-12-01T00:00:00Z", "finish_by": "2026-12-02T00:00:00Z",
        "forecast": "missing.csv"
    });
    std::fs::write(&p, plan.to_string()).unwrap();
    let e = FollowPlan::load(&p, clock).unwrap_err().to_string();
    assert!(e.contains("overlap"), "{e}");
}
