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
// history (2026-11). MOE_CUDA_FORWARD_KERNEL=2|4|8 forces one, else forwardKernelVersion picks the fastest measured
// on an H100 for the hidden size and whether the expert output is asked for. Rates: H100, H = 32, 1e7 tokens with
// expert output.
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
//   v5  v4 with four lanes per token group and 256 threads: 128 registers, 16 warps per SM. 2.95 G. Nsight
//       Compute: shared-memory (L1) throughput 87% of peak, issue slots 65% busy; the shared-memory pipe is the
//       limit now.
//   v6  v5 with x and h moved through shared memory as 16-byte words (strides H + 4 and F + 4): L1 throughput 77%,
//       but fewer instructions issued per cycle (59%; 24 bytes of spills at 128 registers). 2.93 G.
//   v7  register blocking against the shared-memory limit: 128 threads, 8 warps per SM, and in the h stage four
//       lanes share eight tokens (8 tokens × a quarter of the columns per lane: each W1 float4 feeds 32 FMAs, and
//       W1 + x bytes per FMA drop from v5's 20/64 to 24/128); the expert stage keeps v4's blocking (two lanes per
//       four-token group, half the outputs each: 20/64 instead of v5's 12/32). 255 registers. 2.86 G.
//   v8  v7 with v6's 16-byte moves of x and h (with 8 warps per SM the instruction count matters: +6% over v7).
//       3.04 G (v5 2.97 G in the same run); at H = 16 8.37 G against v4's 7.61 G. The fastest with the expert
//       output at both sizes. Nsight Compute: L1 throughput 58%, issue slots 58% busy, FMA pipe 49%: no pipe is
//       saturated; with two warps per scheduler, latency (dependent loads, the tile's barriers) limits it.
//   Tried and dropped: eight lanes × eight tokens with 256 threads (16 warps per SM, 64 accumulators, v5's expert
//   stage): 2.73 G.
//   See docs/performance.md.
#include <cstdlib>

#include "common.cuh"

namespace moe::cuda {

namespace {


// ---- v2: two tokens per thread ----

constexpr int kThreadsV2 = 128;
constexpr int kRowsV2 = 2 * kThreadsV2;  // rows of the shared tiles
// Tokens per tile: at most 252 so that the four buckets, each rounded up to an even count, fit 256 slots.
constexpr int kTileV2 = 248;

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

template <int H>
__global__ void __launch_bounds__(kThreadsV2) forwardKernelV2(const float* __restrict__ wG, float invT, ForwardArgs a) {
  using L = Lay<H>;
  using S = FwdSmemV2<H>;
  constexpr int F = L::F, NT = 2;
  extern __shared__ float4 smem4[];
  float* w = reinterpret_cast<float*>(smem4);
  int* perm = reinterpret_cast<int*>(w + S::wFloats);
  int* cnt = perm + kRowsV2;
  float* R = w + S::wFloats + S::intFloats;
  const int tid = threadIdx.x;

  for (int i = tid; i < L::size / 4; i += kThreadsV2)
    reinterpret_cast<float4*>(w)[i] = reinterpret_cast<const float4*>(wG)[i];
  __syncthreads();
  const float g0 = w[L::gates], g1 = w[L::gates + 1], g2 = w[L::gates + 2], g3 = w[L::gates + 3];
  const bool wantExpert = a.expert != nullptr;
  const int rows[NT] = {tid, tid + kThreadsV2};

  const int numTiles = (a.n + kTileV2 - 1) / kTileV2;
  for (int tile = blockIdx.x; tile < numTiles; tile += gridDim.x) {
    const int base = tile * kTileV2;
    const int m = min(kTileV2, a.n - base);
    const float4* x4 = reinterpret_cast<const float4*>(a.x + std::size_t(base) * H);
    for (int q = tid; q < kRowsV2 * H / 4; q += kThreadsV2) {
      const float4 v = q < m * H / 4 ? x4[q] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);  // rows past m: zeros
      float* dst = R + (q * 4 / H) * S::xStride + (q * 4) % H;
      dst[0] = v.x;
      dst[1] = v.y;
      dst[2] = v.z;
      dst[3] = v.w;
    }
    if (tid < 8) cnt[tid] = 0;
    for (int i = tid; i < kRowsV2; i += kThreadsV2) perm[i] = -1;
    __syncthreads();

    float h[NT][F];
#pragma unroll
    for (int t = 0; t < NT; ++t)
#pragma unroll
      for (int f = 0; f < F; ++f) h[t][f] = w[L::b1 + f];
#pragma unroll 2
    for (int i = 0; i < H; ++i) {
      float xi[NT];
#pragma unroll
      for (int t = 0; t < NT; ++t) xi[t] = R[rows[t] * S::xStride + i];
      const float4* row = reinterpret_cast<const float4*>(w + L::W1 + i * F);
#pragma unroll
      for (int q = 0; q < F / 4; ++q) {
        const float4 r = row[q];
#pragma unroll
        for (int t = 0; t < NT; ++t) {
          h[t][4 * q] += xi[t] * r.x;
          h[t][4 * q + 1] += xi[t] * r.y;
          h[t][4 * q + 2] += xi[t] * r.z;
          h[t][4 * q + 3] += xi[t] * r.w;
        }
      }
    }
#pragma unroll
    for (int t = 0; t < NT; ++t)
#pragma unroll
      for (int f = 0; f < F; ++f) h[t][f] = fmaxf(h[t][f], 0.0f);

    float b[NT][4], st[NT][3], vs[NT][4], rs[NT][4], ss[NT][4], vol[NT], risk[NT];
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      const float* xr = R + rows[t] * S::xStride;
      float mean = 0, absMean = 0, var = 0;
#pragma unroll
      for (int i = 0; i < H; ++i) {
        mean += xr[i];
        absMean += fabsf(xr[i]);
      }
      mean /= H;
      absMean /= H;
#pragma unroll
      for (int i = 0; i < H; ++i) var += (xr[i] - mean) * (xr[i] - mean);
      var /= H;
      st[t][0] = mean;
      st[t][1] = var;
      st[t][2] = absMean;
      const bool ok = rows[t] < m;
      vol[t] = ok ? a.vol[base + rows[t]] : 0.0f;
      risk[t] = ok ? a.risk[base + rows[t]] : 0.0f;
#pragma unroll
      for (int d = 0; d < 4; ++d) {
        b[t][d] = w[L::bc + d];
        vs[t][d] = rs[t][d] = ss[t][d] = 0.0f;
      }
    }
#pragma unroll
    for (int f = 0; f < F; ++f) {
      const float4 c = reinterpret_cast<const float4*>(w + L::Wc)[f];
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        b[t][0] += h[t][f] * c.x;
        b[t][1] += h[t][f] * c.y;
        b[t][2] += h[t][f] * c.z;
        b[t][3] += h[t][f] * c.w;
      }
    }
#pragma unroll
    for (int j = 0; j < kVolUnits; ++j) {
      const float4 wv = reinterpret_cast<const float4*>(w + L::Wv)[j];
      const float4 bv = reinterpret_cast<const float4*>(w + L::Bv)[j];
      const float4 wr = reinterpret_cast<const float4*>(w + L::Wr)[j];
      const float4 br = reinterpret_cast<const float4*>(w + L::Br)[j];
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        vs[t][0] += fmaxf(vol[t] * wv.x + bv.x, 0.0f);
        vs[t][1] += fmaxf(vol[t] * wv.y + bv.y, 0.0f);
        vs[t][2] += fmaxf(vol[t] * wv.z + bv.z, 0.0f);
        vs[t][3] += fmaxf(vol[t] * wv.w + bv.w, 0.0f);
        rs[t][0] += fmaxf(risk[t] * wr.x + br.x, 0.0f);
        rs[t][1] += fmaxf(risk[t] * wr.y + br.y, 0.0f);
        rs[t][2] += fmaxf(risk[t] * wr.z + br.z, 0.0f);
        rs[t][3] += fmaxf(risk[t] * wr.w + br.w, 0.0f);
      }
    }
#pragma unroll
    for (int j = 0; j < kStatUnits; ++j) {
      const float4 bs = reinterpret_cast<const float4*>(w + L::Bs)[j];
      float4 acc[NT];
#pragma unroll
      for (int t = 0; t < NT; ++t) acc[t] = bs;
#pragma unroll
      for (int k = 0; k < kNumStats; ++k) {
        const float4 ws = reinterpret_cast<const float4*>(w + L::Ws)[k * kStatUnits + j];
#pragma unroll
        for (int t = 0; t < NT; ++t) {
          acc[t].x += st[t][k] * ws.x;
          acc[t].y += st[t][k] * ws.y;
          acc[t].z += st[t][k] * ws.z;
          acc[t].w += st[t][k] * ws.w;
        }
      }
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        ss[t][0] += fmaxf(acc[t].x, 0.0f);
        ss[t][1] += fmaxf(acc[t].y, 0.0f);
        ss[t][2] += fmaxf(acc[t].z, 0.0f);
        ss[t][3] += fmaxf(acc[t].w, 0.0f);
      }
    }
    int am[NT];
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      float z[4];
#pragma unroll
      for (int d = 0; d < 4; ++d) {
        const float s = g0 * b[t][d] + g1 * (vs[t][d] / kVolUnits) + g2 * (rs[t][d] / kRiskUnits) +
                        g3 * (ss[t][d] / kStatUnits);
        z[d] = fminf(fmaxf(s, -kLogitClip), kLogitClip) * invT;
      }
      int k = 0;
      float zm = z[0];
      if (z[1] > zm) { zm = z[1]; k = 1; }
      if (z[2] > zm) { zm = z[2]; k = 2; }
      if (z[3] > zm) { zm = z[3]; k = 3; }
      am[t] = k;
      float e[4], sum = 0;
#pragma unroll
      for (int d = 0; d < 4; ++d) {
        e[d] = expf(z[d] - zm);
        sum += e[d];
      }
      if (rows[t] < m) {
        const int tok = base + rows[t];
        reinterpret_cast<float4*>(a.probs)[tok] = make_float4(e[0] / sum, e[1] / sum, e[2] / sum, e[3] / sum);
        a.assign[tok] = std::uint8_t(k);
      }
    }
    if (!wantExpert) {
      __syncthreads();  // the next tile overwrites the x tile
      continue;
    }
    __syncthreads();  // every thread has read its x rows: the region becomes the h tile
    int pos[NT];
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      pos[t] = 0;
      if (rows[t] < m) {
        float* hr = R + rows[t] * S::hStride;
#pragma unroll
        for (int f = 0; f < F; ++f) hr[f] = h[t][f];
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
    for (int t = 0; t < NT; ++t)
      if (rows[t] < m) perm[cnt[4 + am[t]] + pos[t]] = rows[t] | (am[t] << 8);
    __syncthreads();

    // Expert stage: thread tid takes slots 2·tid and 2·tid+1, which hold tokens of one expert (or one token and an
    // empty slot, in which case the second lane of work repeats the first token and is not stored).
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
    __syncthreads();  // the next tile overwrites the region and perm
  }
}

// ---- v3 (removed; v4 to v8 build on it): micro-tiles, four tokens × half the columns per thread ----
// A pair of lanes shares four tokens: each lane accumulates h for its half of the F columns (and later y for its
// half of the H outputs) for all four. Per W1 row that is 4 token values (4-byte loads) and F/8 weight float4s for
// 4·F/2 FMAs, about half the shared-memory bytes per FMA of v2. The per-token epilogue (stats, signals, softmax)
// runs two tokens per lane. Bucketing writes each token's h into the slot order of its expert (buckets padded to
// multiples of 4), so the four tokens a pair of lanes takes in the expert stage share one weight slice, and slot
// s = 4·g + k is stored at row k·64 + g so that the lanes of a warp read 16 different banks.

constexpr int kTV3 = 4;                           // tokens per lane (a micro-tile: four tokens per lane group)
constexpr int kTileV3 = 240;                      // 240 + 3·3 padding slots ≤ 256 rows

// ---- v4 to v8: v3's micro-tiles with the next tile's inputs loaded while the current tile computes ----
// v3 loads a tile's x (16 float4 per thread at H = 32) and vol/risk only when the tile starts, behind a barrier,
// and the epilogue then waits on global vol/risk loads as well; with two blocks per SM each load wait leaves one
// warp per scheduler. v4 issues the next tile's loads into registers where they are free (after the h stores with
// the expert output, after h·Wc without it), so their latency overlaps the expert stage or the epilogue, and
// stores them to shared memory after the tile's last barrier. vol and risk sit in shared memory next to the x tile.
// The expert activation is chosen once per lane group (all four of its tokens share one expert), so tanhf runs
// for Derivatives groups only instead of being evaluated and selected for every output.
// v5 is the same code with four lanes per token group (4 tokens × a quarter of the columns per lane) and 256
// threads: about half of v4's registers per thread, so 16 warps per SM instead of 8, at the price of more
// shared-memory loads per FMA. v6 is v5 with row strides of x and h that are multiples of four floats, so that x
// and h move through shared memory as 16-byte words: a quarter of the load and store instructions for them in
// the h stage, the statistics, the h hand-over and the expert stage. All keep the 256-row tile (64 token groups ×
// 4 tokens) and sum in the same order as v3.

// Shared memory: weights | perm, counts | region. The region holds the x tile with the tile's vol[256] and
// risk[256] behind it, then (with the expert output) the h tile. V16: strides H + 4 and F + 4 (v6; the rows a warp
// reads at once still fall on distinct banks: 4·row mod 32 over 8 rows), else H + 1 and F + 1. At H = 32, v6 needs
// 112 KB a block, which still lets two blocks share an SM.
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
  const int base = tile * kTileV3;
  const int m = tile < numTiles ? min(kTileV3, a.n - base) : 0;
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

// kExpert is a template parameter: with a run-time flag the registers of both paths (h kept for the expert stage,
// the next tile's inputs loaded early without it) would be live at once and spill.
// CG lanes per group of TK tokens in the h stage and epilogue, CGE lanes per group of kTV3 = 4 tokens in the expert
// stage (expert buckets stay padded to 4, so the 240-token tile still fits 256 rows), NT threads per block, V16
// (MOE_FWD_V4 .. MOE_FWD_V8 below); two blocks per SM.
template <int H, bool kExpert, int CG, int NT, bool V16, int TK, int CGE>
__global__ void __launch_bounds__(NT, 2) forwardKernelV4(const float* __restrict__ wG, float invT, ForwardArgs a) {
  using L = Lay<H>;
  using S = FwdSmemV4<H, V16>;
  constexpr int F = L::F;
  constexpr int QF = F / 4 / CG;  // W1 float4 chunks per lane: chunk CG·q + cg of each row
  constexpr int QH = H / 4 / CGE;  // We float4 chunks per lane in the expert stage
  constexpr int Sets = NT / CG;    // token groups per block in the h stage
  constexpr int SetsE = NT / CGE;  // token groups per block in the expert stage (kTV3 tokens each)
  constexpr int EP = TK / CG;      // tokens of its group whose epilogue a lane computes: cg + CG·kk
  static_assert(Sets * TK == kRowsV2 && SetsE * kTV3 == kRowsV2, "256-row tile");
  extern __shared__ float4 smem4[];
  float* w = reinterpret_cast<float*>(smem4);
  int* perm = reinterpret_cast<int*>(w + S::wFloats);
  int* cnt = perm + kRowsV2;
  float* R = w + S::wFloats + S::intFloats;
  float* vrS = R + S::xFloats;
  const int tid = threadIdx.x, cg = tid % CG, g = tid / CG, cgE = tid % CGE, gE = tid / CGE;
  const int numTiles = (a.n + kTileV3 - 1) / kTileV3;

  TileInputs<H, NT> next;
  fetchTile<H, NT>(next, a, blockIdx.x, numTiles, tid);
  for (int i = tid; i < L::size / 4; i += NT)
    reinterpret_cast<float4*>(w)[i] = reinterpret_cast<const float4*>(wG)[i];
  __syncthreads();
  const float g0 = w[L::gates], g1 = w[L::gates + 1], g2 = w[L::gates + 2], g3 = w[L::gates + 3];
  int rows[TK];
#pragma unroll
  for (int k = 0; k < TK; ++k) rows[k] = g + Sets * k;

  for (int tile = blockIdx.x; tile < numTiles; tile += gridDim.x) {
    const int base = tile * kTileV3;
    const int m = min(kTileV3, a.n - base);
    stashTile<H, NT, V16>(next, R, vrS, tid);
    if (tid < 8) cnt[tid] = 0;
    for (int i = tid; i < kRowsV2; i += NT) perm[i] = -1;
    __syncthreads();

    float acc[TK][4 * QF];
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
    // acc[k] += x[k][i] · W1[i] over this lane's columns, i ascending.
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
    if constexpr (V16) {
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
    float bp[TK][4];
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
    // Without the expert stage h is dead here: the next tile's loads overlap the epilogue.
    if (!kExpert) fetchTile<H, NT>(next, a, tile + gridDim.x, numTiles, tid);

    int am[EP], erow[EP];
    float b[EP][4], st[EP][3], vs[EP][4], rs[EP][4], ss[EP][4], vol[EP], risk[EP];
#pragma unroll
    for (int kk = 0; kk < EP; ++kk) {
      erow[kk] = g + Sets * (cg + CG * kk);
#pragma unroll
      for (int d = 0; d < 4; ++d) {
        float mine = bp[CG * kk][d];
#pragma unroll
        for (int c = 1; c < CG; ++c) mine = cg == c ? bp[CG * kk + c][d] : mine;
        b[kk][d] = w[L::bc + d] + mine;
        vs[kk][d] = rs[kk][d] = ss[kk][d] = 0.0f;
      }
      const float* xr = R + erow[kk] * S::xStride;
      float mean = 0, absMean = 0, var = 0;
      if constexpr (V16) {
#pragma unroll
        for (int i4 = 0; i4 < H; i4 += 4) {
          const float4 v = *reinterpret_cast<const float4*>(xr + i4);
          mean += v.x;
          absMean += fabsf(v.x);
          mean += v.y;
          absMean += fabsf(v.y);
          mean += v.z;
          absMean += fabsf(v.z);
          mean += v.w;
          absMean += fabsf(v.w);
        }
        mean /= H;
        absMean /= H;
#pragma unroll
        for (int i4 = 0; i4 < H; i4 += 4) {
          const float4 v = *reinterpret_cast<const float4*>(xr + i4);
          var += (v.x - mean) * (v.x - mean);
          var += (v.y - mean) * (v.y - mean);
          var += (v.z - mean) * (v.z - mean);
          var += (v.w - mean) * (v.w - mean);
        }
      } else {
#pragma unroll
        for (int i = 0; i < H; ++i) {
          mean += xr[i];
          absMean += fabsf(xr[i]);
        }
        mean /= H;
        absMean /= H;
#pragma unroll
        for (int i = 0; i < H; ++i) var += (xr[i] - mean) * (xr[i] - mean);
      }
      var /= H;
      st[kk][0] = mean;
      st[kk][1] = var;
      st[kk][2] = absMean;
      vol[kk] = vrS[erow[kk]];  // zero past m (fetchTile)
      risk[kk] = vrS[kRowsV2 + erow[kk]];
    }
#pragma unroll
    for (int j = 0; j < kVolUnits; ++j) {
      const float4 wv = reinterpret_cast<const float4*>(w + L::Wv)[j];
      const float4 bv = reinterpret_cast<const float4*>(w + L::Bv)[j];
      const float4 wr = reinterpret_cast<const float4*>(w + L::Wr)[j];
      const float4 br = reinterpret_cast<const float4*>(w + L::Br)[j];
#pragma unroll
      for (int kk = 0; kk < EP; ++kk) {
        vs[kk][0] += fmaxf(vol[kk] * wv.x + bv.x, 0.0f);
        vs[kk][1] += fmaxf(vol[kk] * wv.y + bv.y, 0.0f);
        vs[kk][2] += fmaxf(vol[kk] * wv.z + bv.z, 0.0f);
        vs[kk][3] += fmaxf(vol[kk] * wv.w + bv.w, 0.0f);
        rs[kk][0] += fmaxf(risk[kk] * wr.x + br.x, 0.0f);
        rs[kk][1] += fmaxf(risk[kk] * wr.y + br.y, 0.0f);
        rs[kk][2] += fmaxf(risk[kk] * wr.z + br.z, 0.0f);
        rs[kk][3] += fmaxf(risk[kk] * wr.w + br.w, 0.0f);
      }
    }
#pragma unroll
    for (int j = 0; j < kStatUnits; ++j) {
      const float4 bs = reinterpret_cast<const float4*>(w + L::Bs)[j];
      float4 ac[EP];
#pragma unroll
      for (int kk = 0; kk < EP; ++kk) ac[kk] = bs;
#pragma unroll
      for (int k = 0; k < kNumStats; ++k) {
        const float4 ws = reinterpret_cast<const float4*>(w + L::Ws)[k * kStatUnits + j];
#pragma unroll
        for (int kk = 0; kk < EP; ++kk) {
          ac[kk].x += st[kk][k] * ws.x;
          ac[kk].y += st[kk][k] * ws.y;
          ac[kk].z += st[kk][k] * ws.z;
          ac[kk].w += st[kk][k] * ws.w;
        }
      }
#pragma unroll
      for (int kk = 0; kk < EP; ++kk) {
        ss[kk][0] += fmaxf(ac[kk].x, 0.0f);
        ss[kk][1] += fmaxf(ac[kk].y, 0.0f);
        ss[kk][2] += fmaxf(ac[kk].z, 0.0f);
        ss[kk][3] += fmaxf(ac[kk].w, 0.0f);
      }
    }
#pragma unroll
    for (int kk = 0; kk < EP; ++kk) {
      float z[4];
#pragma unroll
      for (int d = 0; d < 4; ++d) {
        const float s = g0 * b[kk][d] + g1 * (vs[kk][d] / kVolUnits) + g2 * (rs[kk][d] / kRiskUnits) +
                        g3 * (ss[kk][d] / kStatUnits);
        z[d] = fminf(fmaxf(s, -kLogitClip), kLogitClip) * invT;
      }
      int best = 0;
      float zm = z[0];
      if (z[1] > zm) { zm = z[1]; best = 1; }
      if (z[2] > zm) { zm = z[2]; best = 2; }
      if (z[3] > zm) { zm = z[3]; best = 3; }
      am[kk] = best;
      float e[4], sum = 0;
#pragma unroll
      for (int d = 0; d < 4; ++d) {
        e[d] = expf(z[d] - zm);
        sum += e[d];
      }
      if (erow[kk] < m) {
        const int tok = base + erow[kk];
        reinterpret_cast<float4*>(a.probs)[tok] = make_float4(e[0] / sum, e[1] / sum, e[2] / sum, e[3] / sum);
        a.assign[tok] = std::uint8_t(best);
      }
    }
    if constexpr (!kExpert) {
      __syncthreads();  // the next tile overwrites the x tile
    } else {
      int pos[EP];
#pragma unroll
      for (int kk = 0; kk < EP; ++kk) pos[kk] = erow[kk] < m ? atomicAdd(&cnt[am[kk]], 1) : -1;
      __syncthreads();
      if (tid == 0) {
        int o = 0;
        for (int d = 0; d < 4; ++d) {
          cnt[4 + d] = o;
          o += (cnt[d] + kTV3 - 1) / kTV3 * kTV3;
        }
      }
      __syncthreads();
      int mine[EP];
#pragma unroll
      for (int kk = 0; kk < EP; ++kk) {
        mine[kk] = -1;
        if (pos[kk] >= 0) {
          const int slot = cnt[4 + am[kk]] + pos[kk];
          mine[kk] = (slot % kTV3) * SetsE + slot / kTV3;
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
            if constexpr (V16) {
              *reinterpret_cast<float4*>(hr + 4 * (CG * q + cg)) =
                  make_float4(acc[k][4 * q], acc[k][4 * q + 1], acc[k][4 * q + 2], acc[k][4 * q + 3]);
            } else {
#pragma unroll
              for (int c = 0; c < 4; ++c) hr[4 * (CG * q + cg) + c] = acc[k][4 * q + c];
            }
          }
        }
      }
      // h is in shared memory now: the next tile's loads overlap the expert stage.
      fetchTile<H, NT>(next, a, tile + gridDim.x, numTiles, tid);
      __syncthreads();

      int pk[kTV3];
#pragma unroll
      for (int k = 0; k < kTV3; ++k) pk[k] = perm[k * SetsE + gE];
      if (pk[0] >= 0) {
        const int e = pk[0] >> 8;
        const float4* We4 = reinterpret_cast<const float4*>(w + L::We + e * F * H);
        const float4* be4 = reinterpret_cast<const float4*>(w + L::be + e * H);
        float y[kTV3][4 * QH];
#pragma unroll
        for (int q = 0; q < QH; ++q) {
          const float4 v = be4[CGE * q + cgE];
#pragma unroll
          for (int k = 0; k < kTV3; ++k) {
            y[k][4 * q] = v.x;
            y[k][4 * q + 1] = v.y;
            y[k][4 * q + 2] = v.z;
            y[k][4 * q + 3] = v.w;
          }
        }
        auto weStep = [&](int f, const float (&hk)[kTV3]) {
#pragma unroll
          for (int q = 0; q < QH; ++q) {
            const float4 r = We4[f * (H / 4) + CGE * q + cgE];
#pragma unroll
            for (int k = 0; k < kTV3; ++k) {
              y[k][4 * q] += hk[k] * r.x;
              y[k][4 * q + 1] += hk[k] * r.y;
              y[k][4 * q + 2] += hk[k] * r.z;
              y[k][4 * q + 3] += hk[k] * r.w;
            }
          }
        };
        if constexpr (V16) {
          for (int f4 = 0; f4 < F; f4 += 4) {
            float4 h4[kTV3];
#pragma unroll
            for (int k = 0; k < kTV3; ++k)
              h4[k] = *reinterpret_cast<const float4*>(R + (k * SetsE + gE) * S::hStride + f4);
            float hk[kTV3];
#pragma unroll
            for (int k = 0; k < kTV3; ++k) hk[k] = h4[k].x;
            weStep(f4, hk);
#pragma unroll
            for (int k = 0; k < kTV3; ++k) hk[k] = h4[k].y;
            weStep(f4 + 1, hk);
#pragma unroll
            for (int k = 0; k < kTV3; ++k) hk[k] = h4[k].z;
            weStep(f4 + 2, hk);
#pragma unroll
            for (int k = 0; k < kTV3; ++k) hk[k] = h4[k].w;
            weStep(f4 + 3, hk);
          }
        } else {
#pragma unroll 2
          for (int f = 0; f < F; ++f) {
            float hk[kTV3];
#pragma unroll
            for (int k = 0; k < kTV3; ++k) hk[k] = R[(k * SetsE + gE) * S::hStride + f];
            weStep(f, hk);
          }
        }
        // One branch per lane group (its tokens share the expert); tanhf only where the expert is Derivatives.
        if (e == 3) {
#pragma unroll
          for (int k = 0; k < kTV3; ++k)
#pragma unroll
            for (int j = 0; j < 4 * QH; ++j) y[k][j] = tanhf(y[k][j]);
        } else if (e == 1) {
#pragma unroll
          for (int k = 0; k < kTV3; ++k)
#pragma unroll
            for (int j = 0; j < 4 * QH; ++j) y[k][j] = 0.8f * y[k][j];
        } else {
#pragma unroll
          for (int k = 0; k < kTV3; ++k)
#pragma unroll
            for (int j = 0; j < 4 * QH; ++j) y[k][j] = fmaxf(y[k][j], 0.0f);
        }
#pragma unroll
        for (int k = 0; k < kTV3; ++k) {
          if (pk[k] >= 0) {
            float4* o = reinterpret_cast<float4*>(a.expert + std::size_t(base + (pk[k] & 255)) * H);
#pragma unroll
            for (int q = 0; q < QH; ++q)
              o[CGE * q + cgE] = make_float4(y[k][4 * q], y[k][4 * q + 1], y[k][4 * q + 2], y[k][4 * q + 3]);
          }
        }
      }
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

template <int H, int V, int CG, int NT, bool V16, int TK, int CGE>
void launchV4(const DeviceParams& p, const ForwardArgs& a, cudaStream_t stream) {
  using S = FwdSmemV4<H, V16>;
  const FwdLaunch& l = fwdLaunch<H, V>();
  MOE_CHECK(l.blocksFull > 0, "prepareForward was not called for this hidden size");
  const int tiles = (a.n + kTileV3 - 1) / kTileV3;
  const int blocks = std::min(tiles, a.expert ? l.blocksFull : l.blocksNoExpert);
  if (a.expert) forwardKernelV4<H, true, CG, NT, V16, TK, CGE><<<blocks, NT, S::bytes, stream>>>(p.w, p.invT, a);
  else forwardKernelV4<H, false, CG, NT, V16, TK, CGE><<<blocks, NT, S::bytesNoExpert, stream>>>(p.w, p.invT, a);
}

// Template arguments of versions 4-8: lanes per token group, threads, 16-byte x/h moves, tokens per group in the h
// stage, lanes per four-token group in the expert stage.
// (v5 was 4, 256, false, 4, 4; v6 4, 256, true, 4, 4; v7 4, 128, false, 8, 2.)
#define MOE_FWD_V4 2, 128, false, 4, 2
#define MOE_FWD_V8 4, 128, true, 8, 2

template <int H>
void prepare() {
  fwdLaunch<H, 2>() = occupancy(forwardKernelV2<H>, kThreadsV2, FwdSmemV2<H>::bytes, FwdSmemV2<H>::bytesNoExpert);
  prepareV4<H, 4, MOE_FWD_V4>();
  prepareV4<H, 8, MOE_FWD_V8>();
}

template <int H>
void launch(const DeviceParams& p, const ForwardArgs& a, int version, cudaStream_t stream) {
  if (version == 4) {
    launchV4<H, 4, MOE_FWD_V4>(p, a, stream);
  } else if (version == 8) {
    launchV4<H, 8, MOE_FWD_V8>(p, a, stream);
  } else {
    MOE_CHECK(version == 2, "forward kernel version must be 2, 4 or 8");
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

int forwardKernelVersion(int H, bool expert) {
  static const int forced = [] {
    const char* e = std::getenv("MOE_CUDA_FORWARD_KERNEL");
    const std::string v = e ? e : "";
    return v == "2" || v == "4" || v == "8" ? v[0] - '0' : 0;
  }();
  // The fastest of each case on an H100, 1e7 tokens (docs/performance.md): v8 with the expert output at both sizes;
  // without it v4 at H = 32 (v8 ties) and v2 at H = 16 (128 registers suffice, four blocks per SM).
  if (forced != 0) return forced;
  if (expert) return 8;
  return H == 32 ? 4 : 2;
}

void prepareForward(int H) {
  if (H == 16) prepare<16>();
  else prepare<32>();
}

void launchForward(int H, const DeviceParams& p, const ForwardArgs& a, cudaStream_t stream, int version) {
  MOE_CHECK(a.n >= 1, "forward needs at least one token");
  const int v = version == 0 ? forwardKernelVersion(H, a.expert != nullptr) : version;
  if (H == 16) launch<16>(p, a, v, stream);
  else launch<32>(p, a, v, stream);
}

}  // namespace moe::cuda
