#!/usr/bin/env bash
# Builds the greentrain binary for the GPU machine (which has no Rust) and
# leaves it stripped and xz-compressed in .gpu/greentrain.xz (about 20 MB;
# benches/gpu/run.sh unpacks it there). It shares the tests' target folder
# but not their artifacts: without debug info the dependencies build once
# more (about 8 minutes on 2 cores, then cached), and greentrain's own crates
# build at opt-level 3 without debug assertions, since Burn's generic per-op
# host code is compiled into them and bounds how fast small GPU steps launch.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${GREENTRAIN_TARGET_DIR:-$HOME/.cache/greentrain/target}"
CARGO_PROFILE_DEV_OPT_LEVEL=3 CARGO_PROFILE_DEV_DEBUG=0 \
CARGO_PROFILE_DEV_DEBUG_ASSERTIONS=false CARGO_PROFILE_DEV_OVERFLOW_CHECKS=false \
    cargo build -p greentrain-cli
mkdir -p .gpu
strip -o .gpu/greentrain "$CARGO_TARGET_DIR/debug/greentrain"
xz -T2 -6 -f -k .gpu/greentrain
ls -la .gpu
