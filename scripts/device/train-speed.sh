#!/usr/bin/env bash
# GPU session for the training recipe's time end to end: one router of the shipped recipe (`npm run train --
# --calibrate-data`; the shipped ensemble, `--seeds 7,11,13`, trains three of them one after another; models/README.md)
# on the GPU three ways in one session (about 3 minutes):
#   gpu-fused   the defaults: histories simulated and calibration fits run on every core (--sim-threads =
#               --threads 16), batches gathered on feeder threads (half the cores, at most 8), 16 steps per native
#               call (the gradient never leaves the device);
#   gpu-fused-1 the same with one step per call (--steps-per-call 1);
#   gpu-split   one feeder thread and a loss-and-gradient call plus an AdamW call per step (--fused-step off
#               --feeder-threads 1): the arrangement before the fused steps and the feeder threads.
# The runs must write the same tensors (the speed settings change no result); their held-out figures are compared
# with the CPU build's (the shipped model, trained on an AVX-512 CPU).
# Build machine, repository root, after `npm ci && npm run build:native` with nvcc (CUDA compiled in):
#   echo /.device-train/ >> .git/info/exclude; mkdir -p .device-train/node_modules
#   for f in src/cli/train.ts src/training/tokens.task.ts src/training/batch-feeder.task.ts src/training/calibrate.task.ts src/training/features.task.ts; do
#     npx esbuild $f --bundle --platform=node --format=esm --target=node20 --external:piscina \
#       --outfile=.device-train/$(basename $f .ts).mjs \
#       --banner:js="import { createRequire as __cr } from 'module'; const require = __cr(import.meta.url);"
#   done
#   cp -r node_modules/piscina .device-train/node_modules/; cp build/Release/moe_router.node .device-train/
#   cp -r ../shared/market-data .device-train/; xz -c "$(readlink -f "$(command -v node)")" > .device-train/node.xz
# GPU machine (the device tool, carry [".device-train"]), repository root:
#   bash scripts/device/train-speed.sh OUT
set -u
O="${1:?usage: train-speed.sh OUT}"
mkdir -p "$O"
D=$PWD/.device-train
xz -dc "$D/node.xz" > /tmp/node && chmod +x /tmp/node
export MOE_NATIVE_PATH="$D/moe_router.node"
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; nproc; lscpu | grep -E "Model name|Flags" | cut -c1-120; } > "$O/device.txt" 2>&1
run() {
  local name=$1; shift
  local t0; t0=$(date +%s%N)
  ( cd /tmp && timeout 300 /tmp/node "$D/train.mjs" "$@" --calibrate-data "$D/market-data" --out "/tmp/$name.safetensors" ) > "/tmp/$name.log" 2>&1
  local rc=$?
  { echo "##### $name: $* (rc $rc, wall $(( ($(date +%s%N) - t0) / 1000000 )) ms)"; grep -vE "^step " "/tmp/$name.log" | grep -E "^(data|time|per day|per ticker|backend|mean confidence|calibration|  shipped|training)|cuda|simd" ; } >> "$O/train.txt"
}
run gpu-fused --threads 16
run gpu-fused-1 --threads 16 --steps-per-call 1
run gpu-split --threads 16 --feeder-threads 1 --fused-step off
python3 - "$O/train.txt" <<'PY' >> "$O/train.txt"
import json, struct, sys
def tensors(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; return b[8 + n:]
t = {k: tensors(f'/tmp/{k}.safetensors') for k in ('gpu-fused', 'gpu-fused-1', 'gpu-split')}
print('tensors equal: fused/fused-1', t['gpu-fused'] == t['gpu-fused-1'], 'fused/split', t['gpu-fused'] == t['gpu-split'])
PY
cat "$O/train.txt"
