#!/usr/bin/env bash
# One short GPU session for the tensor-core forward kernels (v9, v11, v12 and v13, native/src/cuda/forward_tc.cu): builds the native
# core, moe_cuda_test and moe_cuda_bench with CMake on the GPU machine (sm_90 only), then
#   1. moe_cuda_test against the scalar oracle: each precision (bf16x3, tf32x3, tf32, bf16) with v9, v11 and v13 forced,
#      v12 with the first three (at bf16 v12 is v11); the
#      default (precision and version unset: bf16x3 on v13); fp32 with v2, v4, v8 forced and with MOE_CUDA_PRECISION=fp32; each
#      with the test's own tolerances (fp32: 1e-5 relative; the tensor-core contract: probabilities within 2e-3,
#      argmax equal where the oracle's top two logits differ by more than 1e-2; bf16 5× looser);
#   2. the errors a bad setting gives (unknown MOE_CUDA_PRECISION, MOE_CUDA_WAIT or MOE_CUDA_GRAPH, a forced kernel of the other precision);
#   3. moe_cuda_bench MOE_BENCH_ONLY=kernels, twice: kernel-only rates of v2/v4/v8 (fp32), v9, v11, v12 and v13 (each precision)
#      and their accuracy against the oracle on the bench weights (models/router.safetensors at H = 16, random H = 32
#      weights) with the bench's uniform inputs and, when the feature-token file exists, with simulator feature
#      tokens at T = 0.6627 (the committed H = 16 model's fitted temperature); a table of 1e6 / 1e7 tokens.
#      TC_BENCH2_ENV="VAR=value ..." runs the second bench run with that environment (an A/B of a setting);
#      TC_TORCH=1 adds PyTorch on the same card and weights (torch_router.py bench, eager and torch.compile);
#   4. compute-sanitizer memcheck of v9, v11, v12 and v13 (bf16x3 and tf32x3, n up to 1000) and Nsight Compute on one
#      1e7-token launch with the expert output: v12 and v13 bf16x3 at H = 32 and H = 16, each with the stall
#      reasons and the pipes' utilisation (ncu-v*-H*.txt; TC_NCU_REP=1 also keeps the reports, ncu-*.ncu-rep);
#   5. when DIR/node.xz, DIR/evaluate.mjs (an esbuild bundle of src/cli/evaluate.ts), DIR/moe_router.node and
#      DIR/market-data exist (DIR: TC_DEVICE_DIR, default .device): `evaluate` on the development folder with the CPU
#      backend and with the CUDA backend at each setting of TC_EVAL_SETTINGS (space-separated; VAR=value pairs joined
#      by commas; `default`: no variable), and whether every line but the model and context paths is the same as the CPU's.
# Feature tokens: scripts/device/feature-tokens.ts writes them here (no GPU needed), into a git-ignored folder that
# the GPU machine gets too:
#   npx tsx scripts/device/feature-tokens.ts build/tc-data/tokens16.bin      (carry build/tc-data; TC_TOKENS=FILE
#                                                                             or .tc-data/tokens16.bin also work)
# Writes its files to OUT (device, build log, correctness, bench1/2, table, memcheck, ncu, torch, eval-*): more than
# the device tool brings back (8), so tar them into one where that matters.
# Needs CUDA 13 (nvcc, compute-sanitizer, ncu), CMake, g++ and python3 with torch and safetensors (for the random
# H = 32 weights); no Node. Run from the repository root:
#   bash scripts/device/tensor-check.sh OUT
# Every step has a time limit; the whole run stays under TENSOR_CHECK_BUDGET seconds (default 270).
# TC_ONLY=ncu: the build and the Nsight Compute profiles only (TC_NCU_CONFIGS picks them).
# TC_QUICK=1: step 1 tests only v12, v13 and the default; TC_MEMCHECK_VERSIONS="12 13" picks step 4's memcheck versions.
# TC_BIN=DIR: moe_cuda_test and moe_cuda_bench built elsewhere (`cmake -S . -B DIR -DMOE_BUILD_TESTS=ON
# -DCMAKE_CUDA_ARCHITECTURES=90-real && cmake --build DIR --target moe_cuda_test moe_cuda_bench`; 3 MB as tar.xz), so
# that no build takes the GPU machine's time.
set -u
O="${1:?usage: tensor-check.sh OUT}"
mkdir -p "$O"
start=$(date +%s)
BUDGET=${TENSOR_CHECK_BUDGET:-270}
left() { local l=$(( BUDGET - ($(date +%s) - start) )); (( l > $1 )) && l=$1; (( l < 5 )) && l=5; echo "$l"; }
step() { echo; echo "=== $1 (limit $2 s, at $(( $(date +%s) - start )) s)"; }
B=${TC_BIN:-/tmp/moe-tc}

{
date -u
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
nvcc --version | tail -2
nproc
} 2>&1 | tee "$O/device.txt"

if [[ -n "${TC_BIN:-}" ]]; then  # binaries built elsewhere: no build here
  [[ -x "$B/moe_cuda_test" && -x "$B/moe_cuda_bench" ]] || { echo "TC_BIN=$B holds no moe_cuda_test and moe_cuda_bench"; exit 1; }
  echo "binaries from $B (no build)"
else
l=$(left 150); step "build (CMake, sm_90)" "$l"
( timeout "$l" cmake -S . -B "$B" -DMOE_BUILD_TESTS=ON -DCMAKE_CUDA_ARCHITECTURES=90-real > "$O/build.log" 2>&1 &&
  timeout "$l" cmake --build "$B" --target moe_cuda_test moe_cuda_bench -j"$(nproc)" >> "$O/build.log" 2>&1 ); rc=$?
echo "build rc=$rc ($(( $(date +%s) - start )) s)"; grep -E "error|registers|spill" "$O/build.log" | head -20
if (( rc != 0 )); then tail -40 "$O/build.log"; exit 1; fi
fi

python3 scripts/device/torch_router.py make-h32 /tmp/router32.safetensors
source scripts/device/bench-weights.sh; bench_weights_h16 "$PWD" "${TC_DEVICE_DIR:-.device}" build/tc-data .tc-data .device-train || exit 2

T="$O/correctness.txt"
run_test() {  # label, max tokens, env...
  local label="$1" n="$2"; shift 2
  local l; l=$(left 60); step "correctness: $label (moe_cuda_test $n)" "$l" | tee -a "$T"
  env "$@" timeout "$l" "$B/moe_cuda_test" "$n" > /tmp/t.txt 2>&1; local rc=$?
  cat /tmp/t.txt >> "$T"; echo "rc=$rc" >> "$T"
  grep -E "^device|^forward|FAIL|^ok|moe_cuda_test:" /tmp/t.txt; echo "rc=$rc"
}
if [[ "${TC_ONLY:-}" != ncu ]]; then  # TC_ONLY=ncu: the build and the profiles only
# TC_QUICK=1: only v12 and v13 and the default are tested here (the other versions' code is unchanged).
if [[ -z "${TC_QUICK:-}" ]]; then
run_test "bf16x3 (v9)" 1000000 MOE_CUDA_PRECISION=bf16x3 MOE_CUDA_FORWARD_KERNEL=9
run_test "bf16x3 (v11)" 1000000 MOE_CUDA_PRECISION=bf16x3 MOE_CUDA_FORWARD_KERNEL=11
fi
run_test "bf16x3 (v12)" 1000000 MOE_CUDA_PRECISION=bf16x3 MOE_CUDA_FORWARD_KERNEL=12
run_test "bf16x3 (v13)" 1000000 MOE_CUDA_PRECISION=bf16x3 MOE_CUDA_FORWARD_KERNEL=13
run_test "tf32x3 (v13)" 65537 MOE_CUDA_PRECISION=tf32x3 MOE_CUDA_FORWARD_KERNEL=13
run_test "tf32 (v13)" 65537 MOE_CUDA_PRECISION=tf32 MOE_CUDA_FORWARD_KERNEL=13
run_test "bf16 (v13)" 65537 MOE_CUDA_PRECISION=bf16 MOE_CUDA_FORWARD_KERNEL=13
run_test "tf32x3 (v12)" 65537 MOE_CUDA_PRECISION=tf32x3 MOE_CUDA_FORWARD_KERNEL=12
run_test "tf32 (v12)" 65537 MOE_CUDA_PRECISION=tf32 MOE_CUDA_FORWARD_KERNEL=12
if [[ -z "${TC_QUICK:-}" ]]; then
run_test "tf32x3 (v9)" 1000000 MOE_CUDA_PRECISION=tf32x3 MOE_CUDA_FORWARD_KERNEL=9
run_test "tf32x3 (v11)" 65537 MOE_CUDA_PRECISION=tf32x3 MOE_CUDA_FORWARD_KERNEL=11
for p in tf32 bf16; do
  run_test "$p (v9)" 65537 MOE_CUDA_PRECISION=$p MOE_CUDA_FORWARD_KERNEL=9
  run_test "$p (v11)" 65537 MOE_CUDA_PRECISION=$p MOE_CUDA_FORWARD_KERNEL=11
done
fi
run_test "default (MOE_CUDA_PRECISION and MOE_CUDA_FORWARD_KERNEL unset)" 65537
if [[ -z "${TC_QUICK:-}" ]]; then
for v in 2 4 8; do run_test "fp32 v$v (forced, precision unset)" 65537 MOE_CUDA_FORWARD_KERNEL=$v; done
# The seed whose fused-training-step check failed once before its tokens were drawn off the loss's kinks.
run_test "fp32 v4 (forced), seed 715581919" 65537 MOE_CUDA_FORWARD_KERNEL=4 MOE_TEST_SEED=715581919
run_test "fp32 (MOE_CUDA_PRECISION=fp32)" 1000 MOE_CUDA_PRECISION=fp32
fi

step "settings that must be refused" 10 | tee -a "$T"
for e in "MOE_CUDA_PRECISION=fp16" "MOE_CUDA_PRECISION=TF32X3" "MOE_CUDA_PRECISION=tf32x3 MOE_CUDA_FORWARD_KERNEL=8" \
         "MOE_CUDA_PRECISION=fp32 MOE_CUDA_FORWARD_KERNEL=9" "MOE_CUDA_PRECISION=fp32 MOE_CUDA_FORWARD_KERNEL=11" \
         "MOE_CUDA_FORWARD_KERNEL=7" "MOE_CUDA_FORWARD_KERNEL=10" "MOE_CUDA_FORWARD_KERNEL=14" "MOE_CUDA_WAIT=yield" \
         "MOE_CUDA_GRAPH=2"; do
  # shellcheck disable=SC2086
  env $e timeout 10 "$B/moe_cuda_test" 1 2>&1 | grep -E "moe_cuda_test:" | sed "s/^/$e → /" | tee -a "$T"
done

TOK="${TC_TOKENS:-}"
[[ -z "$TOK" && -f build/tc-data/tokens16.bin ]] && TOK="$PWD/build/tc-data/tokens16.bin"
[[ -z "$TOK" && -f .tc-data/tokens16.bin ]] && TOK="$PWD/.tc-data/tokens16.bin"
if [[ -n "$TOK" ]]; then export MOE_BENCH_TOKENS16="$TOK" MOE_BENCH_T=0.6627; else echo "no feature tokens"; fi
for r in 1 2; do
  l=$(left 60); step "benchmark, kernels only (run $r)" "$l"
  extra=""; (( r == 2 )) && extra="${TC_BENCH2_ENV:-}"
  [[ -n "$extra" ]] && echo "run $r with $extra"
  # shellcheck disable=SC2086
  env $extra MOE_BENCH_ONLY=kernels timeout "$l" "$B/moe_cuda_bench" /tmp/router16.safetensors /tmp/router32.safetensors > "$O/bench$r.jsonl" 2>&1
  echo "rc=$?"
done
python3 - "$O" "${TC_BENCH2_ENV:-}" <<'EOF' | tee "$O/table.md"
import json, sys, os
o, env2 = sys.argv[1], sys.argv[2]
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
precs = ("bf16x3", "tf32x3", "tf32", "bf16")
cols = [(2, "fp32"), (4, "fp32"), (8, "fp32")] + [(v, p) for v in (9, 11) for p in precs] + [(v, p) for v in (12, 13) for p in precs[:3]]
ratios = [(9, "bf16x3"), (11, "bf16x3"), (12, "bf16x3"), (13, "bf16x3")]
print("| H | tokens | expert | " + " | ".join("v%d %s" % c for c in cols) + " | " +
      " | ".join("v%d %s / v8" % c for c in ratios) + " | " + " | ".join("v11 / v9 %s" % p for p in precs) + " | " +
      " | ".join("v12 / v11 %s" % p for p in precs[:3]) + " | " + " | ".join("v13 / v12 %s" % p for p in precs[:3]) + " |")
print("|" + " --- |" * (3 + len(cols) + len(ratios) + len(precs) + 6))
for H in (16, 32):
    for n in (1000000, 10000000):
        for ex in (True, False):
            def g(v, p):
                x = rows.get((H, n, ex, v, p))
                return max(x) if x else float("nan")
            runs = lambda v, p: "/".join("%.2f" % x for x in rows.get((H, n, ex, v, p), []))
            v8 = g(8, "fp32")
            print("| %d | %.0e | %s | %s | %s | %s | %s | %s |" % (
                H, n, "yes" if ex else "no", " | ".join(runs(v, p) for v, p in cols),
                " | ".join("%.2f×" % (g(v, p) / v8) for v, p in ratios),
                " | ".join("%.2f×" % (g(11, p) / g(9, p)) for p in precs),
                " | ".join("%.2f×" % (g(12, p) / g(11, p)) for p in precs[:3]),
                " | ".join("%.2f×" % (g(13, p) / g(12, p)) for p in precs[:3])))
print()
print("G tokens/s, run 1/run 2 (median of 20 launches at 1e7, 50 at 1e6, each run)%s; ratios: best of the runs." %
      (", run 2 with " + env2 if env2 else ""))
print()
print("| H | inputs, T | kernel | max abs Δp | max Δp / p | Δp > 2e-3 | argmax diff, gap > 1e-2 | argmax diff, gap ≤ 1e-2 | max Δy / (1 + abs y) | contract |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for j in acc:
    print("| %d | %s, %g | v%d %s | %.2e | %.2e | %d | %d | %d | %.2e | %s |" % (j["H"], j.get("inputs", "uniform"), j["T"],
          j["version"], j["precision"], j["maxAbsProb"], j.get("maxRelProb", float("nan")),
          j["probsOver2e-3"], j["argmaxDiffGapOver1e-2"], j["argmaxDiffNearTie"], j["maxExpertRel"],
          "met" if j["meetsContract"] else "NOT met"))
EOF

if [[ -n "${TC_TORCH:-}" ]]; then
  # PyTorch on the same card and weights (eager and torch.compile, FP32 matmuls, every expert computed and gathered).
  l=$(left 120); step "PyTorch baseline (torch_router.py bench)" "$l"
  TORCH_ONLY=forward timeout "$l" python3 scripts/device/torch_router.py bench /tmp/router16.safetensors /tmp/router32.safetensors /tmp 200 2>&1 |
    grep -v Warning > "$O/torch.jsonl"; echo "rc=$?"
  grep -E 'torch-forward' "$O/torch.jsonl" | head -12
fi

l=$(left 60); step "compute-sanitizer memcheck, v9, v11, v12 and v13, bf16x3 and tf32x3 (n up to 1000)" "$l"
for v in ${TC_MEMCHECK_VERSIONS:-9 11 12 13}; do for p in bf16x3 tf32x3; do
  MOE_CUDA_FORWARD_KERNEL=$v MOE_CUDA_PRECISION=$p timeout "$l" compute-sanitizer --tool memcheck --error-exitcode 9 "$B/moe_cuda_test" 1000 > /tmp/mc.txt 2>&1
  echo "memcheck v$v $p rc=$?" | tee -a "$O/memcheck.txt"; cat /tmp/mc.txt >> "$O/memcheck.txt"
  grep -E "ERROR SUMMARY|FAIL" /tmp/mc.txt | head -3
done; done

fi  # TC_ONLY
# Nsight Compute on the first launch of a v9, v11 or v12 instance with the expert output in a bench of 1e7-token
# kernel rows only (MOE_BENCH_KERNEL_TOKENS: the bench runs each kernel with the expert output first). Instance
# names: forwardKernelTC<H, precision (1 tf32, 2 bf16, 3 tf32x3, 4 bf16x3), warps per block, version>. Each report
# is printed whole (ncu-v*-H*.txt: the sections' tables, the warp stall reasons and pipe utilisation where this ncu
# prints section bodies) with its raw metrics (ncu-v*-H*.csv), and the 25 SASS instructions with the most stall
# samples (SourceCounters).
# TC_NCU_CONFIGS="H:precision number:name:version ..." picks others ("none": no profile).
for c in ${TC_NCU_CONFIGS:-32:4:bf16x3:12 32:4:bf16x3:13 16:4:bf16x3:12 16:4:bf16x3:13}; do
  [[ "$c" == none ]] && break
  set -- ${c//:/ }
  k="forwardKernelTCILi$1ELi$2ELi[0-9]+ELi$4E"
  tag="v$4-H$1"
  l=$(left 75); step "ncu: v$4 $3, H = $1, 1e7 tokens, expert output" "$l"
  rm -f "/tmp/ncu-$tag.ncu-rep"
  MOE_BENCH_ONLY=kernels MOE_BENCH_KERNEL_TOKENS=10000000 timeout "$l" ncu --clock-control none --kernel-name-base mangled -k "regex:$k" \
    --launch-count 1 --section SpeedOfLight --section ComputeWorkloadAnalysis --section Occupancy \
    --section WarpStateStats --section LaunchStats --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables \
    --section InstructionStats --section SourceCounters -o "/tmp/ncu-$tag" \
    "$B/moe_cuda_bench" /tmp/router16.safetensors /tmp/router32.safetensors > "/tmp/ncu-run.txt" 2>&1
  echo "ncu rc=$?"; grep -E "==ERROR==|==WARNING==" /tmp/ncu-run.txt | head -3
  [[ -f "/tmp/ncu-$tag.ncu-rep" ]] || continue
  ncu -i "/tmp/ncu-$tag.ncu-rep" --page details --print-details all > "$O/ncu-$tag.txt" 2>&1 ||
    ncu -i "/tmp/ncu-$tag.ncu-rep" --page details > "$O/ncu-$tag.txt" 2>&1
  ncu -i "/tmp/ncu-$tag.ncu-rep" --page raw --csv > "$O/ncu-$tag.csv" 2>&1
  ncu -i "/tmp/ncu-$tag.ncu-rep" --page source --csv --print-source sass > "/tmp/ncu-$tag-src.csv" 2>&1
  [[ -n "${TC_NCU_REP:-}" ]] && cp "/tmp/ncu-$tag.ncu-rep" "$O/"
  { echo "=== ncu v$4 $3 H=$1"; cat "$O/ncu-$tag.txt"; } >> "$O/ncu.txt"
  grep -E "SM Frequency|Duration|Compute \(SM\) Throughput|Memory Throughput|DRAM Throughput|Issue Slots Busy|Executed Ipc Active|highest-utilized|Achieved Occupancy|Registers Per|Warp Cycles Per Issued|Executed Instructions  " "$O/ncu-$tag.txt" | head -14
  python3 - "$O/ncu-$tag.csv" "/tmp/ncu-$tag-src.csv" <<'PY' | tee -a "$O/ncu-$tag.txt"
import csv, sys, re
rows = list(csv.reader(open(sys.argv[1])))
if len(rows) >= 3:
    names, units, vals = rows[0], rows[1], rows[2]
    want = re.compile(r"(smsp__average_warps_issue_stalled_.*_per_issue_active|sm__inst_executed_pipe_.*pct_of_peak|"
                      r"sm__pipe_.*cycles_active.*pct_of_peak|l1tex__data_pipe_lsu_wavefronts_mem_shared|"
                      r"l1tex__data_bank_conflicts|l1tex__t_(requests|sectors)_pipe_lsu_mem_global_op_st|dram__bytes)")
    out = []
    for n, u, v in zip(names, units, vals):
        if want.search(n):
            try:
                f = float(v.replace(",", ""))
            except ValueError:
                continue
            if f != 0:
                out.append((n, f, u))
    for n, f, u in sorted(out, key=lambda t: (t[0].split("_")[0], -t[1])):
        print("  %-90s %14.3f %s" % (n, f, u))
try:
    src = list(csv.reader(open(sys.argv[2])))
except OSError:
    src = []
hdr = next((i for i, r in enumerate(src) if any("Source" == c for c in r)), None)
if hdr is not None:
    h = src[hdr]
    col = next((i for i, c in enumerate(h) if c.startswith("Warp Stall Sampling (All")), None)
    sc = h.index("Source")
    if col is not None:
        body = [r for r in src[hdr + 1:] if len(r) > col]
        def num(r):
            try:
                return float(r[col].replace(",", ""))
            except ValueError:
                return 0.0
        tot = sum(num(r) for r in body) or 1.0
        print("  top SASS by stall samples (of %d):" % tot)
        for r in sorted(body, key=num, reverse=True)[:25]:
            print("  %6.2f%%  %s" % (100 * num(r) / tot, r[sc][:110]))
PY
done
DD=${TC_DEVICE_DIR:-$PWD/.device}
if [[ "${TC_ONLY:-}" != ncu && -f "$DD/node.xz" && -f "$DD/evaluate.mjs" && -f "$DD/moe_router.node" && -d "$DD/market-data" ]]; then
  l=$(left 60); step "evaluate on the development folder: CPU against CUDA settings" "$l"
  xz -dc "$DD/node.xz" > /tmp/node && chmod +x /tmp/node
  ev() {  # label, env...
    local label="$1"; shift
    env MOE_NATIVE_PATH="$DD/moe_router.node" "$@" timeout 60 /tmp/node "$DD/evaluate.mjs" \
      --data "$DD/market-data" --model models/router.safetensors > "$O/eval-$label.txt" 2>&1
    echo "evaluate $label rc=$?"
  }
  ev cpu CUDA_VISIBLE_DEVICES=
  for sgs in ${TC_EVAL_SETTINGS:-default}; do
    lab=$(echo "$sgs" | tr -c 'A-Za-z0-9.\n-' '_')
    # shellcheck disable=SC2046
    ev "$lab" $(echo "$sgs" | tr ',' ' ' | sed 's/default//')
    if diff <(grep -vE "^(context|model )" "$O/eval-cpu.txt") <(grep -vE "^(context|model )" "$O/eval-$lab.txt") > /dev/null; then
      echo "  $sgs: every line as on the CPU"
    else
      echo "  $sgs: DIFFERS from the CPU:"; diff <(grep -vE "^(context|model )" "$O/eval-cpu.txt") <(grep -vE "^(context|model )" "$O/eval-$lab.txt") | head -10
    fi
  done
  grep -E "backend|per ticker|ECE" "$O/eval-cpu.txt" | head -4
fi
echo; echo "=== done at $(( $(date +%s) - start )) s"
