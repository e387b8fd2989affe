"""Compares a killed-and-resumed run with an uninterrupted one under
`greentrain reproduce`'s GPU tolerance (accuracy within 0.005, losses within
2% relative), epoch by epoch. Usage: prove.py WHOLE_RUN_DIR RESUMED_RUN_DIR.
Exit 1 when any value is outside the tolerance."""
import json, sys

a = json.load(open(sys.argv[1] + "/run.json"))
b = json.load(open(sys.argv[2] + "/run.json"))
bad = 0
print(f"whole: {a['status']}, resumed: {b['status']} (resumed {b.get('resumed')} time(s))")
if len(a["epochs"]) != len(b["epochs"]) or b["status"] != "completed":
    print("epoch counts or status differ"); sys.exit(1)
for x, y in zip(a["epochs"], b["epochs"]):
    for k in ["train_loss", "test_loss"]:
        d = abs(x[k] - y[k]) / max(abs(x[k]), abs(y[k]), 1e-12)
        ok = d <= 0.02
        bad += not ok
        print(f"epoch {x['epoch']} {k}: {x[k]:.6g} vs {y[k]:.6g} (rel {d:.2e}) {'ok' if ok else 'OUTSIDE'}")
    d = abs(x["test_accuracy"] - y["test_accuracy"])
    bad += d > 0.005
    print(f"epoch {x['epoch']} test_accuracy: {x['test_accuracy']:.4f} vs {y['test_accuracy']:.4f} {'ok' if d <= 0.005 else 'OUTSIDE'}")
sys.exit(1 if bad else 0)
