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

template <class Real, int kH>
void lossGradRangeH(const moe::ParamView& P, const moe::Batch& b, const moe::LossOptions& o, std::size_t begin,
                    std::size_t end, double* gOut, moe::LossResult* sums) {
  using moe::kDomains;
  using moe::kNumStats;
  using moe::kRiskUnits;
  using moe::kStatUnits;
  using moe::kVolUnits;
  constexpr std::size_t kFlush = 64;
  const moe::Layout L(kH);
  constexpr int H = kH, F = 2 * kH, D = kDomains;
  const float* w = P.w;
  const Real invT = Real(1) / Real(P.temperature);
  const Real clip = Real(moe::kLogitClip);
  const Real eps = o.labelSmoothing, lam = o.reconWeight;
  const Real g0 = w[L.gates], g1 = w[L.gates + 1], g2 = w[L.gates + 2], g3 = w[L.gates + 3];

  // Heap scratch (raw new[]: no std::vector instantiated in SIMD units): the gradient block buffer and We
  // transposed to [D][H][F] so ∂h = Σ_k We[a,f,k]·∂y[k] becomes an axpy over f.
  const std::size_t size = L.size;
  Real* g = new Real[size];
  Real* WeT = new Real[std::size_t(D) * H * F];
  std::memset(g, 0, size * sizeof(Real));
  for (int a = 0; a < D; ++a)
    for (int f = 0; f < F; ++f)
      for (int k = 0; k < H; ++k) WeT[(std::size_t(a) * H + k) * F + f] = w[L.We + (std::size_t(a) * F + f) * H + k];

  Real pre1[64], h[64], dh[64], y[32], out[32], dy[32], statPre[kStatUnits * kDomains];
  Real volPre[kVolUnits * kDomains], riskPre[kRiskUnits * kDomains];
  double ceSum = 0, recSum = 0, lossSum = 0;

  for (std::size_t n = begin; n < end; ++n) {
    const float* x = b.x + n * H;
    const Real vol = b.vol[n], risk = b.risk[n];
    // ---- forward, keeping the intermediates ----
    for (int f = 0; f < F; ++f) pre1[f] = w[L.b1 + f];
    for (int i = 0; i < H; ++i) {
      const Real xi = x[i];
      const float* row = w + L.W1 + std::size_t(i) * F;
      for (int f = 0; f < F; ++f) pre1[f] += xi * Real(row[f]);
    }
    for (int f = 0; f < F; ++f) h[f] = pre1[f] > 0 ? pre1[f] : Real(0);
    Real mean = 0, absMean = 0, var = 0;
    for (int i = 0; i < H; ++i) {
      mean += x[i];
      absMean += x[i] < 0 ? -Real(x[i]) : Real(x[i]);
    }
    mean /= H;
    absMean /= H;
    for (int i = 0; i < H; ++i) var += (x[i] - mean) * (x[i] - mean);
    var /= H;
    const Real stats[3] = {mean, var, absMean};
    Real base[4], volS[4], riskS[4], statS[4], s[4], z[4];
    for (int d = 0; d < D; ++d) base[d] = w[L.bc + d];
    for (int f = 0; f < F; ++f)
      for (int d = 0; d < D; ++d) base[d] += h[f] * Real(w[L.Wc + f * D + d]);
    for (int d = 0; d < D; ++d) {
      volS[d] = riskS[d] = statS[d] = 0;
      for (int j = 0; j < kVolUnits; ++j) {
        volPre[j * D + d] = vol * Real(w[L.Wv + j * D + d]) + Real(w[L.Bv + j * D + d]);
        riskPre[j * D + d] = risk * Real(w[L.Wr + j * D + d]) + Real(w[L.Br + j * D + d]);
        volS[d] += volPre[j * D + d] > 0 ? volPre[j * D + d] : Real(0);
        riskS[d] += riskPre[j * D + d] > 0 ? riskPre[j * D + d] : Real(0);
      }
      volS[d] /= kVolUnits;
      riskS[d] /= kRiskUnits;
      for (int j = 0; j < kStatUnits; ++j) {
        Real a = w[L.Bs + j * D + d];
        for (int k = 0; k < kNumStats; ++k) a += stats[k] * Real(w[L.Ws + (k * kStatUnits + j) * D + d]);
        statPre[j * D + d] = a;
        statS[d] += a > 0 ? a : Real(0);
      }
      statS[d] /= kStatUnits;
      s[d] = g0 * base[d] + g1 * volS[d] + g2 * riskS[d] + g3 * statS[d];
      const Real c = s[d] < -clip ? -clip : (s[d] > clip ? clip : s[d]);
      z[d] = c * invT;
    }
    int a = 0;
    for (int d = 1; d < D; ++d)
      if (z[d] > z[a]) a = d;
    Real sumE = 0, p[4];
    for (int d = 0; d < D; ++d) {
      p[d] = rexp(z[d] - z[a]);
      sumE += p[d];
    }
    const Real logSum = rlog(sumE);
    const int c = o.labels[n];
    const Real wn = o.sampleWeight ? Real(o.sampleWeight[n]) : Real(1);
    Real ce = 0, dz[4];
    for (int d = 0; d < D; ++d) {
      p[d] /= sumE;
      const Real q = (d == c ? Real(1) - eps : Real(0)) + eps / D;
      ce -= q * (z[d] - z[a] - logSum);
      dz[d] = wn * (p[d] - q);  // ∂(w·CE)/∂z, since Σq = 1
    }
    const float* We = w + L.We + std::size_t(a) * F * H;
    for (int k = 0; k < H; ++k) y[k] = w[L.be + a * H + k];
    // No `if (h[f] == 0) skip` here or below: relu zeros are data-dependent, and the mispredicted branches
    // cost more than the FMAs they would save (adding 0·w changes nothing).
    for (int f = 0; f < F; ++f) {
      const float* Wrow = We + std::size_t(f) * H;
      for (int k = 0; k < H; ++k) y[k] += h[f] * Real(Wrow[k]);
    }
    Real rec = 0;
    for (int k = 0; k < H; ++k) {
      out[k] = a == 3 ? rtanh(y[k]) : a == 1 ? Real(0.8) * y[k] : (y[k] > 0 ? y[k] : Real(0));
      const Real e = out[k] - x[k];
      rec += e * e;
    }
    rec /= H;
    ceSum += double(wn * ce);
    recSum += double(rec);
    lossSum += double(wn * ce + lam * rec);

    // ---- backward: unnormalised ∂(w·CE + λ·rec)/∂θ for this token ----
    for (int f = 0; f < F; ++f) dh[f] = 0;
    if (lam != 0) {
      for (int k = 0; k < H; ++k) {
        const Real dout = lam * Real(2) / Real(H) * (out[k] - x[k]);
        const Real act = a == 3 ? Real(1) - out[k] * out[k] : a == 1 ? Real(0.8) : (y[k] > 0 ? Real(1) : Real(0));
        dy[k] = dout * act;
      }
      Real* gWe = g + L.We + std::size_t(a) * F * H;
      Real* gbe = g + L.be + std::size_t(a) * H;
      for (int k = 0; k < H; ++k) gbe[k] += dy[k];
      for (int f = 0; f < F; ++f) {
        Real* gRow = gWe + std::size_t(f) * H;
        for (int k = 0; k < H; ++k) gRow[k] += h[f] * dy[k];
      }
      const Real* WeTa = WeT + std::size_t(a) * H * F;
      for (int k = 0; k < H; ++k) {
        const Real dk = dy[k];
        const Real* col = WeTa + std::size_t(k) * F;
        for (int f = 0; f < F; ++f) dh[f] += col[f] * dk;
      }
    }
    Real ds[4], dBase[4];
    for (int d = 0; d < D; ++d) {
      ds[d] = (s[d] > -clip && s[d] < clip) ? dz[d] * invT : Real(0);
      dBase[d] = g0 * ds[d];
      g[L.bc + d] += dBase[d];
    }
    for (int d = 0; d < D; ++d) {
      g[L.gates + 0] += ds[d] * base[d];
      g[L.gates + 1] += ds[d] * volS[d];
      g[L.gates + 2] += ds[d] * riskS[d];
      g[L.gates + 3] += ds[d] * statS[d];
    }
    for (int f = 0; f < F; ++f) {
      Real acc = 0;
      for (int d = 0; d < D; ++d) {
        g[L.Wc + f * D + d] += h[f] * dBase[d];
        acc += Real(w[L.Wc + f * D + d]) * dBase[d];
      }
      dh[f] += acc;
    }
    for (int d = 0; d < D; ++d) {
      const Real dVol = g1 * ds[d] / kVolUnits, dRisk = g2 * ds[d] / kRiskUnits, dStat = g3 * ds[d] / kStatUnits;
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
        for (int k = 0; k < kNumStats; ++k) g[L.Ws + (k * kStatUnits + j) * D + d] += stats[k] * ms;
      }
    }
    for (int f = 0; f < F; ++f) dh[f] = pre1[f] > 0 ? dh[f] : Real(0);
    for (int f = 0; f < F; ++f) g[L.b1 + f] += dh[f];
    for (int i = 0; i < H; ++i) {
      const Real xi = x[i];
      Real* gRow = g + L.W1 + std::size_t(i) * F;
      for (int f = 0; f < F; ++f) gRow[f] += xi * dh[f];
    }
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

template <class Real>
void lossGradRangeT(const moe::ParamView& P, const moe::Batch& b, const moe::LossOptions& o, std::size_t begin,
                    std::size_t end, double* gOut, moe::LossResult* sums) {
  if (P.H == 16) lossGradRangeH<Real, 16>(P, b, o, begin, end, gOut, sums);
  else lossGradRangeH<Real, 32>(P, b, o, begin, end, gOut, sums);
}

}  // namespace
