//! `--emit-slurm`: the trials as a Slurm array job.

use super::search::{grid, random_params};
use super::spec::{Params, Strategy, Sweep};
use greentrain_trainer::files::write_atomic;
use std::path::{Path, PathBuf};

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Writes `trials.txt` (one trial's arguments per line, shell-quoted) and
/// `sweep.sbatch` (an array job, one trial per task) into `dir`. Only
/// `random` and `grid` (their trials do not depend on each other's
/// results), and no ASHA.
pub fn emit_slurm(sw: &Sweep, dir: &Path, runs_dir: &Path) -> anyhow::Result<PathBuf> {
    let s = &sw.file.sweep;
    if !s.strategy.is_independent() {
        anyhow::bail!("tpe chooses each trial from the results of the earlier ones, so it cannot be split into independent array tasks: use strategy = \"random\" or \"grid\" with --emit-slurm, or run `greentrain sweep` on one node");
    }
    if sw.file.asha.is_some() {
        anyhow::bail!("ASHA needs the trials to see each other's results: remove [asha] for --emit-slurm, or run `greentrain sweep` on one node");
    }
    std::fs::create_dir_all(dir)?;
    let params: Vec<Params> = if s.strategy == Strategy::Grid {
        grid(&sw.file.space, s.trials, s.grid_points)
    } else {
        (0..s.trials)
            .map(|id| random_params(&sw.file.space, s.seed, id))
            .collect()
    };
    let mut lines = String::new();
    for (id, p) in params.iter().enumerate() {
        let mut args: Vec<String> = p
            .iter()
            .flat_map(|(k, v)| ["--set".to_string(), format!("{k}={}", v.toml())])
            .collect();
        args.push("--set".into());
        args.push(format!("run.name=\"{}-t{id:03}\"", s.name));
        lines.push_str(
            &args
                .iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" "),
        );
        lines.push('\n');
    }
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    write_atomic(&dir.join("trials.txt"), lines.as_bytes())?;
    let script = format!(
        "#!/bin/bash\n\
# greentrain sweep '{name}' ({strategy}, {n} trials) as a Slurm array job.\n\
# Written by `greentrain sweep --emit-slurm`. Add your partition, GPU and\n\
# time limits below, then: sbatch {dir}/sweep.sbatch\n\
# Afterwards: greentrain report {runs}\n\
#SBATCH --job-name=gt-{name}\n\
#SBATCH --array=0-{last}\n\
#SBATCH --output={dir}/logs/%A_%a.out\n\
#SBATCH --ntasks=1\n\
set -euo pipefail\n\
ARGS=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" {dir}/trials.txt)\n\
eval \"exec ${{GREENTRAIN:-greentrain}} --config {base} $ARGS --out {runs} --quiet\"\n",
        name = s.name,
        strategy = s.strategy,
        n = params.len(),
        last = params.len().saturating_sub(1),
        dir = shell_quote(&abs(dir).display().to_string()),
        runs = shell_quote(&runs_dir.display().to_string()),
        base = shell_quote(&abs(&sw.base).display().to_string()),
    );
    std::fs::create_dir_all(dir.join("logs"))?;
    let path = dir.join("sweep.sbatch");
    write_atomic(&path, script.as_bytes())?;
    Ok(path)
}
