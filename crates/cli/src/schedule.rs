//! `greentrain schedule`: a Flexible Start or Pause-and-Resume plan for a
//! job against a carbon-intensity forecast; its arguments and output.

use crate::usage;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// `greentrain schedule`'s arguments.
#[derive(Args, Debug)]
pub struct ScheduleArgs {
    /// Intensity forecast: Electricity Maps CSV, UK Carbon Intensity JSON,
    /// or `timestamp,g_per_kwh` CSV.
    #[arg(long)]
    forecast: PathBuf,
    /// The job's duration (3h, 90m, 1h30m); or take it from --from-run.
    #[arg(long)]
    duration: Option<String>,
    /// How long after the earliest start the job may run (start and finish inside it).
    #[arg(long, default_value = "24h")]
    window: String,
    /// Earliest start, RFC 3339 UTC (default: now).
    #[arg(long)]
    from: Option<String>,
    /// Pause-and-Resume: run in the cleanest slots that finish by the deadline.
    #[arg(long)]
    pause_resume: bool,
    /// Finish-by for --pause-resume, after the earliest start (default: the window).
    #[arg(long)]
    deadline: Option<String>,
    /// A run directory whose run.json gives the duration and energy.
    #[arg(long, value_name = "RUN_DIR")]
    from_run: Option<PathBuf>,
    /// The job's energy in kWh (for gCO2eq figures), if not from --from-run.
    #[arg(long)]
    energy_kwh: Option<f64>,
    /// Print the plan as JSON (for `greentrain train --schedule PLAN`).
    #[arg(long)]
    json: bool,
}

/// Plans a job against a forecast; prints the plan (or its JSON).
pub fn schedule(a: ScheduleArgs) -> ExitCode {
    use greentrain_energy::carbon::{format_time, parse_time, Series};
    use greentrain_energy::schedule::{flexible_start, parse_duration, pause_resume};
    let series = match Series::load(&a.forecast) {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    let mut duration = None;
    if let Some(k) = a.energy_kwh.filter(|k| !(k.is_finite() && *k >= 0.0)) {
        return usage(format!(
            "--energy-kwh {k}: the job's energy is a finite number of kWh, 0 or more"
        ));
    }
    let mut energy_kwh = a.energy_kwh;
    if let Some(dir) = &a.from_run {
        match greentrain_trainer::record::RunRecord::load(dir) {
            Ok(r) => {
                let Some(f) = r.final_.as_ref() else {
                    return usage(format!(
                        "--from-run {}: the run has no finished epoch",
                        dir.display()
                    ));
                };
                let eval: f64 = r.epochs.iter().map(|e| e.eval_s).sum();
                duration = Some(f.wall_s + eval);
                if energy_kwh.is_none() {
                    energy_kwh = f.energy_kwh;
                }
            }
            Err(e) => return usage(format!("--from-run: {e:#}")),
        }
    }
    if let Some(d) = &a.duration {
        match parse_duration(d) {
            Ok(v) => duration = Some(v),
            Err(e) => return usage(format!("--duration: {e}")),
        }
    }
    let Some(duration) = duration else {
        return usage("give the job's length with --duration (such as 3h) or --from-run RUN_DIR");
    };
    let window = match parse_duration(&a.window) {
        Ok(v) => v,
        Err(e) => return usage(format!("--window: {e}")),
    };
    let from = match &a.from {
        Some(t) => match parse_time(t) {
            Some(v) => v,
            None => {
                return usage(format!(
                    "--from: '{t}' is not an RFC 3339 time such as 2026-12-01T00:00:00Z"
                ))
            }
        },
        None => greentrain_energy::tracker::unix_now(),
    };
    let plan = if a.pause_resume {
        let deadline = match a.deadline.as_deref().map(parse_duration).transpose() {
            Ok(v) => v.unwrap_or(window),
            Err(e) => return usage(format!("--deadline: {e}")),
        };
        pause_resume(&series, from, duration, deadline)
    } else {
        if a.deadline.is_some() {
            return usage("--deadline goes with --pause-resume; Flexible Start uses --window");
        }
        flexible_start(&series, from, duration, window)
    };
    let plan = match plan {
        Ok(p) => p,
        Err(e) => return usage(e),
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan).expect("plan serialises")
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "{} plan for a {:.2} h job, earliest start {}, finished by {} (forecast {}):",
        plan.mode,
        duration / 3600.0,
        plan.earliest_start,
        plan.finish_by,
        a.forecast.display()
    );
    for s in &plan.slots {
        println!("  run {} to {}", s.start, s.end);
    }
    println!(
        "expected {:.1} gCO2eq/kWh against {:.1} starting now at {}: {:.1}% lower",
        plan.expected_g_per_kwh,
        plan.run_now_g_per_kwh,
        format_time(from),
        plan.saving_pct()
    );
    if let Some(k) = energy_kwh {
        let (planned, now, saved) = plan.grams(k);
        println!(
            "for {k} kWh: {planned:.2} gCO2eq planned, {now:.2} gCO2eq now, {saved:.2} gCO2eq saved"
        );
    }
    ExitCode::SUCCESS
}
