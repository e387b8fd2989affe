#!/usr/bin/env bash
# The GPU benchmark in one call: greentrain in fp32, fp16 and bf16 against PyTorch
# (fp32 and torch.autocast + GradScaler), with energy from NVML's counter and the
# integrated-power cross-check. Builds nothing: it runs a prebuilt greentrain.
#
#   benches/gpu/run.sh [--device cuda|cpu] [--bin PATH] [--epochs N] [--repeats N]
#                      [--models "mnist_wide_mlp mnist_lenet5"] [--idle SECONDS]
#
# Writes everything under $OUT (default ./gpu-out) and prints the table last.
# On the lent GPU machine: carry the stripped binary (cargo build --release
# --features cuda, then strip) as .gpu/greentrain with datasets/ and configs/.
# Here, `benches/gpu/run.sh --device cpu --epochs 2 --repeats 1 --idle 2`
# exercises the same script on the CPU.
set -uo pipefail
cd "$(dirname "$0")/../.."

device=cuda
bin=.gpu/greentrain
epochs=4
repeats=2
idle=30
models="mnist_wide_mlp mnist_lenet5"
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --epochs) epochs=$2; shift 2 ;;
        --repeats) repeats=$2; shift 2 ;;
        --models) models=$2; shift 2 ;;
        --idle) idle=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT/runs"
log="$OUT/log.txt"
: > "$log"
say() { echo "$@" | tee -a "$log"; }

[ -x "$bin" ] || { echo "no greentrain binary at $bin (use --bin)" >&2; exit 2; }
say "== machine ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -q > "$OUT/nvidia-smi-q.txt" 2>&1
    nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.sm,clocks.mem --format=csv | tee -a "$log"
fi
"$bin" --version | tee -a "$log"
say "== idle power for ${idle}s"
"$bin" meters --idle "$idle" 2>&1 | tee "$OUT/idle.txt" | tee -a "$log"

# Interleaved: each repeat runs every precision of every model, so drift and heat hit all alike.
for r in $(seq 1 "$repeats"); do
    for m in $models; do
        for p in fp32 fp16 bf16; do
            say "== greentrain $m $p repeat $r"
            "$bin" --config "configs/gpu/$m.toml" --device "$device" --precision "$p" \
                --set "train.epochs=$epochs" --set "run.seed=$((41 + r))" \
                --out "$OUT/runs" --quiet >> "$log" 2>&1 || say "greentrain $m $p failed (exit $?)"
        done
        for mode in fp32 amp; do
            say "== pytorch $m $mode repeat $r"
            python3 benches/gpu/torch_ref.py --model "$m" --mode "$mode" --device "$device" \
                --epochs "$epochs" --seed "$((41 + r))" --out "$OUT/torch-$m-$mode-$r.json" >> "$log" 2>&1 \
                || say "pytorch $m $mode skipped or failed (see log)"
        done
    done
done
python3 benches/gpu/summarise.py "$OUT" | tee "$OUT/table.md"
