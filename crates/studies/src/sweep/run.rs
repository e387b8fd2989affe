//! Running a sweep: trials on worker threads, each a normal run with its
//! own folder; resuming a sweep folder; the sweep's budgets.

use super::pareto;
use super::report::{epoch_metric, metric_of, params_text, summarise, SweepReport, Trial};
use super::search::{grid, promotable, random_params, rungs, tpe_propose, trial_rng};
use super::spec::{overrides, Params, Strategy, Sweep};
use greentrain_trainer::config::{self, LoadedConfig};
use greentrain_trainer::device::DeviceSpec;
use greentrain_trainer::record::RunRecord;
use greentrain_trainer::status::RunStatus;
use greentrain_trainer::summary::RunSummary;
use greentrain_trainer::train::{train_with, TrainRequest};
use greentrain_trainer::train::{Failure, Hooks, Outcome};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// How to run a sweep.
#[derive(Clone, Debug)]
pub struct SweepRequest {
    /// The sweep.
    pub sweep: Sweep,
    /// Output folder.
    pub out_dir: PathBuf,
    /// Trials at once.
    pub parallel: usize,
    /// Device.
    pub device: DeviceSpec,
    /// No progress output.
    pub quiet: bool,
}

/// What the workers share, under one lock.
struct Shared {
    report: SweepReport,
    next: usize,
    rungs: Vec<Vec<f64>>,
    plan: Vec<Option<Params>>,
}

/// Trial `id`'s config: the base config (read once, with the sweep) plus
/// the trial's typed overrides.
fn trial_config(sweep: &Sweep, id: usize, params: &Params) -> Result<LoadedConfig, Failure> {
    let file = sweep.base.display().to_string();
    config::parse_with(&sweep.base_src, &file, &overrides(sweep, id, params))
        .map(|config| LoadedConfig {
            config,
            path: sweep.base.clone(),
        })
        .map_err(|e| Failure::Usage(e.into()))
}

fn runtime(e: impl std::fmt::Display) -> Failure {
    Failure::Runtime(anyhow::anyhow!("{e}"))
}

/// A new report, or the one in `out_dir` when resuming (its finished trials
/// kept; a trial cut off by a crash or Ctrl-C runs again from the start).
fn start_report(req: &SweepRequest) -> Result<SweepReport, Failure> {
    let sw = &req.sweep;
    let s = &sw.file.sweep;
    let mut report = SweepReport {
        schema: "greentrain.sweep/1".into(),
        name: s.name.clone(),
        file: sw.path.clone(),
        file_sha256: sw.sha256.clone(),
        strategy: s.strategy,
        seed: s.seed,
        metric: sw.metric,
        objectives: sw.objectives.clone(),
        parallel: req.parallel.max(1),
        trials: vec![],
        best: None,
        pareto: vec![],
        total_energy_j: 0.0,
        total_co2_g: 0.0,
        provenance: None,
        asha: None,
        stopped: None,
        notes: vec![],
    };
    let state_path = req.out_dir.join("sweep.json");
    if state_path.exists() {
        let old: SweepReport =
            greentrain_trainer::files::read_json(&state_path, "a greentrain sweep file")
                .map_err(|e| Failure::Usage(anyhow::anyhow!("cannot resume: {e:#}")))?;
        if old.file_sha256 != sw.sha256 {
            return Err(Failure::Usage(anyhow::anyhow!(
                "{} holds a different sweep (its sweep file has changed): use another --out",
                req.out_dir.display()
            )));
        }
        report.trials = old
            .trials
            .into_iter()
            .filter(|t| !matches!(t.status, RunStatus::Running | RunStatus::Interrupted))
            .collect();
        report.trials.sort_by_key(|t| t.id);
    }
    if report.parallel > 1 {
        report.notes.push(format!(
            "{} trials ran at once; each trial's energy record covers the whole machine (the CPU estimate uses whole-machine utilisation), so the sweep total over-counts the shared time",
            report.parallel
        ));
    }
    Ok(report)
}

/// Parameters known before any trial runs: the grid's points, and those of
/// trials already finished.
fn initial_plan(sw: &Sweep, report: &SweepReport) -> Vec<Option<Params>> {
    let s = &sw.file.sweep;
    let mut plan: Vec<Option<Params>> = vec![None; s.trials];
    if s.strategy == Strategy::Grid {
        plan = grid(&sw.file.space, s.trials, s.grid_points)
            .into_iter()
            .map(Some)
            .collect();
    }
    for t in &report.trials {
        if t.id < plan.len() {
            plan[t.id] = Some(t.params.clone());
        }
    }
    plan
}

/// ASHA's rungs as far as the finished trials' records filled them.
fn rebuild_rungs(sw: &Sweep, report: &SweepReport, rung_epochs: &[usize]) -> Vec<Vec<f64>> {
    let mut values = vec![vec![]; rung_epochs.len()];
    for t in &report.trials {
        if let Some(Ok(r)) = t.run_dir.as_ref().map(|d| RunRecord::load(d)) {
            for (k, &re) in rung_epochs.iter().enumerate() {
                let e = r.epochs.get(re - 1);
                if let Some(v) = e.and_then(|e| metric_of(e, sw.metric)) {
                    values[k].push(v);
                }
            }
        }
    }
    values
}

/// Why no more trials start, if a budget says so.
fn budget_reached(sw: &Sweep, report: &SweepReport) -> Option<String> {
    let s = &sw.file.sweep;
    let used_j: f64 = report.trials.iter().filter_map(|t| t.energy_j).sum();
    let used_g: f64 = report.trials.iter().filter_map(|t| t.co2_g).sum();
    if let Some(k) = s.max_kwh.filter(|&k| used_j / 3.6e6 >= k) {
        return Some(format!("energy budget of {k} kWh reached"));
    }
    s.max_co2_g
        .filter(|&g| used_g >= g)
        .map(|g| format!("carbon budget of {g} gCO2eq reached"))
}

/// What TPE learns from: each trial that has a value of the objective (one
/// objective: its value, oriented so that larger is better), or with
/// several objectives every trial that ended, scored by ParEGO's random
/// scalarisation (a pruned trial counts as the worst on every objective:
/// its energy is only part of a run).
fn tpe_history(report: &SweepReport, rng: &mut rand_chacha::ChaCha8Rng) -> Vec<(Params, f64)> {
    let objs = report.objectives();
    if let [o] = objs[..] {
        let sign = if o.maximise() { 1.0 } else { -1.0 };
        return report
            .trials
            .iter()
            .filter_map(|t| {
                t.value(o, report.metric)
                    .map(|v| (t.params.clone(), sign * v))
            })
            .filter(|(_, v)| v.is_finite())
            .collect();
    }
    let ended: Vec<&Trial> = report
        .trials
        .iter()
        .filter(|t| t.status != RunStatus::Running)
        .collect();
    let values: Vec<Vec<Option<f64>>> = ended
        .iter()
        .map(|t| {
            objs.iter()
                .map(|&o| t.value(o, report.metric).filter(|_| t.finished()))
                .collect()
        })
        .collect();
    let maximise: Vec<bool> = objs.iter().map(|o| o.maximise()).collect();
    let scores = pareto::scalarise(&values, &maximise, rng);
    ended
        .iter()
        .zip(scores)
        .map(|(t, s)| (t.params.clone(), s))
        .collect()
}

/// Picks the next trial and its parameters (under the lock), records it as
/// running; `None` when there is none to start.
fn next_trial(req: &SweepRequest, sh: &mut Shared) -> Option<(usize, Params)> {
    let sw = &req.sweep;
    let s = &sw.file.sweep;
    let n_trials = sh.plan.len();
    let mut id = sh.next;
    while id < n_trials && sh.report.trials.iter().any(|t| t.id == id) {
        id += 1;
    }
    if id >= n_trials || sh.report.stopped.is_some() {
        return None;
    }
    if let Some(why) = budget_reached(sw, &sh.report) {
        sh.report.stopped = Some(why);
        return None;
    }
    sh.next = id + 1;
    let params = sh.plan[id].clone().unwrap_or_else(|| {
        let startup = s.tpe_startup.unwrap_or((s.trials / 3).clamp(2, 10));
        let mut rng = trial_rng(s.seed, id);
        let done = tpe_history(&sh.report, &mut rng);
        if s.strategy == Strategy::Tpe && done.len() >= startup {
            tpe_propose(&sw.file.space, &done, &mut rng)
        } else {
            random_params(&sw.file.space, s.seed, id)
        }
    });
    sh.plan[id] = Some(params.clone());
    sh.report.trials.push(Trial {
        id,
        params: params.clone(),
        status: RunStatus::Running,
        run_dir: None,
        metric: None,
        epochs: 0,
        energy_j: None,
        co2_g: None,
        provenance: None,
        error: None,
        target_energy_j: None,
        test_accuracy: None,
        val_accuracy: None,
        wall_s: None,
    });
    sh.report.trials.sort_by_key(|t| t.id);
    let _ = sh.report.write(&req.out_dir);
    Some((id, params))
}

/// ASHA's pruner as an after-epoch hook: at a rung, a trial that is not in
/// the top 1/reduction so far stops as `pruned`.
fn asha_hooks(req: &SweepRequest, shared: &Arc<Mutex<Shared>>, rung_epochs: &[usize]) -> Hooks {
    let mut hooks = Hooks::default();
    if let Some(a) = req.sweep.file.asha.clone() {
        let (sh, re, metric) = (shared.clone(), rung_epochs.to_vec(), req.sweep.metric);
        hooks.after_epoch = Some(Arc::new(move |r: &RunRecord| {
            let k = re.iter().position(|&x| x == r.epochs.len())?;
            let v = epoch_metric(r, metric)?;
            let mut sh = sh.lock().unwrap();
            sh.rungs[k].push(v);
            (!promotable(&sh.rungs[k], v, a.reduction)).then_some(RunStatus::Pruned)
        }));
    }
    hooks
}

/// Puts a trial's outcome into the report; a usage error ends the sweep.
fn record_trial(
    req: &SweepRequest,
    sh: &mut Shared,
    id: usize,
    outcome: Result<Outcome, Failure>,
) -> Result<(), Failure> {
    let s = &req.sweep.file.sweep;
    let t = sh
        .report
        .trials
        .iter_mut()
        .find(|t| t.id == id)
        .expect("trial");
    let sum = RunSummary::of(&outcome);
    t.status = sum.status;
    t.run_dir = sum.run_dir.clone();
    t.epochs = sum.epochs;
    t.metric = sum
        .last
        .as_ref()
        .and_then(|e| metric_of(e, req.sweep.metric));
    t.test_accuracy = sum.test_accuracy();
    t.val_accuracy = sum.val_accuracy();
    t.wall_s = sum.wall_s;
    t.energy_j = sum.energy_j;
    t.co2_g = sum.co2_g;
    t.provenance = sum.provenance;
    t.target_energy_j = sum.reached.as_ref().and_then(|x| x.energy_j);
    t.error = sum.error;
    match outcome {
        Ok(o) => {
            if !req.quiet {
                let m = t.metric.map(|m| format!("{:.2}%", 100.0 * m));
                eprintln!(
                    "sweep {}: trial {id} {} after {} epoch(s): {} {}",
                    s.name,
                    t.status,
                    t.epochs,
                    req.sweep.metric,
                    m.unwrap_or_else(|| "-".into())
                );
            }
            if o.status == RunStatus::Interrupted {
                sh.report.stopped =
                    Some("interrupted (Ctrl-C); run the same command to resume".into());
            }
        }
        Err(e) => {
            if matches!(e, Failure::Usage(_)) {
                let _ = sh.report.write(&req.out_dir);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// One worker: trials until none is left to start.
fn worker(
    req: &SweepRequest,
    shared: &Arc<Mutex<Shared>>,
    rung_epochs: &[usize],
) -> Result<(), Failure> {
    let sw = &req.sweep;
    let trials_dir: &Path = &req.out_dir.join("trials");
    loop {
        let Some((id, params)) = next_trial(req, &mut shared.lock().unwrap()) else {
            return Ok(());
        };
        if !req.quiet {
            eprintln!(
                "sweep {}: trial {id} {}",
                sw.file.sweep.name,
                params_text(&params)
            );
        }
        let hooks = asha_hooks(req, shared, rung_epochs);
        let outcome = trial_config(sw, id, &params).and_then(|config| {
            let request = TrainRequest {
                config,
                device: req.device,
                out_dir: trials_dir.to_path_buf(),
                quiet: true,
            };
            train_with(request, hooks)
        });
        let mut sh = shared.lock().unwrap();
        record_trial(req, &mut sh, id, outcome)?;
        summarise(&mut sh.report, sw.file.asha.as_ref(), sw.epochs);
        sh.report
            .write(&req.out_dir)
            .map_err(|e| runtime(format!("writing sweep files: {e:#}")))?;
    }
}

/// Runs (or resumes) a sweep; writes its files after every trial.
pub fn run(req: SweepRequest) -> Result<SweepReport, Failure> {
    let sw = &req.sweep;
    std::fs::create_dir_all(req.out_dir.join("trials"))
        .map_err(|e| runtime(format!("cannot create {}: {e}", req.out_dir.display())))?;
    let report = start_report(&req)?;
    let plan = initial_plan(sw, &report);
    let asha = sw.file.asha.as_ref();
    let rung_epochs = asha.map(|a| rungs(a, sw.epochs)).unwrap_or_default();
    let shared = Arc::new(Mutex::new(Shared {
        rungs: rebuild_rungs(sw, &report, &rung_epochs),
        report,
        next: 0,
        plan,
    }));
    let results: Vec<Result<(), Failure>> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..req.parallel.max(1))
            .map(|_| scope.spawn(|| worker(&req, &shared, &rung_epochs)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("sweep worker panicked"))
            .collect()
    });
    for r in results {
        r?;
    }
    let mut report = shared.lock().unwrap().report.clone();
    summarise(&mut report, asha, sw.epochs);
    report
        .write(&req.out_dir)
        .map_err(|e| runtime(format!("writing sweep files: {e:#}")))?;
    Ok(report)
}
