#!/usr/bin/env bash
# GPU session for the training step (docs/performance.md, "Training"): the CUDA tests (every check of moe_cuda_test,
# the fused trainStep among them), compute-sanitizer racecheck and memcheck on the gradient kernels, the training
# rows of moe_cuda_bench (host-driven split and fused steps, and the step's kernels on a batch already on the
# device) beside PyTorch's eager step on the same weights, and, when .device-train/bin/old_cuda_bench.xz exists (the
# benchmark built from an earlier commit), its training rows in the same session. Then train-speed.sh.
# Build machine, after `cmake -S . -B /tmp/moe-native -DMOE_BUILD_TESTS=ON && cmake --build /tmp/moe-native`, and the
# .device-train/ packaging of train-speed.sh:
#   mkdir -p .device-train/bin && for b in moe_cuda_test moe_cuda_bench; do xz -c /tmp/moe-native/$b > .device-train/bin/$b.xz; done
# GPU machine (the device tool, carry [".device-train"]), repository root:
#   bash scripts/device/train-step.sh OUT
set -u
O="${1:?usage: train-step.sh OUT}"
mkdir -p "$O"
D=$PWD/.device-train
start=$(date +%s)
left() { local l=$(( 560 - ($(date +%s) - start) )); (( l > $1 )) && l=$1; (( l < 5 )) && l=5; echo "$l"; }
step() { echo; echo "=== $1 (at $(( $(date +%s) - start )) s)"; }
for b in "$D"/bin/*.xz; do xz -dc "$b" > "/tmp/$(basename "$b" .xz)" && chmod +x "/tmp/$(basename "$b" .xz)"; done
python3 scripts/device/torch_router.py make-h32 /tmp/router32.safetensors
source scripts/device/bench-weights.sh; bench_weights_h16 "$PWD" .device-train || exit 2
{
  date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
  step "moe_cuda_test 100000"; timeout "$(left 120)" /tmp/moe_cuda_test 100000; echo "rc=$?"
  step "racecheck (moe_cuda_test 4096)"; timeout "$(left 90)" compute-sanitizer --tool racecheck --kernel-regex kns=lossGradKernel --error-exitcode 9 /tmp/moe_cuda_test 4096 | tail -5; echo "rc=${PIPESTATUS[0]}"
  step "memcheck (moe_cuda_test 4096)"; timeout "$(left 60)" compute-sanitizer --tool memcheck --error-exitcode 9 /tmp/moe_cuda_test 4096 | tail -3; echo "rc=${PIPESTATUS[0]}"
  step "moe_cuda_bench, training rows"; MOE_BENCH_ONLY=train timeout "$(left 120)" /tmp/moe_cuda_bench /tmp/router16.safetensors /tmp/router32.safetensors 200 | tee "$O/bench.jsonl"
  if [ -x /tmp/old_cuda_bench ]; then
    step "earlier commit's moe_cuda_bench, training rows"; MOE_BENCH_ONLY=train timeout "$(left 120)" /tmp/old_cuda_bench /tmp/router16.safetensors /tmp/router32.safetensors 200 | grep '"train"' | tee "$O/bench-old.jsonl"
  fi
  step "PyTorch eager training step"; TORCH_ONLY=train timeout "$(left 120)" python3 scripts/device/torch_router.py bench /tmp/router16.safetensors /tmp/router32.safetensors /tmp 200 2>&1 | grep -v Warning | tee "$O/torch.jsonl"
} > "$O/kernels.txt" 2>&1
cat "$O/kernels.txt"
step "train-speed.sh"
bash scripts/device/train-speed.sh "$O"
