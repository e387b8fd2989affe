#!/usr/bin/env python3
"""greentrain against scikit-learn's MLPClassifier, one machine, one run.

Both train the same 784-800-10 ReLU MLP on MNIST (60,000 training images,
10,000 test images from datasets/mnist) with Adam, learning rate 1e-3, no
weight decay, the same batch size and the same number of epochs, a constant
learning rate, fp32. Printed: training seconds, samples/s and test accuracy
for both, as a Markdown table (last).

    python3 benches/sklearn_mlp.py [--epochs 10] [--batch 128] [--greentrain BIN]

Without --greentrain the script runs `cargo run --` (the README's build).
scikit-learn and numpy are installed with pip when missing.
"""

import argparse
import gzip
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ensure(pkgs):
    missing = []
    for mod, pip_name in pkgs:
        try:
            __import__(mod)
        except ImportError:
            missing.append(pip_name)
    if missing:
        print(f"installing {' '.join(missing)} with pip", file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *missing])


ensure([("numpy", "numpy"), ("sklearn", "scikit-learn")])

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load():
    d = os.path.join(ROOT, "datasets", "mnist")
    xtr = idx(os.path.join(d, "train-images-idx3-ubyte.gz")).reshape(-1, 784)
    ytr = idx(os.path.join(d, "train-labels-idx1-ubyte.gz"))
    xte = idx(os.path.join(d, "t10k-images-idx3-ubyte.gz")).reshape(-1, 784)
    yte = idx(os.path.join(d, "t10k-labels-idx1-ubyte.gz"))
    # The same input scaling as greentrain (data.rs): x/255, then MNIST's mean and sd.
    f = lambda x: ((x.astype(np.float32) / 255.0) - 0.1307) / 0.3081  # noqa: E731
    return f(xtr), ytr, f(xte), yte


def run_sklearn(args):
    xtr, ytr, xte, yte = load()
    clf = MLPClassifier(
        hidden_layer_sizes=(800,),
        activation="relu",
        solver="adam",
        alpha=0.0,
        batch_size=args.batch,
        learning_rate="constant",
        learning_rate_init=1e-3,
        max_iter=args.epochs,
        shuffle=True,
        random_state=args.seed,
        tol=0.0,
        n_iter_no_change=args.epochs + 1,
        early_stopping=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        clf.fit(xtr, ytr)
        fit_s = time.perf_counter() - t0
    acc = float((clf.predict(xte) == yte).mean())
    dtype = str(clf.coefs_[0].dtype)
    return {
        "trainer": f"scikit-learn {sklearn.__version__} MLPClassifier (numpy {np.__version__}, {dtype})",
        "wall_s": fit_s,
        "samples_per_s": args.epochs * len(xtr) / fit_s,
        "test_accuracy": acc,
    }


def run_greentrain(args):
    out = tempfile.mkdtemp(prefix="gt-vs-sklearn-")
    cmd = (
        [args.greentrain] if args.greentrain else ["cargo", "run", "--quiet", "--"]
    ) + [
        "--config", os.path.join(ROOT, "configs", "mnist_mlp.toml"),
        "--set", f"train.epochs={args.epochs}",
        "--set", f"data.batch_size={args.batch}",
        "--set", 'train.schedule="constant"',
        "--set", f"run.seed={args.seed}",
        "--precision", "fp32",
        "--device", "cpu",
        "--out", out,
        "--quiet",
    ]
    print("+ " + " ".join(cmd), file=sys.stderr)
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"greentrain failed ({res.returncode}):\n{res.stderr}")
    run_dir = [l for l in res.stdout.splitlines() if l.startswith("run: ")][-1][5:]
    with open(os.path.join(run_dir, "run.json")) as f:
        rec = json.load(f)
    fin = rec["final"]
    return {
        "trainer": f"greentrain {rec['versions']['greentrain']} (Burn {rec['versions']['burn']}, flex, fp32)",
        "wall_s": fin["wall_s"],
        "samples_per_s": fin["samples"] / fin["wall_s"],
        "test_accuracy": fin["test_accuracy"],
        "run_dir": run_dir,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--greentrain", help="greentrain binary (default: cargo run --)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} logical CPUs, {platform.platform()}", file=sys.stderr)
    rows = [run_greentrain(args), run_sklearn(args)]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    print(f"\n784-800-10 MLP, MNIST, Adam 1e-3 constant, batch {args.batch}, {args.epochs} epochs, seed {args.seed}\n")
    print("| trainer | training time (s) | samples/s | test accuracy |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['trainer']} | {r['wall_s']:.1f} | {r['samples_per_s']:,.0f} | {100 * r['test_accuracy']:.2f}% |")
    g, s = rows
    print(f"\ngreentrain / scikit-learn samples/s: {g['samples_per_s'] / s['samples_per_s']:.2f}")


if __name__ == "__main__":
    main()
