// Fused forward: one launch computes h, stats, the four signals, softmax, argmax and the activated expert output.
// Thread per token, 128-token tiles, persistent blocks (weights are copied into shared memory once per block).
//
// Why this shape: the math is about 4.7k FMAs per token at H = 32 (W1 and We dominate) against 281 bytes moved, so
// on an H100 the arithmetic floor (~7 G tokens/s at the FP32 rate) is lower than the memory floor (~10 G tokens/s):
// the kernel must keep the FMA units fed. Each thread holds its h[F] in registers and reads weights as 16-byte
// shared-memory broadcasts (every lane reads the same address), 4 FMAs per load. The expert stage would diverge
// (each token picks one of four weight slices), so tokens of a tile are bucketed by expert first: a warp then
// reads one slice, again as broadcasts. Inputs and expert outputs go through padded shared tiles so that global
// loads and stores are coalesced 16-byte accesses.
#include "common.cuh"

namespace moe::cuda {

namespace {

constexpr int kThreads = 128;  // = tokens per tile

template <int H>
struct FwdSmem {
  static constexpr int F = 2 * H;
  static constexpr int wFloats = (Lay<H>::size + 3) / 4 * 4;
  static constexpr int xStride = H + 1;  // odd strides: a warp reading one column of 32 rows hits 32 banks
  static constexpr int hStride = F + 1;
  static constexpr int xFloats = (kThreads * xStride + 3) / 4 * 4;
  static constexpr int intFloats = kThreads + 8;  // perm[128], counts[4], offsets[4]
  static constexpr int hFloats = kThreads * hStride;
  static constexpr std::size_t bytesNoExpert = std::size_t(wFloats + xFloats + intFloats) * 4;
  static constexpr std::size_t bytes = bytesNoExpert + std::size_t(hFloats) * 4;
};

template <int H>
__global__ void __launch_bounds__(kThreads) forwardKernel(const float* __restrict__ wG, float invT, ForwardArgs a) {
  using L = Lay<H>;
  using S = FwdSmem<H>;
  constexpr int F = L::F;
  extern __shared__ float4 smem4[];
  float* w = reinterpret_cast<float*>(smem4);
  float* xS = w + S::wFloats;  // x tile in phase 1, expert-output tile in phase 2
  int* perm = reinterpret_cast<int*>(xS + S::xFloats);
  int* cnt = perm + kThreads;
  float* hS = reinterpret_cast<float*>(perm + S::intFloats);
  const int tid = threadIdx.x;

  for (int i = tid; i < L::size / 4; i += kThreads)
    reinterpret_cast<float4*>(w)[i] = reinterpret_cast<const float4*>(wG)[i];
  __syncthreads();
  const float g0 = w[L::gates], g1 = w[L::gates + 1], g2 = w[L::gates + 2], g3 = w[L::gates + 3];
  const bool wantExpert = a.expert != nullptr;

  const int numTiles = (a.n + kThreads - 1) / kThreads;
  for (int tile = blockIdx.x; tile < numTiles; tile += gridDim.x) {
    const int base = tile * kThreads;
    const int m = min(kThreads, a.n - base);
    const float4* x4 = reinterpret_cast<const float4*>(a.x + std::size_t(base) * H);
    for (int q = tid; q < m * H / 4; q += kThreads) {
      const float4 v = x4[q];
      float* dst = xS + (q * 4 / H) * S::xStride + (q * 4) % H;
      dst[0] = v.x;
      dst[1] = v.y;
      dst[2] = v.z;
      dst[3] = v.w;
    }
    if (tid < 8) cnt[tid] = 0;
    __syncthreads();

    int am = 0, pos = 0;
    if (tid < m) {
      const int tok = base + tid;
      const float* xr = xS + tid * S::xStride;
      float h[F];
#pragma unroll
      for (int f = 0; f < F; ++f) h[f] = w[L::b1 + f];
#pragma unroll 4
      for (int i = 0; i < H; ++i) {
        const float xi = xr[i];
        const float4* row = reinterpret_cast<const float4*>(w + L::W1 + i * F);
#pragma unroll
        for (int q = 0; q < F / 4; ++q) {
          const float4 r = row[q];
          h[4 * q] += xi * r.x;
          h[4 * q + 1] += xi * r.y;
          h[4 * q + 2] += xi * r.z;
          h[4 * q + 3] += xi * r.w;
        }
      }
#pragma unroll
      for (int f = 0; f < F; ++f) h[f] = fmaxf(h[f], 0.0f);

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

      float4 bs = *reinterpret_cast<const float4*>(w + L::bc);
      float b[4] = {bs.x, bs.y, bs.z, bs.w};
#pragma unroll
      for (int f = 0; f < F; ++f) {
        const float4 c = reinterpret_cast<const float4*>(w + L::Wc)[f];
        b[0] += h[f] * c.x;
        b[1] += h[f] * c.y;
        b[2] += h[f] * c.z;
        b[3] += h[f] * c.w;
      }
      const float vol = a.vol[tok], risk = a.risk[tok];
      float vs[4] = {0, 0, 0, 0}, rs[4] = {0, 0, 0, 0}, ss[4] = {0, 0, 0, 0};
#pragma unroll
      for (int j = 0; j < kVolUnits; ++j) {
        const float4 wv = reinterpret_cast<const float4*>(w + L::Wv)[j];
        const float4 bv = reinterpret_cast<const float4*>(w + L::Bv)[j];
        const float4 wr = reinterpret_cast<const float4*>(w + L::Wr)[j];
        const float4 br = reinterpret_cast<const float4*>(w + L::Br)[j];
        vs[0] += fmaxf(vol * wv.x + bv.x, 0.0f);
        vs[1] += fmaxf(vol * wv.y + bv.y, 0.0f);
        vs[2] += fmaxf(vol * wv.z + bv.z, 0.0f);
        vs[3] += fmaxf(vol * wv.w + bv.w, 0.0f);
        rs[0] += fmaxf(risk * wr.x + br.x, 0.0f);
        rs[1] += fmaxf(risk * wr.y + br.y, 0.0f);
        rs[2] += fmaxf(risk * wr.z + br.z, 0.0f);
        rs[3] += fmaxf(risk * wr.w + br.w, 0.0f);
      }
#pragma unroll
      for (int j = 0; j < kStatUnits; ++j) {
        float4 acc = reinterpret_cast<const float4*>(w + L::Bs)[j];
        const float st[3] = {mean, var, absMean};
#pragma unroll
        for (int k = 0; k < kNumStats; ++k) {
          const float4 ws = reinterpret_cast<const float4*>(w + L::Ws)[k * kStatUnits + j];
          acc.x += st[k] * ws.x;
          acc.y += st[k] * ws.y;
          acc.z += st[k] * ws.z;
          acc.w += st[k] * ws.w;
        }
        ss[0] += fmaxf(acc.x, 0.0f);
        ss[1] += fmaxf(acc.y, 0.0f);
        ss[2] += fmaxf(acc.z, 0.0f);
        ss[3] += fmaxf(acc.w, 0.0f);
      }
      float z[4];
#pragma unroll
      for (int d = 0; d < 4; ++d) {
        const float s = g0 * b[d] + g1 * (vs[d] / kVolUnits) + g2 * (rs[d] / kRiskUnits) + g3 * (ss[d] / kStatUnits);
        z[d] = fminf(fmaxf(s, -kLogitClip), kLogitClip) * invT;
      }
      float zm = z[0];
      if (z[1] > zm) { zm = z[1]; am = 1; }
      if (z[2] > zm) { zm = z[2]; am = 2; }
      if (z[3] > zm) { zm = z[3]; am = 3; }
      float e[4], sum = 0;
#pragma unroll
      for (int d = 0; d < 4; ++d) {
        e[d] = expf(z[d] - zm);
        sum += e[d];
      }
      reinterpret_cast<float4*>(a.probs)[tok] = make_float4(e[0] / sum, e[1] / sum, e[2] / sum, e[3] / sum);
      a.assign[tok] = std::uint8_t(am);
      if (wantExpert) {
        float* hr = hS + tid * S::hStride;
#pragma unroll
        for (int f = 0; f < F; ++f) hr[f] = h[f];
        pos = atomicAdd(&cnt[am], 1);
      }
    }
    if (!wantExpert) {
      __syncthreads();  // the next tile overwrites xS
      continue;
    }
    __syncthreads();
    if (tid == 0) {
      cnt[4] = 0;
      cnt[5] = cnt[0];
      cnt[6] = cnt[0] + cnt[1];
      cnt[7] = cnt[6] + cnt[2];
    }
    __syncthreads();
    if (tid < m) perm[cnt[4 + am] + pos] = tid | (am << 8);
    __syncthreads();

    if (tid < m) {
      const int pk = perm[tid];
      const int t = pk & 255, ea = pk >> 8;
      const float* hr = hS + t * S::hStride;
      const float4* We4 = reinterpret_cast<const float4*>(w + L::We + ea * F * H);
      const float4* be4 = reinterpret_cast<const float4*>(w + L::be + ea * H);
      float y[H];
#pragma unroll
      for (int q = 0; q < H / 4; ++q) {
        const float4 v = be4[q];
        y[4 * q] = v.x;
        y[4 * q + 1] = v.y;
        y[4 * q + 2] = v.z;
        y[4 * q + 3] = v.w;
      }
#pragma unroll 4
      for (int f = 0; f < F; ++f) {
        const float hf = hr[f];
#pragma unroll
        for (int q = 0; q < H / 4; ++q) {
          const float4 r = We4[f * (H / 4) + q];
          y[4 * q] += hf * r.x;
          y[4 * q + 1] += hf * r.y;
          y[4 * q + 2] += hf * r.z;
          y[4 * q + 3] += hf * r.w;
        }
      }
      float* o = xS + t * S::xStride;
#pragma unroll
      for (int k = 0; k < H; ++k) o[k] = ea == 3 ? tanhf(y[k]) : ea == 1 ? 0.8f * y[k] : fmaxf(y[k], 0.0f);
    }
    __syncthreads();
    float4* eo = reinterpret_cast<float4*>(a.expert + std::size_t(base) * H);
    for (int q = tid; q < m * H / 4; q += kThreads) {
      const float* src = xS + (q * 4 / H) * S::xStride + (q * 4) % H;
      eo[q] = make_float4(src[0], src[1], src[2], src[3]);
    }
    __syncthreads();
  }
}

struct FwdLaunch {
  int blocksFull = 0, blocksNoExpert = 0;
};

template <int H>
FwdLaunch& fwdLaunch() {
  static FwdLaunch l;
  return l;
}

template <int H>
void prepare() {
  using S = FwdSmem<H>;
  MOE_CUDA_CHECK(cudaFuncSetAttribute(forwardKernel<H>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(S::bytes)));
  int dev = 0, sms = 0, full = 0, noExpert = 0;
  MOE_CUDA_CHECK(cudaGetDevice(&dev));
  MOE_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  MOE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&full, forwardKernel<H>, kThreads, S::bytes));
  MOE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&noExpert, forwardKernel<H>, kThreads, S::bytesNoExpert));
  MOE_CHECK(full >= 1, "forward kernel does not fit on this device (shared memory or registers)");
  fwdLaunch<H>() = FwdLaunch{full * sms, noExpert * sms};
}

template <int H>
void launch(const DeviceParams& p, const ForwardArgs& a, cudaStream_t stream) {
  using S = FwdSmem<H>;
  const FwdLaunch& l = fwdLaunch<H>();
  MOE_CHECK(l.blocksFull > 0, "prepareForward was not called for this hidden size");
  const int tiles = (a.n + kThreads - 1) / kThreads;
  const int blocks = std::min(tiles, a.expert ? l.blocksFull : l.blocksNoExpert);
  forwardKernel<H><<<blocks, kThreads, a.expert ? S::bytes : S::bytesNoExpert, stream>>>(p.w, p.invT, a);
  MOE_LAUNCH_CHECK();
}

}  // namespace

void prepareForward(int H) {
  if (H == 16) prepare<16>();
  else prepare<32>();
}

void launchForward(int H, const DeviceParams& p, const ForwardArgs& a, cudaStream_t stream) {
  MOE_CHECK(a.n >= 1, "forward needs at least one token");
  if (H == 16) launch<16>(p, a, stream);
  else launch<32>(p, a, stream);
}

}  // namespace moe::cuda
