#!/usr/bin/env bash
# One short GPU session for the tensor-core forward kernel (v9, native/src/cuda/forward_tc.cu): builds the native
# core, moe_cuda_test and moe_cuda_bench with CMake on the GPU machine (sm_90 only), then
#   1. moe_cuda_test against the scalar oracle: fp32 by default and with v2, v4, v8 forced; tf32 and bf16 (v9),
#      each with the test's own tolerances (the tf32/bf16 contract: probabilities within 2e-3, argmax equal where the
#      oracle's top two logits differ by more than 1e-2);
#   2. the errors a bad setting gives (unknown MOE_CUDA_PRECISION, a forced kernel of the other precision);
#   3. moe_cuda_bench MOE_BENCH_ONLY=kernels, twice: kernel-only rates of v2/v4/v8 (fp32) and v9 (tf32, bf16) and
#      their accuracy against the oracle on the bench weights (models/router.safetensors at H = 16, random H = 32 weights) with
#      the bench's uniform inputs and, when .tc-data/tokens16.bin exists (scripts/device/feature-tokens.ts; carry
#      .tc-data), with simulator feature tokens at T = 0.6865 (the committed H = 16 model's fitted temperature); a
#      table of 1e6 / 1e7 tokens;
#   4. compute-sanitizer memcheck of v9 (both precisions, n up to 1000) and Nsight Compute on one 1e7-token H = 32
#      launch of v9 with the expert output, tf32 and bf16.
# Writes 8 files to OUT (device, build log, correctness, bench1/2, table, memcheck, ncu).
# Needs CUDA 13 (nvcc, compute-sanitizer, ncu), CMake, g++ and python3 with torch and safetensors (for the random
# H = 32 weights); no Node. Run from the repository root:
#   bash scripts/device/tensor-check.sh OUT
# Every step has a time limit; the whole run stays under ~4.5 minutes.
set -u
O="${1:?usage: tensor-check.sh OUT}"
mkdir -p "$O"
start=$(date +%s)
BUDGET=${TENSOR_CHECK_BUDGET:-270}
left() { local l=$(( BUDGET - ($(date +%s) - start) )); (( l > $1 )) && l=$1; (( l < 5 )) && l=5; echo "$l"; }
step() { echo; echo "=== $1 (limit $2 s, at $(( $(date +%s) - start )) s)"; }
B=/tmp/moe-tc

{
date -u
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
nvcc --version | tail -2
nproc
} 2>&1 | tee "$O/device.txt"

l=$(left 150); step "build (CMake, sm_90)" "$l"
( timeout "$l" cmake -S . -B "$B" -DMOE_BUILD_TESTS=ON -DCMAKE_CUDA_ARCHITECTURES=90-real > "$O/build.log" 2>&1 &&
  timeout "$l" cmake --build "$B" --target moe_cuda_test moe_cuda_bench -j"$(nproc)" >> "$O/build.log" 2>&1 ); rc=$?
echo "build rc=$rc ($(( $(date +%s) - start )) s)"; grep -E "error|registers|spill" "$O/build.log" | head -20
if (( rc != 0 )); then tail -40 "$O/build.log"; exit 1; fi

python3 scripts/device/torch_router.py make-h32 /tmp/router32.safetensors
cp models/router.safetensors /tmp/router16.safetensors

T="$O/correctness.txt"
run_test() {  # label, max tokens, env...
  local label="$1" n="$2"; shift 2
  local l; l=$(left 60); step "correctness: $label (moe_cuda_test $n)" "$l" | tee -a "$T"
  env "$@" timeout "$l" "$B/moe_cuda_test" "$n" > /tmp/t.txt 2>&1; local rc=$?
  cat /tmp/t.txt >> "$T"; echo "rc=$rc" >> "$T"
  grep -E "^device|^forward|FAIL|^ok|moe_cuda_test:" /tmp/t.txt; echo "rc=$rc"
}
run_test "tf32 (v9)" 1000000 MOE_CUDA_PRECISION=tf32
run_test "bf16 (v9)" 1000000 MOE_CUDA_PRECISION=bf16
run_test "default (fp32)" 65537
for v in 2 4 8; do run_test "fp32 v$v" 65537 MOE_CUDA_FORWARD_KERNEL=$v; done
run_test "tf32 with v9 forced" 1000 MOE_CUDA_PRECISION=tf32 MOE_CUDA_FORWARD_KERNEL=9

step "settings that must be refused" 10 | tee -a "$T"
for e in "MOE_CUDA_PRECISION=fp16" "MOE_CUDA_PRECISION=tf32 MOE_CUDA_FORWARD_KERNEL=8" "MOE_CUDA_FORWARD_KERNEL=9" \
         "MOE_CUDA_FORWARD_KERNEL=7"; do
  # shellcheck disable=SC2086
  env $e timeout 10 "$B/moe_cuda_test" 1 2>&1 | grep -E "moe_cuda_test:" | sed "s/^/$e → /" | tee -a "$T"
done

if [[ -f .tc-data/tokens16.bin ]]; then export MOE_BENCH_TOKENS16="$PWD/.tc-data/tokens16.bin" MOE_BENCH_T=0.6865; fi
for r in 1 2; do
  l=$(left 60); step "benchmark, kernels only (run $r)" "$l"
  MOE_BENCH_ONLY=kernels timeout "$l" "$B/moe_cuda_bench" /tmp/router16.safetensors /tmp/router32.safetensors > "$O/bench$r.jsonl" 2>&1
  echo "rc=$?"
done
python3 - "$O" <<'EOF' | tee "$O/table.md"
import json, sys, os
o = sys.argv[1]
rows = {}
acc = []
for r in (1, 2):
    p = os.path.join(o, f"bench{r}.jsonl")
    if not os.path.exists(p):
        continue
    for line in open(p):
        if not line.startswith("{"):
            continue
        j = json.loads(line)
        if j["kind"] == "kernel" and j["tokens"] >= 1000000:
            k = (j["H"], j["tokens"], j["expert"], j["version"], j.get("precision", "fp32"))
            rows.setdefault(k, []).append(j["tokensPerSec"] / 1e9)
        elif j["kind"] == "accuracy" and r == 1:
            acc.append(j)
print("| H | tokens | expert | v2 fp32 | v4 fp32 | v8 fp32 | v9 tf32 | v9 bf16 | v9 tf32 / v8 | v9 bf16 / v8 |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for H in (16, 32):
    for n in (1000000, 10000000):
        for ex in (True, False):
            def g(v, p):
                x = rows.get((H, n, ex, v, p))
                return max(x) if x else float("nan")
            c = [g(2, "fp32"), g(4, "fp32"), g(8, "fp32"), g(9, "tf32"), g(9, "bf16")]
            runs = lambda v, p: "/".join("%.2f" % x for x in rows.get((H, n, ex, v, p), []))
            print("| %d | %.0e | %s | %s | %s | %s | %s | %s | %.2f× | %.2f× |" % (
                H, n, "yes" if ex else "no", runs(2, "fp32"), runs(4, "fp32"), runs(8, "fp32"), runs(9, "tf32"),
                runs(9, "bf16"), c[3] / c[2], c[4] / c[2]))
print()
print("G tokens/s, run 1/run 2 (median of 20 launches at 1e7, 50 at 1e6, each run).")
print()
print("| H | inputs, T | kernel | max abs Δp | Δp > 2e-3 | argmax diff, gap > 1e-2 | argmax diff, gap ≤ 1e-2 | max Δy / (1 + abs y) | contract |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for j in acc:
    print("| %d | %s, %g | v%d %s | %.2e | %d | %d | %d | %.2e | %s |" % (j["H"], j.get("inputs", "uniform"), j["T"],
          j["version"], j["precision"], j["maxAbsProb"],
          j["probsOver2e-3"], j["argmaxDiffGapOver1e-2"], j["argmaxDiffNearTie"], j["maxExpertRel"],
          "met" if j["meetsContract"] else "NOT met"))
EOF

l=$(left 60); step "compute-sanitizer memcheck, v9 tf32 and bf16 (n up to 1000)" "$l"
for p in tf32 bf16; do
  MOE_CUDA_PRECISION=$p timeout "$l" compute-sanitizer --tool memcheck --error-exitcode 9 "$B/moe_cuda_test" 1000 > /tmp/mc.txt 2>&1
  echo "memcheck $p rc=$?" | tee -a "$O/memcheck.txt"; cat /tmp/mc.txt >> "$O/memcheck.txt"
  grep -E "ERROR SUMMARY|FAIL" /tmp/mc.txt | head -3
done

# Nsight Compute on the first 1e7-token launch of v9 at H = 32 with the expert output: the bench launches each v9
# instance 203 + 203 (1e4 tokens, with and without the expert output), 53 + 53 (1e6) times before it.
for p in tf32 bf16; do
  case $p in tf32) k=forwardKernelTCILi32ELb0;; bf16) k=forwardKernelTCILi32ELb1;; esac
  l=$(left 60); step "ncu: v9 $p, H = 32, 1e7 tokens, expert output" "$l"
  MOE_BENCH_ONLY=kernels timeout "$l" ncu --clock-control none --kernel-name-base mangled -k "regex:$k" --launch-skip 512 \
    --launch-count 1 --section SpeedOfLight --section ComputeWorkloadAnalysis --section Occupancy \
    --section WarpStateStats --section LaunchStats --section MemoryWorkloadAnalysis --section InstructionStats \
    "$B/moe_cuda_bench" /tmp/router16.safetensors /tmp/router32.safetensors > /tmp/ncu.txt 2>&1
  { echo "=== ncu v9 $p"; cat /tmp/ncu.txt; } >> "$O/ncu.txt"
  grep -E "SM Frequency|Duration|Compute \(SM\) Throughput|Memory Throughput|DRAM Throughput|Issue Slots Busy|Executed Ipc Active|highest-utilized|Achieved Occupancy|Theoretical Occupancy|Registers Per|Warp Cycles Per Issued|Block Limit Reg|Executed Instructions  |Avg. Active Threads" /tmp/ncu.txt | head -24
done
echo; echo "=== done at $(( $(date +%s) - start )) s"
