#!/usr/bin/env bash
# Kernel launches per training step on the CubeCL path, counted on this
# machine's wgpu adapter (Mesa's lavapipe here: the same kernels a GPU runs).
#
# CubeCL's profile log (CUBECL_DEBUG_OPTION=profile) writes one line per
# kernel execution. Each case trains twice, for SHORT and LONG steps of one
# epoch; evaluation, compilation and set-up are the same in both, so the
# difference over LONG - SHORT steps is the launches of a training step.
#
# Case `own` is examples/own_model.rs (a burn::nn CNN on MNIST under Amp),
# run from the example binary beside the greentrain binary.
#
# Usage: benches/launches.sh [--bin PATH] [--cases "mlp transformer resnet own"]
#        [--precisions "fp32 fp16"] [--set key=value ...]
# Prints one line per case: `case precision launches_per_step`.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${CARGO_TARGET_DIR:-target}/debug/greentrain"
cases="mlp transformer resnet"
precisions="fp32 fp16"
extra=()
SHORT=${SHORT:-4}
LONG=${LONG:-12}
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bin="$2"; shift 2 ;;
        --cases) cases="$2"; shift 2 ;;
        --precisions) precisions="$2"; shift 2 ;;
        --set) extra+=(--set "$2"); shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done

# The issue's sizes: small enough for lavapipe, the same ops as the GPU configs.
case_args() {
    case "$1" in
        mlp) echo "--config configs/gpu/mnist_wide_mlp.toml --set model.hidden=[256,256] --set data.batch_size=64 --set data.eval_batch_size=1000" ;;
        transformer) echo "--config configs/gpu/modular_transformer.toml --set model.d_model=64 --set model.heads=4 --set model.d_mlp=256 --set data.batch_size=64 --set data.eval_batch_size=2048" ;;
        resnet) echo "--config configs/gpu/mnist_resnet20.toml --set model.depth=8 --set model.width=8 --set data.batch_size=32 --set data.eval_batch_size=1000" ;;
        own) echo "--set data.batch_size=64 --set data.eval_batch_size=1000" ;;
        *) echo "unknown case $1" >&2; exit 2 ;;
    esac
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
count() { # case precision steps -> executions in the profile log
    local log="$work/$1-$2-$3.log" run="$bin" quiet=(--quiet)
    if [ "$1" = own ]; then run="$(dirname "$bin")/examples/own_model"; quiet=(); fi
    # shellcheck disable=SC2046
    CUBECL_DEBUG_LOG="$log" CUBECL_DEBUG_OPTION=profile "$run" $(case_args "$1") "${extra[@]}" \
        --device wgpu --precision "$2" --set train.epochs=1 --set "train.steps_per_epoch=$3" \
        --set train.log_every=100000 --set "run.name=launches-$1-$2-$3" --out "$work/runs" "${quiet[@]}" >/dev/null
    grep -cE '^\|\s*[0-9.]+(ns|µs|us|ms|s)\s*\|' "$log"
}
for c in $cases; do
    for p in $precisions; do
        a=$(count "$c" "$p" "$SHORT")
        b=$(count "$c" "$p" "$LONG")
        echo "$c $p $(( (b - a) / (LONG - SHORT) ))"
    done
done
