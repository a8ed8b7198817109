// Loss and gradient on the GPU: the same per-token math as src/cpu/lossgrad.inl, one warp per token.
//
// Lanes split each token's vectors (h and ∂h by column f, the expert output by k, the 32 vol/risk units and the
// 48 stats units by (j, d)), so every gradient entry a token touches is updated by one lane with no atomics. Each
// warp sums its tokens into a private float accumulator in shared memory and flushes it every 64 tokens into its
// own row of double partial sums (the CPU backends flush float blocks into double the same way); a second kernel
// adds the rows in a fixed order, so the result does not depend on scheduling (deterministic on a given device).
#include "stages.cuh"

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

// ---- stages of one token, all lanes of the warp ----

// Forward values of a token that the backward pass reads: the four signals (base = bc + h·Wc and the vol, risk and
// stats averages; every lane holds all four domains), the gated pre-activations s and the logits z, and the
// pre-activations the lane owns: entry `lane` of the vol and of the risk units ([unit][domain], 8 × 4) and entries
// `lane` and (lanes below 16) 32 + lane of the stats units (12 × 4).
struct TokenSignals {
  float base[4], volS[4], riskS[4], statS[4], s[4], z[4];
  float vp, rp, sp0, sp1;
};

// A token's classification loss: argmax am (the expert), sample weight wn, CE (label-smoothed, unweighted) and
// ∂(wn·CE)/∂z.
struct TokenLoss {
  int am;
  float wn, ce, dz[4];
};

// pre = b1 + x·W1 and h = relu(pre) of the columns f = lane + 32·c, i ascending; h also goes to hs for other lanes.
template <int H>
__device__ __forceinline__ void hiddenLG(const float* w, const float* xs, float* hs, int lane, float (&pre)[2 * H / 32],
                                         float (&h)[2 * H / 32]) {
  using L = Lay<H>;
  constexpr int F = L::F, NC = F / 32;
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
}

// base[d] = bc[d] + h·Wc[:, d]: each lane adds its columns, a butterfly over the warp the rest.
template <int H>
__device__ __forceinline__ void baseLG(const float* w, const float (&h)[2 * H / 32], int lane, float (&base)[4]) {
  using L = Lay<H>;
  constexpr int NC = L::F / 32;
#pragma unroll
  for (int d = 0; d < 4; ++d) {
    float pb = 0;
#pragma unroll
    for (int c = 0; c < NC; ++c) pb += h[c] * w[L::Wc + (lane + 32 * c) * 4 + d];
    base[d] = w[L::bc + d] + warpSum(pb);
  }
}

// The vol, risk and stats signals and the logits (sg.base set by baseLG). Each lane computes the unit entries it owns
// (TokenSignals); domainSum leaves each domain's sum in the lanes of that domain, and lane d hands domain d to all.
template <int H>
__device__ __forceinline__ void signalsLG(const float* w, const float (&stats)[3], float vol, float risk, int lane,
                                          const float (&g)[4], float invT, TokenSignals& sg) {
  using L = Lay<H>;
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
  sg.vp = vp, sg.rp = rp, sg.sp0 = sp0, sg.sp1 = sp1;
#pragma unroll
  for (int d = 0; d < 4; ++d) {
    sg.volS[d] = __shfl_sync(0xffffffffu, vsum, d) / kVolUnits;
    sg.riskS[d] = __shfl_sync(0xffffffffu, rsum, d) / kRiskUnits;
    sg.statS[d] = __shfl_sync(0xffffffffu, ssum, d) / kStatUnits;
    sg.s[d] = g[0] * sg.base[d] + g[1] * sg.volS[d] + g[2] * sg.riskS[d] + g[3] * sg.statS[d];
    sg.z[d] = clippedLogit(sg.s[d], invT);
  }
}

// Argmax, softmax and the cross entropy of token t's logits z against its label (smoothing a.labelSmoothing).
// Every lane holds bit-identical z (butterfly sums are symmetric), so the argmax is warp-uniform.
__device__ __forceinline__ TokenLoss crossEntropyLG(const float (&z)[4], const LossArgs& a, int t) {
  float zm, p[4];
  const int am = argmax4(z, zm);
  const float sumE = softmaxTerms(z, zm, p);
  const float logSum = logf(sumE);
  const int label = a.labels[t];
  const float eps = a.labelSmoothing;
  const float wn = a.sampleWeight ? a.sampleWeight[t] : 1.0f;
  float ce = 0, dz[4];
#pragma unroll
  for (int d = 0; d < 4; ++d) {
    p[d] /= sumE;
    const float q = (d == label ? 1.0f - eps : 0.0f) + eps / 4;
    ce -= q * (z[d] - zm - logSum);
    dz[d] = wn * (p[d] - q);
  }
  return {am, wn, ce, {dz[0], dz[1], dz[2], dz[3]}};
}

struct ExpertOut {
  float y, out, rec;
};

// Output k = lane % H of expert am: y = be + h·We (f ascending), out = act(y), and the reconstruction error
// rec = mean_k (out - x)², summed over the H lanes that hold the H outputs (every lane gets the sum).

template <int H>
__device__ __forceinline__ ExpertOut expertLG(const float* w, const float* hs, const float* xs, int am, int k) {
  using L = Lay<H>;
  constexpr int F = L::F;
  float y = w[L::be + am * H + k];
#pragma unroll 8
  for (int f = 0; f < F; ++f) y += hs[f] * w[L::We + (am * F + f) * H + k];
  const float out = am == 3 ? tanhf(y) : am == 1 ? 0.8f * y : (y > 0 ? y : 0.0f);
  float rec = (out - xs[k]) * (out - xs[k]);
#pragma unroll
  for (int o = H / 2; o > 0; o >>= 1) rec += __shfl_xor_sync(0xffffffffu, rec, o);
  rec /= H;
  return {y, out, rec};
}

// ∂(λ·rec)/∂(be, We) of expert am, and ∂y into dys for ∂h. The warp holds the H outputs 32 / H times: part
// p = lane / H takes the rows f ≡ p (mod 32 / H) of We, so each gradient entry has one writer.
template <int H>
__device__ __forceinline__ void backExpertLG(float* gacc, float* dys, const float* hs, const float* xs, int am, int k,
                                             int part, float lam, float y, float out) {
  using L = Lay<H>;
  constexpr int F = L::F, PARTS = 32 / H;
  const float dout = lam * 2.0f / float(H) * (out - xs[k]);
  const float act = am == 3 ? 1.0f - out * out : am == 1 ? 0.8f : (y > 0 ? 1.0f : 0.0f);
  const float dy = dout * act;
  if (part == 0) {
    gacc[L::be + am * H + k] += dy;
    dys[k] = dy;
  }
  for (int f = part; f < F; f += PARTS) gacc[L::We + (am * F + f) * H + k] += hs[f] * dy;
}

// ∂s (zero where the logit is clipped) and ∂base = g0·∂s; lanes 0..3 add ∂bc[lane] and ∂gate[lane].
template <int H>
__device__ __forceinline__ void backGatesLG(float* gacc, const TokenSignals& sg, const float (&dz)[4], float g0,
                                            float invT, int lane, float (&ds)[4], float (&dBase)[4]) {
  using L = Lay<H>;
  constexpr float clip = kLogitClip;
#pragma unroll
  for (int d = 0; d < 4; ++d) {
    ds[d] = (sg.s[d] > -clip && sg.s[d] < clip) ? dz[d] * invT : 0.0f;
    dBase[d] = g0 * ds[d];
  }
  if (lane < 4) {
    gacc[L::bc + lane] += pick4(dBase, lane);
#pragma unroll
    for (int d = 0; d < 4; ++d) {
      const float sig = lane == 0 ? sg.base[d] : lane == 1 ? sg.volS[d] : lane == 2 ? sg.riskS[d] : sg.statS[d];
      gacc[L::gates + lane] += ds[d] * sig;
    }
  }
}

// ∂Wc of the lane's columns and ∂pre = relu'(pre)·(WeT·∂y + Wc·∂base) (WeT term only with reconstruction).
template <int H>
__device__ __forceinline__ void backHiddenLG(float* gacc, const float* w, const float* dys,
                                             const float (&pre)[2 * H / 32], const float (&h)[2 * H / 32],
                                             const float (&dBase)[4], int am, int lane, float lam,
                                             float (&dh)[2 * H / 32]) {
  using L = Lay<H>;
  constexpr int F = L::F, NC = F / 32;
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
}

// ∂ of the vol, risk and stats unit entries the lane owns (TokenSignals; their domain is lane % 4).
template <int H>
__device__ __forceinline__ void backSignalsLG(float* gacc, const TokenSignals& sg, const float (&ds)[4],
                                              const float (&g)[4], const float (&stats)[3], float vol, float risk,
                                              int lane) {
  using L = Lay<H>;
  const float dsl = pick4(ds, lane & 3);
  const float dVol = g[1] * dsl / kVolUnits, dRisk = g[2] * dsl / kRiskUnits, dStat = g[3] * dsl / kStatUnits;
  const float mv = sg.vp > 0 ? dVol : 0.0f, mr = sg.rp > 0 ? dRisk : 0.0f;
  gacc[L::Wv + lane] += vol * mv;
  gacc[L::Bv + lane] += mv;
  gacc[L::Wr + lane] += risk * mr;
  gacc[L::Br + lane] += mr;
  const float ms0 = sg.sp0 > 0 ? dStat : 0.0f;
  gacc[L::Bs + lane] += ms0;
#pragma unroll
  for (int st = 0; st < kNumStats; ++st) gacc[L::Ws + st * kStatUnits * 4 + lane] += stats[st] * ms0;
  if (lane < 16) {
    const float ms1 = sg.sp1 > 0 ? dStat : 0.0f;
    gacc[L::Bs + 32 + lane] += ms1;
#pragma unroll
    for (int st = 0; st < kNumStats; ++st) gacc[L::Ws + st * kStatUnits * 4 + 32 + lane] += stats[st] * ms1;
  }
}

// ∂b1 and ∂W1 of the lane's columns.
template <int H>
__device__ __forceinline__ void backW1LG(float* gacc, const float* xs, const float (&dh)[2 * H / 32], int lane) {
  using L = Lay<H>;
  constexpr int F = L::F, NC = F / 32;
#pragma unroll
  for (int c = 0; c < NC; ++c) {
    const int f = lane + 32 * c;
    gacc[L::b1 + f] += dh[c];
#pragma unroll 8
    for (int i = 0; i < H; ++i) gacc[L::W1 + i * F + f] += xs[i] * dh[c];
  }
}

template <int H>
__global__ void __launch_bounds__(kWarps * 32) lossGradKernel(const float* __restrict__ w, float invT, LossArgs a,
                                                              double* __restrict__ partial) {
  using L = Lay<H>;
  constexpr int F = L::F, P = L::size, ROW = P + 3, NC = F / 32;
  extern __shared__ float4 smem4[];
  float* gacc = reinterpret_cast<float*>(smem4) + (threadIdx.x / 32) * GradSmem<H>::perWarp;
  float* xs = gacc + P;
  float* hs = xs + H;
  float* dys = hs + F;
  const int lane = threadIdx.x & 31;
  const int gw = blockIdx.x * kWarps + threadIdx.x / 32, nw = gridDim.x * kWarps;
  double* row = partial + std::size_t(gw) * ROW;
  for (int e = lane; e < P; e += 32) gacc[e] = 0.0f;
  const float g[4] = {w[L::gates], w[L::gates + 1], w[L::gates + 2], w[L::gates + 3]};
  const float lam = a.reconWeight;
  const int k = lane % H, part = lane / H;
  int since = 0;
  double ceSum = 0, recSum = 0, lossSum = 0;
  __syncwarp();

  for (int t = gw; t < a.n; t += nw) {
    if (lane < H) xs[lane] = a.x[std::size_t(t) * H + lane];
    __syncwarp();
    // ---- forward, keeping the intermediates ----
    float pre[NC], h[NC], stats[3];
    hiddenLG<H>(w, xs, hs, lane, pre, h);
    tokenStats<H, false>(xs, stats);
    TokenSignals sg;
    baseLG<H>(w, h, lane, sg.base);
    const float vol = a.vol[t], risk = a.risk[t];
    signalsLG<H>(w, stats, vol, risk, lane, g, invT, sg);
    const TokenLoss tl = crossEntropyLG(sg.z, a, t);
    const ExpertOut ex = expertLG<H>(w, hs, xs, tl.am, k);
    if (lane == 0) {
      ceSum += double(tl.wn * tl.ce);
      recSum += double(ex.rec);
      lossSum += double(tl.wn * tl.ce + lam * ex.rec);
    }

    // ---- backward: unnormalised ∂(w·CE + λ·rec)/∂θ for this token ----
    if (lam != 0) backExpertLG<H>(gacc, dys, hs, xs, tl.am, k, part, lam, ex.y, ex.out);
    __syncwarp();
    float ds[4], dBase[4], dh[NC];
    backGatesLG<H>(gacc, sg, tl.dz, g[0], invT, lane, ds, dBase);
    backHiddenLG<H>(gacc, w, dys, pre, h, dBase, tl.am, lane, lam, dh);
    backSignalsLG<H>(gacc, sg, ds, g, stats, vol, risk, lane);
    backW1LG<H>(gacc, xs, dh, lane);
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

// Contract: common.cuh (LossArgs, launchLossGrad); rows from lossGradRowsFor, a multiple of kWarps. The launch is
// checked.
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
