"""Top kernels from a CubeCL profiling log (CUBECL_DEBUG_OPTION=profile):
each line `| <duration> | <kernel name>` is one kernel execution. Prints the
kernels that took most of the device time, their count and share.
Usage: profile_summary.py LOG [TOP] [SKIP]: SKIP (0 to 1) leaves out that
fraction of the executions at the start (warm-up epochs)."""
import re, sys
from collections import defaultdict

UNIT = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
pat = re.compile(r"^\|\s*([0-9.]+)(ns|µs|us|ms|s)\s*\|\s*(.+)$")
total, count = defaultdict(float), defaultdict(int)
runs = [m for m in (pat.match(l.strip()) for l in open(sys.argv[1], errors="replace")) if m]
skip = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
for m in runs[int(len(runs) * skip):]:
    name = m.group(3).strip()[:110]
    total[name] += float(m.group(1)) * UNIT[m.group(2)]
    count[name] += 1
all_s = sum(total.values())
print(f"kernel executions: {sum(count.values())} of {len(runs)} (first {skip:.0%} left out), device time {all_s * 1e3:.1f} ms")
print("| share | ms | launches | kernel |")
print("|---|---|---|---|")
for name, t in sorted(total.items(), key=lambda kv: -kv[1])[:int(sys.argv[2]) if len(sys.argv) > 2 else 25]:
    print(f"| {t / all_s:.1%} | {t * 1e3:.2f} | {count[name]} | `{name}` |")
