//! Carbon-aware scheduling on an intensity forecast: Flexible Start (one
//! contiguous run, started when the mean intensity over the job is lowest)
//! and Pause-and-Resume (run in the cleanest slots that still finish by the
//! deadline). The forecast is a step function (each point holds until the
//! next), so both optima are found exactly, not by sampling start times.
//!
//! Times are unix seconds inside, RFC 3339 UTC outside. The [`Clock`] is
//! injectable so that a trainer following a plan can be tested in simulated
//! time.

use crate::carbon::{format_time, parse_time, Series};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    /// The forecast does not cover the span the plan needs.
    #[error("the forecast {path} covers {have_from} to {have_to}, but the plan needs {need_from} to {need_to}: get a longer forecast or shorten --window/--deadline")]
    NotCovered {
        /// Forecast file.
        path: String,
        /// First covered instant.
        have_from: String,
        /// End of the last point's interval.
        have_to: String,
        /// Needed span.
        need_from: String,
        /// Needed span.
        need_to: String,
    },
    /// The forecast has a hole inside the span the plan needs.
    #[error("the forecast {path} has no rows from {from} to {to} (its rows are usually {step} apart): a plan there would count the hole at the value before it. Fill the gap, or choose a window outside it")]
    Gap {
        /// Forecast file.
        path: String,
        /// Start of the hole (the end of the last row's usual interval).
        from: String,
        /// End of the hole (the next row).
        to: String,
        /// The file's usual step.
        step: String,
    },
    /// The job does not fit.
    #[error("{what} ({limit}) is shorter than the job ({job}): the job cannot finish in time")]
    TooShort {
        /// `--window` or `--deadline`.
        what: String,
        /// Its length.
        limit: String,
        /// The job's duration.
        job: String,
    },
    /// A duration or time that does not parse, or is not positive.
    #[error("{0}")]
    Input(String),
}

/// A span of time, in RFC 3339 UTC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    /// Start (inclusive).
    pub start: String,
    /// End (exclusive).
    pub end: String,
}

impl Slot {
    fn new(a: f64, b: f64) -> Self {
        Slot {
            start: format_time(a),
            end: format_time(b),
        }
    }

    /// (start, end) in unix seconds.
    pub fn span(&self) -> Result<(f64, f64), ScheduleError> {
        let p = |s: &str| {
            parse_time(s)
                .ok_or_else(|| ScheduleError::Input(format!("'{s}' is not an RFC 3339 time")))
        };
        let (a, b) = (p(&self.start)?, p(&self.end)?);
        if b <= a {
            return Err(ScheduleError::Input(format!(
                "slot {} to {} ends before it starts",
                self.start, self.end
            )));
        }
        Ok((a, b))
    }
}

/// A plan, as `greentrain schedule --json` prints it and `train --schedule` follows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// `flexible_start` or `pause_resume`.
    pub mode: String,
    /// When to run, sorted, not overlapping.
    pub slots: Vec<Slot>,
    /// Time-weighted mean forecast intensity over the slots, gCO2eq/kWh.
    pub expected_g_per_kwh: f64,
    /// The same for starting at the earliest start and running straight through.
    pub run_now_g_per_kwh: f64,
    /// The job's duration, s.
    pub duration_s: f64,
    /// Earliest start.
    pub earliest_start: String,
    /// Latest end (window or deadline).
    pub finish_by: String,
    /// The forecast file.
    pub forecast: String,
}

impl Plan {
    /// Slots as unix-second spans.
    pub fn spans(&self) -> Result<Vec<(f64, f64)>, ScheduleError> {
        let v: Vec<(f64, f64)> = self
            .slots
            .iter()
            .map(Slot::span)
            .collect::<Result<_, _>>()?;
        for w in v.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(ScheduleError::Input(
                    "the plan's slots overlap or are not sorted".into(),
                ));
            }
        }
        if v.is_empty() {
            return Err(ScheduleError::Input("the plan has no slots".into()));
        }
        Ok(v)
    }

    /// The grams a job of `kwh` emits on this plan and starting now, and
    /// the difference: `(planned, now, saved)`.
    pub fn grams(&self, kwh: f64) -> (f64, f64, f64) {
        let planned = kwh * self.expected_g_per_kwh;
        let now = kwh * self.run_now_g_per_kwh;
        (planned, now, now - planned)
    }

    /// Percent of the run-now intensity that the plan avoids.
    pub fn saving_pct(&self) -> f64 {
        if self.run_now_g_per_kwh > 0.0 {
            100.0 * (1.0 - self.expected_g_per_kwh / self.run_now_g_per_kwh)
        } else {
            0.0
        }
    }
}

/// Parses `3h`, `90m`, `45s`, `2d`, `1h30m`, `1.5h` into seconds.
pub fn parse_duration(s: &str) -> Result<f64, ScheduleError> {
    let bad = || {
        ScheduleError::Input(format!(
            "'{s}' is not a duration: use a number with a unit, such as 3h, 90m, 1h30m, 45s or 2d"
        ))
    };
    let mut total = 0.0;
    let mut num = String::new();
    let mut any = false;
    for c in s.trim().chars() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
        } else {
            let unit = match c {
                'd' => 86400.0,
                'h' => 3600.0,
                'm' => 60.0,
                's' => 1.0,
                _ => return Err(bad()),
            };
            let v: f64 = num.parse().map_err(|_| bad())?;
            total += v * unit;
            num.clear();
            any = true;
        }
    }
    if !num.is_empty() || !any || total <= 0.0 {
        return Err(bad());
    }
    Ok(total)
}

/// Integral of the forecast over `[a, b]`, in (g/kWh) x s.
pub fn integral(series: &Series, a: f64, b: f64) -> f64 {
    if b <= a {
        return 0.0;
    }
    let mut total = 0.0;
    let mut t = a;
    while t < b {
        let next = series
            .points
            .iter()
            .map(|p| p.0)
            .find(|&x| x > t)
            .unwrap_or(f64::INFINITY)
            .min(b);
        total += series.at(t) * (next - t);
        t = next;
    }
    total
}

/// Time-weighted mean forecast intensity over spans.
pub fn mean_over(series: &Series, spans: &[(f64, f64)]) -> f64 {
    let secs: f64 = spans.iter().map(|s| s.1 - s.0).sum();
    if secs <= 0.0 {
        return 0.0;
    }
    spans
        .iter()
        .map(|s| integral(series, s.0, s.1))
        .sum::<f64>()
        / secs
}

fn covered(series: &Series, a: f64, b: f64) -> Result<(), ScheduleError> {
    let last = series.points.last().unwrap().0 + series.step_s;
    if series.points[0].0 > a || last < b {
        return Err(ScheduleError::NotCovered {
            path: series.path.display().to_string(),
            have_from: format_time(series.points[0].0),
            have_to: format_time(series.points.last().unwrap().0 + series.step_s),
            need_from: format_time(a),
            need_to: format_time(b),
        });
    }
    if let Some((g0, g1)) = series.gaps().find(|&(g0, g1)| g0 < b && g1 > a) {
        return Err(ScheduleError::Gap {
            path: series.path.display().to_string(),
            from: format_time(g0),
            to: format_time(g1),
            step: human(series.step_s),
        });
    }
    Ok(())
}

fn human(s: f64) -> String {
    if s >= 3600.0 {
        format!("{:.4}h", s / 3600.0)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        format!("{:.0}s", s)
    }
}

/// Relative tolerance for comparing mean intensities: ties go to the earliest.
const TIE: f64 = 1e-9;

/// Flexible Start: the start in `[from, from + window - duration]` whose
/// time-weighted mean intensity over the job is lowest; earliest wins ties.
/// The mean over a sliding interval of a step function changes slope only
/// when the interval's start or end crosses a step, so the optimum is at
/// one of those starts (or at the ends of the range).
pub fn flexible_start(
    series: &Series,
    from: f64,
    duration: f64,
    window: f64,
) -> Result<Plan, ScheduleError> {
    if duration > window {
        return Err(ScheduleError::TooShort {
            what: "--window".into(),
            limit: human(window),
            job: human(duration),
        });
    }
    let end = from + window;
    covered(series, from, end)?;
    let latest = end - duration;
    let mut cands = vec![from, latest];
    for &(t, _) in &series.points {
        for c in [t, t - duration] {
            if c >= from && c <= latest {
                cands.push(c);
            }
        }
    }
    cands.sort_by(|a, b| a.partial_cmp(b).unwrap());
    cands.dedup();
    let mut best: Option<(f64, f64)> = None;
    for c in cands {
        let m = integral(series, c, c + duration) / duration;
        match best {
            Some((b, _)) if m >= b - TIE * b.abs().max(1.0) => {}
            _ => best = Some((m, c)),
        }
    }
    let best = best.expect("at least one candidate");
    Ok(plan(
        series,
        "flexible_start",
        &[(best.1, best.1 + duration)],
        best.0,
        (from, end),
        duration,
    ))
}

/// A plan over `spans` (with their mean intensity), compared with running
/// straight through from `from`.
fn plan(
    series: &Series,
    mode: &str,
    spans: &[(f64, f64)],
    expected: f64,
    (from, end): (f64, f64),
    duration: f64,
) -> Plan {
    Plan {
        mode: mode.into(),
        slots: spans.iter().map(|s| Slot::new(s.0, s.1)).collect(),
        expected_g_per_kwh: expected,
        run_now_g_per_kwh: integral(series, from, from + duration) / duration,
        duration_s: duration,
        earliest_start: format_time(from),
        finish_by: format_time(end),
        forecast: series.path.display().to_string(),
    }
}

/// Pause-and-Resume: the lowest-intensity parts of `[from, from + deadline]`
/// adding up to the job's duration (ties go to the earlier part), merged
/// where they touch.
pub fn pause_resume(
    series: &Series,
    from: f64,
    duration: f64,
    deadline: f64,
) -> Result<Plan, ScheduleError> {
    if duration > deadline {
        return Err(ScheduleError::TooShort {
            what: "--deadline".into(),
            limit: human(deadline),
            job: human(duration),
        });
    }
    let end = from + deadline;
    covered(series, from, end)?;
    let mut cuts: Vec<f64> = vec![from, end];
    cuts.extend(
        series
            .points
            .iter()
            .map(|p| p.0)
            .filter(|&t| t > from && t < end),
    );
    cuts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    cuts.dedup();
    let mut segs: Vec<(f64, f64, f64)> = cuts
        .windows(2)
        .map(|w| (w[0], w[1], series.at(w[0])))
        .collect();
    segs.sort_by(|a, b| {
        a.2.partial_cmp(&b.2)
            .unwrap()
            .then(a.0.partial_cmp(&b.0).unwrap())
    });
    let mut need = duration;
    let mut chosen: Vec<(f64, f64)> = vec![];
    for (a, b, _) in segs {
        if need <= 0.0 {
            break;
        }
        let take = (b - a).min(need);
        chosen.push((a, a + take));
        need -= take;
    }
    chosen.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    let mut merged: Vec<(f64, f64)> = vec![];
    for s in chosen {
        match merged.last_mut() {
            Some(l) if (s.0 - l.1).abs() < 1e-6 => l.1 = s.1,
            _ => merged.push(s),
        }
    }
    Ok(plan(
        series,
        "pause_resume",
        &merged,
        mean_over(series, &merged),
        (from, end),
        duration,
    ))
}

/// Where "now" comes from: the system clock in production, a simulated one
/// in tests (no real waiting).
pub trait Clock: Send + Sync {
    /// Unix seconds.
    fn now(&self) -> f64;
    /// Blocks until `t` (or returns at once if it has passed).
    fn sleep_until(&self, t: f64);
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> f64 {
        crate::tracker::unix_now()
    }
    fn sleep_until(&self, t: f64) {
        let d = t - self.now();
        if d > 0.0 {
            std::thread::sleep(std::time::Duration::from_secs_f64(d));
        }
    }
}

/// Simulated time: every `now()` advances it by `tick` seconds (one training
/// step costs `tick`), and sleeping jumps ahead.
#[derive(Debug)]
pub struct SimClock {
    t: Mutex<f64>,
    tick: f64,
}

impl SimClock {
    /// Starts at `start`, advancing `tick` per reading.
    pub fn new(start: f64, tick: f64) -> Self {
        SimClock {
            t: Mutex::new(start),
            tick,
        }
    }
}

impl Clock for SimClock {
    fn now(&self) -> f64 {
        let mut t = self.t.lock().unwrap();
        let v = *t;
        *t += self.tick;
        v
    }
    fn sleep_until(&self, t: f64) {
        let mut cur = self.t.lock().unwrap();
        if *cur < t {
            *cur = t;
        }
    }
}
