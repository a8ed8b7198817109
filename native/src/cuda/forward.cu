// Fused forward: one launch computes h, stats, the four signals, softmax, argmax and the activated expert output.
// Persistent blocks copy the weights into shared memory once and then walk over tiles of tokens.
//
// Why this shape: the math is about 4.7k FMAs per token at H = 32 (W1 and We dominate) against 281 bytes moved, so
// on an H100 the arithmetic floor (~7 G tokens/s at the FP32 rate) is lower than the memory floor (~10 G tokens/s):
// the kernel must keep the FMA units fed. Weights are read from shared memory as 16-byte broadcasts (every lane of
// a warp reads the same address). The expert stage would diverge (each token picks one of four weight slices), so
// the tokens of a tile are bucketed by expert first and a warp then reads one slice, again as broadcasts.
//
// Eight versions were written, each checked against the scalar oracle (native/tests/cuda_vs_scalar.cpp) and timed
// by native/bench/cuda_bench.cu; the three that are the fastest for some case stay here: v2 (H = 16 without the
// expert output), v4 (H = 32 without it) and v8 (with it, both sizes). v1, v3, v5, v6 and v7 are in the repository's
// history (2026-11). These are the FP32 kernels (MOE_CUDA_PRECISION=fp32); v9, v11, v12 and v13 (forward_tc.cu) run the
// two matrix products on the tensor cores in split BF16 (bf16x3, the default precision since 2026-12-05: within the
// accuracy contract on the trained model and faster than v8 at both sizes), split TF32, TF32 or BF16
// (MOE_CUDA_PRECISION=bf16x3|tf32x3|tf32|bf16); they differ in the expert product only (v9 bucketed by expert, v11
// dense over the experts a tile's rows chose, v12 that in FP16, v13 with the gate on the tensor cores as well).
// MOE_CUDA_FORWARD_KERNEL=2|4|8|9|11|12|13 forces one
// (any other value, or one that does not compute in the precision asked for, is an error; a forced 2, 4 or 8 with
// MOE_CUDA_PRECISION unset computes in fp32), else forwardKernelVersion picks v13 (kDefaultTensorKernel) for the
// tensor-core precisions and, for fp32, the fastest measured on an H100 for the hidden size and whether the expert
// output is asked for. The per-token stages every version shares (statistics, the four signals, logits, argmax,
// softmax) are written once in stages.cuh; a kernel here is its version's tiling and data movement around them.
// Rates of the eight: H100, H = 32, 1e7 tokens with expert output.
//   v1  one token per thread: each 16-byte weight broadcast from shared memory feeds 4 FMAs per lane. 1.94 G tokens/s.
//   v2  two tokens per thread: each weight load feeds two tokens (half the shared-memory bytes per FMA). Buckets
//       start at even slots so the two tokens a thread takes in the expert stage share one weight slice. 2.40 G.
//   v3  micro-tiles: a pair of lanes shares four tokens, each lane half of the columns (about half of v2's
//       shared-memory bytes per FMA again). 2.48 G.
//   Halving the shared-memory traffic twice gave +24% and then +3%, so shared memory was no longer the limit; v3
//   ran the FMA pipes at ~40% of the FP32 rate with 8 warps per SM (236 registers per thread, 112 KB of shared
//   memory per block) and the tile's global loads exposed behind barriers.
//   v4  v3 with the next tile's inputs loaded into registers during the current tile, and the expert activation
//       branched per lane group (tanhf only for Derivatives). 2.87 G.
//   v5  v4 with four lanes per token group and 256 threads (the v4 template with 4, 256, false, 4, 4): 128
//       registers, 16 warps per SM. 2.95 G. Nsight Compute: shared-memory (L1) throughput 87% of peak, issue slots
//       65% busy; the shared-memory pipe is the limit now.
//   v6  v5 with x and h moved through shared memory as 16-byte words (strides H + 4 and F + 4; 4, 256, true, 4, 4):
//       L1 throughput 77%, but fewer instructions issued per cycle (59%; 24 bytes of spills at 128 registers).
//       2.93 G.
//   v7  register blocking against the shared-memory limit: 128 threads, 8 warps per SM, and in the h stage four
//       lanes share eight tokens (8 tokens × a quarter of the columns per lane: each W1 float4 feeds 32 FMAs, and
//       W1 + x bytes per FMA drop from v5's 20/64 to 24/128); the expert stage keeps v4's blocking (two lanes per
//       four-token group, half the outputs each: 20/64 instead of v5's 12/32; 4, 128, false, 8, 2). 255
//       registers. 2.86 G.
//   v8  v7 with v6's 16-byte moves of x and h (with 8 warps per SM the instruction count matters: +6% over v7).
//       3.04 G (v5 2.97 G in the same run); at H = 16 8.37 G against v4's 7.61 G. The fastest with the expert
//       output at both sizes. Nsight Compute: L1 throughput 58%, issue slots 58% busy, FMA pipe 49%: no pipe is
//       saturated; with two warps per scheduler, latency (dependent loads, the tile's barriers) limits it.
//   Tried and dropped: eight lanes × eight tokens with 256 threads (16 warps per SM, 64 accumulators, v5's expert
//   stage): 2.73 G.
//   See docs/performance.md.
#include <cstdlib>
#include <mutex>

#include "stages.cuh"

namespace moe::cuda {

namespace {

// ---- stages of v2 and the v4 template alike ----

constexpr int kRowsV2 = 256;  // rows of the shared tiles (v2: 2 tokens × 128 threads; v4, v8: 64 groups × 4)

// The parameters into shared memory; WeT stays behind them in global memory (only the backward pass reads it).
template <int H, int NT>
__device__ __forceinline__ void loadWeights(float* w, const float* __restrict__ wG, int tid) {
  for (int i = tid; i < Lay<H>::size / 4; i += NT)
    reinterpret_cast<float4*>(w)[i] = reinterpret_cast<const float4*>(wG)[i];
}

// Empties the expert buckets before a tile: counts and offsets (cnt[8]) zero; -1 marks a free slot of perm, which
// the expert stage skips.
template <int NT>
__device__ __forceinline__ void clearBuckets(int* perm, int* cnt, int tid) {
  if (tid < 8) cnt[tid] = 0;
  for (int i = tid; i < kRowsV2; i += NT) perm[i] = -1;
}

// ---- v2: two tokens per thread ----

constexpr int kThreadsV2 = 128;
constexpr int kTokV2 = 2;  // tokens per thread
// Tokens per tile: at most 252 so that the four buckets, each rounded up to an even count, fit 256 slots.
constexpr int kTileV2 = 248;
static_assert(kTokV2 * kThreadsV2 == kRowsV2, "one tile row per token of a thread");

template <int H>
struct FwdSmemV2 {
  static constexpr int F = 2 * H;
  static constexpr int wFloats = (Lay<H>::size + 3) / 4 * 4;
  static constexpr int intFloats = kRowsV2 + 8;  // perm[256], counts[4], even-aligned offsets[4]
  static constexpr int xStride = H + 1, hStride = F + 1;
  static constexpr int xFloats = kRowsV2 * xStride;
  static constexpr int hFloats = kRowsV2 * hStride;
  static constexpr int regionFloats = hFloats > xFloats ? hFloats : xFloats;  // x tile, then h tile
  static constexpr std::size_t bytesNoExpert = std::size_t(wFloats + intFloats + xFloats) * 4;
  static constexpr std::size_t bytes = std::size_t(wFloats + intFloats + regionFloats) * 4;
};

// x of the tile's first m tokens into the rows of R (stride H + 1), zeros in the rows past m.
template <int H>
__device__ __forceinline__ void loadTileV2(float* R, const ForwardArgs& a, int base, int m, int tid) {
  using S = FwdSmemV2<H>;
  const float4* x4 = reinterpret_cast<const float4*>(a.x + std::size_t(base) * H);
  for (int q = tid; q < kRowsV2 * H / 4; q += kThreadsV2) {
    const float4 v = q < m * H / 4 ? x4[q] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);  // rows past m: zeros
    float* dst = R + (q * 4 / H) * S::xStride + (q * 4) % H;
    dst[0] = v.x;
    dst[1] = v.y;
    dst[2] = v.z;
    dst[3] = v.w;
  }
}

// h = relu(b1 + x·W1) of the thread's two tokens, i ascending: each W1 float4 read from shared memory feeds both.
template <int H>
__device__ __forceinline__ void hiddenV2(const float* w, const float* R, const int (&rows)[kTokV2],
                                         float (&h)[kTokV2][2 * H]) {
  using L = Lay<H>;
  using S = FwdSmemV2<H>;
  constexpr int F = L::F;
#pragma unroll
  for (int t = 0; t < kTokV2; ++t)
#pragma unroll
    for (int f = 0; f < F; ++f) h[t][f] = w[L::b1 + f];
#pragma unroll 2
  for (int i = 0; i < H; ++i) {
    float xi[kTokV2];
#pragma unroll
    for (int t = 0; t < kTokV2; ++t) xi[t] = R[rows[t] * S::xStride + i];
    const float4* row = reinterpret_cast<const float4*>(w + L::W1 + i * F);
#pragma unroll
    for (int q = 0; q < F / 4; ++q) {
      const float4 r = row[q];
#pragma unroll
      for (int t = 0; t < kTokV2; ++t) {
        h[t][4 * q] += xi[t] * r.x;
        h[t][4 * q + 1] += xi[t] * r.y;
        h[t][4 * q + 2] += xi[t] * r.z;
        h[t][4 * q + 3] += xi[t] * r.w;
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kTokV2; ++t)
#pragma unroll
    for (int f = 0; f < F; ++f) h[t][f] = fmaxf(h[t][f], 0.0f);
}

// b = bc + h·Wc of the thread's two tokens, f ascending.
template <int H>
__device__ __forceinline__ void baseV2(const float* w, const float (&h)[kTokV2][2 * H], float (&b)[kTokV2][4]) {
  using L = Lay<H>;
#pragma unroll
  for (int t = 0; t < kTokV2; ++t)
#pragma unroll
    for (int d = 0; d < 4; ++d) b[t][d] = w[L::bc + d];
#pragma unroll
  for (int f = 0; f < L::F; ++f) {
    const float4 c = reinterpret_cast<const float4*>(w + L::Wc)[f];
#pragma unroll
    for (int t = 0; t < kTokV2; ++t) {
      b[t][0] += h[t][f] * c.x;
      b[t][1] += h[t][f] * c.y;
      b[t][2] += h[t][f] * c.z;
      b[t][3] += h[t][f] * c.w;
    }
  }
}

// Buckets the tile's tokens by expert: each token's h goes to its row of R (the x tile is dead by now) and perm
// lists the rows by expert (slot value row | expert << 8), each bucket starting at an even slot so that the two
// slots a thread takes in the expert stage hold one expert. Barriers inside: every thread of the block calls it,
// after a barrier that ends the reads of the x tile.
template <int H>
__device__ __forceinline__ void bucketV2(float* R, int* perm, int* cnt, const int (&rows)[kTokV2],
                                         const int (&am)[kTokV2], const float (&h)[kTokV2][2 * H], int m, int tid) {
  using S = FwdSmemV2<H>;
  int pos[kTokV2];
#pragma unroll
  for (int t = 0; t < kTokV2; ++t) {
    pos[t] = 0;
    if (rows[t] < m) {
      float* hr = R + rows[t] * S::hStride;
#pragma unroll
      for (int f = 0; f < 2 * H; ++f) hr[f] = h[t][f];
      pos[t] = atomicAdd(&cnt[am[t]], 1);
    }
  }
  __syncthreads();
  if (tid == 0) {
    int o = 0;
    for (int d = 0; d < 4; ++d) {
      cnt[4 + d] = o;
      o += (cnt[d] + 1) & ~1;
    }
  }
  __syncthreads();
#pragma unroll
  for (int t = 0; t < kTokV2; ++t)
    if (rows[t] < m) perm[cnt[4 + am[t]] + pos[t]] = rows[t] | (am[t] << 8);
}

// Expert stage: thread tid takes slots 2·tid and 2·tid+1, which hold tokens of one expert (or one token and an
// empty slot, in which case the second lane of work repeats the first token and is not stored), and writes their
// activated outputs act_e(be + h·We).
template <int H>
__device__ __forceinline__ void expertV2(const float* w, const float* R, const int* perm, const ForwardArgs& a,
                                         int base, int tid) {
  using L = Lay<H>;
  using S = FwdSmemV2<H>;
  constexpr int F = L::F, NT = kTokV2;
  const int p0 = perm[2 * tid], p1 = perm[2 * tid + 1];
  if (p0 >= 0) {
    const int e = p0 >> 8;
    const int t0 = p0 & 255, t1 = p1 >= 0 ? (p1 & 255) : t0;
    const float* h0 = R + t0 * S::hStride;
    const float* h1 = R + t1 * S::hStride;
    const float4* We4 = reinterpret_cast<const float4*>(w + L::We + e * F * H);
    const float4* be4 = reinterpret_cast<const float4*>(w + L::be + e * H);
    float y[NT][H];
#pragma unroll
    for (int q = 0; q < H / 4; ++q) {
      const float4 v = be4[q];
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        y[t][4 * q] = v.x;
        y[t][4 * q + 1] = v.y;
        y[t][4 * q + 2] = v.z;
        y[t][4 * q + 3] = v.w;
      }
    }
#pragma unroll 2
    for (int f = 0; f < F; ++f) {
      const float hf[NT] = {h0[f], h1[f]};
#pragma unroll
      for (int q = 0; q < H / 4; ++q) {
        const float4 r = We4[f * (H / 4) + q];
#pragma unroll
        for (int t = 0; t < NT; ++t) {
          y[t][4 * q] += hf[t] * r.x;
          y[t][4 * q + 1] += hf[t] * r.y;
          y[t][4 * q + 2] += hf[t] * r.z;
          y[t][4 * q + 3] += hf[t] * r.w;
        }
      }
    }
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      if (t == 1 && p1 < 0) break;
      float4* o = reinterpret_cast<float4*>(a.expert + std::size_t(base + (t == 0 ? t0 : t1)) * H);
#pragma unroll
      for (int q = 0; q < H / 4; ++q) {
        float v[4];
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const float yy = y[t][4 * q + c];
          v[c] = e == 3 ? tanhf(yy) : e == 1 ? 0.8f * yy : fmaxf(yy, 0.0f);
        }
        o[q] = make_float4(v[0], v[1], v[2], v[3]);
      }
    }
  }
}

template <int H>
__global__ void __launch_bounds__(kThreadsV2) forwardKernelV2(const float* __restrict__ wG, float invT, ForwardArgs a) {
  using L = Lay<H>;
  using S = FwdSmemV2<H>;
  extern __shared__ float4 smem4[];
  float* w = reinterpret_cast<float*>(smem4);
  int* perm = reinterpret_cast<int*>(w + S::wFloats);
  int* cnt = perm + kRowsV2;
  float* R = w + S::wFloats + S::intFloats;
  const int tid = threadIdx.x;

  loadWeights<H, kThreadsV2>(w, wG, tid);
  __syncthreads();
  const float gate[4] = {w[L::gates], w[L::gates + 1], w[L::gates + 2], w[L::gates + 3]};
  const bool wantExpert = a.expert != nullptr;
  const int rows[kTokV2] = {tid, tid + kThreadsV2};

  const int numTiles = (a.n + kTileV2 - 1) / kTileV2;
  for (int tile = blockIdx.x; tile < numTiles; tile += gridDim.x) {
    const int base = tile * kTileV2;
    const int m = min(kTileV2, a.n - base);
    loadTileV2<H>(R, a, base, m, tid);
    clearBuckets<kThreadsV2>(perm, cnt, tid);
    __syncthreads();

    float h[kTokV2][L::F];
    hiddenV2<H>(w, R, rows, h);
    float b[kTokV2][4], st[kTokV2][3], vol[kTokV2], risk[kTokV2];
#pragma unroll
    for (int t = 0; t < kTokV2; ++t) {
      tokenStats<H, false>(R + rows[t] * S::xStride, st[t]);
      const bool ok = rows[t] < m;
      vol[t] = ok ? a.vol[base + rows[t]] : 0.0f;
      risk[t] = ok ? a.risk[base + rows[t]] : 0.0f;
    }
    baseV2<H>(w, h, b);
    int am[kTokV2];
    gateTokens<H, kTokV2>(w, gate, invT, b, st, vol, risk, rows, m, base, a, am);
    if (!wantExpert) {
      __syncthreads();  // the next tile overwrites the x tile
      continue;
    }
    __syncthreads();  // every thread has read its x rows: the region becomes the h tile
    bucketV2<H>(R, perm, cnt, rows, am, h, m, tid);
    __syncthreads();
    expertV2<H>(w, R, perm, a, base, tid);
    __syncthreads();  // the next tile overwrites the region and perm
  }
}

// ---- micro-tiles (the blocking of the v4 template): four tokens × part of the columns per lane group ----
// A group of lanes shares four tokens: each lane accumulates h for its share of the F columns (and later y for its
// share of the H outputs) for all four, which halves v2's shared-memory bytes per FMA with two lanes per group.
// Bucketing writes each token's h into the slot order of its expert (buckets padded to multiples of 4), so the four
// tokens a lane group takes in the expert stage share one weight slice, and slot s = 4·g + k is stored at row
// k·64 + g so that the lanes of a warp read 16 different banks.

constexpr int kGroupTok = 4;  // tokens per lane group in the expert stage
constexpr int kTileV4 = 240;  // tokens per tile: 240 + 3·3 padding slots ≤ 256 rows

// ---- the v4 template (v4, v8): micro-tiles with the next tile's inputs loaded while the current tile computes ----
// Loading a tile's x (16 float4 per thread at H = 32) and vol/risk only when the tile starts, behind a barrier,
// leaves one warp per scheduler waiting at two blocks per SM. The template issues the next tile's loads into
// registers where they are free (after the h stores with the expert output, after h·Wc without it), so their
// latency overlaps the expert stage or the epilogue, and stores them to shared memory after the tile's last
// barrier. vol and risk sit in shared memory next to the x tile. The expert activation is chosen once per lane
// group (all four of its tokens share one expert), so tanhf runs for Derivatives groups only.
// v4: two lanes per four tokens in both stages, x and h as 4-byte words. v8: four lanes share eight tokens in the h
// stage (each W1 float4 feeds 32 FMAs), two lanes per four tokens in the expert stage, and row strides of x and h
// that are multiples of four floats so that they move through shared memory as 16-byte words (V16). Both keep the
// 256-row tile (64 token groups × 4 tokens in the expert stage) and sum in the oracle's order except h·Wc, which
// adds the partial sums of the CG lanes of a group.

// Shared memory: weights | perm, counts | region. The region holds the x tile with the tile's vol[256] and
// risk[256] behind it, then (with the expert output) the h tile. V16: strides H + 4 and F + 4 (the rows a warp
// reads at once still fall on distinct banks: 4·row mod 32 over 8 rows), else H + 1 and F + 1. At H = 32, V16 needs
// 112 KiB a block, which still lets two blocks share an SM.
template <int H, bool V16>
struct FwdSmemV4 {
  static constexpr int F = 2 * H;
  static constexpr int wFloats = FwdSmemV2<H>::wFloats, intFloats = FwdSmemV2<H>::intFloats;
  static constexpr int xStride = V16 ? H + 4 : H + 1, hStride = V16 ? F + 4 : F + 1;
  static constexpr int xFloats = kRowsV2 * xStride;
  static constexpr int xvFloats = xFloats + 2 * kRowsV2;
  static constexpr int hFloats = kRowsV2 * hStride;
  static constexpr int regionFloats = hFloats > xvFloats ? hFloats : xvFloats;
  static constexpr std::size_t bytesNoExpert = std::size_t(wFloats + intFloats + xvFloats) * 4;
  static constexpr std::size_t bytes = std::size_t(wFloats + intFloats + regionFloats) * 4;
};

// Shape of one instance of the template (MOE_FWD_V4, MOE_FWD_V8 below): CG lanes per group of TK tokens in the h
// stage and epilogue, CGE lanes per group of kGroupTok = 4 tokens in the expert stage (expert buckets stay padded to 4,
// so the 240-token tile still fits 256 rows), NT threads per block, V16: x and h as 16-byte words.
template <int H_, int CG_, int NT_, bool V16_, int TK_, int CGE_>
struct CfgV4 {
  static constexpr int H = H_, F = 2 * H_, CG = CG_, NT = NT_, TK = TK_, CGE = CGE_;
  static constexpr bool V16 = V16_;
  static constexpr int QF = F / 4 / CG;   // W1 float4 chunks per lane: chunk CG·q + cg of each row
  static constexpr int QH = H / 4 / CGE;  // We float4 chunks per lane in the expert stage
  static constexpr int Sets = NT / CG;    // token groups per block in the h stage
  static constexpr int SetsE = NT / CGE;  // token groups per block in the expert stage (kGroupTok tokens each)
  static constexpr int EP = TK / CG;      // tokens of its group whose epilogue a lane computes: cg + CG·kk
  static_assert(Sets * TK == kRowsV2 && SetsE * kGroupTok == kRowsV2, "256-row tile");
  using S = FwdSmemV4<H, V16>;
};

template <int H, int NT>
struct TileInputs {
  static constexpr int PF = kRowsV2 * H / 4 / NT;  // float4 of x per thread and tile: 16 (H = 32, 128 threads)
  static constexpr int PV = kRowsV2 / NT;          // vol and risk values per thread
  float4 x[PF];
  float vol[PV], risk[PV];
};

// Loads tile `tile` (rows past its end, or a tile past the last: zeros) into registers.
template <int H, int NT>
__device__ __forceinline__ void fetchTile(TileInputs<H, NT>& in, const ForwardArgs& a, int tile, int numTiles, int tid) {
  const int base = tile * kTileV4;
  const int m = tile < numTiles ? min(kTileV4, a.n - base) : 0;
  const float4* x4 = reinterpret_cast<const float4*>(a.x) + std::size_t(base) * (H / 4);
#pragma unroll
  for (int j = 0; j < TileInputs<H, NT>::PF; ++j) {
    const int q = tid + j * NT;
    in.x[j] = q < m * H / 4 ? x4[q] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
#pragma unroll
  for (int j = 0; j < TileInputs<H, NT>::PV; ++j) {
    const int r = tid + j * NT;
    in.vol[j] = r < m ? a.vol[base + r] : 0.0f;
    in.risk[j] = r < m ? a.risk[base + r] : 0.0f;
  }
}

template <int H, int NT, bool V16>
__device__ __forceinline__ void stashTile(const TileInputs<H, NT>& in, float* R, float* vrS, int tid) {
  using S = FwdSmemV4<H, V16>;
#pragma unroll
  for (int j = 0; j < TileInputs<H, NT>::PF; ++j) {
    const int q = tid + j * NT;
    float* dst = R + (q * 4 / H) * S::xStride + (q * 4) % H;
    if constexpr (V16) {
      *reinterpret_cast<float4*>(dst) = in.x[j];
    } else {
      dst[0] = in.x[j].x;
      dst[1] = in.x[j].y;
      dst[2] = in.x[j].z;
      dst[3] = in.x[j].w;
    }
  }
#pragma unroll
  for (int j = 0; j < TileInputs<H, NT>::PV; ++j) {
    vrS[tid + j * NT] = in.vol[j];
    vrS[kRowsV2 + tid + j * NT] = in.risk[j];
  }
}

// acc[k] = b1 + x·W1 (no relu yet) of the group's token k (row rows[k]) over this lane's columns, i ascending.
template <class C>
__device__ __forceinline__ void hiddenV4(const float* w, const float* R, const int (&rows)[C::TK], int cg,
                                         float (&acc)[C::TK][4 * C::QF]) {
  using L = Lay<C::H>;
  using S = typename C::S;
  constexpr int H = C::H, F = C::F, TK = C::TK, CG = C::CG, QF = C::QF;
#pragma unroll
  for (int q = 0; q < QF; ++q) {
    const float4 b1 = reinterpret_cast<const float4*>(w + L::b1)[CG * q + cg];
#pragma unroll
    for (int k = 0; k < TK; ++k) {
      acc[k][4 * q] = b1.x;
      acc[k][4 * q + 1] = b1.y;
      acc[k][4 * q + 2] = b1.z;
      acc[k][4 * q + 3] = b1.w;
    }
  }
  // acc[k] += x[k][i] · W1[i] over this lane's columns.
  auto w1Step = [&](int i, const float (&xk)[TK]) {
    const float4* row = reinterpret_cast<const float4*>(w + L::W1 + i * F);
#pragma unroll
    for (int q = 0; q < QF; ++q) {
      const float4 r = row[CG * q + cg];
#pragma unroll
      for (int k = 0; k < TK; ++k) {
        acc[k][4 * q] += xk[k] * r.x;
        acc[k][4 * q + 1] += xk[k] * r.y;
        acc[k][4 * q + 2] += xk[k] * r.z;
        acc[k][4 * q + 3] += xk[k] * r.w;
      }
    }
  };
  if constexpr (C::V16) {
    for (int i4 = 0; i4 < H; i4 += 4) {
      float4 x4[TK];
#pragma unroll
      for (int k = 0; k < TK; ++k) x4[k] = *reinterpret_cast<const float4*>(R + rows[k] * S::xStride + i4);
      float xk[TK];
#pragma unroll
      for (int k = 0; k < TK; ++k) xk[k] = x4[k].x;
      w1Step(i4, xk);
#pragma unroll
      for (int k = 0; k < TK; ++k) xk[k] = x4[k].y;
      w1Step(i4 + 1, xk);
#pragma unroll
      for (int k = 0; k < TK; ++k) xk[k] = x4[k].z;
      w1Step(i4 + 2, xk);
#pragma unroll
      for (int k = 0; k < TK; ++k) xk[k] = x4[k].w;
      w1Step(i4 + 3, xk);
    }
  } else {
#pragma unroll 2
    for (int i = 0; i < H; ++i) {
      float xk[TK];
#pragma unroll
      for (int k = 0; k < TK; ++k) xk[k] = R[rows[k] * S::xStride + i];
      w1Step(i, xk);
    }
  }
}

// Applies the relu to acc in place (acc becomes h) and sums h·Wc of every token of the group: each lane adds its
// columns' share, then a butterfly over the CG lanes leaves the full sum bp[k] in all of them.
template <class C>
__device__ __forceinline__ void hWcV4(const float* w, int cg, float (&acc)[C::TK][4 * C::QF], float (&bp)[C::TK][4]) {
  using L = Lay<C::H>;
  constexpr int TK = C::TK, CG = C::CG, QF = C::QF;
#pragma unroll
  for (int k = 0; k < TK; ++k)
#pragma unroll
    for (int d = 0; d < 4; ++d) bp[k][d] = 0.0f;
#pragma unroll
  for (int q = 0; q < QF; ++q)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const float4 wc = reinterpret_cast<const float4*>(w + L::Wc)[4 * (CG * q + cg) + c];
#pragma unroll
      for (int k = 0; k < TK; ++k) {
        const float hv = fmaxf(acc[k][4 * q + c], 0.0f);
        acc[k][4 * q + c] = hv;
        bp[k][0] += hv * wc.x;
        bp[k][1] += hv * wc.y;
        bp[k][2] += hv * wc.z;
        bp[k][3] += hv * wc.w;
      }
    }
#pragma unroll
  for (int k = 0; k < TK; ++k)
#pragma unroll
    for (int d = 0; d < 4; ++d)
#pragma unroll
      for (int o = 1; o < CG; o <<= 1) bp[k][d] += __shfl_xor_sync(0xffffffffu, bp[k][d], o);
}

// Buckets the tile's tokens by expert and hands h over through shared memory. Buckets are padded to kGroupTok
// slots; slot s lives at row (s % kGroupTok)·SetsE + s / kGroupTok, so lane group gE of the expert stage finds
// kGroupTok tokens of one expert at rows k·SetsE + gE, and perm[row] = tile row | expert << 8. The lane owning token
// c + CG·kk of a group (for its epilogue) knows its row; the group's lanes exchange the rows so that each stores its
// columns of h for all TK tokens. Barriers inside: every thread of the block calls it.
template <class C>
__device__ __forceinline__ void handOverV4(float* R, int* perm, int* cnt, const int (&erow)[C::EP],
                                           const int (&am)[C::EP], const float (&acc)[C::TK][4 * C::QF], int m,
                                           int cg, int tid) {
  using S = typename C::S;
  constexpr int TK = C::TK, CG = C::CG, QF = C::QF, EP = C::EP, SetsE = C::SetsE;
  int pos[EP];
#pragma unroll
  for (int kk = 0; kk < EP; ++kk) pos[kk] = erow[kk] < m ? atomicAdd(&cnt[am[kk]], 1) : -1;
  __syncthreads();
  if (tid == 0) {
    int o = 0;
    for (int d = 0; d < 4; ++d) {
      cnt[4 + d] = o;
      o += (cnt[d] + kGroupTok - 1) / kGroupTok * kGroupTok;
    }
  }
  __syncthreads();
  int mine[EP];
#pragma unroll
  for (int kk = 0; kk < EP; ++kk) {
    mine[kk] = -1;
    if (pos[kk] >= 0) {
      const int slot = cnt[4 + am[kk]] + pos[kk];
      mine[kk] = (slot % kGroupTok) * SetsE + slot / kGroupTok;
      perm[mine[kk]] = erow[kk] | (am[kk] << 8);
    }
  }
  int dest[TK];  // storage row of the group's token k = c + CG·kk: lane c of the group holds it as mine[kk]
#pragma unroll
  for (int kk = 0; kk < EP; ++kk)
#pragma unroll
    for (int c = 0; c < CG; ++c) dest[c + CG * kk] = __shfl_sync(0xffffffffu, mine[kk], c, CG);
#pragma unroll
  for (int k = 0; k < TK; ++k) {
    if (dest[k] >= 0) {
      float* hr = R + dest[k] * S::hStride;
#pragma unroll
      for (int q = 0; q < QF; ++q) {
        if constexpr (C::V16) {
          *reinterpret_cast<float4*>(hr + 4 * (CG * q + cg)) =
              make_float4(acc[k][4 * q], acc[k][4 * q + 1], acc[k][4 * q + 2], acc[k][4 * q + 3]);
        } else {
#pragma unroll
          for (int c = 0; c < 4; ++c) hr[4 * (CG * q + cg) + c] = acc[k][4 * q + c];
        }
      }
    }
  }
}

// Expert stage: lane group gE (CGE lanes, cgE its lane) takes the kGroupTok slots at rows k·SetsE + gE, which hold
// tokens of one expert (a bucket's padding: -1, computed for nothing, not stored), and writes each lane's outputs
// (chunks CGE·q + cgE) of act_e(be + h·We).
template <class C>
__device__ __forceinline__ void expertV4(const float* w, const float* R, const int* perm, const ForwardArgs& a,
                                         int base, int cgE, int gE) {
  using L = Lay<C::H>;
  using S = typename C::S;
  constexpr int H = C::H, F = C::F, CGE = C::CGE, QH = C::QH, SetsE = C::SetsE;
  int pk[kGroupTok];
#pragma unroll
  for (int k = 0; k < kGroupTok; ++k) pk[k] = perm[k * SetsE + gE];
  if (pk[0] >= 0) {
    const int e = pk[0] >> 8;
    const float4* We4 = reinterpret_cast<const float4*>(w + L::We + e * F * H);
    const float4* be4 = reinterpret_cast<const float4*>(w + L::be + e * H);
    float y[kGroupTok][4 * QH];
#pragma unroll
    for (int q = 0; q < QH; ++q) {
      const float4 v = be4[CGE * q + cgE];
#pragma unroll
      for (int k = 0; k < kGroupTok; ++k) {
        y[k][4 * q] = v.x;
        y[k][4 * q + 1] = v.y;
        y[k][4 * q + 2] = v.z;
        y[k][4 * q + 3] = v.w;
      }
    }
    auto weStep = [&](int f, const float (&hk)[kGroupTok]) {
#pragma unroll
      for (int q = 0; q < QH; ++q) {
        const float4 r = We4[f * (H / 4) + CGE * q + cgE];
#pragma unroll
        for (int k = 0; k < kGroupTok; ++k) {
          y[k][4 * q] += hk[k] * r.x;
          y[k][4 * q + 1] += hk[k] * r.y;
          y[k][4 * q + 2] += hk[k] * r.z;
          y[k][4 * q + 3] += hk[k] * r.w;
        }
      }
    };
    if constexpr (C::V16) {
      for (int f4 = 0; f4 < F; f4 += 4) {
        float4 h4[kGroupTok];
#pragma unroll
        for (int k = 0; k < kGroupTok; ++k)
          h4[k] = *reinterpret_cast<const float4*>(R + (k * SetsE + gE) * S::hStride + f4);
        float hk[kGroupTok];
#pragma unroll
        for (int k = 0; k < kGroupTok; ++k) hk[k] = h4[k].x;
        weStep(f4, hk);
#pragma unroll
        for (int k = 0; k < kGroupTok; ++k) hk[k] = h4[k].y;
        weStep(f4 + 1, hk);
#pragma unroll
        for (int k = 0; k < kGroupTok; ++k) hk[k] = h4[k].z;
        weStep(f4 + 2, hk);
#pragma unroll
        for (int k = 0; k < kGroupTok; ++k) hk[k] = h4[k].w;
        weStep(f4 + 3, hk);
      }
    } else {
#pragma unroll 2
      for (int f = 0; f < F; ++f) {
        float hk[kGroupTok];
#pragma unroll
        for (int k = 0; k < kGroupTok; ++k) hk[k] = R[(k * SetsE + gE) * S::hStride + f];
        weStep(f, hk);
      }
    }
    // One branch per lane group (its tokens share the expert); tanhf only where the expert is Derivatives.
    if (e == 3) {
#pragma unroll
      for (int k = 0; k < kGroupTok; ++k)
#pragma unroll
        for (int j = 0; j < 4 * QH; ++j) y[k][j] = tanhf(y[k][j]);
    } else if (e == 1) {
#pragma unroll
      for (int k = 0; k < kGroupTok; ++k)
#pragma unroll
        for (int j = 0; j < 4 * QH; ++j) y[k][j] = 0.8f * y[k][j];
    } else {
#pragma unroll
      for (int k = 0; k < kGroupTok; ++k)
#pragma unroll
        for (int j = 0; j < 4 * QH; ++j) y[k][j] = fmaxf(y[k][j], 0.0f);
    }
#pragma unroll
    for (int k = 0; k < kGroupTok; ++k) {
      if (pk[k] >= 0) {
        float4* o = reinterpret_cast<float4*>(a.expert + std::size_t(base + (pk[k] & 255)) * H);
#pragma unroll
        for (int q = 0; q < QH; ++q)
          o[CGE * q + cgE] = make_float4(y[k][4 * q], y[k][4 * q + 1], y[k][4 * q + 2], y[k][4 * q + 3]);
      }
    }
  }
}

// kExpert is a template parameter: with a run-time flag the registers of both paths (h kept for the expert stage,
// the next tile's inputs loaded early without it) would be live at once and spill. Two blocks per SM.
template <int H, bool kExpert, int CG, int NT, bool V16, int TK, int CGE>
__global__ void __launch_bounds__(NT, 2) forwardKernelV4(const float* __restrict__ wG, float invT, ForwardArgs a) {
  using C = CfgV4<H, CG, NT, V16, TK, CGE>;
  using L = Lay<H>;
  using S = typename C::S;
  constexpr int EP = C::EP;
  extern __shared__ float4 smem4[];
  float* w = reinterpret_cast<float*>(smem4);
  int* perm = reinterpret_cast<int*>(w + S::wFloats);
  int* cnt = perm + kRowsV2;
  float* R = w + S::wFloats + S::intFloats;
  float* vrS = R + S::xFloats;
  const int tid = threadIdx.x, cg = tid % CG, g = tid / CG, cgE = tid % CGE, gE = tid / CGE;
  const int numTiles = (a.n + kTileV4 - 1) / kTileV4;

  TileInputs<H, NT> next;
  fetchTile<H, NT>(next, a, blockIdx.x, numTiles, tid);
  loadWeights<H, NT>(w, wG, tid);
  __syncthreads();
  const float gate[4] = {w[L::gates], w[L::gates + 1], w[L::gates + 2], w[L::gates + 3]};
  int rows[TK];
#pragma unroll
  for (int k = 0; k < TK; ++k) rows[k] = g + C::Sets * k;

  for (int tile = blockIdx.x; tile < numTiles; tile += gridDim.x) {
    const int base = tile * kTileV4;
    const int m = min(kTileV4, a.n - base);
    stashTile<H, NT, V16>(next, R, vrS, tid);
    clearBuckets<NT>(perm, cnt, tid);
    __syncthreads();

    float acc[TK][4 * C::QF];
    hiddenV4<C>(w, R, rows, cg, acc);
    float bp[TK][4];
    hWcV4<C>(w, cg, acc, bp);
    // Without the expert stage h is dead here: the next tile's loads overlap the epilogue.
    if (!kExpert) fetchTile<H, NT>(next, a, tile + gridDim.x, numTiles, tid);

    // Epilogue of the group's tokens cg + CG·kk: the lane takes its token's h·Wc out of bp.
    int am[EP], erow[EP];
    float b[EP][4], st[EP][3], vol[EP], risk[EP];
#pragma unroll
    for (int kk = 0; kk < EP; ++kk) {
      erow[kk] = g + C::Sets * (cg + CG * kk);
#pragma unroll
      for (int d = 0; d < 4; ++d) {
        float mine = bp[CG * kk][d];
#pragma unroll
        for (int c = 1; c < CG; ++c) mine = cg == c ? bp[CG * kk + c][d] : mine;
        b[kk][d] = w[L::bc + d] + mine;
      }
      tokenStats<H, V16>(R + erow[kk] * S::xStride, st[kk]);
      vol[kk] = vrS[erow[kk]];  // zero past m (fetchTile)
      risk[kk] = vrS[kRowsV2 + erow[kk]];
    }
    gateTokens<H, EP>(w, gate, invT, b, st, vol, risk, erow, m, base, a, am);
    if constexpr (!kExpert) {
      __syncthreads();  // the next tile overwrites the x tile
    } else {
      handOverV4<C>(R, perm, cnt, erow, am, acc, m, cg, tid);
      // h is in shared memory now: the next tile's loads overlap the expert stage.
      fetchTile<H, NT>(next, a, tile + gridDim.x, numTiles, tid);
      __syncthreads();
      expertV4<C>(w, R, perm, a, base, cgE, gE);
      __syncthreads();  // the next tile overwrites the region and perm
    }
  }
}

struct FwdLaunch {
  int blocksFull = 0, blocksNoExpert = 0;
};

template <int H, int V>
FwdLaunch& fwdLaunch() {
  static FwdLaunch l;
  return l;
}

template <class Kernel>
FwdLaunch occupancy(Kernel k, int threads, std::size_t full, std::size_t noExpert) {
  MOE_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(full)));
  int dev = 0, sms = 0, nFull = 0, nNo = 0;
  MOE_CUDA_CHECK(cudaGetDevice(&dev));
  MOE_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  MOE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&nFull, k, threads, full));
  MOE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&nNo, k, threads, noExpert));
  MOE_CHECK(nFull >= 1, "forward kernel does not fit on this device (shared memory or registers)");
  return FwdLaunch{nFull * sms, nNo * sms};
}

template <int H, int V, int CG, int NT, bool V16, int TK, int CGE>
void prepareV4() {
  using S = FwdSmemV4<H, V16>;
  fwdLaunch<H, V>() = occupancy(forwardKernelV4<H, true, CG, NT, V16, TK, CGE>, NT, S::bytes, S::bytes);
  fwdLaunch<H, V>().blocksNoExpert =
      occupancy(forwardKernelV4<H, false, CG, NT, V16, TK, CGE>, NT, S::bytesNoExpert, S::bytesNoExpert).blocksFull;
}

// Contract: launchForward's (common.cuh), after prepareV4 of the same instance; one persistent block per resident
// slot or per 240-token tile, whichever is fewer. The caller checks the launch.
template <int H, int V, int CG, int NT, bool V16, int TK, int CGE>
void launchV4(const DeviceParams& p, const ForwardArgs& a, cudaStream_t stream) {
  using S = FwdSmemV4<H, V16>;
  const FwdLaunch& l = fwdLaunch<H, V>();
  MOE_CHECK(l.blocksFull > 0, "prepareForward was not called for this hidden size");
  const int tiles = (a.n + kTileV4 - 1) / kTileV4;
  const int blocks = std::min(tiles, a.expert ? l.blocksFull : l.blocksNoExpert);
  if (a.expert) forwardKernelV4<H, true, CG, NT, V16, TK, CGE><<<blocks, NT, S::bytes, stream>>>(p.w, p.invT, a);
  else forwardKernelV4<H, false, CG, NT, V16, TK, CGE><<<blocks, NT, S::bytesNoExpert, stream>>>(p.w, p.invT, a);
}

// Template arguments of the v4 template's instances: lanes per token group, threads, 16-byte x/h moves, tokens per
// group in the h stage, lanes per four-token group in the expert stage.
#define MOE_FWD_V4 2, 128, false, 4, 2
#define MOE_FWD_V8 4, 128, true, 8, 2

template <int H>
void prepare() {
  fwdLaunch<H, 2>() = occupancy(forwardKernelV2<H>, kThreadsV2, FwdSmemV2<H>::bytes, FwdSmemV2<H>::bytesNoExpert);
  prepareV4<H, 4, MOE_FWD_V4>();
  prepareV4<H, 8, MOE_FWD_V8>();
}

// Contract: launchForward's (common.cuh) with the version resolved; a version other than 2, 4 or 8 throws before
// anything is launched. Each launch is checked.
template <int H>
void launch(const DeviceParams& p, const ForwardArgs& a, int version, cudaStream_t stream) {
  if (version == 4) {
    launchV4<H, 4, MOE_FWD_V4>(p, a, stream);
  } else if (version == 8) {
    launchV4<H, 8, MOE_FWD_V8>(p, a, stream);
  } else {
    MOE_CHECK(version == 2, "forward kernel version must be 2, 4 or 8 but is " + std::to_string(version));
    using S = FwdSmemV2<H>;
    const FwdLaunch& l = fwdLaunch<H, 2>();
    MOE_CHECK(l.blocksFull > 0, "prepareForward was not called for this hidden size");
    const int tiles = (a.n + kTileV2 - 1) / kTileV2;
    const int blocks = std::min(tiles, a.expert ? l.blocksFull : l.blocksNoExpert);
    forwardKernelV2<H><<<blocks, kThreadsV2, a.expert ? S::bytes : S::bytesNoExpert, stream>>>(p.w, p.invT, a);
  }
  MOE_LAUNCH_CHECK();
}

}  // namespace

int forcedForwardKernel() {
  // Read once. A value that names no kernel throws, here and on every later call (the static stays uninitialised),
  // rather than running the default: a test or benchmark of one version must never measure another.
  static const int forced = [] {
    const char* e = std::getenv("MOE_CUDA_FORWARD_KERNEL");
    const std::string v = e ? e : "";
    if (v.empty()) return 0;
    MOE_CHECK(v == "2" || v == "4" || v == "8" || v == "9" || v == "11" || v == "12" || v == "13",
              "MOE_CUDA_FORWARD_KERNEL must be unset or 2, 4, 8, 9, 11, 12 or 13 (the forward kernels that exist) but "
              "is '" +
                  v + "'");
    return std::stoi(v);
  }();
  return forced;
}

const char* precisionName(Precision p) {
  return p == Precision::TF32X3 ? "tf32x3"
         : p == Precision::BF16X3 ? "bf16x3"
         : p == Precision::TF32 ? "tf32"
         : p == Precision::BF16 ? "bf16"
         : p == Precision::FP32 ? "fp32"
                                : "env";
}

Precision forwardPrecision() {
  // Read once, like MOE_CUDA_FORWARD_KERNEL: an unknown value throws on every call rather than running another
  // precision.
  static const Precision precision = [] {
    const char* e = std::getenv("MOE_CUDA_PRECISION");
    const std::string v = e ? e : "";
    if (v.empty()) {
      // A forced fp32 kernel (2, 4 or 8) computes in fp32 whatever the default precision is.
      const int forced = forcedForwardKernel();
      return forced != 0 && forced < 9 ? Precision::FP32 : kDefaultPrecision;
    }
    if (v == "fp32") return Precision::FP32;
    if (v == "bf16x3") return Precision::BF16X3;
    if (v == "tf32x3") return Precision::TF32X3;
    if (v == "tf32") return Precision::TF32;
    if (v == "bf16") return Precision::BF16;
    MOE_FAIL("MOE_CUDA_PRECISION must be unset or fp32, bf16x3, tf32x3, tf32 or bf16 (the precisions of the "
             "forward's matrix products) but is '" + v + "'");
  }();
  return precision;
}

int forwardKernelVersion(int H, bool expert, Precision precision) {
  const int forced = forcedForwardKernel();
  const Precision prec = precision == Precision::Env ? forwardPrecision() : precision;
  if (prec != Precision::FP32) {
    // The tensor-core kernel is the only one with split, TF32 or BF16 products.
    MOE_CHECK(forced == 0 || forced >= 9,
              "MOE_CUDA_FORWARD_KERNEL=" + std::to_string(forced) + " is an fp32 kernel but MOE_CUDA_PRECISION is " +
                  precisionName(prec) + " (bf16x3, tf32x3, tf32 and bf16 run forward kernels 9, 11, 12 and 13)");
    return forced != 0 ? forced : kDefaultTensorKernel;
  }
  MOE_CHECK(forced < 9,
            "MOE_CUDA_FORWARD_KERNEL=" + std::to_string(forced) +
                " computes in bf16x3, tf32x3, tf32 or bf16: set MOE_CUDA_PRECISION to one of them (the precision is "
                "fp32)");
  // fp32 (MOE_CUDA_PRECISION=fp32, or a forced fp32 kernel). The fastest of each case on an H100, 1e7 tokens
  // (docs/performance.md): v8 with the expert output at both sizes; without it v4 at H = 32 (v8 ties) and v2 at
  // H = 16 (128 registers suffice, four blocks per SM).
  if (forced != 0) return forced;
  if (expert) return 8;
  return H == 32 ? 4 : 2;
}

void prepareForward(int H) {
  // Once per hidden size and process (the device and its limits do not change): the launch settings are shared by
  // every backend, and a router made on one thread while another routes would otherwise read settings half written
  // (seen as "does not fit on this device" with routers trained on threads of their own).
  static std::once_flag once[2];
  std::call_once(once[H == 16 ? 0 : 1], [H] {
    if (H == 16) prepare<16>();
    else prepare<32>();
    prepareForwardTC(H);
  });
}

void launchForward(int H, const DeviceParams& p, const ForwardArgs& a, cudaStream_t stream, int version,
                   Precision precision) {
  MOE_CHECK(a.n >= 1, "forward needs at least one token");
  const Precision prec = precision == Precision::Env ? forwardPrecision() : precision;
  const int v = version == 0 ? forwardKernelVersion(H, a.expert != nullptr, prec) : version;
  if (v >= 9) {
    launchForwardTC(H, v, prec, p, a, stream);
    return;
  }
  MOE_CHECK(prec == Precision::FP32, "forward kernel " + std::to_string(v) + " computes in fp32, not " +
                                         precisionName(prec));
  if (H == 16) launch<16>(p, a, v, stream);
  else launch<32>(p, a, v, stream);
}

}  // namespace moe::cuda
