#!/usr/bin/env bash
# Nanda et al.'s grokking experiment on a lent GPU, in one call: for each seed,
# each precision trains configs/paper/grokking_nanda2023_fp32.toml until test
# accuracy passes 99% (stop_at_target), seed by seed so that the precisions
# share the machine's state; then benches/grokking.py tabulates memorisation,
# grokking and the energy between them (GPU from NVML, CPU and RAM estimated
# per process).
#
#   benches/gpu/grokking.sh [--device cuda|cpu] [--bin PATH] [--seeds "0 1 2"]
#                           [--precisions "fp32 fp16"] [--config FILE] [--set KEY=VALUE]...
#
# STEP_TIMEOUT (seconds, default 300) bounds each run: a run stopped by it is
# interrupted, writes its run.json and is listed without a grokking step.
# BUDGET_S (seconds) starts no run after it. Run folders (checkpoints) go to
# $WORK (default /tmp/greentrain-grok); $OUT (default ./gpu-out) gets the log,
# grokking.md and each run's run.json and metrics.csv under grokking/.
# Build here with benches/gpu/build.sh and carry .gpu.
set -uo pipefail
cd "$(dirname "$0")/../.."

device=cuda
bin=.gpu/greentrain
seeds="0 1 2"
precisions="fp32 fp16"
config=configs/paper/grokking_nanda2023_fp32.toml
sets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --seeds) seeds=$2; shift 2 ;;
        --precisions) precisions=$2; shift 2 ;;
        --config) config=$2; shift 2 ;;
        --set) sets+=(--set "$2"); shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
OUT=${OUT:-$PWD/gpu-out}
WORK=${WORK:-/tmp/greentrain-grok}
STEP_TIMEOUT=${STEP_TIMEOUT:-300}
mkdir -p "$OUT/grokking" "$WORK"
log="$OUT/grokking-log.txt"
: > "$log"
say() { echo "$@" | tee -a "$log"; }
if [ ! -x "$bin" ] && [ -f "$bin.xz" ]; then
    python3 -c "import lzma,sys; open(sys.argv[2],'wb').write(lzma.open(sys.argv[1]).read())" "$bin.xz" "$bin" && chmod +x "$bin"
fi
[ -x "$bin" ] || { echo "no greentrain binary at $bin (use --bin)" >&2; exit 2; }

start=$(date +%s)
runs=()
for seed in $seeds; do
    for p in $precisions; do
        if [ -n "${BUDGET_S:-}" ] && [ $(( $(date +%s) - start )) -ge "$BUDGET_S" ]; then
            say "skipped $p seed $seed: past BUDGET_S=$BUDGET_S"
            continue
        fi
        dir="$WORK/$p-seed$seed"
        rm -rf "$dir"
        say "== $p seed $seed ($(date -u +%H:%M:%S))"
        # SIGINT, not SIGTERM: greentrain checkpoints and writes run.json on it.
        timeout -s INT -k 30 "$STEP_TIMEOUT" "$bin" --config "$config" --device "$device" \
            --precision "$p" --set run.seed="$seed" --set train.stop_at_target=true \
            --set 'energy.tracking_mode="process"' "${sets[@]}" --out "$dir" --quiet \
            >> "$log" 2>&1
        say "exit $?"
        run=$(ls -d "$dir"/*/ 2>/dev/null | head -1)
        [ -n "$run" ] || { say "no run folder for $p seed $seed"; continue; }
        keep="$OUT/grokking/$p-seed$seed"
        mkdir -p "$keep"
        cp "$run/run.json" "$keep/" && cp "$run/metrics.csv" "$keep/" 2>/dev/null
        runs+=("$keep")
    done
done
if [ ${#runs[@]} -gt 0 ]; then
    python3 benches/grokking.py "${runs[@]}" | tee "$OUT/grokking.md" | tee -a "$log"
fi
