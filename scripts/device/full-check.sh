#!/usr/bin/env bash
# Every GPU target of docs/performance.md ("Targets") in one call of the device tool (under ~9.5 minutes), from binaries
# built on the build machine: the kernel rows of v12 and v13 (four rounds, 1e7 tokens), tensor-check.sh (correctness of
# every setting, both bench runs, PyTorch forward, memcheck, Nsight Compute, `evaluate` against the CPU), the end to end
# rate from Node twice (e2e.cjs), the training rows beside PyTorch eager, and one member of the shipped recipe with its
# cross-fit (its first router's time is the recipe target's; the rest runs as long as the call has time).
# FULL_CHECK_GPU=H200: leave at once, running nothing, on any other card (a call that may get either).
#
# Build machine, repository root (the folder is git-ignored; ~57 MB, within the device tool's 64 MiB):
#   cmake -S . -B /tmp/moe-native -DMOE_BUILD_TESTS=ON -DCMAKE_CUDA_ARCHITECTURES=90-real
#   cmake --build /tmp/moe-native --target moe_cuda_test moe_cuda_bench -j2 && npm run build:native
#   D=.device-train; mkdir -p $D/bin $D/node_modules
#   for b in moe_cuda_test moe_cuda_bench; do xz -c /tmp/moe-native/$b > $D/bin/$b.xz; done
#   xz -c build/Release/moe_router.node > $D/moe_router.node.xz
#   xz -c "$(readlink -f "$(command -v node)")" > $D/node.xz
#   for f in src/cli/train.ts src/cli/evaluate.ts src/training/{tokens,batch-feeder,calibrate,features}.task.ts; do
#     npx esbuild $f --bundle --platform=node --format=esm --target=node20 --external:piscina \
#       --outfile=$D/$(basename $f .ts).mjs \
#       --banner:js="import { createRequire as __cr } from 'module'; const require = __cr(import.meta.url);"
#   done
#   cp -r node_modules/piscina $D/node_modules/ && cp -r ../shared/market-data $D/
#   git show 5570948:models/router.safetensors > $D/router16.safetensors     # H = 16 bench weights (bench-weights.sh)
#   npx tsx scripts/device/feature-tokens.ts /tmp/tokens16.bin && xz -c /tmp/tokens16.bin > $D/tokens16.bin.xz
# GPU machine (the device tool with carry [".device-train"]), repository root; the tool brings back few files, so tar
# them:
#   FULL_CHECK_GPU=H200 bash scripts/device/full-check.sh $OUT/f; cd $OUT && tar -cJf f.tar.xz f && rm -rf f
# or, any card: the whole check on an H200, only the end to end and recipe steps elsewhere:
#   nvidia-smi | grep -q H200 || export FULL_CHECK_STEPS=e2e,recipe
#   bash scripts/device/full-check.sh $OUT/f; cd $OUT && tar -cJf f.tar.xz f && rm -rf f
set -u
O="${1:?usage: full-check.sh OUT}"
if [[ -n "${FULL_CHECK_GPU:-}" ]] && ! nvidia-smi --query-gpu=name --format=csv,noheader | grep -q "$FULL_CHECK_GPU"; then
  echo "not an $FULL_CHECK_GPU ($(nvidia-smi --query-gpu=name --format=csv,noheader)): nothing run"
  exit 3
fi
mkdir -p "$O"
R=$PWD
D=$R/.device-train
B=/tmp/full-check-bin
start=$(date +%s)
left() { local l=$(( 570 - ($(date +%s) - start) )); (( l > $1 )) && l=$1; (( l < 5 )) && l=5; echo "$l"; }
# FULL_CHECK_STEPS: the steps to run, comma-separated (default all: kernels,tc,e2e,train,recipe).
STEPS=",${FULL_CHECK_STEPS:-kernels,tc,e2e,train,recipe},"
step() { [[ $STEPS == *",$1,"* ]] || return 1; echo; echo "=== $2 (at $(( $(date +%s) - start )) s)"; }

mkdir -p "$B"
for b in "$D"/bin/*.xz; do xz -dc "$b" > "$B/$(basename "$b" .xz)" && chmod +x "$B/$(basename "$b" .xz)"; done
xz -dc "$D/node.xz" > /tmp/node && chmod +x /tmp/node
xz -dc "$D/moe_router.node.xz" > "$D/moe_router.node"
xz -dc "$D/tokens16.bin.xz" > /tmp/tokens16.bin
python3 scripts/device/torch_router.py make-h32 /tmp/router32.safetensors > /dev/null 2>&1
source "$R/scripts/device/bench-weights.sh"; bench_weights_h16 "$R" "$D" || exit 2
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv; nproc; } |
  tee "$O/device.txt"

if step kernels "kernel rows, four rounds (1e7 tokens, v12 and v13 bf16x3)"; then
for r in 1 2 3 4; do
  MOE_BENCH_ONLY=kernels MOE_BENCH_KERNELS=12:bf16x3,13:bf16x3 MOE_BENCH_KERNEL_TOKENS=10000000 timeout "$(left 60)" \
    "$B/moe_cuda_bench" /tmp/router16.safetensors /tmp/router32.safetensors > "$O/kernels$r.jsonl" 2>&1
done
python3 - "$O" <<'PY' | tee "$O/kernels.txt"
import collections, glob, json, statistics, sys
d = collections.defaultdict(list)
for f in sorted(glob.glob(sys.argv[1] + '/kernels[0-9].jsonl')):
    for line in open(f):
        if '"kind":"kernel"' in line:
            o = json.loads(line)
            d[(o['H'], o['expert'], o['version'])].append(o['tokensPerSec'] / 1e9)
for k in sorted(d):
    v = d[k]
    print('H=%d expert=%s v%d: median %.2f G tokens/s (%s)' % (k + (statistics.median(v), ' '.join('%.2f' % x for x in v))))
PY
fi

if step tc "tensor-check.sh"; then
TC_DEVICE_DIR=$D TC_BIN=$B TC_QUICK=1 TC_TORCH=1 TC_MEMCHECK_VERSIONS=13 TENSOR_CHECK_BUDGET="$(left 200)" TC_TOKENS=/tmp/tokens16.bin \
  TC_EVAL_SETTINGS="default" TC_NCU_CONFIGS="16:4:bf16x3:13 32:4:bf16x3:13" \
  bash scripts/device/tensor-check.sh "$O/tc" > "$O/tc.log" 2>&1
grep -E "rc=|every line|DIFFERS|Duration|Issue Slots Busy|DRAM Throughput" "$O/tc.log" | sort | uniq -c
grep -h '"torch-forward"' "$O/tc/torch.jsonl" | grep 10000000
fi

if step e2e "end to end from Node, twice"; then
timeout "$(left 40)" "$B/moe_cuda_bench" /tmp/router16.safetensors /tmp/router32.safetensors 200 2>/dev/null |
  grep -E '"kind":"(copy|hostcopy|pipeline)"' | tee "$O/copy.jsonl"
grep -m1 '"kind":"copy"' "$O/copy.jsonl" > /tmp/copy.json
for r in 1 2; do
  timeout "$(left 90)" /tmp/node scripts/device/e2e.cjs "$D/moe_router.node" /tmp/router16.safetensors \
    /tmp/router32.safetensors /tmp/copy.json > "$O/node$r.jsonl" 2>&1
  echo "e2e run $r rc=$?"
done
python3 - "$O" <<'PY'
import glob, json, sys
for f in sorted(glob.glob(sys.argv[1] + '/node[0-9].jsonl')):
    for line in open(f):
        if '"node-e2e"' in line and ('"shared"' in line or '"pinned"' in line):
            o = json.loads(line)
            print('%s %s H=%d %d tokens expert=%s: %.1f ms, limit %.1f ms, %.0f %%%s' % (
                f.rsplit('/', 1)[1], o['mode'], o['H'], o['tokens'], o['expert'], o['ms'], o['transferLimitMs'],
                100 * o['ofTransferLimit'], '' if 'identicalToShared' not in o else ', identical to shared: %s' % o['identicalToShared']))
        if '"node-pinned-nan"' in line:
            print(f.rsplit('/', 1)[1], line.strip())
PY
fi

if step train "training rows and PyTorch eager"; then
MOE_BENCH_ONLY=train timeout "$(left 100)" "$B/moe_cuda_bench" /tmp/router16.safetensors /tmp/router32.safetensors 200 \
  > "$O/train-bench.jsonl" 2>&1
grep -E '"batch":65536' "$O/train-bench.jsonl"
TORCH_ONLY=train timeout "$(left 100)" python3 scripts/device/torch_router.py bench /tmp/router16.safetensors \
  /tmp/router32.safetensors /tmp 200 2>&1 | grep -v Warning > "$O/torch-train.jsonl"
grep 65536 "$O/torch-train.jsonl"
fi

if step recipe "one member of the shipped recipe with its cross-fit"; then
t0=$(date +%s%N)
( cd /tmp && MOE_NATIVE_PATH="$D/moe_router.node" timeout "$(left 400)" /tmp/node "$D/train.mjs" --seed 7 --threads 16 \
    --hidden 32 --train-seeds 96 --vol-scale-share 1 --vol-scale-range 1,2 --vol-scale-where whole-context \
    --context-inception-share 0.5 --real-data "$D/market-data" --real-repeat 8 --real-context-dropout 0.5 --stand-in-share 0.4 \
    --out /tmp/full-check-m7.safetensors ) > "$O/train7.txt" 2>&1
echo "rc=$? wall $(( ($(date +%s%N) - t0) / 1000000 )) ms" | tee -a "$O/train7.txt"
grep -vE "^step " "$O/train7.txt" | head -30
fi
echo; echo "=== done at $(( $(date +%s) - start )) s"
