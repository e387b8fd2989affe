"""Tables for benches/gpu/run.sh. Usage: summarise.py WORK MATMUL_JSONL.

Per case (model and batch size) and run: samples/s and J/sample over the
measured epochs (epoch 1, kernel compilation and autotune, is left out),
the NVML counter against integrated power, accuracy, skipped steps; then
the ratios the AMP issue sets targets for. Reads greentrain's run.json files
(WORK/runs/gpu-<case>-<precision>-*/run.json) and the PyTorch reference's
JSON files (WORK/torch-<case>-<mode>-<repeat>.json)."""
import glob, json, os, sys
from collections import defaultdict

work = sys.argv[1]
rows = defaultdict(list)


def mean(v):
    v = [x for x in v if x is not None]
    return sum(v) / len(v) if v else None


def f(x, fmt):
    return "-" if x is None else format(x, fmt)


for p in glob.glob(os.path.join(work, "runs", "gpu-*", "run.json")):
    r = json.load(open(p))
    case = r["name"].split("-")[1] if r["name"].count("-") >= 2 else r["name"]
    if r.get("status") != "completed" or len(r["epochs"]) < 2 or case == "profile":
        continue
    later = r["epochs"][1:]
    n = {e["epoch"] for e in later}
    wins = [w for w in (r.get("energy") or {}).get("windows", [])
            if w["name"].startswith("train/epoch-") and int(w["name"].split("-")[-1]) in n]
    samples = sum(e["samples"] for e in later)
    wall = sum(e["wall_s"] for e in later)
    gpu_j = sum(c["joules"] for w in wins for c in w["components"] if c["kind"] == "gpu")
    gpu_int = sum(c.get("integrated_j") or 0 for w in wins for c in w["components"] if c["kind"] == "gpu")
    rows[(case, "greentrain " + r["precision"])].append(dict(
        sps=samples / wall, window=wall / len(later), gjps=gpu_j / samples if gpu_j else None,
        xcheck=(gpu_int / gpu_j - 1) if gpu_j else None, acc=r["final"]["test_accuracy"],
        skipped=r["final"]["skipped_steps"], warm=r.get("warmup_s")))
for p in glob.glob(os.path.join(work, "torch-*-*-*.json")):
    t = json.load(open(p))
    case = os.path.basename(p).split("-")[1]
    later = t["epochs"][1:]
    samples = sum(e["samples"] for e in later)
    wall = sum(e["wall_s"] for e in later)
    ej = [e["energy_j"] for e in later if e["energy_j"] is not None]
    ij = [e["integrated_j"] for e in later if e["integrated_j"] is not None]
    rows[(case, "pytorch " + t["mode"])].append(dict(
        sps=samples / wall, window=wall / max(len(later), 1), gjps=sum(ej) / samples if ej else None,
        xcheck=(sum(ij) / sum(ej) - 1) if ej and ij and sum(ej) else None, acc=t["test_accuracy"],
        skipped=t["skipped_steps"], warm=t["epochs"][0]["wall_s"]))

if len(sys.argv) > 2 and os.path.exists(sys.argv[2]):
    mm = [json.loads(l) for l in open(sys.argv[2]) if l.startswith("{")]
    print("| matmul 4096^3 | f32 TFLOP/s | f16 TFLOP/s | bf16 TFLOP/s |")
    print("|---|---|---|---|")
    # greentrain's lines name their kernel: `burn` (Burn's product) or the
    # cubek kernel training uses there (greentrain-matmul's table).
    kernels = sorted({m.get("kernel", "burn") for m in mm if "framework" not in m})
    for who in [f"greentrain ({k})" for k in kernels] + ["pytorch"]:
        got = {m["dtype"]: m["tflops"] for m in mm if ("framework" in m) == (who == "pytorch")
               and (who == "pytorch" or f"greentrain ({m.get('kernel', 'burn')})" == who)}
        print(f"| {who} | {f(got.get('f32'), '.1f')} | {f(got.get('f16'), '.1f')} | {f(got.get('bf16'), '.1f')} |")
    print()

print("| case | run | n | samples/s | window s | GPU J/sample (NVML counter) | integrated vs counter | test accuracy | skipped | warm-up s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for (c, k), v in sorted(rows.items()):
    print(f"| {c} | {k} | {len(v)} | {f(mean([x['sps'] for x in v]), '.0f')} | {f(mean([x['window'] for x in v]), '.1f')} | "
          f"{f(mean([x['gjps'] for x in v]), '.4g')} | {f(mean([x['xcheck'] for x in v]), '+.1%')} | "
          f"{f(mean([x['acc'] for x in v]), '.4f')} | {f(None if any(x['skipped'] is None for x in v) else sum(x['skipped'] for x in v), 'd')} | {f(mean([x['warm'] for x in v]), '.1f')} |")

print()
print("| case | fp16/fp32 samples/s | fp16/PyTorch AMP samples/s | fp16/fp32 GPU J/sample |")
print("|---|---|---|---|")
for c in sorted({c for c, _ in rows}):
    g = lambda k, m: mean([x[m] for x in rows.get((c, k), [])])
    r1 = g("greentrain fp16", "sps") / g("greentrain fp32", "sps") if g("greentrain fp16", "sps") and g("greentrain fp32", "sps") else None
    r2 = g("greentrain fp16", "sps") / g("pytorch amp", "sps") if g("greentrain fp16", "sps") and g("pytorch amp", "sps") else None
    r3 = g("greentrain fp16", "gjps") / g("greentrain fp32", "gjps") if g("greentrain fp16", "gjps") and g("greentrain fp32", "gjps") else None
    print(f"| {c} | {f(r1, '.2f')} | {f(r2, '.2f')} | {f(r3, '.2f')} |")
