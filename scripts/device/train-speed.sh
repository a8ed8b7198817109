#!/usr/bin/env bash
# GPU session for the training recipe's time end to end: the shipped recipe (`npm run train -- --calibrate-data`,
# models/README.md) on the GPU three ways in one session:
#   gpu-new     the defaults: histories simulated on every core (--sim-threads = --threads 16), batches gathered
#               on the feeder thread;
#   gpu-nofeed  the same with the batches gathered between steps (--feeder off);
#   gpu-old     the arrangement before both (--sim-threads 1 --feeder off).
# The three must write the same tensors (the speed settings change no result); their held-out figures are then
# compared with the CPU build's (the shipped model, trained on an AVX-512 CPU). Needs, in .device-train/ (git-ignored,
# carried): node.xz (the Node binary, xz), moe_router.node (built with nvcc), train.mjs, tokens.task.mjs and
# batch-feeder.task.mjs (esbuild bundles of src/cli/train.ts and the two task files, piscina external),
# node_modules/piscina, market-data/ (the development folder). docs/performance.md "Training" has the commands.
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
run gpu-new --threads 16
run gpu-nofeed --threads 16 --feeder off
run gpu-old --threads 16 --sim-threads 1 --feeder off
python3 - "$O/train.txt" <<'PY' >> "$O/train.txt"
import json, struct, sys
def tensors(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; return b[8 + n:]
t = {k: tensors(f'/tmp/{k}.safetensors') for k in ('gpu-new', 'gpu-nofeed', 'gpu-old')}
print('tensors equal: new/nofeed', t['gpu-new'] == t['gpu-nofeed'], 'new/old', t['gpu-new'] == t['gpu-old'])
PY
cat "$O/train.txt"
