//! Scheduling on synthetic step traces whose optima are worked out by hand.

use greentrain_energy::carbon::{parse_time, Series};
use greentrain_energy::schedule::{
    flexible_start, integral, parse_duration, pause_resume, Clock, ScheduleError, SimClock,
};
use std::path::PathBuf;

const H: f64 = 3600.0;

fn t0() -> f64 {
    parse_time("2026-12-01T00:00:00Z").unwrap()
}

/// Hourly values from 2026-12-01T00:00Z.
fn hourly(v: &[f64]) -> Series {
    Series {
        points: v
            .iter()
            .enumerate()
            .map(|(i, &g)| (t0() + i as f64 * H, g))
            .collect(),
        step_s: H,
        path: PathBuf::from("synthetic.csv"),
        format: "timestamp,g_per_kwh".into(),
    }
}

fn hours(s: &str) -> f64 {
    (parse_time(s).unwrap() - t0()) / H
}

#[test]
fn durations_parse_with_units_and_bad_ones_are_refused() {
    assert_eq!(parse_duration("3h").unwrap(), 3.0 * H);
    assert_eq!(parse_duration("1h30m").unwrap(), 5400.0);
    assert_eq!(parse_duration("2d").unwrap(), 48.0 * H);
    assert_eq!(parse_duration("1.5h").unwrap(), 5400.0);
    assert_eq!(parse_duration("45s").unwrap(), 45.0);
    for bad in ["3", "h", "3x", "", "0h", "-1h"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_integral_of_a_step_trace_is_exact() {
    let s = hourly(&[5.0, 4.0, 3.0]);
    assert_eq!(integral(&s, t0(), t0() + 3.0 * H), 12.0 * H);
    // Half of hour 0 and half of hour 1.
    assert_eq!(integral(&s, t0() + 0.5 * H, t0() + 1.5 * H), 4.5 * H);
}

#[test]
fn flexible_start_finds_the_cleanest_contiguous_window() {
    // 2-hour job, 8-hour window. Means by whole-hour start: 4.5, 3.5, 2, 1.5,
    // 4, 3.5, 1 -> start at 06:00 with a mean of 1 (half-hour starts are
    // never better on a step trace).
    let s = hourly(&[5.0, 4.0, 3.0, 1.0, 2.0, 6.0, 1.0, 1.0, 9.0]);
    let p = flexible_start(&s, t0(), 2.0 * H, 8.0 * H).unwrap();
    assert_eq!(p.mode, "flexible_start");
    assert_eq!(p.slots.len(), 1);
    assert_eq!(hours(&p.slots[0].start), 6.0);
    assert_eq!(hours(&p.slots[0].end), 8.0);
    assert_eq!(p.expected_g_per_kwh, 1.0);
    assert_eq!(p.run_now_g_per_kwh, 4.5);
    // A start off the hour grid: from 00:30, the first candidate window
    // [00:30, 02:30) has mean (0.5x5 + 4 + 0.5x3)/2 = 4.
    let p = flexible_start(&s, t0() + 0.5 * H, 2.0 * H, 2.0 * H).unwrap();
    assert_eq!(p.expected_g_per_kwh, 4.0);
    assert_eq!(hours(&p.slots[0].start), 0.5);
}

#[test]
fn flexible_start_ties_go_to_the_earliest_start() {
    let s = hourly(&[2.0, 1.0, 1.0, 2.0, 1.0, 1.0, 2.0]);
    let p = flexible_start(&s, t0(), 2.0 * H, 7.0 * H).unwrap();
    assert_eq!(hours(&p.slots[0].start), 1.0);
    assert_eq!(p.expected_g_per_kwh, 1.0);
}

#[test]
fn pause_resume_takes_the_cleanest_slots_before_the_deadline() {
    let s = hourly(&[5.0, 4.0, 3.0, 1.0, 2.0, 6.0, 1.0, 1.0, 9.0]);
    // 3 hours by 08:00: the three hours at 1 (03:00, 06:00, 07:00).
    let p = pause_resume(&s, t0(), 3.0 * H, 8.0 * H).unwrap();
    assert_eq!(p.mode, "pause_resume");
    let spans: Vec<(f64, f64)> = p
        .slots
        .iter()
        .map(|x| (hours(&x.start), hours(&x.end)))
        .collect();
    assert_eq!(spans, vec![(3.0, 4.0), (6.0, 8.0)]);
    assert_eq!(p.expected_g_per_kwh, 1.0);
    assert_eq!(p.run_now_g_per_kwh, 4.0);
    // 4.5 hours: the three 1s, the 2 at 04:00 (merging 03:00-05:00), then
    // half of the 3 at 02:00: mean (3x1 + 2 + 0.5x3)/4.5.
    let p = pause_resume(&s, t0(), 4.5 * H, 8.0 * H).unwrap();
    let spans: Vec<(f64, f64)> = p
        .slots
        .iter()
        .map(|x| (hours(&x.start), hours(&x.end)))
        .collect();
    assert_eq!(spans, vec![(2.0, 2.5), (3.0, 5.0), (6.0, 8.0)]);
    assert!((p.expected_g_per_kwh - 6.5 / 4.5).abs() < 1e-12);
    // Never worse than flexible start, which is one of its options.
    let f = flexible_start(&s, t0(), 4.5 * H, 8.0 * H).unwrap();
    assert!(p.expected_g_per_kwh <= f.expected_g_per_kwh);
}

#[test]
fn bad_requests_get_clear_errors() {
    let s = hourly(&[5.0, 4.0, 3.0, 1.0]);
    let e = flexible_start(&s, t0(), 2.0 * H, 8.0 * H).unwrap_err();
    assert!(matches!(e, ScheduleError::NotCovered { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("synthetic.csv")
            && msg.contains("2026-12-01T04:00:00Z")
            && msg.contains("2026-12-01T08:00:00Z"),
        "{msg}"
    );
    let e = pause_resume(&s, t0(), 3.0 * H, 2.0 * H).unwrap_err();
    assert!(
        matches!(e, ScheduleError::TooShort { .. }) && e.to_string().contains("--deadline"),
        "{e}"
    );
    let e = flexible_start(&s, t0(), 3.0 * H, 2.0 * H).unwrap_err();
    assert!(e.to_string().contains("--window"), "{e}");
    // A forecast that starts after the earliest start.
    let e = flexible_start(&s, t0() - H, 1.0 * H, 2.0 * H).unwrap_err();
    assert!(matches!(e, ScheduleError::NotCovered { .. }), "{e}");
}

#[test]
fn unsorted_or_repeated_forecast_rows_are_refused_with_their_line() {
    let dir = std::env::temp_dir();
    for (name, body) in [
        (
            "unsorted",
            "timestamp,g_per_kwh\n2026-12-01T01:00:00Z,3\n2026-12-01T00:00:00Z,4\n",
        ),
        (
            "repeated",
            "timestamp,g_per_kwh\n2026-12-01T00:00:00Z,3\n2026-12-01T00:00:00Z,4\n",
        ),
    ] {
        let p = dir.join(format!("gt-forecast-{name}-{}.csv", std::process::id()));
        std::fs::write(&p, body).unwrap();
        let e = Series::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("line 3") && e.contains("sorted and unique"),
            "{e}"
        );
        std::fs::remove_file(&p).unwrap();
    }
}

#[test]
fn the_simulated_clock_ticks_and_jumps() {
    let c = SimClock::new(100.0, 10.0);
    assert_eq!(c.now(), 100.0);
    assert_eq!(c.now(), 110.0);
    c.sleep_until(500.0);
    assert_eq!(c.now(), 500.0);
    c.sleep_until(10.0);
    assert_eq!(c.now(), 510.0);
}

/// The case: a 10 g/kWh row, then 12 hours with no rows. A plan in
/// the hole is refused (it would be 12 hours "at 10 g/kWh"), a window
/// outside it is planned, and a run inside it counts the hole as uncovered.
#[test]
fn a_hole_in_the_forecast_is_not_filled_with_the_row_before_it() {
    let mut s = hourly(&[300.0, 300.0, 300.0, 10.0]);
    let after = t0() + 16.0 * H;
    s.points
        .extend([(after, 300.0), (after + H, 300.0), (after + 2.0 * H, 300.0)]);
    assert_eq!(s.gaps().collect::<Vec<_>>(), vec![(t0() + 4.0 * H, after)]);
    let e = flexible_start(&s, t0(), 2.0 * H, 18.0 * H).unwrap_err();
    assert!(matches!(e, ScheduleError::Gap { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("2026-12-01T04:00:00Z") && msg.contains("2026-12-01T16:00:00Z"),
        "{msg}"
    );
    let e = pause_resume(&s, t0(), 2.0 * H, 18.0 * H).unwrap_err();
    assert!(matches!(e, ScheduleError::Gap { .. }), "{e}");
    // Before the hole: planned as usual.
    let p = flexible_start(&s, t0(), 1.0 * H, 4.0 * H).unwrap();
    assert_eq!(p.expected_g_per_kwh, 10.0);
    // Two hours of training, one in the hole: one hour uncovered.
    assert_eq!(s.uncovered_s(t0() + 3.0 * H, t0() + 5.0 * H), H);
    // Rows two steps apart are not a hole.
    let mut t = hourly(&[1.0, 2.0]);
    t.points.push((t0() + 3.0 * H, 3.0));
    t.points.push((t0() + 4.0 * H, 4.0));
    assert_eq!(t.gaps().count(), 0);
}
