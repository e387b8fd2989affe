#!/usr/bin/env python3
"""Memorisation, grokking and the energy between them, from grokking runs.

    python3 benches/grokking.py RUN_DIR [RUN_DIR ...]

Reads each run folder's run.json (written by `greentrain --config
configs/paper/grokking_nanda2023_*.toml`) and prints a Markdown table:
the first epoch whose training accuracy reached 99% (memorisation), the
first whose test accuracy did (grokking, run.json's `target`), and the
energy of every window (train, eval, checkpoint) of the epochs after the
first and up to the second, per component, with the estimate's tracking
mode. Per-component joules matter because the RAM estimate differs by
design between tracking modes (installed against resident memory), while
the CPU estimate is comparable when the machine was otherwise idle.

The median seconds and joules of an epoch over the whole run are printed
too, with the number of epochs slower than 1.25 x the median: a sign that
other work shared the machine.
"""
import json
import statistics
import sys
from pathlib import Path

THRESHOLD = 0.99


def first_epoch(epochs, key):
    for e in epochs:
        if e.get(key) is not None and e[key] >= THRESHOLD:
            return e["epoch"]
    return None


def energy_between(run, lo, hi):
    """Joules per component of the windows of epochs lo+1 ..= hi."""
    out = {}
    for w in run["energy"]["windows"]:
        kind, _, ep = w["name"].partition("/epoch-")
        if not ep.isdigit() or not lo < int(ep) <= hi:
            continue
        for c in w["components"]:
            out[c["name"]] = out.get(c["name"], 0.0) + c["joules"]
    return out


def summarise(run_dir):
    run = json.loads((Path(run_dir) / "run.json").read_text())
    epochs = run["epochs"]
    steps = run["config"]["train"].get("steps_per_epoch") or 1
    mem = first_epoch(epochs, "train_accuracy")
    grok = first_epoch(epochs, "test_accuracy")
    between = energy_between(run, mem, grok) if mem and grok else {}
    walls = [e["wall_s"] for e in epochs]
    joules = [e["energy_j"] for e in epochs if e.get("energy_j") is not None]
    med = statistics.median(walls) if walls else float("nan")
    return {
        "run": Path(run_dir).name,
        "status": run.get("status", "?"),
        "precision": run["precision"],
        "seed": run["seed"],
        "mode": run["energy"].get("tracking_mode", "machine"),
        "mem": mem,
        "grok": grok,
        "steps": steps,
        "between": between,
        "s_between": sum(e["wall_s"] for e in epochs if mem and grok and mem < e["epoch"] <= grok),
        "median_s": med,
        "median_j": statistics.median(joules) if joules else float("nan"),
        "slow": sum(w > 1.25 * med for w in walls),
        "n": len(epochs),
        "provenance": run["energy"]["provenance"],
    }


def fmt_step(epoch, steps):
    return "-" if epoch is None else f"{epoch} ({epoch * steps:,})"


def main(dirs):
    if not dirs:
        sys.exit(__doc__)
    runs = [summarise(d) for d in dirs]
    seen = {c for s in runs for c in s["between"]}
    comps = [c for c in ("gpu", "cpu", "ram") if c in seen] or ["cpu", "ram"]
    comps += sorted(seen - set(comps))
    print("| run | status | precision | seed | tracking_mode | memorisation epoch (step) | grokking epoch (step) "
          "| J between, total | " + " | ".join(comps) + " | s between | median s / J per epoch "
          "| epochs > 1.25 x median |")
    print("|---|---|---|---|---|---|---|---|" + "---|" * len(comps) + "---|---|---|")
    for s in runs:
        b = s["between"]
        per = " | ".join(f"{b.get(c, 0):,.0f}" for c in comps)
        print(f"| {s['run']} | {s['status']} | {s['precision']} | {s['seed']} | {s['mode']} "
              f"| {fmt_step(s['mem'], s['steps'])} | {fmt_step(s['grok'], s['steps'])} "
              f"| {sum(b.values()):,.0f} | {per} | {s['s_between']:,.0f} "
              f"| {s['median_s']:.2f} / {s['median_j']:,.0f} | {s['slow']} of {s['n']} |")
    print(f"\nEnergy: {', '.join(sorted({s['provenance'] for s in runs}))}.")


if __name__ == "__main__":
    main(sys.argv[1:])
