//! Following a carbon-aware plan (`greentrain train --schedule PLAN`): wait
//! for the first slot with a countdown, checkpoint and pause at each slot's
//! end, resume at the next slot's start, and record when the run actually
//! ran and the forecast intensity over those times.

use greentrain_energy::carbon::{format_time, Series};
use greentrain_energy::schedule::{mean_over, Clock, Plan, Slot};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A plan to follow, with the clock to follow it by.
#[derive(Clone)]
pub struct FollowPlan {
    /// The plan.
    pub plan: Plan,
    /// Where it was read from.
    pub plan_path: PathBuf,
    /// The forecast the plan was made from (for the intensity actually run under).
    pub forecast: Option<Series>,
    /// The system clock, or a simulated one in tests.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for FollowPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FollowPlan")
            .field("plan", &self.plan)
            .field("plan_path", &self.plan_path)
            .finish_non_exhaustive()
    }
}

impl FollowPlan {
    /// Reads a plan written by `greentrain schedule --json`, and its forecast
    /// (a relative forecast path is taken from the plan's folder). A missing
    /// forecast is not an error: the record then has no forecast intensity.
    pub fn load(path: &Path, clock: Arc<dyn Clock>) -> anyhow::Result<(Self, Option<String>)> {
        let plan: Plan = crate::files::read_json(path, "a plan from `greentrain schedule --json`")?;
        plan.spans()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let mut fpath = PathBuf::from(&plan.forecast);
        if fpath.is_relative() {
            fpath = path.parent().unwrap_or(Path::new(".")).join(fpath);
        }
        let (forecast, warning) = match Series::load(&fpath) {
            Ok(s) => (Some(s), None),
            Err(e) => (
                None,
                Some(format!(
                    "the plan's forecast cannot be read ({e}): the record will not say which intensity the run ran under"
                )),
            ),
        };
        Ok((
            FollowPlan {
                plan,
                plan_path: path.to_path_buf(),
                forecast,
                clock,
            },
            warning,
        ))
    }
}

/// `run.json`'s `schedule`: what was planned and what happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// The plan file.
    pub plan: String,
    /// `flexible_start` or `pause_resume`.
    pub mode: String,
    /// The planned slots.
    pub planned: Vec<Slot>,
    /// Planned mean intensity, gCO2eq/kWh.
    pub planned_g_per_kwh: f64,
    /// When the run actually trained (waits and pauses excluded).
    pub ran: Vec<Slot>,
    /// Forecast intensity averaged over `ran`, gCO2eq/kWh.
    pub forecast_g_per_kwh: Option<f64>,
    /// Pauses at slot ends.
    pub pauses: u32,
    /// Seconds spent waiting for slots.
    pub waited_s: f64,
    /// Seconds trained outside the planned slots (the job took longer than planned).
    pub overrun_s: f64,
}

/// The state of a run following a plan.
pub struct Follower {
    fp: FollowPlan,
    spans: Vec<(f64, f64)>,
    ran: Vec<(f64, f64)>,
    running_since: Option<f64>,
    pauses: u32,
    waited_s: f64,
    warned_overrun: bool,
}

/// What the training loop must do before its next step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Train.
    Go,
    /// Checkpoint, then wait until this unix time.
    PauseUntil(f64),
    /// The plan's last slot is over and the job is not: train on (once).
    Overrun,
}

impl Follower {
    /// Starts following.
    pub fn new(fp: FollowPlan) -> Self {
        let spans = fp.plan.spans().unwrap_or_default();
        Follower {
            fp,
            spans,
            ran: vec![],
            running_since: None,
            pauses: 0,
            waited_s: 0.0,
            warned_overrun: false,
        }
    }

    /// Called before each optimizer step.
    pub fn before_step(&mut self) -> Next {
        let now = self.fp.clock.now();
        if self.spans.iter().any(|s| now >= s.0 && now < s.1) {
            self.running_since.get_or_insert(now);
            return Next::Go;
        }
        match self.spans.iter().find(|s| s.0 > now) {
            Some(s) => {
                if let Some(a) = self.running_since.take() {
                    self.ran.push((a, now));
                    self.pauses += 1;
                }
                Next::PauseUntil(s.0)
            }
            None => {
                self.running_since.get_or_insert(now);
                if self.warned_overrun {
                    Next::Go
                } else {
                    self.warned_overrun = true;
                    Next::Overrun
                }
            }
        }
    }

    /// Waits until `t`, calling `tick` with the seconds left about once a
    /// second; stops early when `stop` says so (Ctrl-C).
    pub fn wait(&mut self, t: f64, mut tick: impl FnMut(f64), stop: impl Fn() -> bool) {
        let start = self.fp.clock.now();
        loop {
            let now = self.fp.clock.now();
            if now >= t || stop() {
                self.waited_s += now - start;
                return;
            }
            tick(t - now);
            self.fp.clock.sleep_until(t.min(now + 1.0));
        }
    }

    /// The record so far (`finish` closes the running span first).
    pub fn record(&self) -> ScheduleRecord {
        let mut ran = self.ran.clone();
        if let Some(a) = self.running_since {
            ran.push((a, a.max(self.fp.clock.now())));
        }
        let overrun_s = ran
            .iter()
            .map(|&(a, b)| {
                let inside: f64 = self
                    .spans
                    .iter()
                    .map(|s| (b.min(s.1) - a.max(s.0)).max(0.0))
                    .sum();
                (b - a) - inside
            })
            .sum::<f64>()
            .max(0.0);
        ScheduleRecord {
            plan: self.fp.plan_path.display().to_string(),
            mode: self.fp.plan.mode.clone(),
            planned: self.fp.plan.slots.clone(),
            planned_g_per_kwh: self.fp.plan.expected_g_per_kwh,
            forecast_g_per_kwh: self.fp.forecast.as_ref().map(|s| mean_over(s, &ran)),
            ran: ran
                .iter()
                .map(|&(a, b)| Slot {
                    start: format_time(a),
                    end: format_time(b),
                })
                .collect(),
            pauses: self.pauses,
            waited_s: self.waited_s,
            overrun_s,
        }
    }

    /// Closes the running span; the final record.
    pub fn finish(&mut self) -> ScheduleRecord {
        if let Some(a) = self.running_since.take() {
            let now = self.fp.clock.now();
            self.ran.push((a, now.max(a)));
        }
        self.record()
    }
}

/// `HH:MM:SS`.
pub fn hms(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}
