//! The figures of `report`, `bench` and `sweep`, each written as SVG (for
//! papers) and PNG (for a quick look) next to the tables they illustrate.

use greentrain_plot::{render, Figure, Lines, Panel, Series};
use greentrain_trainer::files::write_atomic;
use greentrain_trainer::record::RunRecord;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Renders `fig` and writes `dir/stem.svg` and `dir/stem.png` atomically.
pub fn write_figure(fig: &Figure, dir: &Path, stem: &str) -> anyhow::Result<Vec<PathBuf>> {
    let r = render(fig)?;
    let svg = dir.join(format!("{stem}.svg"));
    let png = dir.join(format!("{stem}.png"));
    write_atomic(&svg, r.svg.as_bytes())?;
    write_atomic(&png, &r.png)?;
    Ok(vec![svg, png])
}

/// The unit that keeps energy tick labels short: (name, joules per unit).
pub fn energy_unit(max_j: f64) -> (&'static str, f64) {
    if max_j >= 3.6e6 {
        ("kWh", 3.6e6)
    } else if max_j >= 1e4 {
        ("kJ", 1e3)
    } else {
        ("J", 1.0)
    }
}

/// A file-name-safe version of a folder's name.
pub fn file_stem(dir: &Path) -> String {
    run_name(dir)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn run_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

/// "energy: estimated (cpu: ..., ram: ...)" for the runs' energy records.
fn provenance_note<'a>(runs: impl Iterator<Item = &'a RunRecord>) -> Option<String> {
    let mut provs = BTreeSet::new();
    let mut methods = BTreeSet::new();
    for r in runs {
        if let Some(e) = &r.energy {
            provs.insert(e.provenance.to_string());
            for c in &e.components {
                methods.insert(format!("{}: {}", c.name, c.method));
            }
        }
    }
    if provs.is_empty() {
        return None;
    }
    let mut s = format!(
        "energy: {} ({})",
        provs.into_iter().collect::<Vec<_>>().join(", "),
        methods.into_iter().collect::<Vec<_>>().join("; ")
    );
    if s.chars().count() > 400 {
        s = s.chars().take(399).collect::<String>() + "…";
    }
    Some(s)
}

/// Legend labels: `name precision seed`, numbered where two runs share one.
fn labels(runs: &[(&PathBuf, &RunRecord)]) -> Vec<String> {
    let base: Vec<String> = runs
        .iter()
        .map(|(_, r)| format!("{} {} s{}", r.name, r.precision, r.seed))
        .collect();
    base.iter()
        .enumerate()
        .map(|(i, b)| {
            let same = base.iter().filter(|x| *x == b).count();
            if same > 1 {
                let k = base[..i].iter().filter(|x| *x == b).count() + 1;
                format!("{b} #{k}")
            } else {
                b.clone()
            }
        })
        .collect()
}

/// Epochs shorter than this give no meaningful mean power: the sampler
/// reads power every 0.1 s.
pub const MIN_EPOCH_S_FOR_POWER: f64 = 0.5;

/// Per-epoch energy, when every epoch of the run was metered.
fn epoch_energy(r: &RunRecord) -> Option<Vec<f64>> {
    let v: Option<Vec<f64>> = r.epochs.iter().map(|e| e.energy_j).collect();
    v.filter(|v| !v.is_empty())
}

/// One series per metered run: `point(epoch, its joules, joules so far)`
/// gives the epoch's point, or None to leave it out.
fn per_epoch(
    metered: &[(&PathBuf, &RunRecord, Vec<f64>)],
    names: &[String],
    point: impl Fn(&greentrain_trainer::record::EpochRecord, f64, f64) -> Option<(f64, f64)>,
) -> Vec<Series> {
    metered
        .iter()
        .zip(names)
        .map(|((_, r, e), name)| {
            let mut cum = 0.0;
            Series {
                label: name.clone(),
                points: r
                    .epochs
                    .iter()
                    .zip(e)
                    .filter_map(|(ep, &j)| {
                        cum += j;
                        point(ep, j, cum)
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Test accuracy against cumulative energy, and energy and mean power per
/// epoch. Runs without per-epoch energy are left out (and named by the
/// caller); returns the files written, none when no run was metered.
pub fn run_figures(runs: &[(PathBuf, RunRecord)], out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let metered: Vec<(&PathBuf, &RunRecord, Vec<f64>)> = runs
        .iter()
        .filter_map(|(d, r)| epoch_energy(r).map(|e| (d, r, e)))
        .collect();
    if metered.is_empty() {
        return Ok(vec![]);
    }
    let note = provenance_note(metered.iter().map(|m| m.1));
    let names = labels(&metered.iter().map(|m| (m.0, m.1)).collect::<Vec<_>>());
    let total_max = metered
        .iter()
        .map(|m| m.2.iter().sum::<f64>())
        .fold(0.0, f64::max);
    let (unit, per) = energy_unit(total_max);
    let acc = per_epoch(&metered, &names, |ep, _, cum| {
        Some((cum / per, 100.0 * ep.test_accuracy))
    });
    let mut files = write_figure(
        &Figure {
            title: "Test accuracy against the energy spent".into(),
            panels: vec![Panel::Lines(Lines {
                title: "one point per epoch".into(),
                x_label: format!("cumulative energy ({unit})"),
                y_label: "test accuracy (%)".into(),
                series: acc,
                step: false,
            })],
            note: note.clone(),
        },
        out,
        "accuracy_vs_energy",
    )?;
    let epoch_max = metered
        .iter()
        .flat_map(|m| m.2.iter().copied())
        .fold(0.0, f64::max);
    let (eunit, eper) = energy_unit(epoch_max);
    let energy = per_epoch(&metered, &names, |ep, j, _| {
        Some((ep.epoch as f64, j / eper))
    });
    let power = per_epoch(&metered, &names, |ep, j, _| {
        let secs = ep.wall_s + ep.eval_s;
        (secs >= MIN_EPOCH_S_FOR_POWER).then(|| (ep.epoch as f64, j / secs))
    });
    files.extend(write_figure(
        &Figure {
            title: "Energy and power per epoch".into(),
            panels: vec![
                Panel::Lines(Lines {
                    title: "energy per epoch".into(),
                    x_label: "epoch".into(),
                    y_label: format!("energy ({eunit})"),
                    series: energy,
                    step: false,
                }),
                Panel::Lines(Lines {
                    title: format!(
                        "mean power (training + evaluation, epochs >= {MIN_EPOCH_S_FOR_POWER} s)"
                    ),
                    x_label: "epoch".into(),
                    y_label: "power (W)".into(),
                    series: power,
                    step: false,
                }),
            ],
            note,
        },
        out,
        "energy_per_epoch",
    )?);
    Ok(files)
}
