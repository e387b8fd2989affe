//! `greentrain bench`: one config, several precisions, interleaved repeats
//! (A B C A B C ...), warm-up epochs excluded from the timed and metered
//! figures, and paired ratios against fp32 with 95% confidence intervals.

use crate::stats::{paired_ratio, summary, Ratio, Summary};
use greentrain_amp::Precision;
use greentrain_energy::Provenance;
use greentrain_plot::{Bar, Bars, Figure, Panel};
use greentrain_trainer::config::LoadedConfig;
use greentrain_trainer::device::DeviceSpec;
use greentrain_trainer::files::write_atomic;
use greentrain_trainer::train::{check_precision, train, Failure, TrainRequest};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What to benchmark.
#[derive(Clone, Debug)]
pub struct BenchRequest {
    /// The config; `--set` overrides already applied.
    pub config: LoadedConfig,
    /// Precisions to compare (fp32 first when present: it is the baseline).
    pub precisions: Vec<Precision>,
    /// Repeats of each precision.
    pub repeats: usize,
    /// Device.
    pub device: DeviceSpec,
    /// Output folder (bench files, and the run directories under `runs/`).
    pub out_dir: PathBuf,
    /// Epochs at the start of each run excluded from time and energy
    /// (kernel compilation, autotune, caches).
    pub warmup_epochs: usize,
    /// Shortest measurement, s: a run whose timed epochs together are
    /// shorter is flagged (an energy counter that updates every 100 ms
    /// cannot measure 0.1 s), unless every meter is an estimate. The config
    /// is measured as written: nothing is resized to reach it.
    pub min_window_s: f64,
    /// No progress output from the runs.
    pub quiet: bool,
}

/// One run of the benchmark.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchRun {
    /// Precision.
    pub precision: Precision,
    /// 0-based repeat.
    pub repeat: usize,
    /// Seed (the config's seed plus the repeat: pairs share it).
    pub seed: u64,
    /// Run directory (kept).
    pub run_dir: PathBuf,
    /// Final test accuracy.
    pub test_accuracy: f64,
    /// Training seconds of the timed epochs.
    pub wall_s: f64,
    /// Training samples of the timed epochs.
    pub samples: u64,
    /// Joules of the timed epochs' training windows (None without metering).
    pub energy_j: Option<f64>,
    /// gCO2eq of those joules.
    pub co2_g: Option<f64>,
    /// Skipped optimizer steps in the whole run.
    pub skipped_steps: u64,
    /// Provenance of the energy figure.
    pub provenance: Option<Provenance>,
    /// The shortest timed epoch, s.
    #[serde(default)]
    pub shortest_window_s: f64,
    /// Every energy figure of the run is an estimate (no counter whose
    /// resolution a short window would defeat).
    #[serde(default)]
    pub estimated_only: bool,
    /// Training samples in the dataset (to size epochs in steps).
    #[serde(default)]
    pub train_samples: usize,
    /// With `train.target_accuracy`: the run's energy up to the epoch that
    /// met it (none when it was not met), J.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_energy_j: Option<f64>,
}

/// Paired ratios against fp32.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VsBaseline {
    /// samples/s over fp32's.
    pub samples_per_s: Ratio,
    /// Wall time over fp32's.
    pub wall_s: Ratio,
    /// J/sample over fp32's.
    pub j_per_sample: Option<Ratio>,
}

/// Per-precision results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrecisionResult {
    /// Precision.
    pub precision: Precision,
    /// Test accuracy.
    pub test_accuracy: Summary,
    /// Timed training seconds.
    pub wall_s: Summary,
    /// Samples per second over the timed epochs.
    pub samples_per_s: Summary,
    /// Joules over the timed epochs.
    pub energy_j: Option<Summary>,
    /// Joules per sample.
    pub j_per_sample: Option<Summary>,
    /// gCO2eq over the timed epochs.
    pub co2_g: Option<Summary>,
    /// Skipped steps, summed over repeats.
    pub skipped_steps: u64,
    /// Weakest provenance of the energy figures.
    pub provenance: Option<Provenance>,
    /// Energy to the target accuracy, when every repeat reached it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_to_target_j: Option<Summary>,
    /// Against fp32 (absent for fp32 itself, or without an fp32 run).
    pub vs_fp32: Option<VsBaseline>,
}

/// `bench.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// `greentrain.bench/1`.
    pub schema: String,
    /// Config file.
    pub config: PathBuf,
    /// Device spec.
    pub device: String,
    /// Repeats.
    pub repeats: usize,
    /// Warm-up epochs excluded.
    pub warmup_epochs: usize,
    /// The shortest window asked for, s.
    #[serde(default)]
    pub min_window_s: f64,
    /// `train.steps_per_epoch` an earlier greentrain's bench set to reach
    /// `min_window_s` (it no longer changes the config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_per_epoch: Option<usize>,
    /// Metered runs whose timed epochs together lasted under
    /// `min_window_s`: their energy figures are unreliable.
    #[serde(default)]
    pub short_windows: usize,
    /// Every run, in the order they ran.
    pub runs: Vec<BenchRun>,
    /// Per precision.
    pub results: Vec<PrecisionResult>,
}

fn opt_summary(v: &[Option<f64>]) -> Option<Summary> {
    let v: Option<Vec<f64>> = v.iter().copied().collect();
    v.filter(|v| !v.is_empty()).map(|v| summary(&v))
}

/// Aggregates runs into per-precision results with paired ratios.
pub fn aggregate(runs: &[BenchRun], precisions: &[Precision]) -> Vec<PrecisionResult> {
    let of = |p: Precision| -> Vec<&BenchRun> {
        let mut v: Vec<&BenchRun> = runs.iter().filter(|r| r.precision == p).collect();
        v.sort_by_key(|r| r.repeat);
        v
    };
    let sps = |r: &BenchRun| r.samples as f64 / r.wall_s.max(1e-12);
    let jps = |r: &BenchRun| r.energy_j.map(|j| j / r.samples.max(1) as f64);
    let base = of(Precision::Fp32);
    precisions
        .iter()
        .map(|&p| {
            let rs = of(p);
            let vs_fp32 = (p != Precision::Fp32 && !base.is_empty()).then(|| {
                // Pair by repeat: only repeats both precisions finished.
                let pairs: Vec<(&BenchRun, &BenchRun)> = rs
                    .iter()
                    .filter_map(|r| base.iter().find(|b| b.repeat == r.repeat).map(|b| (*r, *b)))
                    .collect();
                let a: Vec<f64> = pairs.iter().map(|(r, _)| sps(r)).collect();
                let b: Vec<f64> = pairs.iter().map(|(_, b)| sps(b)).collect();
                let wa: Vec<f64> = pairs.iter().map(|(r, _)| r.wall_s).collect();
                let wb: Vec<f64> = pairs.iter().map(|(_, b)| b.wall_s).collect();
                let ja: Option<Vec<f64>> = pairs.iter().map(|(r, _)| jps(r)).collect();
                let jb: Option<Vec<f64>> = pairs.iter().map(|(_, b)| jps(b)).collect();
                VsBaseline {
                    samples_per_s: paired_ratio(&a, &b),
                    wall_s: paired_ratio(&wa, &wb),
                    j_per_sample: ja.zip(jb).map(|(a, b)| paired_ratio(&a, &b)),
                }
            });
            let provenance = greentrain_trainer::energy::weakest_provenance(
                rs.iter().filter_map(|r| r.provenance),
            );
            PrecisionResult {
                precision: p,
                test_accuracy: summary(&rs.iter().map(|r| r.test_accuracy).collect::<Vec<_>>()),
                wall_s: summary(&rs.iter().map(|r| r.wall_s).collect::<Vec<_>>()),
                samples_per_s: summary(&rs.iter().map(|r| sps(r)).collect::<Vec<_>>()),
                energy_j: opt_summary(&rs.iter().map(|r| r.energy_j).collect::<Vec<_>>()),
                j_per_sample: opt_summary(&rs.iter().map(|r| jps(r)).collect::<Vec<_>>()),
                co2_g: opt_summary(&rs.iter().map(|r| r.co2_g).collect::<Vec<_>>()),
                skipped_steps: rs.iter().map(|r| r.skipped_steps).sum(),
                provenance,
                energy_to_target_j: opt_summary(
                    &rs.iter().map(|r| r.target_energy_j).collect::<Vec<_>>(),
                ),
                vs_fp32,
            }
        })
        .filter(|r| r.test_accuracy.n > 0)
        .collect()
}

fn pm(s: &Summary, scale: f64, digits: usize) -> String {
    format!("{:.d$} ± {:.d$}", s.mean * scale, s.sd * scale, d = digits)
}

/// A "vs fp32" cell: `1` for fp32 itself (when it has the figure), the
/// ratio with its interval, or `n/a` where none was computed (no fp32
/// baseline, or no energy).
fn ratio_cell(r: &PrecisionResult, energy: bool) -> String {
    let own = !energy || r.j_per_sample.is_some();
    if r.precision == Precision::Fp32 {
        return if own { "1".into() } else { "n/a".into() };
    }
    let v = r.vs_fp32.as_ref().and_then(|v| {
        if energy {
            v.j_per_sample.as_ref()
        } else {
            Some(&v.samples_per_s)
        }
    });
    v.map(ratio).unwrap_or_else(|| "n/a".into())
}

fn ratio(r: &Ratio) -> String {
    match (r.low, r.high) {
        (Some(lo), Some(hi)) => format!("{:.3} [{lo:.3}, {hi:.3}]", r.mean),
        _ => format!("{:.3}", r.mean),
    }
}

impl BenchReport {
    /// The Markdown table.
    pub fn markdown(&self) -> String {
        let mut s = String::from(
            "| precision | test accuracy (%) | samples/s | time (s) | energy (J) | J/sample | gCO2eq | skipped steps | samples/s vs fp32 (95% CI) | J/sample vs fp32 (95% CI) |\n|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.results {
            let o = |x: &Option<Summary>, d| {
                x.as_ref()
                    .map(|v| pm(v, 1.0, d))
                    .unwrap_or_else(|| "-".into())
            };
            let prov = r.provenance.map(|p| format!(" ({p})")).unwrap_or_default();
            s.push_str(&format!(
                "| {} | {} | {} | {} | {}{} | {} | {} | {} | {} | {} |\n",
                r.precision,
                pm(&r.test_accuracy, 100.0, 2),
                pm(&r.samples_per_s, 1.0, 0),
                pm(&r.wall_s, 1.0, 2),
                o(&r.energy_j, 2),
                prov,
                o(&r.j_per_sample, 5),
                o(&r.co2_g, 5),
                r.skipped_steps,
                ratio_cell(r, false),
                ratio_cell(r, true),
            ));
        }
        s.push_str(&format!(
            "\nMean ± sd over {} repeats per precision (interleaved), the first {} epoch(s) of each run excluded from time and energy; ratios are means of per-repeat ratios against fp32 with Student-t 95% intervals.\n",
            self.repeats, self.warmup_epochs
        ));
        let to_target: Vec<String> = self
            .results
            .iter()
            .filter_map(|r| {
                let s = r.energy_to_target_j.as_ref()?;
                Some(format!("{} {}", r.precision, pm(s, 1.0, 1)))
            })
            .collect();
        if !to_target.is_empty() {
            s.push_str(&format!(
                "Energy to the target accuracy (J, whole run up to the epoch that met it): {}.\n",
                to_target.join(", ")
            ));
        }
        if let Some(least) = self.runs.iter().map(|r| r.wall_s).reduce(f64::min) {
            s.push_str(&format!(
                "The config as written, measured over each run's timed epochs together: the shortest run's lasted {least:.2} s (--min-window {} s){}.\n",
                self.min_window_s,
                if self.short_windows > 0 {
                    format!(
                        "; {} metered run(s) were shorter, and their energy figures are unreliable (a counter's resolution is a large part of them): train longer (more epochs) for a reliable figure",
                        self.short_windows
                    )
                } else {
                    String::new()
                }
            ));
        }
        s
    }

    /// The LaTeX table (booktabs).
    pub fn latex(&self) -> String {
        let mut s = String::from(
            "\\begin{tabular}{lrrrrr}\n\\toprule\nPrecision & Test acc. (\\%) & Samples/s & J/sample & Samples/s vs fp32 & J/sample vs fp32 \\\\\n\\midrule\n",
        );
        for r in &self.results {
            let j = r
                .j_per_sample
                .as_ref()
                .map(|v| pm(v, 1.0, 5))
                .unwrap_or_else(|| "--".into());
            let v1 = ratio_cell(r, false);
            let v2 = ratio_cell(r, true);
            s.push_str(&format!(
                "{} & {} & {} & {} & {} & {} \\\\\n",
                r.precision,
                pm(&r.test_accuracy, 100.0, 2),
                pm(&r.samples_per_s, 1.0, 0),
                j,
                v1,
                v2
            ));
        }
        s.push_str("\\bottomrule\n\\end{tabular}\n");
        s.replace('±', "$\\pm$")
    }

    /// `bench.csv`: one row per run.
    pub fn csv(&self) -> String {
        let mut s = String::from("precision,repeat,seed,test_accuracy,wall_s,samples,samples_per_s,energy_j,j_per_sample,co2_g,skipped_steps,provenance,run_dir\n");
        for r in &self.runs {
            let o = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
            s.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                r.precision,
                r.repeat,
                r.seed,
                r.test_accuracy,
                r.wall_s,
                r.samples,
                r.samples as f64 / r.wall_s.max(1e-12),
                o(r.energy_j),
                o(r.energy_j.map(|j| j / r.samples.max(1) as f64)),
                o(r.co2_g),
                r.skipped_steps,
                r.provenance.map(|p| p.to_string()).unwrap_or_default(),
                r.run_dir.display()
            ));
        }
        s
    }

    /// Writes bench.json, bench.csv, bench.md, bench.tex and the bars
    /// (bench.svg, bench.png) into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        write_atomic(
            &dir.join("bench.json"),
            serde_json::to_string_pretty(self)
                .expect("serialises")
                .as_bytes(),
        )?;
        write_atomic(&dir.join("bench.csv"), self.csv().as_bytes())?;
        write_atomic(&dir.join("bench.md"), self.markdown().as_bytes())?;
        write_atomic(&dir.join("bench.tex"), self.latex().as_bytes())?;
        crate::plots::write_figure(&bench_figure(self), dir, "bench")?;
        Ok(())
    }
}

/// Whether a run's energy figure rests on a window shorter than the
/// counters can resolve: its timed epochs together under `min_window_s`,
/// with at least one meter that is not an estimate.
fn short(run: &BenchRun, min_window_s: f64) -> bool {
    !run.estimated_only && run.wall_s < min_window_s
}

/// Runs repeats `repeats` of every precision, interleaved.
fn run_repeats(
    req: &BenchRequest,
    config: &LoadedConfig,
    runs_dir: &Path,
    repeats: std::ops::Range<usize>,
) -> Result<Vec<BenchRun>, Failure> {
    let mut runs = Vec::new();
    for repeat in repeats {
        for &p in &req.precisions {
            let mut cfg = config.clone();
            cfg.config.precision.mode = p.into();
            cfg.config.run.seed = config.config.run.seed + repeat as u64;
            if !req.quiet {
                println!(
                    "bench: {p} repeat {}/{} (seed {})",
                    repeat + 1,
                    req.repeats,
                    cfg.config.run.seed
                );
            }
            runs.push(one_run(req, cfg, runs_dir, p, repeat)?);
        }
    }
    Ok(runs)
}

/// One run, and its timed epochs' figures.
fn one_run(
    req: &BenchRequest,
    cfg: LoadedConfig,
    runs_dir: &Path,
    p: Precision,
    repeat: usize,
) -> Result<BenchRun, Failure> {
    let seed = cfg.config.run.seed;
    let o = train(TrainRequest {
        config: cfg,
        device: req.device,
        out_dir: runs_dir.to_path_buf(),
        quiet: true,
    })?;
    use greentrain_trainer::status::RunStatus;
    if !matches!(o.status, RunStatus::Completed | RunStatus::ReachedTarget) {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "run {} ended {}: benchmark stopped",
            o.run_dir.display(),
            o.status
        )));
    }
    let r = &o.record;
    let timed: Vec<_> = r
        .epochs
        .iter()
        .filter(|e| e.epoch > req.warmup_epochs)
        .collect();
    let timed_epoch = |w: &greentrain_energy::WindowReport| match w.window() {
        greentrain_energy::Window::Train { epoch } => epoch > req.warmup_epochs,
        _ => false,
    };
    let energy_j = r.energy.as_ref().map(|en| {
        en.windows
            .iter()
            .filter(|w| timed_epoch(w))
            .fold(0.0, |a, w| a + w.total_j)
    });
    let co2_g = match (&r.energy, &r.carbon, energy_j) {
        (Some(en), Some(c), Some(j)) if en.total_j > 0.0 => {
            Some(c.operational.co2_g * j / en.total_j)
        }
        _ => None,
    };
    let f = r.final_.as_ref().expect("a completed run has totals");
    let sum = greentrain_trainer::summary::RunSummary::of_run(&o);
    Ok(BenchRun {
        precision: p,
        repeat,
        seed,
        run_dir: o.run_dir.clone(),
        test_accuracy: f.test_accuracy,
        wall_s: timed.iter().map(|e| e.wall_s).sum(),
        samples: timed.iter().map(|e| e.samples).sum(),
        energy_j,
        co2_g,
        skipped_steps: f.skipped_steps,
        provenance: sum.provenance,
        estimated_only: r.energy.as_ref().is_none_or(|e| {
            e.components
                .iter()
                .all(|c| c.provenance == Provenance::Estimated)
        }),
        shortest_window_s: timed.iter().map(|e| e.wall_s).fold(f64::INFINITY, f64::min),
        train_samples: r.dataset.train_samples,
        target_energy_j: sum.reached.and_then(|t| t.energy_j),
    })
}

/// Runs the benchmark and writes its files.
pub fn bench(req: BenchRequest) -> Result<BenchReport, Failure> {
    if req.repeats == 0 || req.precisions.is_empty() {
        return Err(Failure::Usage(anyhow::anyhow!(
            "bench needs at least one precision and one repeat"
        )));
    }
    for &p in &req.precisions {
        check_precision(req.device, p.into())?;
    }
    let epochs = req.config.config.train.epochs;
    if req.warmup_epochs >= epochs {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--warmup-epochs {} leaves no timed epoch of {epochs}: raise train.epochs",
            req.warmup_epochs
        )));
    }
    let runs_dir = req.out_dir.join("runs");
    let runs = run_repeats(&req, &req.config, &runs_dir, 0..req.repeats)?;
    let short_windows = runs.iter().filter(|r| short(r, req.min_window_s)).count();
    if short_windows > 0 && !req.quiet {
        println!(
            "bench: {short_windows} run(s) measured their timed epochs in under --min-window {} s: their energy figures are unreliable (the config was measured as written; train more epochs for a reliable figure)",
            req.min_window_s
        );
    }
    let report = BenchReport {
        schema: "greentrain.bench/1".into(),
        config: req.config.path.clone(),
        device: req.device.to_string(),
        repeats: req.repeats,
        warmup_epochs: req.warmup_epochs,
        min_window_s: req.min_window_s,
        steps_per_epoch: None,
        short_windows,
        results: aggregate(&runs, &req.precisions),
        runs,
    };
    report.write(&req.out_dir).map_err(|e| {
        Failure::Runtime(anyhow::anyhow!(
            "writing bench files in {}: {e}",
            req.out_dir.display()
        ))
    })?;
    Ok(report)
}

/// A bench's precisions side by side: accuracy, throughput and J/sample,
/// mean with a ± 1 sd error bar.
pub fn bench_figure(b: &BenchReport) -> Figure {
    let bars = |f: &dyn Fn(&PrecisionResult) -> Option<(f64, f64)>, digits: usize| {
        b.results
            .iter()
            .filter_map(|r| {
                f(r).map(|(m, sd)| Bar {
                    label: r.precision.to_string(),
                    value: m,
                    error: Some(sd),
                    text: format!("{m:.digits$} ± {sd:.digits$}"),
                })
            })
            .collect::<Vec<_>>()
    };
    let mut panels = vec![
        Panel::Bars(Bars {
            title: "test accuracy".into(),
            y_label: "test accuracy (%)".into(),
            bars: bars(
                &|r| Some((100.0 * r.test_accuracy.mean, 100.0 * r.test_accuracy.sd)),
                2,
            ),
        }),
        Panel::Bars(Bars {
            title: "throughput".into(),
            y_label: "training samples/s".into(),
            bars: bars(&|r| Some((r.samples_per_s.mean, r.samples_per_s.sd)), 0),
        }),
    ];
    let j = bars(
        &|r| r.j_per_sample.as_ref().map(|s| (1e3 * s.mean, 1e3 * s.sd)),
        3,
    );
    let provs: BTreeSet<String> = b
        .results
        .iter()
        .filter_map(|r| r.provenance.map(|p| p.to_string()))
        .collect();
    if !j.is_empty() {
        panels.push(Panel::Bars(Bars {
            title: "energy per training sample".into(),
            y_label: "mJ/sample".into(),
            bars: j,
        }));
    }
    let prov = if provs.is_empty() {
        "energy not metered".to_string()
    } else {
        format!(
            "energy: {}",
            provs.into_iter().collect::<Vec<_>>().join(", ")
        )
    };
    Figure {
        title: format!(
            "{} on {}",
            b.config
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            b.device
        ),
        panels,
        note: Some(format!(
            "mean ± sd over {} interleaved repeats; the first {} epoch(s) of each run excluded; {prov}",
            b.repeats, b.warmup_epochs
        )),
    }
}
