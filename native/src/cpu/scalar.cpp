// Scalar backend: the oracle every other backend is tested against. Plain loops in float with the C library's
// expf/tanhf; no tricks, so it reads like the math in the design document.
#include <cmath>

#include "lossgrad.inl"
#include "moe_router/router.h"

namespace {

using moe::kDomains;

void forwardScalar(const moe::ParamView& P, const moe::Batch& b, const moe::ForwardOut& out, std::size_t begin,
                   std::size_t end) {
  const moe::Layout L(P.H);
  const int H = L.H, F = L.F, D = kDomains;
  const float* w = P.w;
  const float invT = 1.0f / P.temperature;
  float h[64];
  for (std::size_t n = begin; n < end; ++n) {
    const float* x = b.x + n * H;
    for (int f = 0; f < F; ++f) {
      float acc = w[L.b1 + f];
      for (int i = 0; i < H; ++i) acc += x[i] * w[L.W1 + i * F + f];
      h[f] = acc > 0 ? acc : 0.0f;
    }
    float mean = 0, absMean = 0, var = 0;
    for (int i = 0; i < H; ++i) { mean += x[i]; absMean += std::fabs(x[i]); }
    mean /= H; absMean /= H;
    for (int i = 0; i < H; ++i) var += (x[i] - mean) * (x[i] - mean);
    var /= H;
    const float stats[3] = {mean, var, absMean};
    float z[4];
    for (int d = 0; d < D; ++d) {
      float base = w[L.bc + d];
      for (int f = 0; f < F; ++f) base += h[f] * w[L.Wc + f * D + d];
      float volS = 0, riskS = 0, statS = 0;
      for (int j = 0; j < moe::kVolUnits; ++j) {
        volS += std::fmax(b.vol[n] * w[L.Wv + j * D + d] + w[L.Bv + j * D + d], 0.0f);
        riskS += std::fmax(b.risk[n] * w[L.Wr + j * D + d] + w[L.Br + j * D + d], 0.0f);
      }
      for (int j = 0; j < moe::kStatUnits; ++j) {
        float a = w[L.Bs + j * D + d];
        for (int k = 0; k < moe::kNumStats; ++k) a += stats[k] * w[L.Ws + (k * moe::kStatUnits + j) * D + d];
        statS += std::fmax(a, 0.0f);
      }
      const float s = w[L.gates] * base + w[L.gates + 1] * (volS / moe::kVolUnits) +
                      w[L.gates + 2] * (riskS / moe::kRiskUnits) + w[L.gates + 3] * (statS / moe::kStatUnits);
      z[d] = std::fmin(std::fmax(s, -moe::kLogitClip), moe::kLogitClip) * invT;
    }
    int a = 0;
    for (int d = 1; d < D; ++d) if (z[d] > z[a]) a = d;
    float sum = 0, e[4];
    for (int d = 0; d < D; ++d) { e[d] = std::exp(z[d] - z[a]); sum += e[d]; }
    for (int d = 0; d < D; ++d) out.probs[n * D + d] = e[d] / sum;
    out.assign[n] = std::uint8_t(a);
    if (!out.expert) continue;
    const float* We = w + L.We + std::size_t(a) * F * H;
    for (int k = 0; k < H; ++k) {
      float y = w[L.be + a * H + k];
      for (int f = 0; f < F; ++f) y += h[f] * We[f * H + k];
      out.expert[n * H + k] = a == 3 ? std::tanh(y) : a == 1 ? 0.8f * y : std::fmax(y, 0.0f);
    }
  }
}

}  // namespace

const moe::CpuKernels& moe::scalarKernels() {
  static const CpuKernels k{"scalar", forwardScalar, lossGradRangeT<double>};
  return k;
}
