// Forward kernel v9: the two matrix products of the router (h = x·W1 and the expert's h·We[a]) on the tensor cores
// with warp-level mma.sync, inputs rounded to TF32 (m16n8k8) or BF16 (m16n8k16), FP32 accumulation. Everything else
// (b1 and be added in FP32 as the accumulators' start, relu, h·Wc, the statistics, the four signals, logits, argmax,
// softmax, the expert activation) is FP32 and, past the per-lane partial sums, the stages every version shares
// (stages.cuh). Selected by MOE_CUDA_PRECISION=tf32|bf16 (forward.cu); fp32 keeps the FP32 versions 2, 4 and 8.
//
// Shape: persistent blocks of 4 warps; each block converts the weights once into shared memory, already in the
// register layout of the mma B operand (one 8-byte load per lane and mma, no bank conflicts), and each warp then walks
// on its own over tiles of 32 tokens (two 16-row mma tiles): no barrier after the weights are loaded.
//   x        each lane loads, per token row it holds in the A operand (rows g and g+8 of each 16-row tile, g = lane/4),
//            the H/4 consecutive columns t·H/4 .. t·H/4+H/4-1 (t = lane%4) as float4: the k index of the product
//            is permuted so that A's columns of a lane are contiguous in memory; W1's rows follow the same permutation.
//   h        the accumulators of x·W1 (started at b1) are h in the C layout: a lane holds columns 8j+2t, 8j+2t+1 of
//            rows g and g+8 for every 8-column block j. relu in place; h·Wc is summed over the lane's columns and the
//            four lanes of a row add their partial sums (shuffles); the statistics of x likewise.
//   gate     each lane then owns one of the 4 rows its lane quad holds (stages.cuh gateTokens: signals, logits,
//            argmax, softmax, stores), and the argmax goes back to the quad by shuffles.
//   expert   the C layout of h is the A layout of the second product once its k index is permuted the same way (TF32:
//            k slot t ↔ column 2t, slot t+4 ↔ 2t+1 of an 8-column block; BF16: the C pairs are exactly A's pairs), so
//            h never leaves the registers. Tokens of one tile pick different experts: the warp runs the product for
//            each expert that one of its 32 tokens picked (a warp vote) and stores the rows that picked it.
//            Consecutive tokens of one ticker mostly share an expert, which skips the other products; random inputs
//            run all four.
// Measured (H200, 2026-12-04, kernel only, 1e7 tokens with the expert output): H = 32 tf32 4.82 G tokens/s, bf16
// 6.78 G against v8's 3.08 G; H = 16 9.31 and 10.18 G against 8.16 G. Bound by latency and instruction count (16
// warps per SM at 128 registers; the shared FP32 stages are most of the instructions), not by the tensor cores or
// DRAM. Neither precision meets the accuracy contract with the trained H = 16 model (tf32 max |Δp| 4.8e-3 on feature
// tokens), so fp32 stays the default: docs/performance.md, "Tensor-core forward".
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>

#include "stages.cuh"

namespace moe::cuda {

namespace {

constexpr int kThreadsTC = 128;          // 4 warps per block, each on its own tiles
constexpr int kWarpsTC = kThreadsTC / 32;
constexpr int kMT = 2;                   // 16-row mma tiles per warp tile
constexpr int kTileTC = 16 * kMT;        // tokens per warp tile

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

// d += a·b for one 16×8 tile: m16n8k16 BF16 or m16n8k8 TF32, FP32 accumulators.
template <bool BF16>
__device__ __forceinline__ void mma(float (&d)[4], const std::uint32_t (&a)[4], uint2 b) {
  if constexpr (BF16) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b.x), "r"(b.y));
  } else {
    asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b.x), "r"(b.y));
  }
}

// Sizes and shared memory of one instance. K: k of one mma. The parameters from b1 up to We (b1, Wc, bc, the signal
// weights, the gates) stay FP32 at their layout offsets relative to L::b1; be follows; then the B operands of W1
// (KS1 k-steps × NJ1 column blocks × 32 lanes) and of the four We slices (4 × KS2 × NT2 × 32), one uint2 per lane.
template <int H_, bool BF16_>
struct CfgTC {
  static constexpr int H = H_, F = 2 * H_;
  static constexpr bool BF16 = BF16_;
  static constexpr int K = BF16 ? 16 : 8;
  static constexpr int KS1 = H / K, NJ1 = F / 8;  // x·W1: k-steps over H, 8-column blocks of h
  static constexpr int KS2 = F / K, NT2 = H / 8;  // h·We: k-steps over F, 8-column blocks of y
  static constexpr int CPL = H / 4;               // columns of x per lane and row
  static constexpr int tailFloats = Lay<H>::We - Lay<H>::b1;
  static constexpr int beFloats = kDomains * H;
  static constexpr int w1Frags = KS1 * NJ1 * 32, weFrags = kDomains * KS2 * NT2 * 32;
  static constexpr std::size_t bytes = std::size_t(tailFloats + beFloats) * 4 + std::size_t(w1Frags + weFrags) * 8;
  static_assert(tailFloats % 4 == 0 && beFloats % 4 == 0, "16-byte alignment of the shared-memory regions");
  static_assert(KS1 >= 1 && (BF16 ? NJ1 % 2 == 0 : true), "BF16 pairs two 8-column blocks of h per k-step");
  static_assert(CPL % 4 == 0, "x columns per lane move as float4");
};

// Fills shared memory: the FP32 parameters past W1 (except We) and the B operands in their lane order. Logical k
// index of the B operand of W1 (rows of W1, columns of x): TF32 slot t ↔ row t·CPL + 2s, slot t+4 ↔ t·CPL + 2s + 1;
// BF16 slots 2t, 2t+1, 2t+8, 2t+9 ↔ rows t·CPL + 4s + 0..3. Of We (rows f of We[e], columns of h): TF32 slot t ↔
// f = 8s + 2t, slot t+4 ↔ 8s + 2t + 1; BF16 slots 2t, 2t+1 ↔ 16s + 2t, +1 and 2t+8, 2t+9 ↔ 16s + 8 + 2t, +1.
template <class C>
__device__ __forceinline__ void loadWeightsTC(float* tail, float* be, uint2* w1f, uint2* wef,
                                              const float* __restrict__ wG, int tid) {
  using L = Lay<C::H>;
  constexpr int H = C::H, F = C::F;
  for (int i = tid; i < C::tailFloats / 4; i += kThreadsTC)
    reinterpret_cast<float4*>(tail)[i] = reinterpret_cast<const float4*>(wG + L::b1)[i];
  for (int i = tid; i < C::beFloats / 4; i += kThreadsTC)
    reinterpret_cast<float4*>(be)[i] = reinterpret_cast<const float4*>(wG + L::be)[i];
  const float* W1 = wG + L::W1;
  for (int i = tid; i < C::w1Frags; i += kThreadsTC) {
    const int lane = i % 32, j = (i / 32) % C::NJ1, s = i / 32 / C::NJ1, g = lane >> 2, t = lane & 3;
    const int n = 8 * j + g;
    uint2 b;
    if constexpr (C::BF16) {
      const int r = t * C::CPL + 4 * s;
      b.x = packBf16(W1[r * F + n], W1[(r + 1) * F + n]);
      b.y = packBf16(W1[(r + 2) * F + n], W1[(r + 3) * F + n]);
    } else {
      const int r = t * C::CPL + 2 * s;
      b.x = toTf32(W1[r * F + n]);
      b.y = toTf32(W1[(r + 1) * F + n]);
    }
    w1f[i] = b;
  }
  for (int i = tid; i < C::weFrags; i += kThreadsTC) {
    const int lane = i % 32, tn = (i / 32) % C::NT2, s = (i / 32 / C::NT2) % C::KS2, e = i / 32 / C::NT2 / C::KS2;
    const int g = lane >> 2, t = lane & 3, n = 8 * tn + g;
    const float* We = wG + L::We + e * F * H;
    uint2 b;
    if constexpr (C::BF16) {
      const int f = 16 * s + 2 * t;
      b.x = packBf16(We[f * H + n], We[(f + 1) * H + n]);
      b.y = packBf16(We[(f + 8) * H + n], We[(f + 9) * H + n]);
    } else {
      const int f = 8 * s + 2 * t;
      b.x = toTf32(We[f * H + n]);
      b.y = toTf32(We[(f + 1) * H + n]);
    }
    wef[i] = b;
  }
}

__device__ __forceinline__ float quadSum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  return v;
}

// Four blocks per SM: at most 128 registers, 16 warps per SM (without the bound H = 32 TF32 takes 131 registers and
// three blocks; with it, 32 bytes of spills).
template <int H, bool BF16>
__global__ void __launch_bounds__(kThreadsTC, 4)
    forwardKernelTC(const float* __restrict__ wG, float invT, ForwardArgs a) {
  using C = CfgTC<H, BF16>;
  using L = Lay<H>;
  constexpr int CPL = C::CPL, KS1 = C::KS1, NJ1 = C::NJ1, KS2 = C::KS2, NT2 = C::NT2;
  constexpr int EP = 2 * kMT / 4;  // rows whose epilogue a lane computes (a quad holds 2·kMT rows)
  static_assert(EP >= 1 && 2 * kMT == 4 * EP, "each lane of a quad owns the same number of rows");
  extern __shared__ float4 smem4[];
  float* tail = reinterpret_cast<float*>(smem4);
  float* beS = tail + C::tailFloats;
  uint2* w1f = reinterpret_cast<uint2*>(beS + C::beFloats);
  uint2* wef = w1f + C::w1Frags;
  // The stage functions index the parameters by their layout offsets: w[L::Wv] etc. fall inside `tail`.
  const float* w = tail - L::b1;
  const int tid = threadIdx.x, lane = tid & 31, g = lane >> 2, tq = lane & 3;

  loadWeightsTC<C>(tail, beS, w1f, wef, wG, tid);
  __syncthreads();
  const float gate[4] = {w[L::gates], w[L::gates + 1], w[L::gates + 2], w[L::gates + 3]};
  const bool wantExpert = a.expert != nullptr;
  const int numTiles = (a.n + kTileTC - 1) / kTileTC;

  for (int tile = blockIdx.x * kWarpsTC + (tid >> 5); tile < numTiles; tile += gridDim.x * kWarpsTC) {
    const int base = tile * kTileTC;
    const int m = min(kTileTC, a.n - base);

    // ---- x: rows 16·mt + g + 8·hi, columns tq·CPL .. +CPL-1 (zeros past m) ----
    float xr[kMT][2][CPL];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int hi = 0; hi < 2; ++hi) {
        const int r = 16 * mt + g + 8 * hi;
        const float4* src = reinterpret_cast<const float4*>(a.x + std::size_t(base + r) * H + tq * CPL);
#pragma unroll
        for (int q = 0; q < CPL / 4; ++q) {
          const float4 v = r < m ? __ldg(src + q) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
          xr[mt][hi][4 * q] = v.x;
          xr[mt][hi][4 * q + 1] = v.y;
          xr[mt][hi][4 * q + 2] = v.z;
          xr[mt][hi][4 * q + 3] = v.w;
        }
      }

    // ---- statistics of x per row: the lane's columns, then the quad's four lanes ----
    float st[kMT][2][3];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int hi = 0; hi < 2; ++hi) {
        float s = 0, sa = 0;
#pragma unroll
        for (int c = 0; c < CPL; ++c) {
          s += xr[mt][hi][c];
          sa += fabsf(xr[mt][hi][c]);
        }
        const float mean = quadSum(s) / H;
        float v = 0;
#pragma unroll
        for (int c = 0; c < CPL; ++c) v += (xr[mt][hi][c] - mean) * (xr[mt][hi][c] - mean);
        st[mt][hi][0] = mean;
        st[mt][hi][1] = quadSum(v) / H;
        st[mt][hi][2] = quadSum(sa) / H;
      }

    // ---- h = relu(b1 + x·W1) on the tensor cores ----
    float acc[kMT][NJ1][4];
#pragma unroll
    for (int j = 0; j < NJ1; ++j) {
      const float2 b1 = *reinterpret_cast<const float2*>(w + L::b1 + 8 * j + 2 * tq);
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        acc[mt][j][0] = acc[mt][j][2] = b1.x;
        acc[mt][j][1] = acc[mt][j][3] = b1.y;
      }
    }
#pragma unroll
    for (int s = 0; s < KS1; ++s) {
      std::uint32_t af[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        if constexpr (BF16) {
          af[mt][0] = packBf16(xr[mt][0][4 * s], xr[mt][0][4 * s + 1]);
          af[mt][1] = packBf16(xr[mt][1][4 * s], xr[mt][1][4 * s + 1]);
          af[mt][2] = packBf16(xr[mt][0][4 * s + 2], xr[mt][0][4 * s + 3]);
          af[mt][3] = packBf16(xr[mt][1][4 * s + 2], xr[mt][1][4 * s + 3]);
        } else {
          af[mt][0] = toTf32(xr[mt][0][2 * s]);
          af[mt][1] = toTf32(xr[mt][1][2 * s]);
          af[mt][2] = toTf32(xr[mt][0][2 * s + 1]);
          af[mt][3] = toTf32(xr[mt][1][2 * s + 1]);
        }
      }
#pragma unroll
      for (int j = 0; j < NJ1; ++j) {
        const uint2 b = w1f[(s * NJ1 + j) * 32 + lane];
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) mma<BF16>(acc[mt][j], af[mt], b);
      }
    }

    // ---- relu, and h·Wc over the lane's columns 8j + 2tq + c, then over the quad ----
    float bp[kMT][2][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int hi = 0; hi < 2; ++hi)
#pragma unroll
        for (int d = 0; d < 4; ++d) bp[mt][hi][d] = 0.0f;
#pragma unroll
    for (int j = 0; j < NJ1; ++j)
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const float4 wc = reinterpret_cast<const float4*>(w + L::Wc)[8 * j + 2 * tq + c];
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
          for (int hi = 0; hi < 2; ++hi) {
            const float hv = fmaxf(acc[mt][j][2 * hi + c], 0.0f);
            acc[mt][j][2 * hi + c] = hv;
            bp[mt][hi][0] += hv * wc.x;
            bp[mt][hi][1] += hv * wc.y;
            bp[mt][hi][2] += hv * wc.z;
            bp[mt][hi][3] += hv * wc.w;
          }
      }
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int hi = 0; hi < 2; ++hi)
#pragma unroll
        for (int d = 0; d < 4; ++d) bp[mt][hi][d] = quadSum(bp[mt][hi][d]);

    // ---- the lane's rows: idx = 4·kk + tq among the quad's rows (mt, hi) = (idx / 2, idx % 2) ----
    float b[EP][4], sk[EP][3], vol[EP], risk[EP];
    int row[EP], am[EP];
#pragma unroll
    for (int kk = 0; kk < EP; ++kk) {
      const int idx = 4 * kk + tq;
      row[kk] = 16 * (idx >> 1) + g + 8 * (idx & 1);
#pragma unroll
      for (int d = 0; d < 4; ++d) b[kk][d] = w[L::bc + d];
#pragma unroll
      for (int k = 0; k < 3; ++k) sk[kk][k] = 0.0f;
#pragma unroll
      for (int q = 0; q < 4; ++q) {  // compile-time indices only: selects, no local memory
        if (tq != q) continue;
        const int mt = (4 * kk + q) >> 1, hi = (4 * kk + q) & 1;
#pragma unroll
        for (int d = 0; d < 4; ++d) b[kk][d] += bp[mt][hi][d];
#pragma unroll
        for (int k = 0; k < 3; ++k) sk[kk][k] = st[mt][hi][k];
      }
      const bool ok = row[kk] < m;
      vol[kk] = ok ? a.vol[base + row[kk]] : 0.0f;
      risk[kk] = ok ? a.risk[base + row[kk]] : 0.0f;
    }
    gateTokens<H, EP>(w, gate, invT, b, sk, vol, risk, row, m, base, a, am);
    if (!wantExpert) continue;

    // ---- expert of every row the lane holds in the C layout (from the lane of its quad that computed it) ----
    int amR[kMT][2];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int hi = 0; hi < 2; ++hi) {
        const int idx = 2 * mt + hi;
        const int e = __shfl_sync(0xffffffffu, am[idx >> 2], (lane & ~3) | (idx & 3));
        amR[mt][hi] = 16 * mt + g + 8 * hi < m ? e : -1;
      }

    // h as the A operand of h·We (see loadWeightsTC for the k order).
    std::uint32_t ha[kMT][KS2][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int s = 0; s < KS2; ++s) {
        if constexpr (BF16) {
          ha[mt][s][0] = packBf16(acc[mt][2 * s][0], acc[mt][2 * s][1]);
          ha[mt][s][1] = packBf16(acc[mt][2 * s][2], acc[mt][2 * s][3]);
          ha[mt][s][2] = packBf16(acc[mt][2 * s + 1][0], acc[mt][2 * s + 1][1]);
          ha[mt][s][3] = packBf16(acc[mt][2 * s + 1][2], acc[mt][2 * s + 1][3]);
        } else {
          ha[mt][s][0] = toTf32(acc[mt][s][0]);
          ha[mt][s][1] = toTf32(acc[mt][s][2]);
          ha[mt][s][2] = toTf32(acc[mt][s][1]);
          ha[mt][s][3] = toTf32(acc[mt][s][3]);
        }
      }

#pragma unroll 1
    for (int e = 0; e < kDomains; ++e) {
      bool mine = false;
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) mine = mine || amR[mt][0] == e || amR[mt][1] == e;
      if (!__any_sync(0xffffffffu, mine)) continue;
      float y[kMT][NT2][4];
#pragma unroll
      for (int tn = 0; tn < NT2; ++tn) {
        const float2 bv = *reinterpret_cast<const float2*>(beS + e * H + 8 * tn + 2 * tq);
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          y[mt][tn][0] = y[mt][tn][2] = bv.x;
          y[mt][tn][1] = y[mt][tn][3] = bv.y;
        }
      }
      const uint2* we = wef + e * KS2 * NT2 * 32 + lane;
#pragma unroll
      for (int s = 0; s < KS2; ++s)
#pragma unroll
        for (int tn = 0; tn < NT2; ++tn) {
          const uint2 bw = we[(s * NT2 + tn) * 32];
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) mma<BF16>(y[mt][tn], ha[mt][s], bw);
        }
      // Activation and store of the rows that picked e: columns 8tn + 2tq, +1 of rows g and g+8.
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int hi = 0; hi < 2; ++hi) {
          if (amR[mt][hi] != e) continue;
          float* o = a.expert + std::size_t(base + 16 * mt + g + 8 * hi) * H + 2 * tq;
#pragma unroll
          for (int tn = 0; tn < NT2; ++tn) {
            float v0 = y[mt][tn][2 * hi], v1 = y[mt][tn][2 * hi + 1];
            if (e == 3) {
              v0 = tanhf(v0);
              v1 = tanhf(v1);
            } else if (e == 1) {
              v0 *= 0.8f;
              v1 *= 0.8f;
            } else {
              v0 = fmaxf(v0, 0.0f);
              v1 = fmaxf(v1, 0.0f);
            }
            *reinterpret_cast<float2*>(o + 8 * tn) = make_float2(v0, v1);
          }
        }
    }
  }
}

struct TcLaunch {
  int blocks = 0;
};

template <int H, bool BF16>
TcLaunch& tcLaunch() {
  static TcLaunch l;
  return l;
}

template <int H, bool BF16>
void prepareTC() {
  using C = CfgTC<H, BF16>;
  auto k = forwardKernelTC<H, BF16>;
  MOE_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(C::bytes)));
  int dev = 0, sms = 0, per = 0;
  MOE_CUDA_CHECK(cudaGetDevice(&dev));
  MOE_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  MOE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, k, kThreadsTC, C::bytes));
  MOE_CHECK(per >= 1, "forward kernel 9 does not fit on this device (shared memory or registers)");
  tcLaunch<H, BF16>().blocks = per * sms;
}

template <int H, bool BF16>
void launchTC(const DeviceParams& p, const ForwardArgs& a, cudaStream_t stream) {
  using C = CfgTC<H, BF16>;
  const TcLaunch& l = tcLaunch<H, BF16>();
  MOE_CHECK(l.blocks > 0, "prepareForward was not called for this hidden size");
  const int tiles = (a.n + kTileTC - 1) / kTileTC;
  const int blocks = std::min((tiles + kWarpsTC - 1) / kWarpsTC, l.blocks);
  forwardKernelTC<H, BF16><<<blocks, kThreadsTC, C::bytes, stream>>>(p.w, p.invT, a);
}

}  // namespace

void prepareForwardTC(int H) {
  if (H == 16) {
    prepareTC<16, false>();
    prepareTC<16, true>();
  } else {
    prepareTC<32, false>();
    prepareTC<32, true>();
  }
}

void launchForwardTC(int H, Precision precision, const DeviceParams& p, const ForwardArgs& a, cudaStream_t stream) {
  MOE_CHECK(precision == Precision::TF32 || precision == Precision::BF16,
            "forward kernel 9 computes its products in tf32 or bf16");
  const bool bf16 = precision == Precision::BF16;
  if (H == 16) bf16 ? launchTC<16, true>(p, a, stream) : launchTC<16, false>(p, a, stream);
  else bf16 ? launchTC<32, true>(p, a, stream) : launchTC<32, false>(p, a, stream);
  MOE_LAUNCH_CHECK();
}

}  // namespace moe::cuda
