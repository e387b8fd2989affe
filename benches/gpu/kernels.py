#!/usr/bin/env python3
"""Tabulates `greentrain matmul --kernels` JSON lines: one row per kernel,
one column per dtype, with TFLOP/s and the error against Burn's product, or
why the kernel did not run.

    python3 benches/gpu/kernels.py kernels.jsonl
"""
import json
import sys


def cell(r):
    if r["status"] == "timed":
        return f"{r['tflops']:.4g} (err {r['max_rel_err']:.1e})"
    detail = " ".join((r.get("detail") or "").replace("|", "/").split())[:60]
    return f"{r['status']}: {detail}"


def main(path):
    rows, dtypes, size = {}, [], None
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        if "kernel" not in r:
            continue
        size = r["size"]
        if r["dtype"] not in dtypes:
            dtypes.append(r["dtype"])
        rows.setdefault(r["kernel"], {})[r["dtype"]] = r
    if not rows:
        print("no kernel results")
        return 1
    print(f"TFLOP/s at {size}^3 (error: max |product - Burn's| / max |Burn's|)\n")
    print("| kernel | " + " | ".join(dtypes) + " |")
    print("|---" * (len(dtypes) + 1) + "|")
    for kernel, by_dtype in rows.items():
        cells = [cell(by_dtype[d]) if d in by_dtype else "-" for d in dtypes]
        print(f"| {kernel} | " + " | ".join(cells) + " |")
    for d in dtypes:
        timed = [(r["tflops"], k) for k, v in rows.items() for r in [v.get(d)] if r and r["status"] == "timed"]
        if timed:
            best = max(timed)
            auto = rows.get("auto", {}).get(d)
            ratio = f", {best[0] / auto['tflops']:.2f}x auto" if auto and auto["status"] == "timed" and auto["tflops"] > 0 else ""
            print(f"\nfastest {d}: {best[1]} at {best[0]:.4g} TFLOP/s{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
