#!/usr/bin/env bash
# Short GPU session for forward-kernel work: each listed kernel version against the scalar oracle, the C++
# benchmark (kernel-only rows), and an Nsight Compute summary (speed of light, warp stalls, occupancy) of each
# version's H = 32 launch with the expert output on 65 537 tokens. Same folder D as gpu-run.sh (bin/, wt/).
#   bash kernel-variants.sh D OUT [versions among 2 4 8, default "2 4 8"]
set -u
D="$1"; O="$2"; VERSIONS="${3:-2 4 8}"
B="$D/bin"; W="$D/wt"
# Only the versions forward.cu has: MOE_CUDA_FORWARD_KERNEL rejects any other.
for v in $VERSIONS; do
  case $v in 2|4|8) ;; *) echo "kernel-variants.sh: no forward kernel v$v (versions: 2 4 8)" >&2; exit 2;; esac
done
mkdir -p "$O"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv | tee "$O/device.txt"
python3 "$W/scripts/device/torch_router.py" make-h32 /tmp/router32.safetensors
source "$W/scripts/device/bench-weights.sh"; bench_weights_h16 "$W" "$D" "$B" || exit 2
for v in $VERSIONS; do
  echo "=== correctness, forward kernel v$v"
  MOE_CUDA_FORWARD_KERNEL=$v timeout 60 "$B/moe_cuda_test" 65537 2>&1 | tee -a "$O/correctness.txt" | grep -E "forward H|FAIL|ok \("
done
echo "=== benchmark"
timeout 150 "$B/moe_cuda_bench" /tmp/router16.safetensors /tmp/router32.safetensors 20 > "$O/bench.jsonl" 2>&1
grep '"kind":"kernel"' "$O/bench.jsonl" | python3 -c '
import json, sys
for l in sys.stdin:
    r = json.loads(l)
    if r["tokens"] >= 1000000:
        print("v%d H=%d n=%.0e expert=%-5s %.3f G tokens/s %6.0f GB/s" % (r["version"], r["H"], r["tokens"], r["expert"], r["tokensPerSec"] / 1e9, r["GBs"]))'
for v in $VERSIONS; do
  # Mangled-name prefixes of the H = 32 instance with the expert output (v2 has one instance per H).
  case $v in 2) k=forwardKernelV2ILi32;; 4) k=forwardKernelV4ILi32ELb1ELi2ELi128ELb0;; 8) k=forwardKernelV4ILi32ELb1ELi4ELi128ELb1ELi8;; esac
  echo "=== ncu v$v"
  # The test's 7th launch of this kernel is the first of the two H = 32, n = 65 537 forwards.
  MOE_CUDA_FORWARD_KERNEL=$v timeout 60 ncu --kernel-name-base mangled -k "regex:$k" --launch-skip 6 --launch-count 1 \
    --section SpeedOfLight --section WarpStateStats --section Occupancy --section ComputeWorkloadAnalysis \
    "$B/moe_cuda_test" 65537 > "$O/ncu-v$v.txt" 2>&1
  grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|Issue Slots Busy|Executed Ipc Active|Achieved Occupancy|Theoretical Occupancy|Warp Cycles Per Issued|Stall|SM Frequency" "$O/ncu-v$v.txt" | head -20
done
