#!/usr/bin/env bash
# One GPU session for docs/performance.md: correctness, benchmarks, PyTorch baseline, Node end-to-end, training,
# compute-sanitizer. Runs from a folder D holding: bin/ (moe_router.node, moe_cuda_test, moe_cuda_bench, train.mjs
# built on a machine with nvcc), wt/ (this repository's files), node.xz (a Node 20 binary). Outputs go to OUT.
#   bash gpu-run.sh D OUT
# Every step has a time limit and the whole run stays under ~9.5 minutes; steps are independent, so one failing
# step still leaves the others' results.
set -u
D="$1"; O="$2"
B="$D/bin"; W="$D/wt"
mkdir -p "$O"
start=$(date +%s)
left() { local l=$(( 570 - ($(date +%s) - start) )); (( l > $1 )) && l=$1; (( l < 5 )) && l=5; echo "$l"; }
step() { echo; echo "=== $1 (limit $2 s, at $(( $(date +%s) - start )) s)"; }

{
date -u
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
nvcc --version | tail -2
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'
} 2>&1 | tee "$O/correctness.txt"
xz -dc "$D/node.xz" > /tmp/node && chmod +x /tmp/node && /tmp/node --version
python3 "$W/scripts/device/torch_router.py" make-h32 /tmp/router32.safetensors
source "$W/scripts/device/bench-weights.sh"; bench_weights_h16 "$W" "$D" "$B" || exit 2

l=$(left 90); step "correctness: CUDA vs scalar oracle" "$l"
timeout "$l" "$B/moe_cuda_test" 1000000 2>&1 | tee -a "$O/correctness.txt"; echo "rc=${PIPESTATUS[0]}" | tee -a "$O/correctness.txt"
for v in 2 4 8; do
  l=$(left 40); step "correctness of forward kernel v$v (MOE_CUDA_FORWARD_KERNEL=$v)" "$l"
  MOE_CUDA_FORWARD_KERNEL=$v timeout "$l" "$B/moe_cuda_test" 65537 2>&1 | tee -a "$O/correctness.txt"; echo "rc=${PIPESTATUS[0]}" | tee -a "$O/correctness.txt"
done

l=$(left 120); step "benchmark (C++)" "$l"
timeout "$l" "$B/moe_cuda_bench" /tmp/router16.safetensors /tmp/router32.safetensors 200 2>&1 | tee "$O/bench.jsonl"
grep '"kind":"copy"' "$O/bench.jsonl" | head -1 > /tmp/copy.json

l=$(left 240); step "PyTorch baseline" "$l"
timeout "$l" python3 "$W/scripts/device/torch_router.py" bench /tmp/router16.safetensors /tmp/router32.safetensors /tmp 200 2>&1 | grep -v Warning | tee "$O/torch.jsonl"

l=$(left 90); step "Node end to end" "$l"
timeout "$l" /tmp/node "$W/scripts/device/e2e.cjs" "$B/moe_router.node" /tmp/router16.safetensors /tmp/router32.safetensors /tmp/copy.json /tmp 2>&1 | tee "$O/node.jsonl"

l=$(left 60); step "training on the GPU (npm run train, shipped recipe)" "$l"
MOE_NATIVE_PATH="$B/moe_router.node" timeout "$l" /tmp/node "$B/train.mjs" --threads 16 --out /tmp/gpu.safetensors 2>&1 | tee "$O/train-gpu.txt"
l=$(left 90); step "training on the CPU (same recipe, CUDA_VISIBLE_DEVICES empty)" "$l"
CUDA_VISIBLE_DEVICES= MOE_NATIVE_PATH="$B/moe_router.node" timeout "$l" /tmp/node "$B/train.mjs" --threads 16 --out /tmp/cpu.safetensors 2>&1 | tee "$O/train-cpu.txt"

l=$(left 150); step "compute-sanitizer memcheck" "$l"
timeout "$l" compute-sanitizer --tool memcheck --leak-check full --error-exitcode 9 "$B/moe_cuda_test" 65537 > "$O/memcheck.txt" 2>&1
echo "memcheck rc=$?" | tee -a "$O/memcheck.txt"; tail -4 "$O/memcheck.txt"

# Nsight Compute on one 1e7-token launch (H = 32, expert output) of v4 and v8 inside the benchmark: the 260th launch
# of that kernel (200 + 3 at 1e4 tokens and 50 + 3 at 1e6 come first); real clocks.
for v in 4 8; do
  case $v in 4) k=forwardKernelV4ILi32ELb1ELi2ELi128ELb0;; 8) k=forwardKernelV4ILi32ELb1ELi4ELi128ELb1ELi8;; esac
  l=$(left 90); step "ncu: forward kernel v$v, H = 32, 1e7 tokens" "$l"
  timeout "$l" ncu --clock-control none --kernel-name-base mangled -k "regex:$k" --launch-skip 259 --launch-count 1 \
    --section SpeedOfLight --section ComputeWorkloadAnalysis --section Occupancy --section WarpStateStats \
    "$B/moe_cuda_bench" /tmp/router16.safetensors /tmp/router32.safetensors 1 > "$O/ncu-v$v.txt" 2>&1
  grep -E "SM Frequency|Duration|Compute \(SM\) Throughput|Memory Throughput|Issue Slots Busy|Executed Ipc Active|highest-utilized|Achieved Occupancy|Warp Cycles Per Issued" "$O/ncu-v$v.txt"
done

echo; echo "=== summary (at $(( $(date +%s) - start )) s)"
python3 "$W/scripts/device/summarize.py" "$O" | tee "$O/table.md"
