#!/usr/bin/env bash
# GPU session behind the regime figures of models/README.md: the full recipe (every regime family) and the
# leave-one-family-out study, one training process per family at once (each simulates on its own core and steps on
# the GPU), then `evaluate` of the full model on the development folder at every history length and by year.
# Runs from a checkout whose .device/ holds node.xz, the bundled CLIs (train.mjs, study.mjs, evaluate.mjs, built with
# esbuild from src/cli/), the addon built with CUDA (moe_router.node) and a copy of the development folder
# (market-data/). Writes full.log, full.safetensors, lofo.txt and eval.txt to OUT.
#   bash scripts/device/regime-study.sh OUT [steps, default the recipe's]
set -u
O="$1"; STEPS="${2:-}"
mkdir -p "$O"
xz -dc .device/node.xz > /tmp/node && chmod +x /tmp/node
export MOE_NATIVE_PATH="$PWD/.device/moe_router.node"
S=(); [[ -n "$STEPS" ]] && S=(--steps "$STEPS")
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$O/eval.txt"
nproc | sed 's/^/cpus /' | tee -a "$O/eval.txt"
t0=$(date +%s)
timeout 520 /tmp/node .device/train.mjs "${S[@]}" --calibrate-data .device/market-data --out "$O/full.safetensors" > "$O/full.log" 2>&1 &
FAMILIES="recent calm-bull dotcom-bust crisis-2008 taper-2013 commodity-boom commodity-collapse zero-rate rate-shock-2022 gold-against-bonds dollar-swing"
for f in $FAMILIES; do
  timeout 520 /tmp/node .device/study.mjs --leave-one-family-out --families "$f" "${S[@]}" > "/tmp/lofo-$f.log" 2>&1 &
done
wait
echo "trainings done in $(( $(date +%s) - t0 )) s" | tee -a "$O/eval.txt"
for f in $FAMILIES; do echo "== $f"; cat "/tmp/lofo-$f.log"; done > "$O/lofo.txt"
grep -h -v "^left-out\|^worst" /tmp/lofo-*.log | sort | tee -a "$O/eval.txt"
E=(/tmp/node .device/evaluate.mjs --data .device/market-data --model "$O/full.safetensors")
for a in "--by-year" "--max-bars 60" "--max-bars 120" "--max-bars 250" "--last-bars 60" "--last-bars 120" "--last-bars 250"; do
  echo "=== evaluate $a" >> "$O/eval.txt"
  # shellcheck disable=SC2086
  timeout 60 "${E[@]}" $a 2>&1 | grep -E "^per ticker \(majority|^per day:|ECE|^  (year|20[0-9][0-9]) " >> "$O/eval.txt"
done
echo "all done in $(( $(date +%s) - t0 )) s" >> "$O/eval.txt"
