// Loss and gradient on the GPU: the same per-token math as src/cpu/lossgrad.inl, one warp per token.
//
// Lanes split each token's vectors (h and ∂h by column f, the expert output by k, the 32 vol/risk units and the
// 48 stats units by (j, d)), so every gradient entry a token touches is updated by one lane with no atomics. Each
// warp sums its tokens into a private float accumulator in shared memory and flushes it every 64 tokens into its
// own row of double partial sums (the CPU backends flush float blocks into double the same way); a second kernel
// adds the rows in a fixed order, so the result does not depend on scheduling (deterministic on a given device).
#include "common.cuh"

namespace moe::cuda {

namespace {

constexpr int kWarps = 2;  // warps per block; the H = 32 accumulator is 44 KB per warp
constexpr int kFlush = 64;
constexpr int kMinTokensPerRow = 16;

template <int H>
struct GradSmem {
  static constexpr int P = Lay<H>::size;
  static constexpr int perWarp = (P + 2 * H + 2 * H + 2 * H + 3) / 4 * 4;  // gacc[P], x[H], h[F], dy[H]
  static constexpr std::size_t bytes = std::size_t(kWarps) * perWarp * 4;
};

__device__ __forceinline__ float warpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over lanes with the same (lane & 3): the 4 domains of the vol / risk / stats units.
__device__ __forceinline__ float domainSum(float v) {
#pragma unroll
  for (int o = 16; o >= 4; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float pick4(const float (&v)[4], int i) {
  return i == 0 ? v[0] : i == 1 ? v[1] : i == 2 ? v[2] : v[3];
}

template <int H>
__global__ void __launch_bounds__(kWarps * 32) lossGradKernel(const float* __restrict__ w, float invT, LossArgs a,
                                                              double* __restrict__ partial) {
  using L = Lay<H>;
  constexpr int F = L::F, P = L::size, ROW = P + 3, NC = F / 32, PARTS = 32 / H;
  constexpr float clip = kLogitClip;
  extern __shared__ float4 smem4[];
  float* gacc = reinterpret_cast<float*>(smem4) + (threadIdx.x / 32) * GradSmem<H>::perWarp;
  float* xs = gacc + P;
  float* hs = xs + H;
  float* dys = hs + F;
  const int lane = threadIdx.x & 31;
  const int gw = blockIdx.x * kWarps + threadIdx.x / 32, nw = gridDim.x * kWarps;
  double* row = partial + std::size_t(gw) * ROW;
  for (int e = lane; e < P; e += 32) gacc[e] = 0.0f;
  const float g0 = w[L::gates], g1 = w[L::gates + 1], g2 = w[L::gates + 2], g3 = w[L::gates + 3];
  const float eps = a.labelSmoothing, lam = a.reconWeight;
  const int k = lane % H, part = lane / H, dl = lane & 3;
  double ceSum = 0, recSum = 0, lossSum = 0;
  int since = 0;
  __syncwarp();

  for (int t = gw; t < a.n; t += nw) {
    if (lane < H) xs[lane] = a.x[std::size_t(t) * H + lane];
    __syncwarp();
    // ---- forward, keeping the intermediates ----
    float pre[NC], h[NC];
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      const int f = lane + 32 * c;
      float acc = w[L::b1 + f];
#pragma unroll 8
      for (int i = 0; i < H; ++i) acc += xs[i] * w[L::W1 + i * F + f];
      pre[c] = acc;
      h[c] = acc > 0 ? acc : 0.0f;
      hs[f] = h[c];
    }
    float mean = 0, absMean = 0, var = 0;
#pragma unroll
    for (int i = 0; i < H; ++i) {
      mean += xs[i];
      absMean += fabsf(xs[i]);
    }
    mean /= H;
    absMean /= H;
#pragma unroll
    for (int i = 0; i < H; ++i) var += (xs[i] - mean) * (xs[i] - mean);
    var /= H;
    const float stats[3] = {mean, var, absMean};

    float base[4];
#pragma unroll
    for (int d = 0; d < 4; ++d) {
      float pb = 0;
#pragma unroll
      for (int c = 0; c < NC; ++c) pb += h[c] * w[L::Wc + (lane + 32 * c) * 4 + d];
      base[d] = w[L::bc + d] + warpSum(pb);
    }
    const float vol = a.vol[t], risk = a.risk[t];
    const float vp = vol * w[L::Wv + lane] + w[L::Bv + lane];
    const float rp = risk * w[L::Wr + lane] + w[L::Br + lane];
    float sp0 = w[L::Bs + lane], sp1 = 0;
#pragma unroll
    for (int s = 0; s < kNumStats; ++s) sp0 += stats[s] * w[L::Ws + s * kStatUnits * 4 + lane];
    if (lane < 16) {
      sp1 = w[L::Bs + 32 + lane];
#pragma unroll
      for (int s = 0; s < kNumStats; ++s) sp1 += stats[s] * w[L::Ws + s * kStatUnits * 4 + 32 + lane];
    }
    const float vsum = domainSum(vp > 0 ? vp : 0.0f);
    const float rsum = domainSum(rp > 0 ? rp : 0.0f);
    const float ssum = domainSum((sp0 > 0 ? sp0 : 0.0f) + (lane < 16 && sp1 > 0 ? sp1 : 0.0f));
    float volS[4], riskS[4], statS[4], s[4], z[4];
#pragma unroll
    for (int d = 0; d < 4; ++d) {
      volS[d] = __shfl_sync(0xffffffffu, vsum, d) / kVolUnits;
      riskS[d] = __shfl_sync(0xffffffffu, rsum, d) / kRiskUnits;
      statS[d] = __shfl_sync(0xffffffffu, ssum, d) / kStatUnits;
      s[d] = g0 * base[d] + g1 * volS[d] + g2 * riskS[d] + g3 * statS[d];
      z[d] = fminf(fmaxf(s[d], -clip), clip) * invT;
    }
    // Every lane holds bit-identical z (butterfly sums are symmetric), so `am` is warp-uniform.
    int am = 0;
    float zm = z[0];
    if (z[1] > zm) { zm = z[1]; am = 1; }
    if (z[2] > zm) { zm = z[2]; am = 2; }
    if (z[3] > zm) { zm = z[3]; am = 3; }
    float p[4], sumE = 0;
#pragma unroll
    for (int d = 0; d < 4; ++d) {
      p[d] = expf(z[d] - zm);
      sumE += p[d];
    }
    const float logSum = logf(sumE);
    const int label = a.labels[t];
    const float wn = a.sampleWeight ? a.sampleWeight[t] : 1.0f;
    float ce = 0, dz[4];
#pragma unroll
    for (int d = 0; d < 4; ++d) {
      p[d] /= sumE;
      const float q = (d == label ? 1.0f - eps : 0.0f) + eps / 4;
      ce -= q * (z[d] - zm - logSum);
      dz[d] = wn * (p[d] - q);
    }
    float y = w[L::be + am * H + k];
#pragma unroll 8
    for (int f = 0; f < F; ++f) y += hs[f] * w[L::We + (am * F + f) * H + k];
    const float out = am == 3 ? tanhf(y) : am == 1 ? 0.8f * y : (y > 0 ? y : 0.0f);
    float rec = (out - xs[k]) * (out - xs[k]);
#pragma unroll
    for (int o = H / 2; o > 0; o >>= 1) rec += __shfl_xor_sync(0xffffffffu, rec, o);
    rec /= H;
    if (lane == 0) {
      ceSum += double(wn * ce);
      recSum += double(rec);
      lossSum += double(wn * ce + lam * rec);
    }

    // ---- backward: unnormalised ∂(w·CE + λ·rec)/∂θ for this token ----
    if (lam != 0) {
      const float dout = lam * 2.0f / float(H) * (out - xs[k]);
      const float act = am == 3 ? 1.0f - out * out : am == 1 ? 0.8f : (y > 0 ? 1.0f : 0.0f);
      const float dy = dout * act;
      if (part == 0) {
        gacc[L::be + am * H + k] += dy;
        dys[k] = dy;
      }
      for (int f = part; f < F; f += PARTS) gacc[L::We + (am * F + f) * H + k] += hs[f] * dy;
    }
    __syncwarp();
    float ds[4], dBase[4];
#pragma unroll
    for (int d = 0; d < 4; ++d) {
      ds[d] = (s[d] > -clip && s[d] < clip) ? dz[d] * invT : 0.0f;
      dBase[d] = g0 * ds[d];
    }
    if (lane < 4) {
      gacc[L::bc + lane] += pick4(dBase, lane);
#pragma unroll
      for (int d = 0; d < 4; ++d) {
        const float sig = lane == 0 ? base[d] : lane == 1 ? volS[d] : lane == 2 ? riskS[d] : statS[d];
        gacc[L::gates + lane] += ds[d] * sig;
      }
    }
    float dh[NC];
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      const int f = lane + 32 * c;
      float acc = 0;
      if (lam != 0) {
        const float* col = w + L::WeT + am * H * F + f;
#pragma unroll 8
        for (int kk = 0; kk < H; ++kk) acc += col[kk * F] * dys[kk];
      }
      float acc2 = 0;
#pragma unroll
      for (int d = 0; d < 4; ++d) {
        gacc[L::Wc + f * 4 + d] += h[c] * dBase[d];
        acc2 += w[L::Wc + f * 4 + d] * dBase[d];
      }
      acc += acc2;
      dh[c] = pre[c] > 0 ? acc : 0.0f;
    }
    {
      const float dsl = pick4(ds, dl);
      const float dVol = g1 * dsl / kVolUnits, dRisk = g2 * dsl / kRiskUnits, dStat = g3 * dsl / kStatUnits;
      const float mv = vp > 0 ? dVol : 0.0f, mr = rp > 0 ? dRisk : 0.0f;
      gacc[L::Wv + lane] += vol * mv;
      gacc[L::Bv + lane] += mv;
      gacc[L::Wr + lane] += risk * mr;
      gacc[L::Br + lane] += mr;
      const float ms0 = sp0 > 0 ? dStat : 0.0f;
      gacc[L::Bs + lane] += ms0;
#pragma unroll
      for (int st = 0; st < kNumStats; ++st) gacc[L::Ws + st * kStatUnits * 4 + lane] += stats[st] * ms0;
      if (lane < 16) {
        const float ms1 = sp1 > 0 ? dStat : 0.0f;
        gacc[L::Bs + 32 + lane] += ms1;
#pragma unroll
        for (int st = 0; st < kNumStats; ++st) gacc[L::Ws + st * kStatUnits * 4 + 32 + lane] += stats[st] * ms1;
      }
    }
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      const int f = lane + 32 * c;
      gacc[L::b1 + f] += dh[c];
#pragma unroll 8
      for (int i = 0; i < H; ++i) gacc[L::W1 + i * F + f] += xs[i] * dh[c];
    }
    __syncwarp();  // xs, hs, dys and gacc are read by other lanes next
    if (++since == kFlush) {
      for (int e = lane; e < P; e += 32) {
        row[e] += double(gacc[e]);
        gacc[e] = 0.0f;
      }
      since = 0;
      __syncwarp();
    }
  }
  if (since > 0)
    for (int e = lane; e < P; e += 32) row[e] += double(gacc[e]);
  if (lane == 0) {
    row[P] += ceSum;
    row[P + 1] += recSum;
    row[P + 2] += lossSum;
  }
}

template <int H>
__global__ void reduceKernel(const double* __restrict__ partial, int rows, double invN, double* __restrict__ out) {
  constexpr int ROW = Lay<H>::size + 3;
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= ROW) return;
  double acc = 0;
  for (int r = 0; r < rows; ++r) acc += partial[std::size_t(r) * ROW + e];
  out[e] = acc * invN;
}

template <int H>
int maxRows() {
  static int rows = 0;
  if (rows == 0) {
    MOE_CUDA_CHECK(cudaFuncSetAttribute(lossGradKernel<H>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        int(GradSmem<H>::bytes)));
    int dev = 0, sms = 0, perSm = 0;
    MOE_CUDA_CHECK(cudaGetDevice(&dev));
    MOE_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    MOE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&perSm, lossGradKernel<H>, kWarps * 32,
                                                                  GradSmem<H>::bytes));
    MOE_CHECK(perSm >= 1, "gradient kernel does not fit on this device (shared memory or registers)");
    rows = perSm * sms * kWarps;
  }
  return rows;
}

}  // namespace

int lossGradRows(int H) { return H == 16 ? maxRows<16>() : maxRows<32>(); }

// Rows used for n tokens: enough warps to fill the device, but at least kMinTokensPerRow tokens per warp so a small
// batch does not pay for zeroing and reducing thousands of rows. A multiple of kWarps (whole blocks).
int lossGradRowsFor(int H, std::size_t n) {
  const std::size_t want = std::max<std::size_t>(1, (n + kMinTokensPerRow - 1) / kMinTokensPerRow);
  const int rows = int(std::min<std::size_t>(std::size_t(lossGradRows(H)), want));
  return (rows + kWarps - 1) / kWarps * kWarps;
}

void launchLossGrad(int H, const DeviceParams& p, const LossArgs& a, int rows, double* partial, cudaStream_t stream) {
  MOE_CHECK(a.n >= 1 && rows % kWarps == 0, "gradient launch needs n >= 1 and whole blocks");
  if (H == 16) {
    lossGradKernel<16><<<rows / kWarps, kWarps * 32, GradSmem<16>::bytes, stream>>>(p.w, p.invT, a, partial);
  } else {
    lossGradKernel<32><<<rows / kWarps, kWarps * 32, GradSmem<32>::bytes, stream>>>(p.w, p.invT, a, partial);
  }
  MOE_LAUNCH_CHECK();
}

void launchReduceLossGrad(int H, const double* partial, int rows, double invN, double* out, cudaStream_t stream) {
  const int row = (H == 16 ? Lay<16>::size : Lay<32>::size) + 3;
  const int threads = 256, blocks = (row + threads - 1) / threads;
  if (H == 16) reduceKernel<16><<<blocks, threads, 0, stream>>>(partial, rows, invN, out);
  else reduceKernel<32><<<blocks, threads, 0, stream>>>(partial, rows, invN, out);
  MOE_LAUNCH_CHECK();
}

}  // namespace moe::cuda
