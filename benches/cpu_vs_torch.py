#!/usr/bin/env python3
"""greentrain against PyTorch on the CPU, side by side (issue 39): the same model, batch,
optimizer, data and thread count, training samples/s of epoch 2 (epoch 1 is warm-up), repeats
interleaved (greentrain first in odd rounds, PyTorch first in even ones), then per model the
medians, their ratio and its spread (the lowest greentrain rate over the highest PyTorch one, and
the other way round). fp32.

    python3 benches/cpu_vs_torch.py [--bin PATH] [--threads 2] [--repeats 3]
        [--cases "mlp lenet5 mnist1d_cnn resnet20 transformer"] [--install] [--quick]

--install puts PyTorch in place first when `import torch` fails: the CPU wheel from
download.pytorch.org/whl/cpu, or PyPI's wheel where only PyPI is reachable (and NumPy, for
MNIST-1D, where it is missing); without PyTorch its column says so and greentrain's rates are still
measured. PyTorch runs benches/gpu/torch_ref.py (its twins of greentrain's configs).
greentrain's threads are rayon's (RAYON_NUM_THREADS), PyTorch's torch.set_num_threads."""
import argparse, json, os, statistics, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# case: greentrain config, PyTorch model, batch, steps per epoch (the batches; steps
# for epochs of about 1 to 6 s on a 2-core VM, one pass of MNIST for the MLP and LeNet-5).
CASES = {
    "mlp": ("configs/mnist_mlp.toml", "mnist_mlp", 128, 460),
    "lenet5": ("configs/gpu/mnist_lenet5.toml", "mnist_lenet5", 256, 230),
    "mnist1d_cnn": ("configs/mnist1d_cnn.toml", "mnist1d_cnn", 100, 400),
    "resnet20": ("configs/gpu/mnist_resnet20.toml", "mnist_resnet20", 128, 30),
    "transformer": ("configs/gpu/modular_transformer.toml", "modular_transformer", 512, 20),
}

def has(module):
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0

def has_torch():
    return has("torch")

def greentrain(binary, case, threads, out):
    config, _, batch, steps = CASES[case]
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    run = [binary, "--config", config, "--device", "cpu", "--precision", "fp32", "--quiet",
           "--set", f"data.batch_size={batch}", "--set", f"train.steps_per_epoch={steps}",
           "--set", "train.epochs=2", "--set", "energy.enabled=false",
           "--set", f'run.name="side-{case}"', "--out", out]
    subprocess.run(run, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    newest = max((os.path.join(out, d) for d in os.listdir(out) if d.startswith(f"side-{case}")),
                 key=os.path.getmtime)
    return json.load(open(os.path.join(newest, "run.json")))["epochs"][1]["samples_per_s"]

def pytorch(case, threads, out):
    _, model, batch, steps = CASES[case]
    path = os.path.join(out, f"torch-{case}.json")
    run = [sys.executable, "benches/gpu/torch_ref.py", "--model", model, "--mode", "fp32",
           "--device", "cpu", "--batch", str(batch), "--steps", str(steps), "--epochs", "2",
           "--threads", str(threads), "--out", path]
    subprocess.run(run, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    e = json.load(open(path))["epochs"][1]
    return e["samples"] / e["wall_s"]

def main():
    a = argparse.ArgumentParser()
    a.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "debug", "greentrain"))
    a.add_argument("--threads", type=int, default=2)
    a.add_argument("--repeats", type=int, default=3)
    a.add_argument("--cases", default=" ".join(CASES))
    a.add_argument("--install", action="store_true")
    a.add_argument("--quick", action="store_true", help="one repeat, a quarter of the steps (a check, not a figure)")
    args = a.parse_args()
    if args.quick:
        args.repeats = 1
        for k, (c, m, b, s) in list(CASES.items()):
            CASES[k] = (c, m, b, max(4, s // 4))
    if args.install and not has_torch():
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "torch"]
        # PyTorch's CPU index first (about 200 MB); where only PyPI is reachable, its wheel
        # (built for CUDA, some 3 GB with NVIDIA's libraries) runs on the CPU just the same.
        if subprocess.run(pip + ["--index-url", "https://download.pytorch.org/whl/cpu"]).returncode:
            subprocess.run(pip, check=True)
    if args.install and not has("numpy"):
        # torch_ref.py reads MNIST-1D's f32 IDX files with NumPy, which PyPI's torch wheel
        # does not pull in.
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "numpy"], check=True)
    torch = has_torch()
    if not torch:
        print("PyTorch is not installed (--install puts its CPU wheel in place): its column is empty",
              file=sys.stderr)
    print(f"| model | batch | greentrain samples/s | PyTorch samples/s | ratio (spread) |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as out:
        for case in args.cases.split():
            g, t = [], []
            for r in range(args.repeats):
                order = ["g", "t"] if r % 2 == 0 else ["t", "g"]
                for who in order:
                    if who == "g":
                        g.append(greentrain(args.bin, case, args.threads, out))
                    elif torch:
                        t.append(pytorch(case, args.threads, out))
            rates = lambda v: ", ".join(f"{x:,.0f}" for x in v) or "-"
            ratio = "-"
            if t:
                ratio = (f"{statistics.median(g) / statistics.median(t):.2f}x "
                         f"({min(g) / max(t):.2f}-{max(g) / min(t):.2f})")
            print(f"| {case} | {CASES[case][2]} | {rates(g)} | {rates(t)} | {ratio} |", flush=True)

main()
