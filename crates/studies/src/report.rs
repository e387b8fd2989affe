//! `greentrain report RUN_DIR...`: a table of runs and a carbon impact
//! statement for a paper's appendix, in Markdown and LaTeX, with plots:
//! accuracy against cumulative energy, energy and power per epoch, and the
//! bars of any bench found among the inputs.

use crate::bench::BenchReport;
use greentrain_trainer::files::{read_json, write_atomic};
use greentrain_trainer::record::{sig, RunRecord};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Runs found, and the places that looked like runs but could not be read.
#[derive(Debug, Default)]
pub struct Collected {
    /// Readable runs with their directories.
    pub runs: Vec<(PathBuf, RunRecord)>,
    /// `path: why` for each unreadable `run.json` or `bench.json`.
    pub errors: Vec<String>,
    /// Benches (`bench.json`) found, with their folders.
    pub benches: Vec<(PathBuf, BenchReport)>,
    /// Sweeps (`sweep.json`) found, with their folders.
    pub sweeps: Vec<(PathBuf, crate::sweep::SweepReport)>,
}

/// Collects runs from run directories or folders holding them (searched
/// three levels down, so `bench/` with its `runs/` works).
pub fn collect(paths: &[PathBuf]) -> Collected {
    fn walk(dir: &Path, depth: usize, out: &mut Collected) {
        let bj = dir.join("bench.json");
        if bj.exists() {
            match read_json::<BenchReport>(&bj, "a greentrain bench file") {
                Ok(b) => out.benches.push((dir.to_path_buf(), b)),
                Err(e) => out.errors.push(format!("{e:#}")),
            }
        }
        let sj = dir.join("sweep.json");
        if sj.exists() {
            match read_json::<crate::sweep::SweepReport>(&sj, "a greentrain sweep file") {
                Ok(s) => out.sweeps.push((dir.to_path_buf(), s)),
                Err(e) => out.errors.push(format!("{e:#}")),
            }
        }
        let rj = dir.join("run.json");
        if rj.exists() {
            match RunRecord::load(dir) {
                Ok(r) => out.runs.push((dir.to_path_buf(), r)),
                Err(e) => out.errors.push(format!("{e:#}")),
            }
            return;
        }
        if depth == 0 {
            return;
        }
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut subs: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        subs.sort();
        for s in subs {
            walk(&s, depth - 1, out);
        }
    }
    let mut out = Collected::default();
    for p in paths {
        if !p.is_dir() {
            out.errors.push(format!("{}: not a directory", p.display()));
            continue;
        }
        let before = out.runs.len() + out.errors.len();
        walk(p, 3, &mut out);
        if out.runs.len() + out.errors.len() == before {
            out.errors.push(format!(
                "{}: no run.json found in it or below it",
                p.display()
            ));
        }
    }
    out
}

/// The Markdown table of runs.
pub fn table(runs: &[(PathBuf, RunRecord)]) -> String {
    let mut s = String::from("| run | status | device | precision | test accuracy | training time (s) | energy (kWh) | gCO2eq | J/sample |\n|---|---|---|---|---|---|---|---|---|\n");
    for (dir, r) in runs {
        let f = r.final_.as_ref();
        let prov = r
            .energy
            .as_ref()
            .map(|e| format!(" ({})", e.provenance))
            .unwrap_or_default();
        s.push_str(&format!(
            "| {} | {} | {} ({}) | {} | {} | {} | {} | {} | {} |\n",
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            r.status,
            r.device.name,
            r.device.backend,
            r.precision,
            f.map(|f| format!("{:.2}%", 100.0 * f.test_accuracy))
                .unwrap_or_else(|| "-".into()),
            f.map(|f| format!("{:.1}", f.wall_s))
                .unwrap_or_else(|| "-".into()),
            f.and_then(|f| f.energy_kwh)
                .map(|k| format!("{}{prov}", sig(k)))
                .unwrap_or_else(|| "not metered".into()),
            f.and_then(|f| f.co2_g)
                .map(sig)
                .unwrap_or_else(|| "-".into()),
            f.and_then(|f| f.j_per_sample)
                .map(sig)
                .unwrap_or_else(|| "-".into()),
        ));
    }
    s
}

/// The carbon impact statement (plain text; Markdown and LaTeX wrap it).
pub fn statement(runs: &[(PathBuf, RunRecord)]) -> String {
    let metered: Vec<&RunRecord> = runs
        .iter()
        .map(|(_, r)| r)
        .filter(|r| r.energy.is_some() && r.carbon.is_some())
        .collect();
    let unmetered = runs.len() - metered.len();
    let hours: f64 = runs
        .iter()
        .filter_map(|(_, r)| {
            r.final_
                .as_ref()
                .map(|f| f.wall_s + r.epochs.iter().map(|e| e.eval_s).sum::<f64>())
        })
        .sum::<f64>()
        / 3600.0;
    let hardware: BTreeSet<String> = runs
        .iter()
        .map(|(_, r)| format!("{} ({})", r.device.name, r.device.backend))
        .collect();
    let kwh: f64 = metered
        .iter()
        .map(|r| r.energy.as_ref().unwrap().total_kwh)
        .sum();
    let g: f64 = metered
        .iter()
        .map(|r| r.carbon.as_ref().unwrap().operational.co2_g)
        .sum();
    let provs: BTreeSet<String> = metered
        .iter()
        .map(|r| r.energy.as_ref().unwrap().provenance.to_string())
        .collect();
    let methods: BTreeSet<String> = metered
        .iter()
        .flat_map(|r| {
            r.energy
                .as_ref()
                .unwrap()
                .components
                .iter()
                .map(|c| format!("{}: {}", c.name, c.method))
        })
        .collect();
    let sources: BTreeSet<String> = metered
        .iter()
        .map(|r| {
            let c = &r.carbon.as_ref().unwrap().operational;
            format!(
                "{} g/kWh from {} ({})",
                sig(c.intensity_g_per_kwh),
                c.source,
                c.source_detail
            )
        })
        .collect();
    let pues: BTreeSet<String> = metered
        .iter()
        .map(|r| r.carbon.as_ref().unwrap().operational.pue.to_string())
        .collect();
    let versions: BTreeSet<String> = runs
        .iter()
        .map(|(_, r)| {
            format!(
                "greentrain {} with Burn {} (built by {})",
                r.versions.greentrain, r.versions.burn, r.versions.rustc
            )
        })
        .collect();
    let join = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join("; ");
    let mut t = format!(
        "The {} training run(s) reported here took {} hours of training and evaluation in total on {}. ",
        runs.len(),
        sig(hours),
        join(&hardware)
    );
    if metered.is_empty() {
        t.push_str("Their energy was not metered. ");
    } else {
        let how = if provs.len() == 1 && provs.contains("estimated") {
            "estimated, not measured".to_string()
        } else {
            format!("provenance: {}", join(&provs))
        };
        t.push_str(&format!(
            "They used {} kWh of electricity ({how}; {}), with a power usage effectiveness (PUE) of {}. At a carbon intensity of {}, this corresponds to {} gCO2eq. ",
            sig(kwh),
            join(&methods),
            join(&pues),
            join(&sources),
            sig(g)
        ));
        if unmetered > 0 {
            t.push_str(&format!("{unmetered} further run(s) were not metered and are not included in these totals. "));
        }
    }
    t.push_str(&format!("Software: {}.", join(&versions)));
    t
}

fn latex_escape(s: &str) -> String {
    s.replace('\\', "\\textbackslash{}")
        .replace('&', "\\&")
        .replace('%', "\\%")
        .replace('_', "\\_")
        .replace('#', "\\#")
        .replace('$', "\\$")
}

/// Writes `report.md`, `report.tex` and the plots into `out`; returns the
/// Markdown.
pub fn write(found: &Collected, out: &Path) -> anyhow::Result<String> {
    let (runs, errors) = (&found.runs, &found.errors);
    std::fs::create_dir_all(out)?;
    let stmt = statement(runs);
    let mut md = format!(
        "# Runs\n\n{}\n## Carbon impact statement\n\n{}\n",
        table(runs),
        stmt
    );
    let mut plots = crate::plots::run_figures(runs, out)?;
    for (i, (dir, b)) in found.benches.iter().enumerate() {
        let stem = format!("bench-{}-{}", i + 1, crate::plots::file_stem(dir));
        plots.extend(crate::plots::write_figure(
            &crate::bench::bench_figure(b),
            out,
            &stem,
        )?);
    }
    if !found.sweeps.is_empty() {
        let all: Vec<&crate::sweep::SweepReport> = found.sweeps.iter().map(|s| &s.1).collect();
        plots.extend(crate::plots::write_figure(
            &crate::sweep::sweep_figure(&all),
            out,
            "sweeps",
        )?);
        md.push_str("\n## Sweeps\n\n| sweep | strategy | trials | best | energy (kWh) | gCO2eq | pruned |\n|---|---|---|---|---|---|---|\n");
        for (_, s) in &found.sweeps {
            let best = s
                .best
                .and_then(|b| s.trials.iter().find(|t| t.id == b))
                .and_then(|t| t.metric)
                .map(|m| format!("{:.2}%", 100.0 * m))
                .unwrap_or_else(|| "-".into());
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                s.name,
                s.strategy,
                s.trials.len(),
                best,
                sig(s.total_energy_j / 3.6e6),
                sig(s.total_co2_g),
                s.asha
                    .as_ref()
                    .map(|a| a.pruned.to_string())
                    .unwrap_or_else(|| "-".into())
            ));
        }
    }
    md.push_str("\n## Plots\n\n");
    let unmetered: Vec<String> = runs
        .iter()
        .filter(|(_, r)| r.epochs.is_empty() || r.epochs.iter().any(|e| e.energy_j.is_none()))
        .map(|(d, _)| d.display().to_string())
        .collect();
    if plots.is_empty() {
        md.push_str("None: no run has per-epoch energy.\n");
    }
    for p in plots
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "svg"))
    {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        md.push_str(&format!("![{name}]({name})\n\n"));
    }
    if !unmetered.is_empty() && !plots.is_empty() {
        md.push_str(&format!(
            "Not in the energy plots (no per-epoch energy): {}.\n",
            unmetered.join(", ")
        ));
    }
    if !errors.is_empty() {
        md.push_str("\n## Not included\n\n");
        for e in errors {
            md.push_str(&format!("- {e}\n"));
        }
    }
    write_atomic(&out.join("report.md"), md.as_bytes())?;
    let mut tex = String::from("\\begin{tabular}{llllrrr}\n\\toprule\nRun & Device & Precision & Test acc. & Energy (kWh) & gCO$_2$eq & J/sample \\\\\n\\midrule\n");
    for (dir, r) in runs {
        let f = r.final_.as_ref();
        tex.push_str(&format!(
            "{} & {} & {} & {} & {} & {} & {} \\\\\n",
            latex_escape(
                &dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            latex_escape(&r.device.name),
            r.precision,
            f.map(|f| format!("{:.2}\\%", 100.0 * f.test_accuracy))
                .unwrap_or_else(|| "--".into()),
            f.and_then(|f| f.energy_kwh)
                .map(sig)
                .unwrap_or_else(|| "--".into()),
            f.and_then(|f| f.co2_g)
                .map(sig)
                .unwrap_or_else(|| "--".into()),
            f.and_then(|f| f.j_per_sample)
                .map(sig)
                .unwrap_or_else(|| "--".into()),
        ));
    }
    tex.push_str("\\bottomrule\n\\end{tabular}\n\n\\paragraph{Carbon impact statement.} ");
    tex.push_str(&latex_escape(&stmt).replace("gCO2eq", "gCO$_2$eq"));
    tex.push('\n');
    write_atomic(&out.join("report.tex"), tex.as_bytes())?;
    Ok(md)
}
