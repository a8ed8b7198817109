// Loss and gradient for a range of tokens, written as plain loops over a scalar type `Real`.
// scalar.cpp (the oracle) instantiates it in double; each SIMD translation unit instantiates it in float and
// compiles it with its own ISA flags, so the compiler vectorises the loops 8 or 16 wide: one source of truth
// for the backward pass. Every inner loop runs along contiguous memory without a reduction (We is transposed
// once per call for ∂h), so vectorising needs no reassociation of sums (no -ffast-math).
// Float instances sum per-token gradients in a float block buffer that is flushed into the caller's double
// buffer every kFlush tokens, which bounds the float rounding to sums of at most kFlush terms.
// Contract: see CpuKernels::lossGrad in moe_router/router.h. Layout: moe_router/layout.h.
// No std:: templates or inline library overloads here (see ParamView in router.h): only the C math functions.
#include <math.h>

#include <cstddef>
#include <cstring>

#include "moe_router/router.h"

namespace {

inline float rexp(float v) { return ::expf(v); }
inline double rexp(double v) { return ::exp(v); }
inline float rlog(float v) { return ::logf(v); }
inline double rlog(double v) { return ::log(v); }
inline float rtanh(float v) { return ::tanhf(v); }
inline double rtanh(double v) { return ::tanh(v); }

// The stages below are always inlined and take the token's vectors as separate arrays of the caller (not one
// struct): the compiler then keeps y and ∂h in registers across their loops and vectorises exactly as when all of
// this was one function, and FMA contraction sees the same expressions, so results are bit-identical to it.
// (With one struct of all per-token arrays, callgrind counted +4% instructions at H = 32 on AVX2: y and ∂h went to
// memory in the inner loops.)
#define MOE_STAGE inline __attribute__((always_inline))

// What every stage reads: weights, layout, 1/T, the logit clip, the loss options and the four gates.
template <class Real>
struct LossConsts {
  const float* w;
  const moe::Layout& L;
  Real invT, clip, eps, lam, g0, g1, g2, g3;
};

// The four signals of a token per domain (base = bc + h·Wc; vol, risk and stats as unit averages), the gated
// pre-activations s and the clipped logits z.
template <class Real>
struct Signals {
  Real base[4], volS[4], riskS[4], statS[4], s[4], z[4];
};

// pre1 = b1 + x·W1 (i ascending; an axpy over f per input) and h = relu(pre1).
template <class Real, int H>
MOE_STAGE void hiddenForward(const LossConsts<Real>& k, const float* x, Real (&pre1)[64], Real (&h)[64]) {
  constexpr int F = 2 * H;
  const float* w = k.w;
  for (int f = 0; f < F; ++f) pre1[f] = w[k.L.b1 + f];
  for (int i = 0; i < H; ++i) {
    const Real xi = x[i];
    const float* row = w + k.L.W1 + std::size_t(i) * F;
    for (int f = 0; f < F; ++f) pre1[f] += xi * Real(row[f]);
  }
  for (int f = 0; f < F; ++f) h[f] = pre1[f] > 0 ? pre1[f] : Real(0);
}

// stats = {mean, population variance, mean |x|} of the token's x.
template <class Real, int H>
MOE_STAGE void tokenStats(const float* x, Real (&stats)[3]) {
  Real mean = 0, absMean = 0, var = 0;
  for (int i = 0; i < H; ++i) {
    mean += x[i];
    absMean += x[i] < 0 ? -Real(x[i]) : Real(x[i]);
  }
  mean /= H;
  absMean /= H;
  for (int i = 0; i < H; ++i) var += (x[i] - mean) * (x[i] - mean);
  var /= H;
  stats[0] = mean;
  stats[1] = var;
  stats[2] = absMean;
}

// The signals and logits (Signals); the unit pre-activations [unit][domain] are kept for the backward pass.
template <class Real, int H>
MOE_STAGE void signals(const LossConsts<Real>& k, Real vol, Real risk, const Real (&h)[64], const Real (&stats)[3],
                       Real* volPre, Real* riskPre, Real* statPre, Signals<Real>& sg) {
  using moe::kNumStats;
  using moe::kRiskUnits;
  using moe::kStatUnits;
  using moe::kVolUnits;
  constexpr int F = 2 * H, D = moe::kDomains;
  const float* w = k.w;
  const moe::Layout& L = k.L;
  for (int d = 0; d < D; ++d) sg.base[d] = w[L.bc + d];
  for (int f = 0; f < F; ++f)
    for (int d = 0; d < D; ++d) sg.base[d] += h[f] * Real(w[L.Wc + f * D + d]);
  for (int d = 0; d < D; ++d) {
    sg.volS[d] = sg.riskS[d] = sg.statS[d] = 0;
    for (int j = 0; j < kVolUnits; ++j) {
      volPre[j * D + d] = vol * Real(w[L.Wv + j * D + d]) + Real(w[L.Bv + j * D + d]);
      riskPre[j * D + d] = risk * Real(w[L.Wr + j * D + d]) + Real(w[L.Br + j * D + d]);
      sg.volS[d] += volPre[j * D + d] > 0 ? volPre[j * D + d] : Real(0);
      sg.riskS[d] += riskPre[j * D + d] > 0 ? riskPre[j * D + d] : Real(0);
    }
    sg.volS[d] /= kVolUnits;
    sg.riskS[d] /= kRiskUnits;
    for (int j = 0; j < kStatUnits; ++j) {
      Real a = w[L.Bs + j * D + d];
      for (int s = 0; s < kNumStats; ++s) a += stats[s] * Real(w[L.Ws + (s * kStatUnits + j) * D + d]);
      statPre[j * D + d] = a;
      sg.statS[d] += a > 0 ? a : Real(0);
    }
    sg.statS[d] /= kStatUnits;
    sg.s[d] = k.g0 * sg.base[d] + k.g1 * sg.volS[d] + k.g2 * sg.riskS[d] + k.g3 * sg.statS[d];
    const Real c = sg.s[d] < -k.clip ? -k.clip : (sg.s[d] > k.clip ? k.clip : sg.s[d]);
    sg.z[d] = c * k.invT;
  }
}

// Argmax a (first maximum), softmax and the label-smoothed cross entropy ce (unweighted) against class c;
// dz = ∂(wn·CE)/∂z.
template <class Real>
struct ClassLoss {
  int a;
  Real ce;
};

template <class Real>
MOE_STAGE ClassLoss<Real> crossEntropy(const LossConsts<Real>& k, const Real (&z)[4], int c, Real wn, Real (&dz)[4]) {
  constexpr int D = moe::kDomains;
  int a = 0;
  for (int d = 1; d < D; ++d)
    if (z[d] > z[a]) a = d;
  Real sumE = 0, p[4];
  for (int d = 0; d < D; ++d) {
    p[d] = rexp(z[d] - z[a]);
    sumE += p[d];
  }
  const Real logSum = rlog(sumE);
  Real ce = 0;
  for (int d = 0; d < D; ++d) {
    p[d] /= sumE;
    const Real q = (d == c ? Real(1) - k.eps : Real(0)) + k.eps / D;
    ce -= q * (z[d] - z[a] - logSum);
    dz[d] = wn * (p[d] - q);  // ∂(w·CE)/∂z, since Σq = 1
  }
  return {a, ce};
}

// y = be + h·We of expert a, out = its activation; returns the reconstruction error mean_k (out - x)².
template <class Real, int H>
MOE_STAGE Real expertForward(const LossConsts<Real>& k, const float* x, int a, const Real (&h)[64], Real (&y)[32],
                             Real (&out)[32]) {
  constexpr int F = 2 * H;
  const float* w = k.w;
  const float* We = w + k.L.We + std::size_t(a) * F * H;
  for (int kk = 0; kk < H; ++kk) y[kk] = w[k.L.be + a * H + kk];
  // No `if (h[f] == 0) skip` here or below: relu zeros are data-dependent, and the mispredicted branches
  // cost more than the FMAs they would save (adding 0·w changes nothing).
  for (int f = 0; f < F; ++f) {
    const float* Wrow = We + std::size_t(f) * H;
    for (int kk = 0; kk < H; ++kk) y[kk] += h[f] * Real(Wrow[kk]);
  }
  Real rec = 0;
  for (int kk = 0; kk < H; ++kk) {
    out[kk] = a == 3 ? rtanh(y[kk]) : a == 1 ? Real(0.8) * y[kk] : (y[kk] > 0 ? y[kk] : Real(0));
    const Real e = out[kk] - x[kk];
    rec += e * e;
  }
  rec /= H;
  return rec;
}

// ∂(λ·rec) into g (be and We of expert a) and dh = WeT·∂y (zero without reconstruction).
template <class Real, int H>
MOE_STAGE void backExpert(const LossConsts<Real>& k, const Real* WeT, const float* x, int a, const Real (&h)[64],
                          const Real (&y)[32], const Real (&out)[32], Real (&dy)[32], Real (&dh)[64], Real* g) {
  constexpr int F = 2 * H;
  const Real lam = k.lam;
  for (int f = 0; f < F; ++f) dh[f] = 0;
  if (lam != 0) {
    for (int kk = 0; kk < H; ++kk) {
      const Real dout = lam * Real(2) / Real(H) * (out[kk] - x[kk]);
      const Real act = a == 3 ? Real(1) - out[kk] * out[kk] : a == 1 ? Real(0.8) : (y[kk] > 0 ? Real(1) : Real(0));
      dy[kk] = dout * act;
    }
    Real* gWe = g + k.L.We + std::size_t(a) * F * H;
    Real* gbe = g + k.L.be + std::size_t(a) * H;
    for (int kk = 0; kk < H; ++kk) gbe[kk] += dy[kk];
    for (int f = 0; f < F; ++f) {
      Real* gRow = gWe + std::size_t(f) * H;
      for (int kk = 0; kk < H; ++kk) gRow[kk] += h[f] * dy[kk];
    }
    const Real* WeTa = WeT + std::size_t(a) * H * F;
    for (int kk = 0; kk < H; ++kk) {
      const Real dk = dy[kk];
      const Real* col = WeTa + std::size_t(kk) * F;
      for (int f = 0; f < F; ++f) dh[f] += col[f] * dk;
    }
  }
}

// ds = ∂z/T where the logit is not clipped; ∂ of bc, the gates and Wc into g, and Wc·∂base into dh.
template <class Real, int H>
MOE_STAGE void backGates(const LossConsts<Real>& k, const Signals<Real>& sg, const Real (&dz)[4], const Real (&h)[64],
                         Real (&ds)[4], Real (&dh)[64], Real* g) {
  constexpr int F = 2 * H, D = moe::kDomains;
  const float* w = k.w;
  const moe::Layout& L = k.L;
  Real dBase[4];
  for (int d = 0; d < D; ++d) {
    ds[d] = (sg.s[d] > -k.clip && sg.s[d] < k.clip) ? dz[d] * k.invT : Real(0);
    dBase[d] = k.g0 * ds[d];
    g[L.bc + d] += dBase[d];
  }
  for (int d = 0; d < D; ++d) {
    g[L.gates + 0] += ds[d] * sg.base[d];
    g[L.gates + 1] += ds[d] * sg.volS[d];
    g[L.gates + 2] += ds[d] * sg.riskS[d];
    g[L.gates + 3] += ds[d] * sg.statS[d];
  }
  for (int f = 0; f < F; ++f) {
    Real acc = 0;
    for (int d = 0; d < D; ++d) {
      g[L.Wc + f * D + d] += h[f] * dBase[d];
      acc += Real(w[L.Wc + f * D + d]) * dBase[d];
    }
    dh[f] += acc;
  }
}

// ∂ of the vol, risk and stats units' weights and biases into g.
template <class Real>
MOE_STAGE void backSignals(const LossConsts<Real>& k, Real vol, Real risk, const Real (&ds)[4], const Real (&stats)[3],
                           const Real* volPre, const Real* riskPre, const Real* statPre, Real* g) {
  using moe::kNumStats;
  using moe::kRiskUnits;
  using moe::kStatUnits;
  using moe::kVolUnits;
  constexpr int D = moe::kDomains;
  const moe::Layout& L = k.L;
  for (int d = 0; d < D; ++d) {
    const Real dVol = k.g1 * ds[d] / kVolUnits, dRisk = k.g2 * ds[d] / kRiskUnits, dStat = k.g3 * ds[d] / kStatUnits;
    // Branch-free relu masks: the signs of these pre-activations are data-dependent.
    for (int j = 0; j < kVolUnits; ++j) {
      const Real mv = volPre[j * D + d] > 0 ? dVol : Real(0);
      const Real mr = riskPre[j * D + d] > 0 ? dRisk : Real(0);
      g[L.Wv + j * D + d] += vol * mv;
      g[L.Bv + j * D + d] += mv;
      g[L.Wr + j * D + d] += risk * mr;
      g[L.Br + j * D + d] += mr;
    }
    for (int j = 0; j < kStatUnits; ++j) {
      const Real ms = statPre[j * D + d] > 0 ? dStat : Real(0);
      g[L.Bs + j * D + d] += ms;
      for (int s = 0; s < kNumStats; ++s) g[L.Ws + (s * kStatUnits + j) * D + d] += stats[s] * ms;
    }
  }
}

// dh = relu'(pre1)·dh, then ∂b1 and ∂W1 (an axpy over f per input) into g.
template <class Real, int H>
MOE_STAGE void backHidden(const LossConsts<Real>& k, const float* x, const Real (&pre1)[64], Real (&dh)[64], Real* g) {
  constexpr int F = 2 * H;
  for (int f = 0; f < F; ++f) dh[f] = pre1[f] > 0 ? dh[f] : Real(0);
  for (int f = 0; f < F; ++f) g[k.L.b1 + f] += dh[f];
  for (int i = 0; i < H; ++i) {
    const Real xi = x[i];
    Real* gRow = g + k.L.W1 + std::size_t(i) * F;
    for (int f = 0; f < F; ++f) gRow[f] += xi * dh[f];
  }
}

template <class Real, int kH>
void lossGradRangeH(const moe::ParamView& P, const moe::Batch& b, const moe::LossOptions& o, std::size_t begin,
                    std::size_t end, double* gOut, moe::LossResult* sums) {
  using moe::kDomains;
  constexpr std::size_t kFlush = 64;
  const moe::Layout L(kH);
  constexpr int H = kH, F = 2 * kH, D = kDomains;
  const float* w = P.w;
  const LossConsts<Real> k{w, L, Real(1) / Real(P.temperature), Real(moe::kLogitClip), o.labelSmoothing,
                           o.reconWeight, w[L.gates], w[L.gates + 1], w[L.gates + 2], w[L.gates + 3]};

  // Heap scratch (raw new[]: no std::vector instantiated in SIMD units): the gradient block buffer and We
  // transposed to [D][H][F] so ∂h = Σ_k We[a,f,k]·∂y[k] becomes an axpy over f.
  const std::size_t size = L.size;
  Real* g = new Real[size];
  Real* WeT = new Real[std::size_t(D) * H * F];
  std::memset(g, 0, size * sizeof(Real));
  for (int a = 0; a < D; ++a)
    for (int f = 0; f < F; ++f)
      for (int kk = 0; kk < H; ++kk)
        WeT[(std::size_t(a) * H + kk) * F + f] = w[L.We + (std::size_t(a) * F + f) * H + kk];

  Real pre1[64], h[64], dh[64], y[32], out[32], dy[32], statPre[moe::kStatUnits * kDomains];
  Real volPre[moe::kVolUnits * kDomains], riskPre[moe::kRiskUnits * kDomains];
  double ceSum = 0, recSum = 0, lossSum = 0;

  for (std::size_t n = begin; n < end; ++n) {
    const float* x = b.x + n * H;
    const Real vol = b.vol[n], risk = b.risk[n];
    // ---- forward, keeping the intermediates ----
    Real stats[3], dz[4], ds[4];
    Signals<Real> sg;
    hiddenForward<Real, H>(k, x, pre1, h);
    tokenStats<Real, H>(x, stats);
    signals<Real, H>(k, vol, risk, h, stats, volPre, riskPre, statPre, sg);
    const Real wn = o.sampleWeight ? Real(o.sampleWeight[n]) : Real(1);
    const ClassLoss<Real> cl = crossEntropy<Real>(k, sg.z, o.labels[n], wn, dz);
    const Real rec = expertForward<Real, H>(k, x, cl.a, h, y, out);
    ceSum += double(wn * cl.ce);
    recSum += double(rec);
    lossSum += double(wn * cl.ce + k.lam * rec);

    // ---- backward: unnormalised ∂(w·CE + λ·rec)/∂θ for this token ----
    backExpert<Real, H>(k, WeT, x, cl.a, h, y, out, dy, dh, g);
    backGates<Real, H>(k, sg, dz, h, ds, dh, g);
    backSignals<Real>(k, vol, risk, ds, stats, volPre, riskPre, statPre, g);
    backHidden<Real, H>(k, x, pre1, dh, g);
    if ((n - begin + 1) % kFlush == 0 || n + 1 == end) {
      for (std::size_t i = 0; i < size; ++i) gOut[i] += double(g[i]);
      std::memset(g, 0, size * sizeof(Real));
    }
  }
  sums->ce += ceSum;
  sums->rec += recSum;
  sums->loss += lossSum;
  delete[] g;
  delete[] WeT;
}

#undef MOE_STAGE

template <class Real>
void lossGradRangeT(const moe::ParamView& P, const moe::Batch& b, const moe::LossOptions& o, std::size_t begin,
                    std::size_t end, double* gOut, moe::LossResult* sums) {
  if (P.H == 16) lossGradRangeH<Real, 16>(P, b, o, begin, end, gOut, sums);
  else lossGradRangeH<Real, 32>(P, b, o, begin, end, gOut, sums);
}

}  // namespace
