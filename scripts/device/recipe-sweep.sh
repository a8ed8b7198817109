#!/usr/bin/env bash
# GPU session for recipe choices: trains each named variant at once (one process each: simulation on its own core,
# steps on the GPU), then evaluates every model on the development folder at full length and from short histories.
# Same .device/ layout as regime-study.sh. Writes sweep.txt to OUT.
#   bash scripts/device/recipe-sweep.sh OUT 'name:train flags' ['name:train flags' ...]
set -u
O="$1"; shift
mkdir -p "$O"
xz -dc .device/node.xz > /tmp/node && chmod +x /tmp/node
export MOE_NATIVE_PATH="$PWD/.device/moe_router.node"
t0=$(date +%s)
for v in "$@"; do
  name="${v%%:*}"; flags="${v#*:}"
  # shellcheck disable=SC2086
  timeout 480 /tmp/node .device/train.mjs $flags --calibrate-data .device/market-data --out "/tmp/$name.safetensors" > "/tmp/$name.log" 2>&1 &
done
wait
echo "trainings done in $(( $(date +%s) - t0 )) s" > "$O/sweep.txt"
for v in "$@"; do
  name="${v%%:*}"
  { echo "##### $name: ${v#*:}"; grep -E "^per day:|^per ticker|by regime family|by history length|shipped temperature|cross-fitted" "/tmp/$name.log"; } >> "$O/sweep.txt"
  for a in "" "--max-bars 60" "--max-bars 120" "--max-bars 250" "--last-bars 60"; do
    # shellcheck disable=SC2086
    r=$(timeout 60 /tmp/node .device/evaluate.mjs --data .device/market-data --model "/tmp/$name.safetensors" $a 2>&1 | grep -E "^per ticker \(majority|^per day:|ECE" | tr '\n' ' ')
    echo "  eval ${a:-full}: $r" >> "$O/sweep.txt"
  done
done
echo "all done in $(( $(date +%s) - t0 )) s" >> "$O/sweep.txt"
