#!/usr/bin/env bash
# The shipped training command (models/README.md, Rebuild) end to end on the GPU host, timed, for one or more builds
# of the trainer in one call, and whether they wrote the same tensors.
#
# Build machine, repository root, after `npm ci && npm run build:native` with nvcc (CUDA compiled in):
#   D=.device-train; mkdir -p $D/node_modules      # git-ignored: echo /.device-train/ >> .git/info/exclude
#   bundle() {  # bundle REPO_DIR OUT_DIR: the trainer and its worker tasks of one checkout
#     for f in src/cli/train.ts src/training/{tokens,batch-feeder,calibrate,features,steps}.task.ts; do
#       (cd "$1" && npx esbuild $f --bundle --platform=node --format=esm --target=node20 --external:piscina \
#         --outfile="$2/$(basename $f .ts).mjs" \
#         --banner:js="import { createRequire as __cr } from 'module'; const require = __cr(import.meta.url);")
#     done
#   }
#   bundle . $PWD/$D/new                            # this revision; a baseline revision's worktree into $D/base
#   cp -r node_modules/piscina $D/node_modules/ && cp -r ../shared/market-data $D/
#   xz -c build/Release/moe_router.node > $D/moe_router.node.xz; xz -c "$(readlink -f "$(command -v node)")" > $D/node.xz
#   # a baseline revision whose addon differs: its build's moe_router.node.xz into $D/base (used for that bundle's runs)
# GPU host (the device tool, carry [".device-train"]), repository root:
#   RECIPE_RUNS="set@new:|host@new:--device-set off" bash scripts/device/recipe-time.sh "$OUT"
# Each run is NAME[@BUNDLE]:EXTRA (the bundle in $D/BUNDLE, default $D/NAME; EXTRA: leading VAR=VALUE words set
# that run's environment, e.g. MOE_CUDA_PRECISION=fp32, the other words are flags added to the shipped command and
# `--threads 16`),
# run one after another under the call's remaining time (RECIPE_BUDGET_S, default 570 s). OUT gets recipe.txt (the
# timings, each router's data and step times, the cross-fitted figures) and one log per run, each line stamped with
# the seconds since the run started.
set -u
O="${1:?usage: recipe-time.sh OUT}"
mkdir -p "$O"
D=$PWD/.device-train
BUDGET=${RECIPE_BUDGET_S:-570}
T0=$SECONDS
xz -dc "$D/node.xz" > /tmp/node && chmod +x /tmp/node
xz -dc "$D/moe_router.node.xz" > /tmp/moe_router.node
export MOE_NATIVE_PATH=/tmp/moe_router.node
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; nproc; lscpu | grep -E "Model name" ; } > "$O/recipe.txt" 2>&1
SHIPPED=(--hidden 32 --seeds 7,11,13 --train-seeds 96 --vol-scale-share 1 --vol-scale-range 1,2 --vol-scale-where whole-context
  --context-inception-share 0.5 --real-data "$D/market-data" --real-repeat 8 --real-context-dropout 0.5 --stand-in-share 0.4 --threads 16)
IFS='|' read -r -a RUNS <<< "${RECIPE_RUNS:-set@new:|host@new:--device-set off}"
for run in "${RUNS[@]}"; do
  name=${run%%:*}; extra=${run#*:}; bundle=${name#*@}; name=${name%%@*}
  left=$((BUDGET - (SECONDS - T0)))
  if (( left < 60 )); then echo "##### $name: skipped, ${left} s of the budget left" >> "$O/recipe.txt"; continue; fi
  t=$(date +%s%N)
  envs=(); flags=()
  for w in $extra; do
    if [[ ${#flags[@]} -eq 0 && $w == *=* && $w != --* ]]; then envs+=("$w"); else flags+=("$w"); fi
  done
  addon=/tmp/moe_router.node
  if [[ -f "$D/$bundle/moe_router.node.xz" ]]; then addon=/tmp/moe_router-$bundle.node; xz -dc "$D/$bundle/moe_router.node.xz" > "$addon"; fi
  ( cd /tmp && env "${envs[@]}" MOE_NATIVE_PATH="$addon" timeout "$left" /tmp/node "$D/$bundle/train.mjs" "${SHIPPED[@]}" "${flags[@]}" --out "/tmp/$name.safetensors" ) 2>&1 |
    { s0=${EPOCHREALTIME/./}; while IFS= read -r l; do c=$(( (${EPOCHREALTIME/./} - s0) / 10000 )); printf '%4d.%02d %s\n' $((c / 100)) $((c % 100)) "$l"; done; } > "$O/$name.log"
  rc=${PIPESTATUS[0]}
  {
    echo "##### $name: ${SHIPPED[*]} $extra (rc $rc, wall $(( ($(date +%s%N) - t) / 1000000 )) ms)"
    grep -E "^ *[0-9.]+ ((\[(fold [0-9]|file|member [0-9])\] )*(data|steps|held-out (scoring|sets)|time):|(\[file\] )?member [0-9]|fold [0-9]|cross-fitted over|  (all|first|last|windows|SPY|no context|20[0-9][0-9]) |backend|held-out simulator|  per day|calibration|host:|wrote)" "$O/$name.log"
  } >> "$O/recipe.txt"
done
python3 - "${RUNS[@]}" >> "$O/recipe.txt" <<'PY'
import os, struct, sys
names = [r.split(':', 1)[0].split('@')[0] for r in sys.argv[1:]]
def tensors(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; return b[8 + n:]
have = [n for n in names if os.path.exists(f'/tmp/{n}.safetensors')]
import hashlib
for n in have:
    print(f'tensors sha256 {n}:', hashlib.sha256(tensors(f'/tmp/{n}.safetensors')).hexdigest())
for n in have[1:]:
    print(f'tensors equal {have[0]} / {n}:', tensors(f'/tmp/{have[0]}.safetensors') == tensors(f'/tmp/{n}.safetensors'))
PY
cat "$O/recipe.txt"
