#!/usr/bin/env bash
# One short GPU lease in one call: the kernels issue's rows (wide MLP at
# batch 4096 and 1024, transformer, ResNet-20, LeNet-5: greentrain fp32 and
# fp16 against PyTorch fp32 and AMP, windows sized by run.sh --window; the
# launch-bound wide MLP 1024 and transformer also without the foreach kernels,
# `...nofe:greentrain`, then without the two-stage sums (`...nosums`) and
# greentrain's matmul kernels (`...burnmm`); the whole table may need a second call, --cases),
# then cubek's matmul kernels in f16, then Nanda et al.'s
# grokking run in fp32 and fp16 with what time is left. Everything comes back
# as at most 6 files: the tables, the logs and one tarball (the device tool
# returns 8 files at most). Each stage has its own time limit, so that a slow
# stage cannot take the whole lease; LEASE_S (default 540) is the second by
# which the last run must have ended.
#
#   benches/gpu/lease.sh [--device cuda|cpu] [--window S] [--quick]
#                        [--cases "wide4096 transformer ..."] [--profile-case CASE]
#
# --cases goes to run.sh (resnet20gemm:greentrain adds ResNet-20 with
# `model.conv = "gemm"`); --profile-case adds run.sh's kernel profile of
# that case's fp16 steps before the rows.
#
# Build here with benches/gpu/build.sh and carry .gpu. --quick (with
# --device cpu) checks the script here in a few minutes.
set -uo pipefail
cd "$(dirname "$0")/../.."

device=cuda
window=5.5
quick=()
cases="wide1024 wide1024nofe:greentrain transformer transformernofe:greentrain wide4096 resnet20 lenet wide4096nosums:greentrain resnet20nosums:greentrain wide4096burnmm:greentrain"
profile=()
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device=$2; shift 2 ;;
        --window) window=$2; shift 2 ;;
        --quick) quick=(--batch 32); shift ;;
        --cases) cases=$2; shift 2 ;;
        --profile-case) profile=(--profile-case "$2"); shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
OUT=${OUT:-$PWD/gpu-out}
lease=${LEASE_S:-540}
export WORK=${WORK:-/tmp/greentrain-lease}
rm -rf "$WORK"
mkdir -p "$OUT"

# Models: no run starts after 75% of the lease (the table is what a lease is
# for; the cases come in order of value, and those past the budget are
# skipped and named in the log: run them in a second call with --cases).
STEP_TIMEOUT=90 BUDGET_S=$((lease * 75 / 100)) OUT="$OUT" benches/gpu/run.sh --device "$device" \
    --no-matmul --window "$window" --epochs 2 --precisions "fp32 fp16" \
    --cases "$cases" "${profile[@]}" "${quick[@]}"

# Kernels: under two minutes (the 19 in f16 took about 68 s on 2026-12-04: 48 s of
# first launches, 19 s of timing); each line is written as it is timed.
mkdir -p "$OUT/kernels"
[ "$device" = cuda ] && OUT="$OUT/kernels" WORK="$WORK/kernels" KERNELS_TIMEOUT=110 benches/gpu/run.sh \
    --device "$device" --no-matmul --kernels --kernel-dtypes f16 --cases ""

# Grokking: seed 0, fp32 then fp16, no run starting within 70 s of the end.
left=$((lease - SECONDS - 70))
if [ "$left" -gt 0 ]; then
    OUT="$OUT" WORK="$WORK/grok" STEP_TIMEOUT=$((lease - SECONDS < 150 ? lease - SECONDS - 10 : 140)) \
        BUDGET_S=$left benches/gpu/grokking.sh --device "$device" --seeds 0 --precisions "fp32 fp16" \
        $([ ${#quick[@]} -gt 0 ] && echo --set train.epochs=2 --set train.steps_per_epoch=2)
fi

# Pack: the tables and logs stay readable, the rest goes into one tarball.
cd "$OUT" || exit 1
tar czf lease.tgz --exclude lease.tgz -- * 2>/dev/null
[ -f kernels/kernels.md ] && cp kernels/kernels.md kernels-kernels.md
keep=" ./lease.tgz ./table.md ./kernels-kernels.md ./grokking.md ./log.txt ./grokking-log.txt "
find . -mindepth 1 -depth | while read -r f; do
    case "$keep" in *" $f "*) ;; *) rm -rf "$f" ;; esac
done
ls -la
