// Forward kernels v9, v11, v12 and v13: the two matrix products of the router (h = x·W1 and the expert's h·We[a]) on the
// tensor cores with warp-level mma.sync, FP32 accumulation. They share everything up to the expert product (one
// template, forwardKernelTC<..., V>, V the version) and differ in that product (below). Precisions
// (MOE_CUDA_PRECISION, forward.cu):
//   bf16x3  (the default since 2026-12-05) x·W1 in split BF16: x = x_hi + x_lo and W1 = W_hi + W_lo, each part
//           rounded to BF16, and x·W1 ≈ x_lo·W_hi + x_hi·W_lo + x_hi·W_hi, three m16n8k16 products per 16 k (the
//           dropped x_lo·W_lo is ~2^-16 of the product): x and W1 carried to ~16 significant bits, with half the
//           mma steps and half the bytes of W1's operands of tf32x3. The expert product in TF32 (v9, v11) or FP16
//           (v12).
//   tf32x3  x·W1 in split TF32 ("3xTF32") the same way, three m16n8k8 products per 8 k (the dropped part ~2^-22), so
//           h, and everything computed from it in FP32, is within a few FP32 roundings of the oracle. The expert
//           product in TF32 or FP16 as above (it only reaches the expert output y).
//   tf32    both products with inputs rounded to TF32 (m16n8k8; v12's expert product in FP16).
//   bf16    both products with inputs rounded to BF16 (m16n8k16).
// Everything else (b1 and be added in FP32 as the accumulators' start, relu, h·Wc, the statistics, the four signals,
// logits, argmax, softmax, the expert activation) is FP32 and, past the per-lane partial sums, the stages every
// version shares (stages.cuh). fp32 keeps the FP32 versions 2, 4 and 8.
//
// Shape: persistent blocks, one per SM, of 24 warps (H = 16; 20 in version 13) or 16 (H = 32); each block converts
// the weights once into shared memory, already in the register layout of the mma operands (one 8- or 16-byte load per
// lane and mma, no bank conflicts), and each warp then walks on its own over tiles of 32 tokens (two 16-row mma
// tiles): no barrier after the weights are loaded.
//   x        each lane loads, per token row it holds in the A operand (rows g and g+8 of each 16-row tile, g = lane/4),
//            the H/4 consecutive columns t·H/4 .. t·H/4+H/4-1 (t = lane%4) as float4: the k index of the product
//            is permuted so that A's columns of a lane are contiguous in memory; W1's rows follow the same permutation.
//   h        one 16-row tile at a time (half the accumulators live): the accumulators of x·W1 (started at b1) are h in
//            the C layout: a lane holds columns 8j+2t, 8j+2t+1 of rows g and g+8 for every 8-column block j. relu in
//            place; h·Wc is summed over the lane's columns and the four lanes of a row add their partial sums
//            (shuffles); the statistics of x likewise. With the expert output, h (rounded to TF32 or BF16) goes to the
//            warp's staging tile in shared memory, row r for tile row r, and leaves the registers before the gate.
//   gate     each lane then owns one of the 4 rows its lane quad holds (stages.cuh gateTokens: signals, logits,
//            argmax, softmax, stores).
//   expert   (v9) bucketed by expert, so that each token's expert product runs once: the warp counts its tokens per
//            expert (ballots) and gives each token its place in expert order (rowOf: place → tile row). The product
//            runs transposed, y^T = We[e]^T · h^T: We[e]^T is the A operand (H/16 row tiles, from shared memory in A's
//            register order), and 8 consecutive places of one expert are the 8 columns of the B operand (a lane reads
//            its token's k pair from the staged row as one 8-byte word), one product per group of 8. 32 tokens of
//            four random experts take ~5.7 groups, where the v9 of the morning of 2026-12-04 (every expert any of the
//            32 tokens picked, on both 16-row tiles) ran the equivalent of 16; consecutive days of one ticker take 4.
//            Padding columns of a group read some row of the tile and are not stored (each output column depends only
//            on its own B column). Every token's sums run in the same k order whatever its neighbours: results are
//            bit-identical from call to call and independent of the tile a token lands in.
// Version 11 (the default on the afternoon of 2026-12-05, until v12): the expert product dense over the experts the
//            warp tile's rows chose.
//            h never leaves the lanes that computed it: the C layout of x·W1 is already the A layout of the next
//            product (TF32: k order permuted within each 8, c0 c2 c1 c3; BF16: two 8-column blocks as they are), so each
//            lane stages its own A fragments in shared memory before the gate (no other lane reads them, no barrier)
//            and takes them back after it. Then, for each expert some row of the tile chose, y = be[e] + h·We[e] for
//            all rows of the tile (We[e] the B operand from shared memory, each load serving both 16-row tiles at
//            H = 32), activated (Derivatives by tanh.approx.f32), and stored as float2 for the rows that chose e. No
//            ballot ranks, no row indirection, no scattered 4-byte stores; with four experts present the tensor cores
//            do 4× the useful products, which they have to spare. Probabilities and argmax are v9's bit for bit; the
//            expert output within the same bound (TF32 products, k in another order, tanh within 2^-10.98).
//            H100, 2026-12-05, bf16x3, 1e7 tokens with the expert output: H = 32 5.66 against v9's 4.82 G tokens/s,
//            H = 16 10.76 against 9.96; Nsight Compute at H = 32: L1/shared 83% (v9 94%), 16% fewer instructions.
// Version 12 (the default since 2026-12-05): v11 with the expert product in FP16 (m16n8k16) instead of TF32
//            (m16n8k8) at the precisions that computed it in TF32. FP16 has TF32's 11-bit significand, so h and We
//            round as finely, at half the mma instructions, half the B operands from shared memory and half the
//            staged A fragments; what FP16 lacks is range: a value at or past 65520 packs to infinity. Each lane keeps
//            the largest h it packed (HMNMX2 on the packed pairs), and a tile where any did (a vote) computes its
//            rows' expert outputs in FP32 instead (expertRowsFp32: the oracle's math, slow, for inputs far outside
//            what the router sees; moe_cuda_test's rows of x·1e5 take it); a We past the range (a barrier's vote when
//            the block loads the weights) sends every tile there.
//            At bf16x3 v12 also turns x·W1 inside out (CfgTC::JOUTER): per 8-column block of h both 16-row tiles,
//            so that each B operand of W1 is loaded once per warp tile, not once per 16 rows (+3% at both sizes).
//            Without the expert output v12 runs v11's instance. H100, 2026-12-05 evening, bf16x3, 1e7 tokens with
//            the expert output: H = 32 6.82 against v11's 5.64 G tokens/s (1.21×), H = 16 11.92 against 10.90
//            (1.09×); expert outputs within the same bounds as v11's (the bench's maxima equal to three digits).
// Version 13: v12 with the gate moved off the FP32 lanes, which spent about 16 of v12's ~56 warp instructions per
//            token (H = 16) on the three signals (112 relu units: 8 vol, 8 risk and 12 statistics units × 4 domains)
//            and about 7 on h·Wc and its quad sums:
//            - h·Wc on the tensor cores: the hi pairs of h that v12 packs as the expert product's A fragments, and
//              the lo pairs of what they leave out, times g0·Wc (hi and lo, each column n of an 8-column B being
//              domain n % 4) in split form (lo·hi, hi·lo, hi·hi: ~22 bits), one k-step per two 8-column blocks of h,
//              into accumulators started at g0·bc. No per-lane FMAs, no quad sums.
//            - the statistics' signal g3/12·Σ_j relu(a_j), a_j = Bs_j + st·Ws_j, on the tensor cores: u = (mean,
//              variance, mean |x|, 1) per row (one m16n8k8 TF32 k-step, split in three) times (Ws; Bs), two units × four
//              domains per 8-column block; relu(a) = (a + |a|) / 2, so each lane adds |a| of its two units (one FADD
//              with the absolute-value operand each), the lanes t and t ^ 2 add theirs, and a seventh block of summed
//              weights adds Σ_j a_j into the same accumulators.
//            - the vol and risk signals by tables: c·Σ_j relu(v·Wt_j + Bt_j) is piecewise linear in v with one kink per
//              unit and domain; the block sorts the 32 kinks when it loads the weights and sums, per interval, the
//              slopes and offsets of the units active there, so a row's signal is a binary search (6 steps) and four
//              FMAs.
//            Each lane then takes its row's two domains and the other two from lane tq ^ 1. The sums run in another
//            order than the oracle's (probabilities within the contract, not bit-equal to v12's). FP16 range as in
//            v12: a tile with an h past it (or a g0·Wc or We past it) routes its rows in FP32 (gateRowFp32 and
//            expertRowsFp32).
//            - each warp's next tile of x, vol and risk copied into shared memory by cp.async while it routes the
//              current one (prefetchTile), instead of loaded when the tile starts: the tile's first use of x was the
//              largest single stall (16-17 % of the samples).
// Measured for v9 (H200, 2026-12-05, kernel only, 1e7 tokens with the expert output, G tokens/s, best of two runs): H = 32
// bf16x3 4.95, tf32x3 4.37, tf32 5.02, bf16 6.88 against v8's 3.07; H = 16 bf16x3 9.84, tf32x3 9.27, tf32 9.85, bf16
// 11.04 against 8.12. bf16x3 keeps probabilities within 8.6e-5 of the oracle on the trained H = 16 model with feature
// tokens (tf32x3 4.1e-6, v8 3.3e-6; tf32 5.1e-3: the contract's 2e-3 missed). Nsight Compute (H = 32 tf32x3, 2026-12-04):
// L1/shared-memory throughput 94%, issue slots 47% busy: bound by shared memory (the mma operands: W1 hi and lo per
// 16-row tile, We[e]^T per group of 8 tokens, the staged h); at H = 16 (24 warps) 89% and 71%. A version 10 that
// moved far less through shared memory (W1's operands shared by both 16-row tiles, the expert products bucketed over
// the whole block between barriers, We[e]^T in registers once per expert) and was bit-identical to v9 ran slower with
// the expert output (H = 32 tf32x3 4.13, H = 16 6.88; L1 throughput 56%, issue slots 45%): the same ~103 warp
// instructions per token and the block's barriers. docs/performance.md, "Tensor-core forward".
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

#include "stages.cuh"

namespace moe::cuda {

namespace {

// Warps per block, one block per SM (no block-level barrier after the weights are loaded): 16 at H = 32, where the
// per-warp staging tiles (9 KB each in TF32) and one copy of the weights per SM just fit in shared memory (~196 KB
// for tf32x3) at 128 registers per thread; 24 at H = 16 (80 registers; 138 KB), 11% faster than 16 there (tf32x3
// with the expert output, 1e7 tokens: 9.56 against 8.64 G tokens/s; H200, 2026-12-04), except version 13 with the
// expert output: 20 warps, whose 96 registers hold its expert product's two 16-row tiles at once (CfgTC::MTS), 1.02×
// 24 warps with one tile (bf16x3, 1e7 tokens, medians of four rounds: 15.21 against 14.88 G tokens/s; H100,
// 2026-12-06; docs/performance.md, "Version 13"). Without the expert output (the route worker's case) version 13 keeps
// 24 warps and one tile, another instance: 20 warps read 2 % slower there in two runs.
constexpr int warpsTC(int H, int V, bool expert) { return H == 32 ? 16 : V >= 13 && expert ? 20 : 24; }
constexpr int kMT = 2;                   // 16-row mma tiles per warp tile
constexpr int kTileTC = 16 * kMT;        // tokens per warp tile

constexpr int kTF32 = int(Precision::TF32), kBF16 = int(Precision::BF16), kTF32X3 = int(Precision::TF32X3),
              kBF16X3 = int(Precision::BF16X3);

__device__ __forceinline__ std::uint32_t toTf32(float v) {
  std::uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
  return r;
}

// Two BF16 (round to nearest even) in one register, lo in the low half (the lower k index, as mma expects).
__device__ __forceinline__ std::uint32_t packBf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const std::uint32_t*>(&v);
}

// Split BF16 of a pair: hi = BF16(a), BF16(b) packed as packBf16, lo = the BF16 of what hi leaves out.
__device__ __forceinline__ void splitBf16(float a, float b, std::uint32_t& hi, std::uint32_t& lo) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
  hi = *reinterpret_cast<const std::uint32_t*>(&v);
  lo = packBf16(a - __low2float(v), b - __high2float(v));
}

// Two FP16 (round to nearest even; at or past 65520 infinity) in one register, lo in the low half.
__device__ __forceinline__ std::uint32_t packF16(float lo, float hi) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const std::uint32_t*>(&v);
}

// The larger of two packed FP16 pairs, half by half (one HMNMX2).
__device__ __forceinline__ std::uint32_t hmax2u(std::uint32_t a, std::uint32_t b) {
  const __half2 r = __hmax2(*reinterpret_cast<const __half2*>(&a), *reinterpret_cast<const __half2*>(&b));
  return *reinterpret_cast<const std::uint32_t*>(&r);
}

// Operand types of one mma: TF32 (m16n8k8), BF16 or FP16 (m16n8k16; the same fragment layouts).
constexpr int kMmaTf32 = 0, kMmaBf16 = 1, kMmaF16 = 2;

// d += a·b for one 16×8 tile of operand type T, FP32 accumulators.
template <int T>
__device__ __forceinline__ void mmaT(float (&d)[4], std::uint32_t a0, std::uint32_t a1, std::uint32_t a2,
                                     std::uint32_t a3, std::uint32_t b0, std::uint32_t b1) {
  if constexpr (T == kMmaF16) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else if constexpr (T == kMmaBf16) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
}
template <int T>
__device__ __forceinline__ void mmaT(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  mmaT<T>(d, a[0], a[1], a[2], a[3], b0, b1);
}
// d += a·b in split form, a = ah + al and b = {hi, hi, lo, lo} (the B operand's two registers of each part): al·b_hi,
// ah·b_lo, then ah·b_hi, summed in that order in FP32 (the dropped al·b_lo is the square of the parts' error).
template <int T>
__device__ __forceinline__ void mmaSplit(float (&d)[4], const std::uint32_t (&ah)[4], const std::uint32_t (&al)[4],
                                         uint4 b) {
  mmaT<T>(d, al, b.x, b.y);
  mmaT<T>(d, ah, b.z, b.w);
  mmaT<T>(d, ah, b.x, b.y);
}

// Sizes and shared memory of one instance (P: a Precision as int). BF1 / BF2: x·W1 / the expert product in BF16
// (m16n8k16) rather than TF32 (m16n8k8); X3: x·W1 split in hi and lo parts (three products per step). K1, K2: k of
// one mma of each product. The parameters from b1 up to We (b1, Wc, bc, the signal weights, the gates) stay FP32 at
// their layout offsets relative to L::b1; be follows; then the B operands of W1 (KS1 k-steps × NJ1 column blocks × 32
// lanes; uint2 per lane, uint4 hi + lo when split), the A operands of the four We[e]^T (4 × KS2 k-steps × MT2 row
// tiles × 32 lanes, uint4 per lane), the staging tiles of the warps (32 rows of SW 4-byte words: F TF32 values or
// F/2 BF16 pairs, then 8 words of padding) and, per warp, the tile row of each staged token (32 bytes).
template <int H_, int P_, int W_, int V_>
struct CfgTC {
  static constexpr int H = H_, F = 2 * H_;
  // V_: the version, 9, 11, 12 or 13. DENSE: versions 11 to 13, the expert product dense, h kept in A fragments.
  // TCG: version 13, the gate on the tensor cores (h·Wc and the statistics' signal) and by tables (vol and risk).
  static constexpr bool DENSE = V_ >= 11, TCG = V_ >= 13;
  // The expert product's operands: BF16 at bf16; else TF32 (v9, v11) or FP16 (v12: TF32's 11-bit significand at the
  // m16n8k16 rate, h range-checked per tile). BF2: that product in m16n8k16 (BF16 or FP16) rather than m16n8k8.
  static constexpr int ET = P_ == kBF16 ? kMmaBf16 : V_ >= 12 ? kMmaF16 : kMmaTf32;
  static constexpr bool F16E = ET == kMmaF16;
  static constexpr bool BF1 = P_ == kBF16 || P_ == kBF16X3, BF2 = ET != kMmaTf32, X3 = P_ == kTF32X3 || P_ == kBF16X3;
  static constexpr int T1 = BF1 ? kMmaBf16 : kMmaTf32;  // x·W1's operand type
  static constexpr int K1 = BF1 ? 16 : 8, K2 = BF2 ? 16 : 8;
  static constexpr int KS1 = H / K1, NJ1 = F / 8;   // x·W1: k-steps over H, 8-column blocks of h
  static constexpr int KS2 = F / K2, MT2 = H / 16;  // y^T = We^T·h^T: k-steps over F, 16-row tiles of y^T (columns of y)
  static constexpr int CPL = H / 4;                 // columns of x per lane and row
  // v12 at bf16x3: x·W1 with the 8-column blocks of h outside and both 16-row tiles inside, so that each B operand of
  // W1 (and each b1 and Wc load) serves both, the A fragments of both tiles live (32 registers at H = 32, 16 at
  // H = 16). Against v12 without it, same run (H100, 2026-12-05, 1e7 tokens with the expert output): H = 32 6.82 /
  // 6.76 against 6.63 / 6.50 G tokens/s, H = 16 11.88 / 11.92 against 11.56 / 11.57; tf32 within ±2% either way
  // (and tf32x3's 64 registers of fragments, or 32 at H = 16, spill), so only bf16x3 takes it.
  static constexpr bool JOUTER = V_ >= 12 && P_ == kBF16X3;
  static constexpr int WARPS = W_, THREADS = 32 * WARPS;
  // Staged row: word 8s + 2t and the next hold the k pair lane t reads at k-step s (TF32: columns 8s+2t, +1; BF16:
  // the pairs of columns 16s+4t, +1 and 16s+4t+2, +3). SW ≡ 8 (mod 32) words (H = 16 BF16: 24, also conflict-free):
  // the four consecutive rows a half-warp reads fall in distinct banks.
  static constexpr int SW = (BF2 ? F / 2 : F) + 8;
  static constexpr int tailFloats = Lay<H>::We - Lay<H>::b1;
  static constexpr int beFloats = kDomains * H;
  static constexpr int NB2 = H / 8;                 // version 11: 8-column blocks of y (the expert product's N)
  // 16-row tiles per expert product (expertDenseTC): two where the block's register budget is 96 a thread or more.
  static constexpr int MTS = 65536 / THREADS >= 96 ? 2 : 1;
  // Version 9: the A operands of the four We[e]^T (uint4 per lane); version 11: the B operands of the four We[e], two
  // 8-column blocks of y per uint4 (4 × KS2 × NB2/2 × 32).
  static constexpr int w1Frags = KS1 * NJ1 * 32, weFrags = DENSE ? kDomains * KS2 * (NB2 / 2) * 32 : kDomains * KS2 * MT2 * 32;
  static constexpr int w1Bytes = w1Frags * (X3 ? 16 : 8);
  // Per warp: version 9 stages h as rows (SW words each) and the tile row of each place (rowOf); version 11 stages
  // each lane's own A fragments of h for the expert product (kMT × KS2 × 32 lanes × uint4), no rowOf.
  static constexpr int stageWords = DENSE ? kMT * KS2 * 32 * 4 : kTileTC * SW;
  // Shared memory: the weights once per block, then per warp its staging tile and rowOf.
  // Version 13's gate operands after We's (see GateTC): the B operands of g0·Wc (KS2 k-steps × 32 lanes, uint4: hi
  // and lo pairs), of the statistics' signal (kStatBlocks × 32 lanes, uint2: TF32 hi and lo), the accumulators' start
  // g0·bc (8 floats) and the tables of the vol and risk signals (64 sorted breakpoints, 33 slopes and 33 offsets as
  // float4 each).
  static constexpr int kStatBlocks = kStatUnits / 2 + 1, tabBytes = 64 * 4 + 2 * 33 * 16;
  static constexpr int gateBytes = TCG ? KS2 * 32 * 16 + kStatBlocks * 32 * 8 + 8 * 4 + 2 * tabBytes : 0;
  static constexpr std::size_t weightBytes =
      std::size_t(tailFloats + beFloats) * 4 + std::size_t(w1Bytes) + std::size_t(weFrags) * 16 + gateBytes;
  // Version 13 (XP): each warp's next tile of x, vol and risk, copied in by cp.async while it works on the current
  // one: kTileTC rows of XS floats (H = 32: 36, so that the float4 reads of a quarter-warp, two rows × four lanes,
  // fall in distinct banks), then kTileTC vol and kTileTC risk values.
  static constexpr bool XP = TCG;
  static constexpr int XS = H == 32 ? H + 4 : H;
  static constexpr int xWords = XP ? kTileTC * XS + 2 * kTileTC : 0;
  static constexpr std::size_t warpBytes = std::size_t(stageWords + xWords) * 4 + (DENSE ? 0 : kTileTC);
  static constexpr std::size_t bytes(int warps) { return weightBytes + std::size_t(warps) * warpBytes; }
  static_assert(tailFloats % 4 == 0 && beFloats % 4 == 0 && stageWords % 4 == 0 && XS % 4 == 0 && kTileTC % 16 == 0,
                "16-byte alignment of the shared-memory regions");
  static_assert(KS1 >= 1 && (BF2 ? NJ1 % 2 == 0 : true), "BF16 pairs two 8-column blocks of h per k-step");
  static_assert(!F16E || DENSE, "FP16 expert operands in the dense versions only (h range-checked there)");
  static_assert(CPL % 4 == 0, "x columns per lane move as float4");
  static_assert(H % 16 == 0 && F % K2 == 0, "whole mma tiles in the expert product");
  static_assert(NB2 % 2 == 0, "version 11 loads the B operands of two 8-column blocks of y at once");
  static_assert(kMT % MTS == 0, "version 11 takes the warp tile's 16-row tiles MTS at a time");
  static_assert(!TCG || (BF2 && kNumStats == 3 && kStatUnits % 2 == 0 && kVolUnits * 4 <= 64 && kRiskUnits * 4 <= 64),
                "version 13: h·Wc in m16n8k16 steps, the statistics' signal as one m16n8k8 k-step (3 statistics and "
                "the bias), two units per 8-column block, at most 64 breakpoints per table");
  static_assert(gateBytes % 16 == 0 && tabBytes % 16 == 0, "16-byte alignment of the gate region");
};

// A pair of the expert product's 16-bit operands (BF16 or FP16, C::ET), lo in the low half.
template <class C>
__device__ __forceinline__ std::uint32_t packE(float lo, float hi) {
  if constexpr (C::F16E) return packF16(lo, hi);
  else return packBf16(lo, hi);
}

// Split 16-bit pair of the expert product's type (C::ET): hi = the pair rounded, lo = the pair of what hi leaves out.
template <class C>
__device__ __forceinline__ void splitE(float a, float b, std::uint32_t& hi, std::uint32_t& lo) {
  if constexpr (C::F16E) {
    const __half2 v = __floats2half2_rn(a, b);
    hi = *reinterpret_cast<const std::uint32_t*>(&v);
    lo = packF16(a - __low2float(v), b - __high2float(v));
  } else {
    splitBf16(a, b, hi, lo);
  }
}

// Whether a packed FP16 pair holds an infinity (exponent bits all set; the values here have no NaN).
__device__ __forceinline__ bool f16PairInf(std::uint32_t v) {
  return (v & 0x7c00u) == 0x7c00u || (v & 0x7c000000u) == 0x7c000000u;
}

// Version 13's gate region of shared memory (CfgTC::gateBytes), in that order.
template <class C>
struct GateTC {
  uint4* wcf;          // B operands of g0·Wc: k-step s, lane (g, t): the pairs f = 16s + 2t, +1 and 16s + 2t + 8, +9 of
                       // column g, domain g % 4 (columns 4..7 repeat 0..3), {hi, hi, lo, lo}
  uint2* stf;          // B operands of the statistics' signal (m16n8k8 TF32, k = t: mean, variance, mean |x|, 1; n = g)
  float* pinit;        // g0·bc[n % 4], n = 0..7: where the accumulators of the gate start
  float* tab;          // vol then risk: 64 breakpoints (sorted, +inf past the units'), 33 float4 slopes, 33 offsets
  __device__ explicit GateTC(void* base)
      : wcf(reinterpret_cast<uint4*>(base)),
        stf(reinterpret_cast<uint2*>(wcf + C::KS2 * 32)),
        pinit(reinterpret_cast<float*>(stf + C::kStatBlocks * 32)),
        tab(pinit + 8) {}
};

// The statistics' signal g3·Σ_j relu(a_j) / kStatUnits = cs2·(Σ_j a_j + Σ_j |a_j|): cs2 from the gate g3.
__device__ __forceinline__ float statSignalScale(float g3) { return g3 / (2.0f * kStatUnits); }

// Fills one table of version 13's gate: c·Σ_j relu(v·Wt[j][d] + Bt[j][d]) over v is piecewise linear, with a kink
// where some unit's pre-activation crosses 0 (v = -Bt/Wt). bp: the UNITS·4 breakpoints sorted (ties by index), +inf
// up to 64; on the interval with k breakpoints below v the sum is A[k][d]·v + B[k][d], A and B the sums of Wt and Bt
// over the units active there, in unit order, times c. The sum is continuous, so which side a v at a breakpoint
// takes does not matter. Called by every thread of the block with the same arguments, as one phase of four (barriers
// between them): 0 each kink once, into B's first words; 1 each kink's rank, the kink into bp[rank] and the rank into
// bp[32 + unit]; 2 the slopes and offsets (into A and B, the kinks no longer read); 3 the +inf past the breakpoints
// (over the ranks). The kinks and ranks are each computed once: counted per (interval, domain) instead, the ranks'
// divisions took some 60 µs at the start of every launch (H100, 2026-12-06: v13 at 1e6 tokens 0.6× v12).
template <int UNITS>
__device__ __forceinline__ void buildSignalTable(int phase, float* bp, const float* Wt, const float* Bt, float c, int tid,
                                                 int nt) {
  constexpr int N = UNITS * 4;
  static_assert(N <= 32, "the ranks sit in the breakpoints' +inf half until the last phase");
  float4* A = reinterpret_cast<float4*>(bp + 64);
  float4* B = A + 33;
  float* kink = reinterpret_cast<float*>(B);
  if (phase == 0) {
    for (int i = tid; i < N; i += nt) kink[i] = Wt[i] != 0.0f ? -Bt[i] / Wt[i] : INFINITY;
  } else if (phase == 1) {
    for (int i = tid; i < N; i += nt) {
      const float b = kink[i];
      int r = 0;
      for (int k = 0; k < N; ++k) r += kink[k] < b || (kink[k] == b && k < i);
      bp[r] = b;
      bp[32 + i] = __int_as_float(r);
    }
  } else if (phase == 2) {
    for (int i = tid; i < 33 * 4; i += nt) {
      const int k = i / 4, d = i % 4;
      float sa = 0.0f, sb = 0.0f;
      for (int j = 0; j < UNITS; ++j) {
        const int u = 4 * j + d, r = __float_as_int(bp[32 + u]);
        const float wt = Wt[u];
        const bool on = wt > 0.0f ? r < k : wt < 0.0f ? r >= k : Bt[u] > 0.0f;
        if (on) sa += wt, sb += Bt[u];
      }
      reinterpret_cast<float*>(A)[i] = c * sa;
      reinterpret_cast<float*>(B)[i] = c * sb;
    }
  } else {
    for (int i = N + tid; i < 64; i += nt) bp[i] = INFINITY;
  }
}

// The table's value at v (float4 over the domains): k = the breakpoints below v by a branchless binary search.
__device__ __forceinline__ float4 signalFromTable(const float* bp, float v) {
  int k = 0;
#pragma unroll
  for (int step = 32; step >= 1; step >>= 1)
    if (bp[k + step - 1] < v) k += step;
  const float4 A = reinterpret_cast<const float4*>(bp + 64)[k], B = reinterpret_cast<const float4*>(bp + 64)[33 + k];
  return make_float4(fmaf(A.x, v, B.x), fmaf(A.y, v, B.y), fmaf(A.z, v, B.z), fmaf(A.w, v, B.w));
}

// Fills version 13's gate region (see GateTC) from the parameters in global memory. Returns whether an FP16 operand of
// g0·Wc came out infinite (the block then takes the FP32 way out, as for We). Every thread of the block calls it: the
// tables are built between barriers.
template <class C>
__device__ __forceinline__ bool loadGateTC(const GateTC<C>& gt, const float* __restrict__ wG, int tid, int nt) {
  using L = Lay<C::H>;
  const float g0 = wG[L::gates], g1 = wG[L::gates + 1], g2 = wG[L::gates + 2];
  // The linear part of the statistics' signal from the last block's columns, the absolute part summed by the lanes.
  const float cs2 = statSignalScale(wG[L::gates + 3]);
  bool wide = false;
  for (int i = tid; i < C::KS2 * 32; i += nt) {
    const int lane = i % 32, s = i / 32, g = lane >> 2, t = lane & 3, d = g & 3, f = 16 * s + 2 * t;
    auto wc = [&](int ff) { return g0 * wG[L::Wc + ff * kDomains + d]; };
    std::uint32_t h0, l0, h1, l1;
    splitE<C>(wc(f), wc(f + 1), h0, l0);
    splitE<C>(wc(f + 8), wc(f + 9), h1, l1);
    gt.wcf[i] = make_uint4(h0, h1, l0, l1);
    if constexpr (C::F16E) wide = wide || f16PairInf(h0) || f16PairInf(h1);
  }
  for (int i = tid; i < C::kStatBlocks * 32; i += nt) {
    const int lane = i % 32, nb = i / 32, g = lane >> 2, k = lane & 3, d = g & 3;
    auto wst = [&](int j) {
      return k < kNumStats ? wG[L::Ws + (k * kStatUnits + j) * kDomains + d] : wG[L::Bs + j * kDomains + d];
    };
    float v = 0.0f;
    if (nb < C::kStatBlocks - 1) {
      v = wst(2 * nb + (g >> 2));
    } else {
      for (int j = 0; j < kStatUnits; ++j) v += wst(j);
      v *= cs2;
    }
    const std::uint32_t hi = toTf32(v);
    gt.stf[i] = make_uint2(hi, toTf32(v - __uint_as_float(hi)));
  }
  for (int i = tid; i < 8; i += nt) gt.pinit[i] = g0 * wG[L::bc + (i & 3)];
  for (int phase = 0; phase < 4; ++phase) {  // the last phase's writes are ordered by the caller's barrier
    if (phase > 0) __syncthreads();
    buildSignalTable<kVolUnits>(phase, gt.tab, wG + L::Wv, wG + L::Bv, g1 / kVolUnits, tid, nt);
    buildSignalTable<kRiskUnits>(phase, gt.tab + C::tabBytes / 4, wG + L::Wr, wG + L::Br, g2 / kRiskUnits, tid, nt);
  }
  return wide;
}

// Fills shared memory: the FP32 parameters past W1 (except We) and the mma operands in their lane order.
// W1 (B operand of x·W1, rows of W1 = columns of x): TF32 slot t ↔ row t·CPL + 2s, slot t+4 ↔ t·CPL + 2s + 1; BF16
// slots 2t, 2t+1, 2t+8, 2t+9 ↔ rows t·CPL + 4s + 0..3. Split precisions store {hi, hi, lo, lo}: lo = TF32(w - hi)
// (tf32x3) or the BF16 pairs of w - hi (bf16x3).
// We[e]^T (A operand of y^T = We^T·h^T; row m = column m of y, k = row f of We[e]): a lane (g, t) holds rows
// m0 = 16·mt + g and m0 + 8; TF32 slot t ↔ f = 8s + 2t, slot t+4 ↔ 8s + 2t + 1; BF16 slots 2t, 2t+1 ↔ f = 16s + 4t,
// +1 and 2t+8, 2t+9 ↔ 16s + 4t + 2, +3 (the staged h rows hold the same k pairs in adjacent words); the dense
// versions' B operands of We[e] are described in the loop that fills them. Returns whether an FP16 operand of We (v12)
// came out infinite (|We| >= 65520): that block then takes the FP32 way out.
template <class C>
__device__ __forceinline__ bool loadWeightsTC(float* tail, float* be, void* w1v, uint4* wef,
                                              const float* __restrict__ wG, int tid, int nt) {
  using L = Lay<C::H>;
  constexpr int H = C::H, F = C::F;
  bool wide = false;
  for (int i = tid; i < C::tailFloats / 4; i += nt)
    reinterpret_cast<float4*>(tail)[i] = reinterpret_cast<const float4*>(wG + L::b1)[i];
  for (int i = tid; i < C::beFloats / 4; i += nt)
    reinterpret_cast<float4*>(be)[i] = reinterpret_cast<const float4*>(wG + L::be)[i];
  const float* W1 = wG + L::W1;
  for (int i = tid; i < C::w1Frags; i += nt) {
    const int lane = i % 32, j = (i / 32) % C::NJ1, s = i / 32 / C::NJ1, g = lane >> 2, t = lane & 3;
    const int n = 8 * j + g;
    if constexpr (C::BF1) {
      const int r = t * C::CPL + 4 * s;
      if constexpr (C::X3) {
        std::uint32_t h0, l0, h1, l1;
        splitBf16(W1[r * F + n], W1[(r + 1) * F + n], h0, l0);
        splitBf16(W1[(r + 2) * F + n], W1[(r + 3) * F + n], h1, l1);
        reinterpret_cast<uint4*>(w1v)[i] = make_uint4(h0, h1, l0, l1);
      } else {
        reinterpret_cast<uint2*>(w1v)[i] = make_uint2(packBf16(W1[r * F + n], W1[(r + 1) * F + n]),
                                                      packBf16(W1[(r + 2) * F + n], W1[(r + 3) * F + n]));
      }
    } else {
      const int r = t * C::CPL + 2 * s;
      const float v0 = W1[r * F + n], v1 = W1[(r + 1) * F + n];
      const std::uint32_t h0 = toTf32(v0), h1 = toTf32(v1);
      if constexpr (C::X3)
        reinterpret_cast<uint4*>(w1v)[i] =
            make_uint4(h0, h1, toTf32(v0 - __uint_as_float(h0)), toTf32(v1 - __uint_as_float(h1)));
      else
        reinterpret_cast<uint2*>(w1v)[i] = make_uint2(h0, h1);
    }
  }
  if constexpr (C::DENSE) {
    // B operands of y = h·We[e] (k = row f of We[e], n = column of y): a lane (g, t) holds column 8nb + g; TF32 slot t
    // ↔ f = 8s + 2t and slot t+4 ↔ 8s + 2t + 1 (the C layout of h gives the A operand in that k order); BF16 the
    // pairs f = 16s + 2t, +1 and 16s + 2t + 8, +9 (A from the C layout of two 8-column blocks as they are).
    for (int i = tid; i < C::weFrags; i += nt) {
      const int lane = i % 32, np = (i / 32) % (C::NB2 / 2), s = (i / 32 / (C::NB2 / 2)) % C::KS2,
                e = i / 32 / (C::NB2 / 2) / C::KS2;
      const int g = lane >> 2, t = lane & 3;
      const float* We = wG + L::We + e * F * H;  // We[e][f][n] at f·H + n
      std::uint32_t b[4];
#pragma unroll
      for (int u = 0; u < 2; ++u) {
        const int n = 8 * (2 * np + u) + g;
        if constexpr (C::BF2) {
          const int f = 16 * s + 2 * t;
          b[2 * u] = packE<C>(We[f * H + n], We[(f + 1) * H + n]);
          b[2 * u + 1] = packE<C>(We[(f + 8) * H + n], We[(f + 9) * H + n]);
        } else {
          const int f = 8 * s + 2 * t;
          b[2 * u] = toTf32(We[f * H + n]);
          b[2 * u + 1] = toTf32(We[(f + 1) * H + n]);
        }
      }
      wef[i] = make_uint4(b[0], b[1], b[2], b[3]);
      if constexpr (C::F16E)
        for (int u = 0; u < 4; ++u) wide = wide || (b[u] & 0x7c00u) == 0x7c00u || (b[u] & 0x7c000000u) == 0x7c000000u;
    }
  } else {
    for (int i = tid; i < C::weFrags; i += nt) {
      const int lane = i % 32, mt = (i / 32) % C::MT2, s = (i / 32 / C::MT2) % C::KS2, e = i / 32 / C::MT2 / C::KS2;
      const int g = lane >> 2, t = lane & 3, m0 = 16 * mt + g, m1 = m0 + 8;
      const float* We = wG + L::We + e * F * H;  // We[e][f][m] at f·H + m
      if constexpr (C::BF2) {
        const int f = 16 * s + 4 * t;
        wef[i] = make_uint4(packBf16(We[f * H + m0], We[(f + 1) * H + m0]),
                            packBf16(We[f * H + m1], We[(f + 1) * H + m1]),
                            packBf16(We[(f + 2) * H + m0], We[(f + 3) * H + m0]),
                            packBf16(We[(f + 2) * H + m1], We[(f + 3) * H + m1]));
      } else {
        const int f = 8 * s + 2 * t;
        wef[i] = make_uint4(toTf32(We[f * H + m0]), toTf32(We[f * H + m1]), toTf32(We[(f + 1) * H + m0]),
                            toTf32(We[(f + 1) * H + m1]));
      }
    }
  }
  return wide;
}

// Shared-memory loads the compiler may neither merge nor hoist: the B operands of x·W1 are the same for both 16-row
// tiles, and loaded once for both they would stay live across the first tile's epilogue (spills at H = 32); the A
// operands of an expert are the same for each of its groups of 8 tokens.
__device__ __forceinline__ uint2 ldsFresh2(const void* p) {
  uint2 v;
  asm volatile("ld.shared.v2.u32 {%0,%1}, [%2];"
               : "=r"(v.x), "=r"(v.y)
               : "r"(static_cast<std::uint32_t>(__cvta_generic_to_shared(p))));
  return v;
}
__device__ __forceinline__ uint4 ldsFresh4(const void* p) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(static_cast<std::uint32_t>(__cvta_generic_to_shared(p))));
  return v;
}

__device__ __forceinline__ float quadSum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  return v;
}

// The expert activation of domain e (warp-uniform): Derivatives tanh, Fixed Income 0.8·y, the others relu.
__device__ __forceinline__ float activate(int e, float v) {
  return e == 3 ? tanhf(v) : e == 1 ? v * 0.8f : fmaxf(v, 0.0f);
}

// Version 11's activation (e a compile-time index once its loop is unrolled): tanh by the hardware approximation
// (tanh.approx.f32, relative error below 2^-10.98, one instruction against tanhf's ~20), within the expert output's
// bound with the TF32 or BF16 products it follows.
__device__ __forceinline__ float activateFast(int e, float v) {
  if (e == 3) {
    float r;
    asm("tanh.approx.f32 %0, %1;" : "=f"(r) : "f"(v));
    return r;
  }
  return e == 1 ? v * 0.8f : fmaxf(v, 0.0f);
}

// Version 11's expert product of MTS 16-row tiles at once (CfgTC::MTS: both tiles of the warp tile at H = 32 and in
// version 13, so that each B operand loaded from shared memory serves 32 rows; one at H = 16 in versions 11 and 12,
// whose 80 registers at 24 warps do not hold two): for each
// expert some row of them chose (present, bit e), y = be[e] + h·We[e] over all their rows on the tensor cores (A: the lane's staged fragments of h, B: We[e] from shared memory), activated, and stored
// for the rows that chose e (lane rows 16mt + g and 16mt + g + 8, columns 8nb + 2t, +1 as float2; yp[mt][hi] null
// for rows past the batch). Every row's output is computed once per expert present and stored once; its sums run in
// the same k order whatever its neighbours (bit-identical from call to call).
template <class C, int MTS>
__device__ __forceinline__ void expertDenseTC(const std::uint32_t (&hA)[MTS][C::KS2][4], const uint4* wed,
                                              const float* beS, unsigned present, const int (&er)[MTS][2],
                                              float* const (&yp)[MTS][2], int lane, int tq) {
  constexpr int H = C::H, KS2 = C::KS2, NB2 = C::NB2;
#pragma unroll
  for (int e = 0; e < kDomains; ++e) {
    if (!(present & (1u << e))) continue;
    float y[MTS][NB2][4];
#pragma unroll
    for (int nb = 0; nb < NB2; ++nb) {
      const float2 b = *reinterpret_cast<const float2*>(beS + e * H + 8 * nb + 2 * tq);
#pragma unroll
      for (int mt = 0; mt < MTS; ++mt) {
        y[mt][nb][0] = y[mt][nb][2] = b.x;
        y[mt][nb][1] = y[mt][nb][3] = b.y;
      }
    }
#pragma unroll
    for (int s = 0; s < KS2; ++s)
#pragma unroll
      for (int np = 0; np < NB2 / 2; ++np) {
        const uint4 b = ldsFresh4(wed + ((e * KS2 + s) * (NB2 / 2) + np) * 32 + lane);
#pragma unroll
        for (int mt = 0; mt < MTS; ++mt) {
          mmaT<C::ET>(y[mt][2 * np], hA[mt][s], b.x, b.y);
          mmaT<C::ET>(y[mt][2 * np + 1], hA[mt][s], b.z, b.w);
        }
      }
#pragma unroll
    for (int mt = 0; mt < MTS; ++mt)
#pragma unroll
      for (int hi = 0; hi < 2; ++hi) {
        if (er[mt][hi] != e || !yp[mt][hi]) continue;
#pragma unroll
        for (int nb = 0; nb < NB2; ++nb)
          *reinterpret_cast<float2*>(yp[mt][hi] + 8 * nb) =
              make_float2(activateFast(e, y[mt][nb][2 * hi]), activateFast(e, y[mt][nb][2 * hi + 1]));
      }
  }
}

// v[e] for a warp-uniform run-time e by compile-time indices (selects): a run-time index would put v in local memory.
__device__ __forceinline__ int pick4(const int (&v)[kDomains], int e) {
  int r = v[0];
#pragma unroll
  for (int k = 1; k < kDomains; ++k)
    if (e == k) r = v[k];
  return r;
}

// ---- the kernel's per-tile stages, in the order it runs them ----

// x of the warp tile: rows 16·mt + g + 8·hi, columns tq·CPL .. +CPL-1 (zeros past m).
template <int CPL, int H>
__device__ __forceinline__ void loadXTile(float (&xr)[kMT][2][CPL], const float* x, int base, int m, int g, int tq) {
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      const int r = 16 * mt + g + 8 * hi;
      const float4* src = reinterpret_cast<const float4*>(x + std::size_t(base + r) * H + tq * CPL);
#pragma unroll
      for (int q = 0; q < CPL / 4; ++q) {
        const float4 v = r < m ? __ldg(src + q) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        xr[mt][hi][4 * q] = v.x;
        xr[mt][hi][4 * q + 1] = v.y;
        xr[mt][hi][4 * q + 2] = v.z;
        xr[mt][hi][4 * q + 3] = v.w;
      }
    }
}

// Version 13's prefetch of the warp's next tile: the lane's part of x (the rows and columns loadXTile reads; 16 bytes
// a copy, through L2 only) and its gate row's vol and risk (4 bytes each) copied into the warp's buffer by cp.async
// (rows past m filled with zeros), one commit group per tile, issued once the current tile's x is in registers and
// used. Each lane reads back only what it copied itself, so no barrier is needed, only the wait for its own copies.
// Against v13 loading its tile when the tile starts (H100, 2026-12-06; docs/performance.md, "Version 13"): 1.03×
// (H = 16) and 1.05× (H = 32) with 1e7 tokens and the expert output at bf16x3.
__device__ __forceinline__ void cpAsync16(float* dst, const float* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(static_cast<std::uint32_t>(
                   __cvta_generic_to_shared(dst))),
               "l"(src), "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cpAsync4(float* dst, const float* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(static_cast<std::uint32_t>(
                   __cvta_generic_to_shared(dst))),
               "l"(src), "r"(valid ? 4 : 0)
               : "memory");
}
template <class C>
__device__ __forceinline__ void prefetchTile(float* xs, const ForwardArgs& a, int tile, int numTiles, int g, int tq,
                                             int myRow) {
  if (tile >= numTiles) return;
  constexpr int CPL = C::CPL, H = C::H, XS = C::XS;
  const int base = tile * kTileTC, m = min(kTileTC, a.n - base);
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      const int r = 16 * mt + g + 8 * hi;
      const float* src = a.x + std::size_t(base + r) * H + tq * CPL;
#pragma unroll
      for (int q = 0; q < CPL / 4; ++q) cpAsync16(xs + r * XS + tq * CPL + 4 * q, r < m ? src + 4 * q : a.x, r < m);
    }
  const bool ok = myRow < m;
  cpAsync4(xs + kTileTC * XS + myRow, ok ? a.vol + base + myRow : a.vol, ok);
  cpAsync4(xs + kTileTC * XS + kTileTC + myRow, ok ? a.risk + base + myRow : a.risk, ok);
  asm volatile("cp.async.commit_group;" ::: "memory");
}
template <int CPL, int XS>
__device__ __forceinline__ void readXTile(float (&xr)[kMT][2][CPL], const float* xs, int g, int tq) {
  asm volatile("cp.async.wait_all;" ::: "memory");
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      const float4* src = reinterpret_cast<const float4*>(xs + (16 * mt + g + 8 * hi) * XS + tq * CPL);
#pragma unroll
      for (int q = 0; q < CPL / 4; ++q) {
        const float4 v = src[q];
        xr[mt][hi][4 * q] = v.x;
        xr[mt][hi][4 * q + 1] = v.y;
        xr[mt][hi][4 * q + 2] = v.z;
        xr[mt][hi][4 * q + 3] = v.w;
      }
    }
}

// Statistics of x per row of one 16-row tile (the lane's columns, then the quad's four lanes): mean, variance, mean |x|.
template <int CPL, int H>
__device__ __forceinline__ void rowStatsTC(const float (&xr)[2][CPL], float (&st)[2][3]) {
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    float s = 0, sa = 0;
#pragma unroll
    for (int c = 0; c < CPL; ++c) {
      s += xr[hi][c];
      sa += fabsf(xr[hi][c]);
    }
    const float mean = quadSum(s) / H;
    float v = 0;
#pragma unroll
    for (int c = 0; c < CPL; ++c) v += (xr[hi][c] - mean) * (xr[hi][c] - mean);
    st[hi][0] = mean;
    st[hi][1] = quadSum(v) / H;
    st[hi][2] = quadSum(sa) / H;
  }
}

// The A operand of x·W1 at k-step s for one 16-row tile (rows g and g+8 in xr[0] and xr[1]); al: the lo parts of the
// split precisions (untouched otherwise).
template <class C>
__device__ __forceinline__ void xFragTC(const float (&xr)[2][C::CPL], int s, std::uint32_t (&af)[4],
                                        std::uint32_t (&al)[4]) {
  if constexpr (C::BF1) {
    if constexpr (C::X3) {
      splitBf16(xr[0][4 * s], xr[0][4 * s + 1], af[0], al[0]);
      splitBf16(xr[1][4 * s], xr[1][4 * s + 1], af[1], al[1]);
      splitBf16(xr[0][4 * s + 2], xr[0][4 * s + 3], af[2], al[2]);
      splitBf16(xr[1][4 * s + 2], xr[1][4 * s + 3], af[3], al[3]);
    } else {
      af[0] = packBf16(xr[0][4 * s], xr[0][4 * s + 1]);
      af[1] = packBf16(xr[1][4 * s], xr[1][4 * s + 1]);
      af[2] = packBf16(xr[0][4 * s + 2], xr[0][4 * s + 3]);
      af[3] = packBf16(xr[1][4 * s + 2], xr[1][4 * s + 3]);
    }
  } else {
    af[0] = toTf32(xr[0][2 * s]);
    af[1] = toTf32(xr[1][2 * s]);
    af[2] = toTf32(xr[0][2 * s + 1]);
    af[3] = toTf32(xr[1][2 * s + 1]);
    if constexpr (C::X3) {
      al[0] = toTf32(xr[0][2 * s] - __uint_as_float(af[0]));
      al[1] = toTf32(xr[1][2 * s] - __uint_as_float(af[1]));
      al[2] = toTf32(xr[0][2 * s + 1] - __uint_as_float(af[2]));
      al[3] = toTf32(xr[1][2 * s + 1] - __uint_as_float(af[3]));
    }
  }
}

// The B operand of x·W1 at (k-step s, column block j): {hi, hi, lo, lo} when split, else {b0, b1, -, -}.
template <class C>
__device__ __forceinline__ uint4 w1FragTC(const void* w1v, int s, int j, int lane) {
  if constexpr (C::X3) return ldsFresh4(reinterpret_cast<const uint4*>(w1v) + (s * C::NJ1 + j) * 32 + lane);
  const uint2 b = ldsFresh2(reinterpret_cast<const uint2*>(w1v) + (s * C::NJ1 + j) * 32 + lane);
  return make_uint4(b.x, b.y, 0u, 0u);
}

// acc += x·W1 for one k-step: split x_lo·W_hi, x_hi·W_lo, then x_hi·W_hi (summed in that order in FP32), or one product.
template <class C>
__device__ __forceinline__ void w1StepTC(float (&acc)[4], const std::uint32_t (&af)[4], const std::uint32_t (&al)[4],
                                         uint4 b) {
  if constexpr (C::X3) mmaSplit<C::T1>(acc, af, al, b);
  else mmaT<C::T1>(acc, af, b.x, b.y);
}

// relu of the accumulators of column block j (h in place), h·Wc over the lane's columns 8j + 2tq + c into bp, and
// with the expert output h rounded into the staging rows 16mt + g + 8hi (words 8j + 2tq, +1 in TF32 or word 4j + tq
// as a BF16 pair: see CfgTC::SW).
template <class C>
__device__ __forceinline__ void hEpilogueTC(float (&acc)[4], const float4 (&wc)[2], float (&bp)[2][4],
                                            std::uint32_t* stage, int mt, int j, int g, int tq, bool wantExpert,
                                            std::uint32_t& hmx, std::uint32_t (&pend)[2]) {
#pragma unroll
  for (int c = 0; c < 2; ++c)
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      const float hv = fmaxf(acc[2 * hi + c], 0.0f);
      acc[2 * hi + c] = hv;
      bp[hi][0] += hv * wc[c].x;
      bp[hi][1] += hv * wc[c].y;
      bp[hi][2] += hv * wc[c].z;
      bp[hi][3] += hv * wc[c].w;
    }
  if constexpr (C::DENSE) {
    // Versions 11 and 12: the lane's own A fragments of h for the expert product (no other lane reads them): TF32
    // k-step j {c0, c2, c1, c3}; BF16 or FP16 k-step j/2, half j%2: {pack(c0, c1), pack(c2, c3)}, the even block's
    // pair held in pend until the odd one's completes a 16-byte store (8-byte stores at a 16-byte lane stride took
    // twice the wavefronts). FP16 (v12): hmx keeps the largest h the lane packed (h >= 0), so that a tile past FP16's
    // range (infinity) is seen.
    if (wantExpert) {
      if constexpr (C::BF2) {
        const std::uint32_t w0 = packE<C>(acc[0], acc[1]), w1 = packE<C>(acc[2], acc[3]);
        if (j & 1)
          reinterpret_cast<uint4*>(stage)[(mt * C::KS2 + j / 2) * 32 + g * 4 + tq] = make_uint4(pend[0], pend[1], w0, w1);
        else
          pend[0] = w0, pend[1] = w1;
        if constexpr (C::F16E) hmx = hmax2u(hmx, hmax2u(w0, w1));
      } else
        reinterpret_cast<uint4*>(stage)[(mt * C::KS2 + j) * 32 + g * 4 + tq] =
            make_uint4(toTf32(acc[0]), toTf32(acc[2]), toTf32(acc[1]), toTf32(acc[3]));
    }
    return;
  }
  if (wantExpert) {
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      std::uint32_t* sr = stage + (16 * mt + g + 8 * hi) * C::SW;
      if constexpr (C::BF2)
        sr[4 * j + tq] = packBf16(acc[2 * hi], acc[2 * hi + 1]);
      else
        reinterpret_cast<uint2*>(sr)[4 * j + tq] = make_uint2(toTf32(acc[2 * hi]), toTf32(acc[2 * hi + 1]));
    }
  }
}

// h_f = relu(b1[f] + x·W1[:, f]) of one token row in FP32 from the parameters in global memory (the FP32 ways out of v12 and v13).
template <int H>
__device__ __forceinline__ float hiddenFp32(const float* __restrict__ wG, const float* x, int f) {
  using L = Lay<H>;
  float acc = wG[L::b1 + f];
  for (int i = 0; i < H; ++i) acc += x[i] * wG[L::W1 + i * 2 * H + f];
  return acc > 0 ? acc : 0.0f;
}

// Version 13's epilogue of column block j of one 16-row tile: relu in place, then h split into hi and lo pairs of the
// expert product's type (C::ET). The hi pairs are the expert product's A fragments (staged as in v12 when the expert
// output is asked for); at odd j, k-step j/2 of h·(g0·Wc) runs on the tensor cores into P in split form (lo·hi, hi·lo,
// hi·hi: h and Wc carried to ~22 bits), wcb its B operand. FP16: hmx keeps the largest hi pair, as in v12.
template <class C>
__device__ __forceinline__ void hEpilogueGateTC(float (&acc)[4], float (&P)[4], std::uint32_t* stage, int mt, int j,
                                                int g, int tq, bool wantExpert, std::uint32_t& hmx,
                                                std::uint32_t (&pend)[2], std::uint32_t (&pendLo)[2], uint4 wcb) {
#pragma unroll
  for (int k = 0; k < 4; ++k) acc[k] = fmaxf(acc[k], 0.0f);
  std::uint32_t w0, w1, l0, l1;
  splitE<C>(acc[0], acc[1], w0, l0);
  splitE<C>(acc[2], acc[3], w1, l1);
  if constexpr (C::F16E) hmx = hmax2u(hmx, hmax2u(w0, w1));
  if (j & 1) {
    if (wantExpert)
      reinterpret_cast<uint4*>(stage)[(mt * C::KS2 + j / 2) * 32 + g * 4 + tq] = make_uint4(pend[0], pend[1], w0, w1);
    const std::uint32_t ah[4] = {pend[0], pend[1], w0, w1}, al[4] = {pendLo[0], pendLo[1], l0, l1};
    mmaSplit<C::ET>(P, ah, al, wcb);
  } else {
    pend[0] = w0, pend[1] = w1, pendLo[0] = l0, pendLo[1] = l1;
  }
}

// Version 13's gate of the warp tile. P[mt] (C layout of a 16×8 tile: lane (g, t) holds rows g, g + 8 and columns 2t,
// 2t + 1, i.e. domains 2(t % 2) + c, every column n being domain n % 4) holds g0·(bc + h·Wc) of the tile's rows; the
// statistics' signal joins it on the tensor cores: u = (mean, variance, mean |x|, 1) per row times, per 8-column block,
// two units × four domains of (Ws; Bs) in split TF32, |pre-activation| summed by each lane over its units and by the
// lanes t and t ^ 2 over all, times cs2; the last block adds the linear part cs2·Σ_j a_j (relu(a) = (a + |a|) / 2).
// Each lane then takes its row's two domains and the other two from lane tq ^ 1, adds the vol and risk signals from
// their tables, and gateFinish stores probabilities and argmax. Returns the argmax of the lane's row.
template <class C>
__device__ __forceinline__ int gateTC(const GateTC<C>& gt, float (&P)[kMT][4], const float (&st)[kMT][2][3],
                                      float cs2, float invT, float vol, float risk, int myRow, int m, int base,
                                      int lane, int tq, const ForwardArgs& a) {
  static_assert(kMT == 2, "the lane quad's four rows are two 16-row tiles × rows g, g + 8");
  // A operands (m16n8k8 TF32): k = tq for rows g and g + 8, the k = tq + 4 half zero.
  std::uint32_t ah[kMT][4] = {}, al[kMT][4] = {};
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      const float v = tq == 0 ? st[mt][hi][0] : tq == 1 ? st[mt][hi][1] : tq == 2 ? st[mt][hi][2] : 1.0f;
      ah[mt][hi] = toTf32(v);
      al[mt][hi] = toTf32(v - __uint_as_float(ah[mt][hi]));
    }
  float sa[kMT][4];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int k = 0; k < 4; ++k) sa[mt][k] = 0.0f;
#pragma unroll
  for (int nb = 0; nb < C::kStatBlocks; ++nb) {
    const uint2 s = gt.stf[nb * 32 + lane];
    const uint4 b = make_uint4(s.x, 0u, s.y, 0u);  // k = tq: {hi, -, lo, -}; the k = tq + 4 half zero
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
      if (nb == C::kStatBlocks - 1) {
        mmaSplit<kMmaTf32>(P[mt], ah[mt], al[mt], b);
      } else {
        float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        mmaSplit<kMmaTf32>(c, ah[mt], al[mt], b);
#pragma unroll
        for (int k = 0; k < 4; ++k) sa[mt][k] += fabsf(c[k]);
      }
    }
  }
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int k = 0; k < 4; ++k) P[mt][k] = fmaf(cs2, sa[mt][k] + __shfl_xor_sync(0xffffffffu, sa[mt][k], 2), P[mt][k]);
  // The lane's row (mt, hi) = (tq / 2, tq % 2): its domains 2hi + c here, the others from lane tq ^ 1 (same mt).
  const bool myMt = tq >> 1, myHi = tq & 1;
  float pm[4], own[2], got[2], s[1][4];
#pragma unroll
  for (int k = 0; k < 4; ++k) pm[k] = myMt ? P[1][k] : P[0][k];
#pragma unroll
  for (int c = 0; c < 2; ++c) {
    own[c] = myHi ? pm[2 + c] : pm[c];
    got[c] = __shfl_xor_sync(0xffffffffu, myHi ? pm[c] : pm[2 + c], 1);
  }
  const float4 sv = signalFromTable(gt.tab, vol), sr = signalFromTable(gt.tab + C::tabBytes / 4, risk);
#pragma unroll
  for (int c = 0; c < 2; ++c) {
    s[0][c] = myHi ? got[c] : own[c];
    s[0][2 + c] = myHi ? own[c] : got[c];
  }
  s[0][0] += sv.x + sr.x;
  s[0][1] += sv.y + sr.y;
  s[0][2] += sv.z + sr.z;
  s[0][3] += sv.w + sr.w;
  const int row[1] = {myRow};
  int am[1];
  gateFinish<1>(s, invT, row, m, base, a, am);
  return am[0];
}

// Version 13's way out for a tile past FP16's range (with expertRowsFp32): the gate of the lane's row with b =
// bc + h·Wc in FP32 from the parameters in global memory, then gateTokens (the signals as the FP32 versions compute
// them). sk: the row's statistics. Returns the argmax.
template <int H>
__device__ __noinline__ int gateRowFp32(const float* __restrict__ wG, const float* w, float invT, float sk0, float sk1,
                                        float sk2, float vol, float risk, int myRow, int m, int base,
                                        const ForwardArgs& a) {
  using L = Lay<H>;
  constexpr int F = 2 * H;
  float b[1][4];
  for (int d = 0; d < 4; ++d) b[0][d] = wG[L::bc + d];
  if (myRow < m) {
    const float* x = a.x + std::size_t(base + myRow) * H;
    for (int f = 0; f < F; ++f) {
      const float hv = hiddenFp32<H>(wG, x, f);
      for (int d = 0; d < 4; ++d) b[0][d] += hv * wG[L::Wc + f * kDomains + d];
    }
  }
  const float sk[1][3] = {{sk0, sk1, sk2}}, vl[1] = {vol}, rk[1] = {risk};
  const float gate[4] = {w[L::gates], w[L::gates + 1], w[L::gates + 2], w[L::gates + 3]};
  const int row[1] = {myRow};
  int am[1];
  gateTokens<H, 1>(w, gate, invT, b, sk, vl, rk, row, m, base, a, am);
  return am[0];
}

// The gate of the lane's row myRow ((mt, hi) = (tq / 2, tq % 2) among the quad's four rows): the quad's partial
// sums of h·Wc added up, then stages.cuh's gateTokens (signals, logits, argmax, softmax, stores). Returns the argmax.
template <int H>
__device__ __forceinline__ int gateLaneTC(const float* w, float invT, float (&bp)[kMT][2][4],
                                          const float (&st)[kMT][2][3], float vol, float risk, int myRow, int m,
                                          int base, int tq, const ForwardArgs& a) {
  using L = Lay<H>;
  constexpr int EP = 2 * kMT / 4;  // rows whose epilogue a lane computes (a quad holds 2·kMT rows)
  static_assert(EP == 1, "each lane of a quad owns one row: the bucketing relies on it");
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int hi = 0; hi < 2; ++hi)
#pragma unroll
      for (int d = 0; d < 4; ++d) bp[mt][hi][d] = quadSum(bp[mt][hi][d]);
  float b[EP][4], sk[EP][3], vl[EP] = {vol}, rk[EP] = {risk};
  int row[EP] = {myRow}, am[EP];
#pragma unroll
  for (int d = 0; d < 4; ++d) b[0][d] = w[L::bc + d];
#pragma unroll
  for (int k = 0; k < 3; ++k) sk[0][k] = 0.0f;
#pragma unroll
  for (int q = 0; q < 4; ++q) {  // compile-time indices only: selects, no local memory
    if (tq != q) continue;
#pragma unroll
    for (int d = 0; d < 4; ++d) b[0][d] += bp[q >> 1][q & 1][d];
#pragma unroll
    for (int k = 0; k < 3; ++k) sk[0][k] = st[q >> 1][q & 1][k];
  }
  // The gates from shared memory here rather than in registers across the loop.
  const float gate[4] = {w[L::gates], w[L::gates + 1], w[L::gates + 2], w[L::gates + 3]};
  gateTokens<H, EP>(w, gate, invT, b, sk, vl, rk, row, m, base, a, am);
  return am[0];
}

// Stores one group's expert outputs: C of y^T = be + We[e]^T·h^T, rows 16mt + g (+8) = columns of y, columns 2tq,
// 2tq+1 = the group's tokens; o0 / o1 the output rows of those tokens or null (padding: not stored).
template <int MT2>
__device__ __forceinline__ void storeExpertTC(const float (&y)[MT2][4], int e, float* o0, float* o1) {
#pragma unroll
  for (int mt = 0; mt < MT2; ++mt) {
    if (o0) {
      o0[16 * mt] = activate(e, y[mt][0]);
      o0[16 * mt + 8] = activate(e, y[mt][2]);
    }
    if (o1) {
      o1[16 * mt] = activate(e, y[mt][1]);
      o1[16 * mt + 8] = activate(e, y[mt][3]);
    }
  }
}

// Version 12's way out for a tile whose h passed FP16's range (some |h| >= 65520, infinity once packed): the expert
// output of its rows in FP32 from the parameters in global memory, one row per lane (row r = lane; its expert from
// the lane that routed it, 4(r % 8) + 2(r / 16) + (r % 16) / 8), h recomputed for each 8 columns of y. Slow, and
// only inputs far outside what the router sees take it; the result is the oracle's math in FP32.
template <int H>
__device__ __noinline__ void expertRowsFp32(const float* __restrict__ wG, const ForwardArgs& a, int base, int m, int am,
                                            int lane) {
  using L = Lay<H>;
  constexpr int F = 2 * H;
  const int e = __shfl_sync(0xffffffffu, am, 4 * (lane & 7) + 2 * (lane >> 4) + ((lane >> 3) & 1));
  if (lane >= m) return;
  const float* x = a.x + std::size_t(base + lane) * H;
  float* out = a.expert + std::size_t(base + lane) * H;
  const float* We = wG + L::We + std::size_t(e) * F * H;
  for (int n0 = 0; n0 < H; n0 += 8) {
    float y[8];
#pragma unroll
    for (int n = 0; n < 8; ++n) y[n] = wG[L::be + e * H + n0 + n];
    for (int f = 0; f < F; ++f) {
      const float hv = hiddenFp32<H>(wG, x, f);
#pragma unroll
      for (int n = 0; n < 8; ++n) y[n] += hv * We[f * H + n0 + n];
    }
#pragma unroll
    for (int n = 0; n < 8; ++n) out[n0 + n] = activate(e, y[n]);
  }
}

// One block per SM of W warps (fewer for small batches, launchTC): at most 128 registers per thread at W = 16, 80
// at W = 24. V: the version (9, 11, 12 or 13; CfgTC).
template <int H, int P, int W, int V>
__global__ void __launch_bounds__(CfgTC<H, P, W, V>::THREADS, 1)
    forwardKernelTC(const float* __restrict__ wG, float invT, ForwardArgs a) {
  using C = CfgTC<H, P, W, V>;
  using L = Lay<H>;
  constexpr int CPL = C::CPL, KS1 = C::KS1, NJ1 = C::NJ1, KS2 = C::KS2, MT2 = C::MT2, SW = C::SW;
  extern __shared__ float4 smem4[];
  float* tail = reinterpret_cast<float*>(smem4);
  float* beS = tail + C::tailFloats;
  void* w1v = beS + C::beFloats;
  uint4* wef = reinterpret_cast<uint4*>(reinterpret_cast<char*>(w1v) + C::w1Bytes);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, tq = lane & 3;
  const int warps = blockDim.x >> 5;  // W, or fewer where shared memory is smaller (prepareTC)
  std::uint32_t* stage =
      reinterpret_cast<std::uint32_t*>(reinterpret_cast<char*>(smem4) + C::weightBytes + warp * C::warpBytes);
  float* xs = reinterpret_cast<float*>(stage + C::stageWords);  // v13: the warp's next tile (C::XP)
  std::uint8_t* rowOf = reinterpret_cast<std::uint8_t*>(stage + C::stageWords + C::xWords);
  // The stage functions index the parameters by their layout offsets: w[L::Wv] etc. fall inside `tail`.
  const float* w = tail - L::b1;

  // v13's gate operands follow We's.
  const GateTC<C> gt(wef + C::weFrags);
  // v12, v13: weWide when some We (v13: or g0·Wc) is past FP16's range (any thread's, by the barrier's vote).
  bool wideHere = loadWeightsTC<C>(tail, beS, w1v, wef, wG, tid, blockDim.x);
  if constexpr (C::TCG) wideHere = loadGateTC<C>(gt, wG, tid, blockDim.x) || wideHere;
  const bool weWide = __syncthreads_or(wideHere) != 0;
  const float cs2 = statSignalScale(w[L::gates + 3]);  // v13, as loadGateTC scaled the linear part
  const bool wantExpert = a.expert != nullptr;
  const int numTiles = (a.n + kTileTC - 1) / kTileTC;
  const int tileStep = gridDim.x * warps;
  const int myRow = 16 * (tq >> 1) + g + 8 * (tq & 1);  // the lane's row in the gate: the quad's (mt, hi) = (tq / 2, tq % 2)
  if constexpr (C::XP) prefetchTile<C>(xs, a, blockIdx.x * warps + warp, numTiles, g, tq, myRow);

  for (int tile = blockIdx.x * warps + warp; tile < numTiles; tile += tileStep) {
    const int base = tile * kTileTC;
    const int m = min(kTileTC, a.n - base);
    float xr[kMT][2][CPL];
    if constexpr (C::XP) readXTile<CPL, C::XS>(xr, xs, g, tq);
    else loadXTile<CPL, H>(xr, a.x, base, m, g, tq);

    // vol and risk of the lane's row (see the gate below), loaded early: their latency hides behind the products
    // (v13: copied in with the tile's x).
    const bool mine = myRow < m;
    float vol, risk;
    if constexpr (C::XP) {
      vol = xs[kTileTC * C::XS + myRow];
      risk = xs[kTileTC * C::XS + kTileTC + myRow];
    } else {
      vol = mine ? a.vol[base + myRow] : 0.0f;
      risk = mine ? a.risk[base + myRow] : 0.0f;
    }
    if (!C::DENSE && wantExpert) __syncwarp();  // the previous tile's reads of stage and rowOf are done (v11: lane-private)

    // ---- per 16-row tile: h = relu(b1 + x·W1) on the tensor cores, h·Wc over the lane's columns, h staged ----
    float bp[kMT][2][4], st[kMT][2][3];
    // v12: the largest h packed, two FP16 halves; BF2: an even block's A pair per 16-row tile
    std::uint32_t hmx = 0, pend[kMT][2] = {};
    // v13: the gate's accumulators (C layout, started at g0·bc) and an even block's lo pair per 16-row tile
    float gacc[kMT][4];
    std::uint32_t pendLo[kMT][2] = {};
    if constexpr (C::TCG) {
      const float2 pi = *reinterpret_cast<const float2*>(gt.pinit + 2 * tq);
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        gacc[mt][0] = gacc[mt][2] = pi.x;
        gacc[mt][1] = gacc[mt][3] = pi.y;
      }
    } else {
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int hi = 0; hi < 2; ++hi)
#pragma unroll
          for (int d = 0; d < 4; ++d) bp[mt][hi][d] = 0.0f;
    }
    if constexpr (C::JOUTER) {
      // v12: the statistics and both tiles' A fragments first (x's rows die there), then per 8-column block j both
      // tiles' products from one load of each B operand, and their epilogues. Every sum runs in v11's order (k-steps
      // in order per block, blocks in order per tile): the same bits.
      std::uint32_t af[kMT][KS1][4], al[kMT][KS1][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        rowStatsTC<CPL, H>(xr[mt], st[mt]);
#pragma unroll
        for (int s = 0; s < KS1; ++s) xFragTC<C>(xr[mt], s, af[mt][s], al[mt][s]);
      }
      if constexpr (C::XP) prefetchTile<C>(xs, a, tile + tileStep, numTiles, g, tq, myRow);  // x's registers are dead
#pragma unroll
      for (int j = 0; j < NJ1; ++j) {
        const float2 b1 = *reinterpret_cast<const float2*>(w + L::b1 + 8 * j + 2 * tq);
        float acc[kMT][4];
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          acc[mt][0] = acc[mt][2] = b1.x;
          acc[mt][1] = acc[mt][3] = b1.y;
        }
#pragma unroll
        for (int s = 0; s < KS1; ++s) {
          const uint4 b = w1FragTC<C>(w1v, s, j, lane);
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) w1StepTC<C>(acc[mt], af[mt][s], al[mt][s], b);
        }
        if constexpr (C::TCG) {
          const uint4 wcb = (j & 1) ? ldsFresh4(gt.wcf + (j / 2) * 32 + lane) : make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt)
            hEpilogueGateTC<C>(acc[mt], gacc[mt], stage, mt, j, g, tq, wantExpert, hmx, pend[mt], pendLo[mt], wcb);
        } else {
          const float4 wc[2] = {reinterpret_cast<const float4*>(w + L::Wc)[8 * j + 2 * tq],
                                reinterpret_cast<const float4*>(w + L::Wc)[8 * j + 2 * tq + 1]};
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt)
            hEpilogueTC<C>(acc[mt], wc, bp[mt], stage, mt, j, g, tq, wantExpert, hmx, pend[mt]);
        }
      }
    } else {
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        float acc[NJ1][4];
#pragma unroll
        for (int j = 0; j < NJ1; ++j) {
          const float2 b1 = *reinterpret_cast<const float2*>(w + L::b1 + 8 * j + 2 * tq);
          acc[j][0] = acc[j][2] = b1.x;
          acc[j][1] = acc[j][3] = b1.y;
        }
#pragma unroll
        for (int s = 0; s < KS1; ++s) {
          std::uint32_t af[4], al[4];
          xFragTC<C>(xr[mt], s, af, al);
#pragma unroll
          for (int j = 0; j < NJ1; ++j) w1StepTC<C>(acc[j], af, al, w1FragTC<C>(w1v, s, j, lane));
        }
        // Statistics after the product: the tile's x rows are dead from here, which shortens their lives.
        rowStatsTC<CPL, H>(xr[mt], st[mt]);
#pragma unroll
        for (int j = 0; j < NJ1; ++j) {
          if constexpr (C::TCG) {
            const uint4 wcb = (j & 1) ? ldsFresh4(gt.wcf + (j / 2) * 32 + lane) : make_uint4(0u, 0u, 0u, 0u);
            hEpilogueGateTC<C>(acc[j], gacc[mt], stage, mt, j, g, tq, wantExpert, hmx, pend[mt], pendLo[mt], wcb);
          } else {
            const float4 wc[2] = {reinterpret_cast<const float4*>(w + L::Wc)[8 * j + 2 * tq],
                                  reinterpret_cast<const float4*>(w + L::Wc)[8 * j + 2 * tq + 1]};
            hEpilogueTC<C>(acc[j], wc, bp[mt], stage, mt, j, g, tq, wantExpert, hmx, pend[mt]);
          }
        }
      }
      if constexpr (C::XP) prefetchTile<C>(xs, a, tile + tileStep, numTiles, g, tq, myRow);
    }
    int am;
    if constexpr (C::TCG) {
      // Version 13: a tile with an h past FP16's range (or a g0·Wc or We past it) routes its rows in FP32 instead.
      if constexpr (C::F16E) {
        if (__any_sync(0xffffffffu, f16PairInf(hmx)) || weWide) {
          float sk[3] = {0.0f, 0.0f, 0.0f};
#pragma unroll
          for (int q = 0; q < 4; ++q)
            if (tq == q)
#pragma unroll
              for (int k = 0; k < 3; ++k) sk[k] = st[q >> 1][q & 1][k];
          am = gateRowFp32<H>(wG, w, invT, sk[0], sk[1], sk[2], vol, risk, myRow, m, base, a);
          if (wantExpert) expertRowsFp32<H>(wG, a, base, m, am, lane);
          continue;
        }
      }
      am = gateTC<C>(gt, gacc, st, cs2, invT, vol, risk, myRow, m, base, lane, tq, a);
    } else {
      am = gateLaneTC<H>(w, invT, bp, st, vol, risk, myRow, m, base, tq, a);
    }
    if (!wantExpert) continue;

    if constexpr (C::DENSE) {
      if constexpr (C::F16E && !C::TCG) {
        // Version 12: a tile with an h past FP16's range (a half at infinity: exponent bits all set; h has no NaN
        // after fmaxf) computes its expert output in FP32 instead.
        const bool past = f16PairInf(hmx);
        if (__any_sync(0xffffffffu, past) || weWide) {
          expertRowsFp32<H>(wG, a, base, m, am, lane);
          continue;
        }
      }
      // ---- versions 11 and 12: the experts the tile's rows chose, dense on the tensor cores, MTS 16-row tiles at a
      //      time ----
      constexpr int MTS = C::MTS;
      unsigned chose[kDomains];  // lanes whose row chose e (the lanes of tile mt: tq = 2mt, 2mt + 1)
#pragma unroll
      for (int e = 0; e < kDomains; ++e) chose[e] = __ballot_sync(0xffffffffu, mine && am == e);
#pragma unroll 1
      for (int mt0 = 0; mt0 < kMT; mt0 += MTS) {
        const unsigned lanes = MTS == kMT ? 0xffffffffu : mt0 == 0 ? 0x33333333u : 0xccccccccu;
        unsigned present = 0;
#pragma unroll
        for (int e = 0; e < kDomains; ++e) present |= ((chose[e] & lanes) ? 1u : 0u) << e;
        std::uint32_t hA[MTS][KS2][4];
        int er[MTS][2];
        float* yp[MTS][2];
#pragma unroll
        for (int u = 0; u < MTS; ++u) {
          const int mt = mt0 + u;
#pragma unroll
          for (int s2 = 0; s2 < KS2; ++s2) {
            const uint4 v = reinterpret_cast<const uint4*>(stage)[(mt * KS2 + s2) * 32 + lane];
            hA[u][s2][0] = v.x;
            hA[u][s2][1] = v.y;
            hA[u][s2][2] = v.z;
            hA[u][s2][3] = v.w;
          }
#pragma unroll
          for (int hi = 0; hi < 2; ++hi) {
            // The expert of row 16mt + g + 8hi, from the lane of the quad that owns it (tq = 2mt + hi).
            er[u][hi] = __shfl_sync(0xffffffffu, am, (lane & ~3) | (2 * mt + hi));
            const int r = 16 * mt + g + 8 * hi;
            yp[u][hi] = r < m ? a.expert + std::size_t(base + r) * H + 2 * tq : nullptr;
          }
        }
        expertDenseTC<C, MTS>(hA, wef, beS, present, er, yp, lane, tq);
      }
      continue;
    }

    // ---- bucket the tile's tokens by expert: counts (ballots), then each token's place in expert order; rowOf[p]
    //      is the tile row of the p-th token in that order ----
    int cnt[kDomains], first[kDomains];
    {
      int at = 0, pos = 0;
      const unsigned below = (1u << lane) - 1u;
#pragma unroll
      for (int e = 0; e < kDomains; ++e) {
        const unsigned mask = __ballot_sync(0xffffffffu, mine && am == e);
        cnt[e] = __popc(mask);
        first[e] = at;
        if (am == e) pos = at + __popc(mask & below);
        at += cnt[e];
      }
      if (mine) rowOf[pos] = std::uint8_t(myRow);
    }
    __syncwarp();

    // ---- per expert, its groups of 8 staged tokens: y^T = be + We[e]^T · h^T, activation, store ----
#pragma unroll 1
    for (int e = 0; e < kDomains; ++e) {
      const int c = pick4(cnt, e), f0 = pick4(first, e);
      const uint4* wa = wef + e * KS2 * MT2 * 32 + lane;
      // One group of 8 places at a time. (Loading each A operand once for all groups of the expert, at most 4, moved
      // less through shared memory, L1 throughput 76% instead of 94%, but issued less, 43% instead of 47% of the
      // slots: 8-10% slower at H = 32 with the expert output, 2-3% at H = 16; H200, 2026-12-04.)
#pragma unroll 1
      for (int q = 0; q < c; q += 8) {
        // B: this lane's column is the token in place f0 + q + g, clamped; rowOf past the tile's count holds rows of
        // earlier tiles or, before the first, anything: masked to a row. A padding column thus reads some row of the
        // tile; its outputs are not stored (each output column depends only on its own B column).
        const std::uint32_t* sb = stage + (rowOf[min(f0 + q + g, kTileTC - 1)] & (kTileTC - 1)) * SW + 2 * tq;
        float y[MT2][4];
#pragma unroll
        for (int mt = 0; mt < MT2; ++mt) {
          y[mt][0] = y[mt][1] = beS[e * H + 16 * mt + g];
          y[mt][2] = y[mt][3] = beS[e * H + 16 * mt + g + 8];
        }
#pragma unroll
        for (int s = 0; s < KS2; ++s) {
          const uint2 bh = *reinterpret_cast<const uint2*>(sb + 8 * s);
#pragma unroll
          for (int mt = 0; mt < MT2; ++mt) {
            const uint4 av = ldsFresh4(wa + (s * MT2 + mt) * 32);
            mmaT<C::ET>(y[mt], av.x, av.y, av.z, av.w, bh.x, bh.y);
          }
        }
        const int n0 = q + 2 * tq;
        storeExpertTC<MT2>(y, e, n0 < c ? a.expert + std::size_t(base + rowOf[f0 + n0]) * H + g : nullptr,
                           n0 + 1 < c ? a.expert + std::size_t(base + rowOf[f0 + n0 + 1]) * H + g : nullptr);
      }
    }
  }
}

struct TcLaunch {
  bool prepared = false;
  int blocks = 0, warps = 0, sms = 0;
};

template <int H, int P, int W, int V>
TcLaunch& tcLaunch() {
  static TcLaunch l;
  return l;
}

// W warps per block, or as many as the device's shared memory per block holds (an A100's 163 KB: 12 at H = 32
// tf32x3). blocks = 0 where not even 4 fit: launching then fails with that reason.
template <int H, int P, int W, int V>
void prepareTC() {
  using C = CfgTC<H, P, W, V>;
  auto k = forwardKernelTC<H, P, W, V>;
  int dev = 0, sms = 0, optin = 0, per = 0;
  MOE_CUDA_CHECK(cudaGetDevice(&dev));
  MOE_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  MOE_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  const long fit = (long(optin) - long(C::weightBytes)) / long(C::warpBytes);
  TcLaunch& l = tcLaunch<H, P, W, V>();
  l.warps = int(std::min<long>(W, fit));
  l.blocks = 0;
  l.sms = sms;
  l.prepared = true;
  if (l.warps < 4) return;
  MOE_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(C::bytes(l.warps))));
  MOE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, k, 32 * l.warps, C::bytes(l.warps)));
  l.blocks = per * sms;
}

// A batch with fewer tiles than the SMs' warps (1e4 tokens: 313 tiles) runs blocks of fewer warps (at least 4), one
// per SM, so that it spreads over the SMs instead of filling a few.
template <int H, int P, int W, int V>
void launchTC(const DeviceParams& p, const ForwardArgs& a, cudaStream_t stream) {
  using C = CfgTC<H, P, W, V>;
  const TcLaunch& l = tcLaunch<H, P, W, V>();
  MOE_CHECK(l.prepared, "prepareForward was not called for this hidden size");
  MOE_CHECK(l.blocks > 0, "forward kernel " + std::to_string(V) +
                              " does not fit on this device (shared memory or registers)");
  const int tiles = (a.n + kTileTC - 1) / kTileTC;
  const int warps = std::min(l.warps, std::max(4, (tiles + l.sms - 1) / l.sms));
  const int blocks = std::min((tiles + warps - 1) / warps, l.blocks);
  forwardKernelTC<H, P, W, V><<<blocks, 32 * warps, C::bytes(warps), stream>>>(p.w, p.invT, a);
}

template <int H, int V, int W>
void prepareAllTC() {
  prepareTC<H, kBF16X3, W, V>();
  prepareTC<H, kTF32X3, W, V>();
  prepareTC<H, kTF32, W, V>();
  prepareTC<H, kBF16, W, V>();
}

// Every instance of version V at H: one warp count, or (version 13 at H = 16) one with the expert output and one
// without.
template <int H, int V>
void prepareVersionTC() {
  constexpr int We = warpsTC(H, V, true), Wn = warpsTC(H, V, false);
  prepareAllTC<H, V, We>();
  if constexpr (Wn != We) prepareAllTC<H, V, Wn>();
}

template <int H, int V, int W>
void launchAllTC(Precision precision, const DeviceParams& p, const ForwardArgs& a, cudaStream_t stream) {
  if (precision == Precision::BF16X3) launchTC<H, kBF16X3, W, V>(p, a, stream);
  else if (precision == Precision::TF32X3) launchTC<H, kTF32X3, W, V>(p, a, stream);
  else if (precision == Precision::TF32) launchTC<H, kTF32, W, V>(p, a, stream);
  else launchTC<H, kBF16, W, V>(p, a, stream);
}

template <int H, int V>
void launchWarpsTC(Precision precision, const DeviceParams& p, const ForwardArgs& a, cudaStream_t stream) {
  constexpr int We = warpsTC(H, V, true), Wn = warpsTC(H, V, false);
  if (We == Wn || a.expert) launchAllTC<H, V, We>(precision, p, a, stream);
  else launchAllTC<H, V, Wn>(precision, p, a, stream);
}

template <int H>
void launchVersionTC(int version, Precision precision, const DeviceParams& p, const ForwardArgs& a,
                     cudaStream_t stream) {
  // Without the expert output v12 runs v11's instance: the same results (they differ in the expert product, and in
  // x·W1's loop order at bf16x3, which keeps every sum's order); v12's own instance, built around the FP32 way out,
  // ran 8% slower there (H = 32; H200, 2026-12-05, before x·W1 was turned inside out; not measured since).
  if (version == 9) launchWarpsTC<H, 9>(precision, p, a, stream);
  else if (version == 13) launchWarpsTC<H, 13>(precision, p, a, stream);
  else if (version == 11 || !a.expert) launchWarpsTC<H, 11>(precision, p, a, stream);
  else launchWarpsTC<H, 12>(precision, p, a, stream);
}

}  // namespace

void prepareForwardTC(int H) {
  if (H == 16) {
    prepareVersionTC<16, 9>();
    prepareVersionTC<16, 11>();
    prepareVersionTC<16, 12>();
    prepareVersionTC<16, 13>();
  } else {
    prepareVersionTC<32, 9>();
    prepareVersionTC<32, 11>();
    prepareVersionTC<32, 12>();
    prepareVersionTC<32, 13>();
  }
}

void launchForwardTC(int H, int version, Precision precision, const DeviceParams& p, const ForwardArgs& a,
                     cudaStream_t stream) {
  MOE_CHECK(version == 9 || version == 11 || version == 12 || version == 13,
            "the tensor-core forward kernels are 9, 11, 12 and 13, not " + std::to_string(version));
  MOE_CHECK(precision == Precision::BF16X3 || precision == Precision::TF32X3 || precision == Precision::TF32 ||
                precision == Precision::BF16,
            "forward kernel " + std::to_string(version) + " computes its products in bf16x3, tf32x3, tf32 or bf16");
  if (H == 16) launchVersionTC<16>(version, precision, p, a, stream);
  else launchVersionTC<32>(version, precision, p, a, stream);
  MOE_LAUNCH_CHECK();
}

}  // namespace moe::cuda
