#!/usr/bin/env bash
# The GPU benchmark in one call: Burn's matmul against PyTorch's, then the
# wide MLP (batch 4096 and 1024) and LeNet-5 in greentrain fp32, fp16 and
# bf16 against PyTorch fp32 and AMP (torch.autocast + GradScaler), each
# repeat interleaving all of them. Energy from NVML's counter with the
# integrated-power cross-check. Builds nothing: it runs a prebuilt greentrain.
#
#   benches/gpu/run.sh [--device cuda|cpu] [--bin PATH] [--repeats N]
#                      [--cases "wide4096 wide1024 lenet resnet20 resnet20gemm transformer"] [--batch N]
#                      (each case with the suffix `nofe`, greentrain only: without the foreach kernels)
#                      [--precisions "fp32 fp16 bf16"] [--bf16-cases "wide4096"] [--epochs N]
#                      [--profile] [--prove] [--quick] [--no-matmul] [--tune] [--kernels]
#                      [--window SECONDS] [--kernel-dtypes f16,f32] [--profile-case CASE]
#
# Epoch 1 of every run is warm-up (kernel compilation, autotune) and is left
# out; the later epochs (--epochs, default 3) are the measured windows, sized
# by steps_per_epoch to last about 5 s each. --precisions picks greentrain's
# precisions (PyTorch always runs fp32 and AMP); --bf16-cases adds bf16 to
# the cases named. Run folders (with checkpoints) go to $WORK (default
# /tmp/greentrain-gpu); $OUT (default ./gpu-out) gets only the log, the
# tables and results.tgz (run.json and metrics.csv files, PyTorch JSON).
# --profile adds a CubeCL kernel profile of fp16 steps (after an unprofiled
# run that fills the kernel cache, so that compilation is not counted) and
# PyTorch's profiler table for the same model (--profile-case, default
# wide4096: the wide MLP at batch 4096). A case named `lenet:torch`
# runs PyTorch's rows only, `lenet:greentrain` greentrain's. --batch N overrides every case's batch
# size (the steps per epoch stay). --prove: a run killed with SIGKILL in its
# second epoch and resumed, against the same run uninterrupted (prove.py);
# `greentrain reproduce` of that run; `greentrain bench` on the device; one
# emissions.csv. --quick: tiny windows (script checks). STEP_TIMEOUT (seconds,
# default 240) bounds each training run, so that one slow case cannot use up
# a short GPU lease; BUDGET_S (seconds) skips the training runs that would
# start after it, so that the tables are still written. --tune: `greentrain
# tune` on the MNIST MLP to 98% over batch sizes 128, 512, 2048 and fp32,
# fp16, bf16 (2 seeds), run twice so that the second pass, with every kernel
# in the cache, is the one reported (tune.md and tune.csv in $OUT).
# --kernels: each of CubeCL's matmul kernels timed on its own in f16 and f32
# (`greentrain matmul --kernels all`, 1 s each, checked against Burn's
# product), tabulated in kernels.md: which kernel Burn's default leaves unused;
# resnet20gemm is ResNet-20 with `model.conv = "gemm"` (its PyTorch rows are
# resnet20's: name it `resnet20gemm:greentrain`). --kernel-dtypes narrows it (default f16,f32), KERNELS_TIMEOUT (seconds,
# default 400) bounds it. --window S sizes each
# measured epoch to about S seconds instead of the fixed steps per epoch: a
# greentrain run is preceded by a 10-step probe (which also fills the kernel
# cache) whose second epoch's samples/s sets the steps, and PyTorch times 20
# steps after its warm-up epoch (torch_ref.py --window); for models whose
# speed is not known yet, so that a short lease neither measures 1 s windows
# nor spends minutes on one row.
#
# On the lent GPU machine: build here with benches/gpu/build.sh, which
# leaves the compressed binary in .gpu/, and carry .gpu.
set -uo pipefail
cd "$(dirname "$0")/../.."

device=cuda
bin=.gpu/greentrain
repeats=1
cases="wide4096 wide1024 lenet"
profile=0
profile_case=wide4096
prove=0
quick=0
matmul=1
batch_override=
precisions="fp32 fp16 bf16"
bf16_cases=
epochs=3
tune=0
kernels=0
kernel_dtypes=f16,f32
window=
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --repeats) repeats=$2; shift 2 ;;
        --cases) cases=$2; shift 2 ;;
        --batch) batch_override=$2; shift 2 ;;
        --precisions) precisions=$2; shift 2 ;;
        --epochs) epochs=$2; shift 2 ;;
        --bf16-cases) bf16_cases=$2; shift 2 ;;
        --profile) profile=1; shift ;;
        --profile-case) profile=1; profile_case=$2; shift 2 ;;
        --prove) prove=1; shift ;;
        --quick) quick=1; shift ;;
        --no-matmul) matmul=0; shift ;;
        --tune) tune=1; shift ;;
        --kernels) kernels=1; shift ;;
        --kernel-dtypes) kernel_dtypes=$2; shift 2 ;;
        --window) window=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
OUT=${OUT:-$PWD/gpu-out}
WORK=${WORK:-/tmp/greentrain-gpu}
mkdir -p "$OUT" "$WORK/runs"
log="$OUT/log.txt"
: > "$log"
say() { echo "$@" | tee -a "$log"; }
if [ ! -x "$bin" ] && [ -f "$bin.xz" ]; then
    python3 -c "import lzma,sys; open(sys.argv[2],'wb').write(lzma.open(sys.argv[1]).read())" "$bin.xz" "$bin" && chmod +x "$bin"
fi
[ -x "$bin" ] || { echo "no greentrain binary at $bin (use --bin)" >&2; exit 2; }
export GREENTRAIN_CACHE_DIR="$WORK/kernel-cache"
st=${STEP_TIMEOUT:-240}
budget=${BUDGET_S:-100000}
late() { [ "$SECONDS" -ge "$budget" ] && say "skipped $1: past BUDGET_S ($SECONDS s)"; }

# case -> model, batch, greentrain steps per epoch, PyTorch steps per epoch[,
# one more --set for greentrain's runs]
case_args() {
    case "$1" in
        wide4096) echo "mnist_wide_mlp 4096 600 600" ;;
        wide1024) echo "mnist_wide_mlp 1024 1200 1200" ;;
        lenet) echo "mnist_lenet5 1024 150 1500" ;;
        resnet20) echo "mnist_resnet20 512 100 300" ;;
        resnet20gemm) echo "mnist_resnet20 512 100 300 model.conv=\"gemm\"" ;;
        transformer) echo "modular_transformer 4096 200 600" ;;
        # The same models without the foreach kernels (`[kernels] foreach =
        # false`): greentrain-only rows (`wide1024nofe:greentrain`) that
        # measure what the kernels gain.
        wide4096nofe) echo "mnist_wide_mlp 4096 600 600 kernels.foreach=false" ;;
        wide1024nofe) echo "mnist_wide_mlp 1024 1200 1200 kernels.foreach=false" ;;
        lenetnofe) echo "mnist_lenet5 1024 150 1500 kernels.foreach=false" ;;
        resnet20nofe) echo "mnist_resnet20 512 100 300 kernels.foreach=false" ;;
        transformernofe) echo "modular_transformer 4096 200 600 kernels.foreach=false" ;;
        # Without the two-stage sums (`[kernels] sums = "burn"`: Burn's one
        # reduction per output) and without greentrain's matmul kernels
        # (`matmul = "burn"`): each path's gain measured alone.
        wide4096nosums) echo "mnist_wide_mlp 4096 600 600 kernels.sums=\"burn\"" ;;
        wide1024nosums) echo "mnist_wide_mlp 1024 1200 1200 kernels.sums=\"burn\"" ;;
        resnet20nosums) echo "mnist_resnet20 512 100 300 kernels.sums=\"burn\"" ;;
        transformernosums) echo "modular_transformer 4096 200 600 kernels.sums=\"burn\"" ;;
        wide4096burnmm) echo "mnist_wide_mlp 4096 600 600 kernels.matmul=\"burn\"" ;;
        transformerburnmm) echo "modular_transformer 4096 200 600 kernels.matmul=\"burn\"" ;;
        *) echo "unknown case $1" >&2; return 1 ;;
    esac
}

# Steps per epoch for a window of $window seconds, from a 10-step probe run's
# second epoch (its first compiles the kernels, which the cache then keeps).
probe_steps() {
    local dir="$WORK/probe/$4-$3"
    rm -rf "$dir"
    say "== probe greentrain $4 $3 (10 steps)" >&2
    timeout "$st" "$bin" --config "configs/gpu/$1.toml" --device "$device" --precision "$3" \
        --set "data.batch_size=$2" --set train.steps_per_epoch=10 --set train.epochs=2 \
        --set train.log_every=100000 --set run.name=probe "${@:5}" --out "$dir" --quiet >> "$log" 2>&1 || return 1
    python3 - "$dir" "$window" <<'PY'
import glob, json, sys
r = json.load(open(glob.glob(sys.argv[1] + "/*/run.json")[0]))
e = r["epochs"][-1]
# Steps per second, not samples: a last short batch per pass (the modular set) makes samples/batch wrong.
print(max(20, min(20000, int(float(sys.argv[2]) * 10 / e["wall_s"]))))
PY
}

say "== machine ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.sm,clocks.mem,temperature.gpu --format=csv | tee -a "$log"
fi
"$bin" --version | tee -a "$log"

secs=3; size=4096; [ $quick = 1 ] && secs=0.5 && size=512
[ $matmul = 1 ] && {
say "== matmul 4096^3 (TFLOP/s)"
timeout 120 "$bin" matmul --device "$device" --size $size --seconds $secs > "$OUT/matmul.jsonl" 2>> "$log" || say "greentrain matmul failed (exit $?)"
timeout 120 python3 benches/gpu/matmul_ref.py --size $size --seconds $secs >> "$OUT/matmul.jsonl" 2>> "$log" || say "pytorch matmul skipped or failed"
cat "$OUT/matmul.jsonl" | tee -a "$log"
}

[ $kernels = 1 ] && {
say "== matmul kernels ${size}^3, f16 and f32, one by one"
ksecs=1; [ $quick = 1 ] && ksecs=0.2
timeout "${KERNELS_TIMEOUT:-400}" "$bin" matmul --device "$device" --size $size --seconds $ksecs --dtypes "$kernel_dtypes" --kernels all \
    > "$OUT/kernels.jsonl" 2>> "$log" || say "greentrain matmul --kernels failed (exit $?)"
python3 benches/gpu/kernels.py "$OUT/kernels.jsonl" | tee "$OUT/kernels.md" | tee -a "$log"
}

if [ $profile = 1 ]; then
    read -r pmodel pbatch _ _ < <(case_args "$profile_case")
    say "== profile: greentrain fp16 $profile_case ($pmodel, batch $pbatch; CubeCL kernel timings, epoch 2)"
    plog="$WORK/cubecl-profile.log"
    psteps=30; [ $quick = 1 ] && psteps=2
    timeout "$st" "$bin" --config "configs/gpu/$pmodel.toml" --device "$device" --precision fp16 \
        --set "data.batch_size=$pbatch" --set "train.steps_per_epoch=$psteps" --set train.epochs=1 \
        --set run.name=warm-profile --out "$WORK/warm" --quiet >> "$log" 2>&1 || say "kernel-cache warm-up failed"
    CUBECL_DEBUG_LOG="$plog" CUBECL_DEBUG_OPTION=profile timeout "$st" "$bin" --config "configs/gpu/$pmodel.toml" \
        --device "$device" --precision fp16 --set "data.batch_size=$pbatch" --set "train.steps_per_epoch=$psteps" \
        --set train.epochs=2 --set train.log_every=100000 --set run.name=gpu-profile --out "$WORK/runs" --quiet >> "$log" 2>&1 \
        || say "profiled run failed (exit $?)"
    [ -f "$plog" ] && python3 benches/gpu/profile_summary.py "$plog" 30 0.5 > "$OUT/profile-greentrain.md" 2>&1
    head -c 20000 "$plog" > "$WORK/cubecl-profile-head.txt" 2>/dev/null
    timeout "$st" python3 benches/gpu/torch_ref.py --model "$pmodel" --mode amp --device "$device" --batch "$pbatch" \
        --steps 50 --epochs 1 --out "$WORK/torch-profile.json" --profile "$OUT/profile-pytorch.txt" >> "$log" 2>&1 \
        || say "pytorch profile failed"
fi

if [ $prove = 1 ]; then
    say "== prove: SIGKILL in epoch 2, resume, compare with an uninterrupted run (MNIST MLP)"
    steps=2000; bsteps=600; mw=5s; [ $quick = 1 ] && steps=20 && bsteps=5 && mw=0.1s
    pset=(--config configs/mnist_mlp.toml --device "$device" --set train.epochs=3
          --set "train.steps_per_epoch=$steps" --set train.checkpoint_every=1 --set train.log_every=100000)
    timeout 180 "$bin" "${pset[@]}" --set run.name=prove-whole --out "$WORK/prove" --quiet >> "$log" 2>&1 \
        || say "uninterrupted run failed"
    "$bin" "${pset[@]}" --set run.name=prove-killed --out "$WORK/prove" --quiet >> "$log" 2>&1 &
    pid=$!
    for _ in $(seq 1 1200); do
        sleep 0.1
        f=$(ls -d "$WORK"/prove/prove-killed-*/ 2>/dev/null | head -1)
        [ -n "$f" ] && python3 -c "import json,sys; sys.exit(0 if len(json.load(open(sys.argv[1]+'/run.json'))['epochs'])>=1 else 1)" "$f" 2>/dev/null && break
    done
    kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
    killed=$(ls -d "$WORK"/prove/prove-killed-*/ | head -1)
    whole=$(ls -d "$WORK"/prove/prove-whole-*/ | head -1)
    say "killed at: $(python3 -c "import json,sys; r=json.load(open(sys.argv[1]+'/run.json')); print(r['status'], len(r['epochs']), 'epochs')" "$killed")"
    timeout 180 "$bin" resume "$killed" --quiet >> "$log" 2>&1 || say "resume failed (exit $?)"
    python3 benches/gpu/prove.py "$whole" "$killed" 2>&1 | tee -a "$log" "$OUT/prove.txt" || say "resumed run OUTSIDE tolerance"
    say "== prove: greentrain reproduce of the uninterrupted run"
    timeout 200 "$bin" reproduce "$whole" --out "$WORK/prove" --quiet 2>&1 | tail -25 | tee -a "$log" "$OUT/prove.txt"
    say "== prove: greentrain bench on $device (wide MLP, batch 4096, fp32 and fp16)"
    timeout 150 "$bin" bench --config configs/gpu/mnist_wide_mlp.toml --device "$device" --repeats 2 \
        --precisions fp32,fp16 --min-window "$mw" --set data.batch_size=4096 --set "train.steps_per_epoch=$bsteps" \
        --set train.epochs=2 --set train.checkpoint_every=100 \
        --out "$WORK/bench" --quiet >> "$log" 2>&1 || say "bench failed (exit $?)"
    cat "$WORK/bench/bench.md" >> "$OUT/prove.txt" 2>/dev/null
    cat "$whole/emissions.csv" >> "$OUT/prove.txt" 2>/dev/null
fi

if [ $tune = 1 ]; then
    say "== tune: energy to 98% on the MNIST MLP, batch 128/512/2048 x fp32/fp16/bf16 (second pass reported)"
    for pass in warm measured; do
        timeout "${STEP_TIMEOUT:-240}" "$bin" tune --config configs/mnist_mlp.toml --target-accuracy 0.98 \
            --batch-sizes 128,512,2048 --precisions fp32,fp16,bf16 --repeats 2 --device "$device" \
            --out "$WORK/tune-$pass" --quiet >> "$log" 2>&1 || say "tune ($pass) exit $?"
    done
    cp "$WORK/tune-measured/tune.md" "$OUT/tune.md" 2>/dev/null && cat "$OUT/tune.md"
    cp "$WORK/tune-measured/tune.csv" "$OUT/tune.csv" 2>/dev/null
fi

for r in $(seq 1 "$repeats"); do
    for spec in $cases; do
        cs=${spec%%:*}; only=${spec#*:}; [ "$only" = "$spec" ] && only=both
        read -r model batch gsteps tsteps gset < <(case_args "$cs") || continue
        gsets=(); [ -n "$gset" ] && gsets=(--set "$gset")
        if [ $quick = 1 ]; then gsteps=5; tsteps=5; fi
        if [ -n "$batch_override" ]; then batch=$batch_override; fi
        extra=; case " $bf16_cases " in *" $cs "*) extra=bf16 ;; esac
        gp="$precisions $extra"; [ "$only" = torch ] && gp=
        modes="fp32 amp"; [ "$only" = greentrain ] && modes=
        for p in $gp; do
            late "greentrain $cs $p" && continue
            if [ -n "$window" ]; then
                gsteps=$(probe_steps "$model" "$batch" "$p" "$cs" "${gsets[@]}") || { say "probe $cs $p failed"; continue; }
            fi
            say "== greentrain $cs $p repeat $r ($gsteps steps per epoch)"
            timeout "$st" "$bin" --config "configs/gpu/$model.toml" --device "$device" --precision "$p" \
                --set "data.batch_size=$batch" --set "train.steps_per_epoch=$gsteps" \
                --set "train.epochs=$epochs" --set train.log_every=100000 --set "run.seed=$((41 + r))" \
                --set "run.name=gpu-$cs-$p" "${gsets[@]}" --out "$WORK/runs" --quiet >> "$log" 2>&1 \
                || say "greentrain $cs $p failed (exit $?)"
        done
        for mode in $modes; do
            late "pytorch $cs $mode" && continue
            say "== pytorch $cs $mode repeat $r"
            tsized=(--steps "$tsteps"); [ -n "$window" ] && tsized=(--steps 100 --window "$window")
            timeout "$st" python3 benches/gpu/torch_ref.py --model "$model" --mode "$mode" --device "$device" \
                --batch "$batch" "${tsized[@]}" --epochs "$epochs" --seed "$((41 + r))" \
                --out "$WORK/torch-$cs-$mode-$r.json" >> "$log" 2>&1 \
                || say "pytorch $cs $mode skipped or failed (see log)"
        done
    done
done

python3 benches/gpu/summarise.py "$WORK" "$OUT/matmul.jsonl" > "$OUT/table.md" 2>> "$log"
(cd "$WORK" && tar czf "$OUT/results.tgz" --exclude='*.bin' runs prove bench torch-*.json cubecl-profile-head.txt 2>/dev/null)
cat "$OUT/table.md"
