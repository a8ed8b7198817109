// Loss and gradient on the GPU: the same per-token math as src/cpu/lossgrad.inl.
//
// A block takes the batch kT tokens at a time (lossGradKernel explains the two phases): a warp per token computes
// the forward values and what the backward pass needs of each token (∂ of the hidden pre-activations, of the chosen
// expert's output and of the base signal), then the block forms the matrix gradients as sums over the chunk's
// tokens, each entry owned by one thread and summed in token order. Every block adds its float sums into its own
// row of double partial sums after each chunk (the CPU backends flush float blocks into double the same way); a
// second kernel adds the rows in a fixed order, so the result does not depend on scheduling (deterministic on a
// given device).
#include "stages.cuh"

namespace moe::cuda {

namespace {

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

// A token's classification loss: argmax am (the expert), sample weight wn (times (1 - p[label])^γ with a focal γ;
// a weight, not differentiated), CE (label-smoothed, unweighted) and ∂(wn·CE)/∂z.
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
  float wn = a.sampleWeight ? a.sampleWeight[t] : 1.0f;
#pragma unroll
  for (int d = 0; d < 4; ++d) p[d] /= sumE;
  if (a.focalGamma > 0) wn *= powf(1.0f - pick4(p, label), a.focalGamma);
  float ce = 0, dz[4];
#pragma unroll
  for (int d = 0; d < 4; ++d) {
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

// ---- backward of one token (phase 1): what the block's sums read, and the lane-owned gradient entries ----

// Gradient entries of the vol, risk, stats and gate parameters: each lane owns fixed entries (TokenSignals; their
// domain is lane % 4; lanes 0..3 also own gate `lane`), summed over the warp's tokens in double.
struct LaneGrads {
  double wv = 0, bv = 0, wr = 0, br = 0, bs0 = 0, bs1 = 0, gate = 0;
  double ws0[kNumStats] = {0, 0, 0}, ws1[kNumStats] = {0, 0, 0};
};

// ∂y of expert am's output k (the reconstruction term only): dy = λ·2/H·(out - x[k])·act'(y).
template <int H>
__device__ __forceinline__ float expertDy(const float* xs, int am, int k, float lam, float y, float out) {
  const float dout = lam * 2.0f / float(H) * (out - xs[k]);
  const float act = am == 3 ? 1.0f - out * out : am == 1 ? 0.8f : (y > 0 ? 1.0f : 0.0f);
  return dout * act;
}

// ∂s (zero where the logit is clipped) and ∂base = g0·∂s; lanes 0..3 add ∂gate[lane].
__device__ __forceinline__ void backGatesLG(const TokenSignals& sg, const float (&dz)[4], float g0, float invT,
                                            int lane, float (&ds)[4], float (&dBase)[4], LaneGrads& lg) {
  constexpr float clip = kLogitClip;
#pragma unroll
  for (int d = 0; d < 4; ++d) {
    ds[d] = (sg.s[d] > -clip && sg.s[d] < clip) ? dz[d] * invT : 0.0f;
    dBase[d] = g0 * ds[d];
  }
  if (lane < 4) {
    float gsum = 0;
#pragma unroll
    for (int d = 0; d < 4; ++d) {
      const float sig = lane == 0 ? sg.base[d] : lane == 1 ? sg.volS[d] : lane == 2 ? sg.riskS[d] : sg.statS[d];
      gsum += ds[d] * sig;
    }
    lg.gate += double(gsum);
  }
}

// ∂pre = relu'(pre)·(WeT·∂y + Wc·∂base) of the lane's columns (WeT term only with reconstruction), into dpre.
template <int H>
__device__ __forceinline__ void backHiddenLG(const float* w, const float* dys, const float (&pre)[2 * H / 32],
                                             const float (&dBase)[4], int am, int lane, float lam, float* dpre) {
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
    for (int d = 0; d < 4; ++d) acc2 += w[L::Wc + f * 4 + d] * dBase[d];
    acc += acc2;
    dpre[f] = pre[c] > 0 ? acc : 0.0f;
  }
}

// ∂ of the vol, risk and stats unit entries the lane owns.
template <int H>
__device__ __forceinline__ void backSignalsLG(const TokenSignals& sg, const float (&ds)[4], const float (&g)[4],
                                              const float (&stats)[3], float vol, float risk, int lane, LaneGrads& lg) {
  const float dsl = pick4(ds, lane & 3);
  const float dVol = g[1] * dsl / kVolUnits, dRisk = g[2] * dsl / kRiskUnits, dStat = g[3] * dsl / kStatUnits;
  const float mv = sg.vp > 0 ? dVol : 0.0f, mr = sg.rp > 0 ? dRisk : 0.0f;
  lg.wv += double(vol * mv);
  lg.bv += double(mv);
  lg.wr += double(risk * mr);
  lg.br += double(mr);
  const float ms0 = sg.sp0 > 0 ? dStat : 0.0f;
  lg.bs0 += double(ms0);
#pragma unroll
  for (int st = 0; st < kNumStats; ++st) lg.ws0[st] += double(stats[st] * ms0);
  if (lane < 16) {
    const float ms1 = sg.sp1 > 0 ? dStat : 0.0f;
    lg.bs1 += double(ms1);
#pragma unroll
    for (int st = 0; st < kNumStats; ++st) lg.ws1[st] += double(stats[st] * ms1);
  }
}

// ---- the block's sums over a chunk of tokens (phase 2) ----
//
// A block works on kT tokens at a time. Phase 1 (a warp per token) leaves, per token, x, h, ∂pre, ∂y (the chosen
// expert's), ∂base and the expert in shared memory; phase 2 then forms the matrix gradients as sums of outer
// products over the chunk, each entry owned by one thread and summed in registers in token order:
//   ∂W1 = Σ x ⊗ ∂pre, ∂b1 = Σ ∂pre, ∂Wc = Σ h ⊗ ∂base, ∂bc = Σ ∂base, ∂We[a] = Σ_{am = a} h ⊗ ∂y, ∂be[a] = Σ_{am = a} ∂y.
// A thread owns an IW × FW tile of ∂W1 and an FH × KW tile of every expert's ∂We (all threads read the same token at
// a time, so the update picks one of the four register tiles without divergence), one entry of ∂Wc and at most one
// bias entry. After each chunk the registers are added into the block's row of double partial sums.

// acc[r][c] += a[r]·b[c]: one thread's R × C tile of an outer-product sum, its operands read from shared memory.
template <int R, int C>
__device__ __forceinline__ void addOuter(float (&acc)[R][C], const float* a, const float* b) {
  float av[R], bv[C];
#pragma unroll
  for (int r = 0; r < R; ++r) av[r] = a[r];
#pragma unroll
  for (int c = 0; c < C; ++c) bv[c] = b[c];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int c = 0; c < C; ++c) acc[r][c] += av[r] * bv[c];
}

constexpr int kThreads = 256;
constexpr int kBlockWarps = kThreads / 32;
constexpr int kT = 64;  // tokens per chunk

template <int H>
struct Tiles {
  static constexpr int F = 2 * H;
  static constexpr int FW = H == 32 ? 4 : 2;                // ∂W1 columns (f) per thread
  static constexpr int IW = H * F / kThreads / FW;          // ∂W1 rows (i) per thread
  static constexpr int FQ = F / FW;                         // threads across f
  static constexpr int KW = FW, FH = IW, KQ = H / KW;       // ∂We[a]: FH rows (f) × KW columns (k) per thread
  static_assert(IW * FW * kThreads == H * F && FQ * (H / IW) == kThreads, "∂W1 tiles must cover H × F once");
  static_assert(KQ * (F / FH) == kThreads, "∂We tiles must cover F × H once");
  static_assert(F * 4 <= kThreads && 4 * H <= kThreads - 128 && F <= 64, "bias and ∂Wc owners");
  static constexpr int beFirst = 128, bcFirst = 64;         // threads owning ∂be (4H of them) and ∂bc (4)
};

// Shared memory of a block: the chunk's per-token vectors (floats; the experts as ints at the end).
template <int H>
struct ChunkSmem {
  static constexpr int F = 2 * H;
  static constexpr int xs = 0, hs = xs + kT * H, dpre = hs + kT * F, dys = dpre + kT * F, db = dys + kT * H,
                       am = db + kT * 4, floats = am + kT;
  static constexpr std::size_t bytes = std::size_t(floats) * 4;
};

template <int H>
__global__ void __launch_bounds__(kThreads, 2) lossGradKernel(const float* __restrict__ w, float invT, LossArgs a,
                                                                double* __restrict__ partial) {
  using L = Lay<H>;
  using T = Tiles<H>;
  using S = ChunkSmem<H>;
  constexpr int F = L::F, P = L::size, ROW = P + 3, NC = F / 32;
  extern __shared__ float4 smem4[];
  float* sm = reinterpret_cast<float*>(smem4);
  int* amS = reinterpret_cast<int*>(sm + S::am);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  double* row = partial + std::size_t(blockIdx.x) * ROW;
  const float g[4] = {w[L::gates], w[L::gates + 1], w[L::gates + 2], w[L::gates + 3]};
  const float lam = a.reconWeight;
  const int k = lane % H;
  LaneGrads lg;
  double ceSum = 0, recSum = 0, lossSum = 0;

  // Phase-2 ownership.
  const int f0 = (tid % T::FQ) * T::FW, i0 = (tid / T::FQ) * T::IW;
  const int k0 = (tid % T::KQ) * T::KW, fe0 = (tid / T::KQ) * T::FH;
  const bool ownsWc = tid < F * 4, ownsB1 = tid < F;
  const bool ownsBc = tid >= T::bcFirst && tid < T::bcFirst + 4;
  const bool ownsBe = tid >= T::beFirst && tid < T::beFirst + 4 * H;
  const int beA = (tid - T::beFirst) / H, beK = (tid - T::beFirst) % H;

  for (int c0 = blockIdx.x * kT; c0 < a.n; c0 += gridDim.x * kT) {
    const int m = min(kT, a.n - c0);
    // ---- phase 1: forward and the per-token backward, a warp per token ----
    for (int tt = warp; tt < m; tt += kBlockWarps) {
      const int t = c0 + tt;
      float* xs = sm + S::xs + tt * H;
      float* hs = sm + S::hs + tt * F;
      float* dys = sm + S::dys + tt * H;
      if (lane < H) xs[lane] = a.x[std::size_t(t) * H + lane];
      __syncwarp();
      float pre[NC], h[NC], stats[3];
      hiddenLG<H>(w, xs, hs, lane, pre, h);
      tokenStats<H, false>(xs, stats);
      TokenSignals sg;
      baseLG<H>(w, h, lane, sg.base);
      const float vol = a.vol[t], risk = a.risk[t];
      signalsLG<H>(w, stats, vol, risk, lane, g, invT, sg);
      const TokenLoss tl = crossEntropyLG(sg.z, a, t);
      __syncwarp();  // hs complete
      const ExpertOut ex = expertLG<H>(w, hs, xs, tl.am, k);
      if (lane == 0) {
        ceSum += double(tl.wn * tl.ce);
        recSum += double(ex.rec);
        lossSum += double(tl.wn * tl.ce + lam * ex.rec);
        amS[tt] = tl.am;
      }
      if (lam != 0 && lane < H) dys[k] = expertDy<H>(xs, tl.am, k, lam, ex.y, ex.out);
      __syncwarp();
      float ds[4], dBase[4];
      backGatesLG(sg, tl.dz, g[0], invT, lane, ds, dBase, lg);
      if (lane < 4) sm[S::db + tt * 4 + lane] = pick4(dBase, lane);
      backHiddenLG<H>(w, dys, pre, dBase, tl.am, lane, lam, sm + S::dpre + tt * F);
      backSignalsLG<H>(sg, ds, g, stats, vol, risk, lane, lg);
    }
    __syncthreads();

    // ---- phase 2: the chunk's outer-product sums, in token order ----
    float aW1[T::IW][T::FW] = {}, aWe[4][T::FH][T::KW] = {}, aWc = 0, aB = 0;
    for (int tt = 0; tt < m; ++tt) {
      const float* xr = sm + S::xs + tt * H;
      const float* hr = sm + S::hs + tt * F;
      const float* pr = sm + S::dpre + tt * F;
      const float* br = sm + S::db + tt * 4;
      addOuter(aW1, xr + i0, pr + f0);
      if (ownsWc) aWc += hr[tid >> 2] * br[tid & 3];
      if (ownsB1) aB += pr[tid];
      if (ownsBc) aB += br[tid - T::bcFirst];
      if (lam != 0) {
        const int am = amS[tt];
        const float* yr = sm + S::dys + tt * H;
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (am == e) addOuter(aWe[e], hr + fe0, yr + k0);
        if (ownsBe && beA == am) aB += yr[beK];
      }
    }
    // Into the block's double row (each entry has one writer in the block).
#pragma unroll
    for (int ii = 0; ii < T::IW; ++ii)
#pragma unroll
      for (int ff = 0; ff < T::FW; ++ff) row[L::W1 + (i0 + ii) * F + f0 + ff] += double(aW1[ii][ff]);
    if (ownsWc) row[L::Wc + tid] += double(aWc);
    if (ownsB1) row[L::b1 + tid] += double(aB);
    if (ownsBc) row[L::bc + tid - T::bcFirst] += double(aB);
    if (lam != 0) {
#pragma unroll
      for (int e = 0; e < 4; ++e)
#pragma unroll
        for (int fh = 0; fh < T::FH; ++fh)
#pragma unroll
          for (int kw = 0; kw < T::KW; ++kw) row[L::We + (e * F + fe0 + fh) * H + k0 + kw] += double(aWe[e][fh][kw]);
      if (ownsBe) row[L::be + beA * H + beK] += double(aB);
    }
    __syncthreads();  // the next chunk overwrites shared memory
  }

  // The lane-owned entries and the loss sums, warp after warp (a fixed order).
  for (int wv = 0; wv < kBlockWarps; ++wv) {
    if (warp == wv) {
      row[L::Wv + lane] += lg.wv;
      row[L::Bv + lane] += lg.bv;
      row[L::Wr + lane] += lg.wr;
      row[L::Br + lane] += lg.br;
      row[L::Bs + lane] += lg.bs0;
#pragma unroll
      for (int st = 0; st < kNumStats; ++st) row[L::Ws + st * kStatUnits * 4 + lane] += lg.ws0[st];
      if (lane < 16) {
        row[L::Bs + 32 + lane] += lg.bs1;
#pragma unroll
        for (int st = 0; st < kNumStats; ++st) row[L::Ws + st * kStatUnits * 4 + 32 + lane] += lg.ws1[st];
      }
      if (lane < 4) row[L::gates + lane] += lg.gate;
      if (lane == 0) {
        row[P] += ceSum;
        row[P + 1] += recSum;
        row[P + 2] += lossSum;
      }
    }
    __syncthreads();
  }
}

// out[e] = invN · Σ_r partial[r][e], r ascending in eight interleaved runs added in a fixed order; gradF (or null)
// receives the gradient part as floats for the device AdamW step.
template <int H>
__global__ void __launch_bounds__(256) reduceKernel(const double* __restrict__ partial, int rows, double invN,
                                                    double* __restrict__ out, float* __restrict__ gradF) {
  constexpr int P = Lay<H>::size, ROW = P + 3;
  __shared__ double part[8][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int e = blockIdx.x * 32 + lane;
  double acc = 0;
  if (e < ROW)
    for (int r = warp; r < rows; r += 8) acc += partial[std::size_t(r) * ROW + e];
  part[warp][lane] = acc;
  __syncthreads();
  if (warp == 0 && e < ROW) {
    double s = 0;
#pragma unroll
    for (int q = 0; q < 8; ++q) s += part[q][lane];
    s *= invN;
    out[e] = s;
    if (gradF && e < P) gradF[e] = float(s);
  }
}

// Once per process (a static's thread-safe initialisation: routers on several threads may ask at once; a failure
// is tried again at the next call).
template <int H>
int maxRows() {
  static const int rows = [] {
    MOE_CUDA_CHECK(cudaFuncSetAttribute(lossGradKernel<H>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        int(ChunkSmem<H>::bytes)));
    int dev = 0, sms = 0, perSm = 0;
    MOE_CUDA_CHECK(cudaGetDevice(&dev));
    MOE_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    MOE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&perSm, lossGradKernel<H>, kThreads,
                                                                  ChunkSmem<H>::bytes));
    MOE_CHECK(perSm >= 1, "gradient kernel does not fit on this device (shared memory or registers)");
    return perSm * sms;
  }();
  return rows;
}

}  // namespace

int lossGradRows(int H) { return H == 16 ? maxRows<16>() : maxRows<32>(); }

// Rows (= blocks) used for n tokens: one per chunk of kT tokens, at most as many as the device runs at once.
int lossGradRowsFor(int H, std::size_t n) {
  const std::size_t want = std::max<std::size_t>(1, (n + kT - 1) / kT);
  return int(std::min<std::size_t>(std::size_t(lossGradRows(H)), want));
}

// Contract: common.cuh (LossArgs, launchLossGrad); rows from lossGradRowsFor. The launch is checked.
void launchLossGrad(int H, const DeviceParams& p, const LossArgs& a, int rows, double* partial, cudaStream_t stream) {
  MOE_CHECK(a.n >= 1 && rows >= 1, "gradient launch needs n >= 1 and rows >= 1");
  if (H == 16) {
    lossGradKernel<16><<<rows, kThreads, ChunkSmem<16>::bytes, stream>>>(p.w, p.invT, a, partial);
  } else {
    lossGradKernel<32><<<rows, kThreads, ChunkSmem<32>::bytes, stream>>>(p.w, p.invT, a, partial);
  }
  MOE_LAUNCH_CHECK();
}

void launchReduceLossGrad(int H, const double* partial, int rows, double invN, double* out, float* gradF,
                          cudaStream_t stream) {
  const int row = (H == 16 ? Lay<16>::size : Lay<32>::size) + 3;
  const int blocks = (row + 31) / 32;
  if (H == 16) reduceKernel<16><<<blocks, 256, 0, stream>>>(partial, rows, invN, out, gradF);
  else reduceKernel<32><<<blocks, 256, 0, stream>>>(partial, rows, invN, out, gradF);
  MOE_LAUNCH_CHECK();
}

}  // namespace moe::cuda
