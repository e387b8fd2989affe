"""Table for benches/gpu/run.sh: samples/s and J/sample with epoch 1 (warm-up:
kernel compilation, autotune) excluded, accuracy, skipped steps, and the NVML
counter against integrated power. Reads greentrain run.json files and the
PyTorch reference's JSON files under OUT."""
import glob, json, os, sys
from collections import defaultdict

out = sys.argv[1]
rows = defaultdict(list)
for p in glob.glob(os.path.join(out, "runs", "*", "run.json")):
    r = json.load(open(p))
    if r.get("status") != "completed" or len(r["epochs"]) < 2:
        continue
    later = r["epochs"][1:]
    n = {e["epoch"] for e in later}
    wins = [w for w in r.get("energy", {}).get("windows", []) if w["name"].startswith("train/epoch-") and int(w["name"].split("-")[-1]) in n]
    samples = sum(e["samples"] for e in later)
    wall = sum(e["wall_s"] for e in later)
    j = sum(w["total_j"] for w in wins)
    gpu_j = sum(c["joules"] for w in wins for c in w["components"] if c["kind"] == "gpu")
    gpu_int = sum(c.get("integrated_j") or 0 for w in wins for c in w["components"] if c["kind"] == "gpu")
    prov = r.get("energy", {}).get("provenance", "-")
    model = r["name"].replace("gpu_", "mnist_")
    rows[(model, "greentrain " + r["precision"])].append(dict(sps=samples / wall, jps=j / samples, gjps=gpu_j / samples if gpu_j else None,
                                                               xcheck=(gpu_int / gpu_j - 1) if gpu_j else None, acc=r["final"]["test_accuracy"],
                                                               skipped=r["final"]["skipped_steps"], prov=prov))
for p in glob.glob(os.path.join(out, "torch-*.json")):
    t = json.load(open(p))
    later = t["epochs"][1:]
    samples = sum(e["samples"] for e in later)
    wall = sum(e["wall_s"] for e in later)
    ej = [e["energy_j"] for e in later if e["energy_j"] is not None]
    ij = [e["integrated_j"] for e in later if e["integrated_j"] is not None]
    rows[(t["model"], "pytorch " + t["mode"])].append(dict(sps=samples / wall, jps=None, gjps=sum(ej) / samples if ej else None,
                                                         xcheck=(sum(ij) / sum(ej) - 1) if ej and ij else None, acc=t["test_accuracy"],
                                                         skipped=t["skipped_steps"], prov="measured (nvml)" if ej else "-"))
def mean(v):
    v = [x for x in v if x is not None]
    return sum(v) / len(v) if v else None
def f(x, fmt):
    return "-" if x is None else format(x, fmt)
print("| model | run | n | samples/s | J/sample (all meters) | GPU J/sample (NVML counter) | integrated vs counter | test accuracy | skipped steps | provenance |")
print("|---|---|---|---|---|---|---|---|---|---|")
for (m, k), v in sorted(rows.items()):
    print(f"| {m} | {k} | {len(v)} | {f(mean([x['sps'] for x in v]), '.0f')} | {f(mean([x['jps'] for x in v]), '.4g')} | "
          f"{f(mean([x['gjps'] for x in v]), '.4g')} | {f(mean([x['xcheck'] for x in v]), '+.1%')} | {f(mean([x['acc'] for x in v]), '.4f')} | "
          f"{sum(x['skipped'] for x in v)} | {v[0]['prov']} |")
