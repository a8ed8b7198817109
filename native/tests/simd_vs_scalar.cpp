// ctest: every SIMD family this CPU supports against the scalar oracle on ragged batch sizes.
// Probabilities within 1e-6 + 1e-5·|p|, argmax equal (inputs are random: exact near-ties are not expected),
// expert outputs within 1e-4 + 1e-4·|y|; loss and gradient too.
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "moe_router/router.h"

int main() {
  std::mt19937 gen(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  int failures = 0;
  const auto ref = moe::makeCpuBackend(moe::BackendChoice::Scalar, 1);
  std::vector<moe::BackendChoice> families;
  const std::string level = moe::cpuSimdLevel();
  if (level == "avx512") families.push_back(moe::BackendChoice::Avx512);
  if (level == "avx512" || level == "avx2") families.push_back(moe::BackendChoice::Avx2);
  for (auto family : families)
  for (int H : {16, 32}) {
    const auto simd = moe::makeCpuBackend(family, 2);
    std::printf("%s H=%d\n", simd->name(), H);
    const moe::Layout L(H);
    moe::Params p{H, 0.7f, std::vector<float>(L.size)};
    for (auto& v : p.w) v = nd(gen) * 0.3f;
    for (std::size_t n : {1, 3, 15, 16, 17, 31, 33, 1000, 4099, 9001}) {
      std::vector<float> x(n * H), vol(n), risk(n);
      for (auto& v : x) v = nd(gen);
      for (std::size_t i = 0; i < n; ++i) { vol[i] = nd(gen); risk[i] = nd(gen); }
      std::vector<float> p1(n * 4), p2(n * 4), e1(n * H), e2(n * H);
      std::vector<std::uint8_t> a1(n), a2(n);
      const moe::Batch b{x.data(), vol.data(), risk.data(), n};
      ref->forward(p, b, {p1.data(), a1.data(), e1.data()});
      simd->forward(p, b, {p2.data(), a2.data(), e2.data()});
      for (std::size_t t = 0; t < n; ++t) {
        for (int d = 0; d < 4; ++d)
          if (std::fabs(p1[t * 4 + d] - p2[t * 4 + d]) > 1e-6f + 1e-5f * std::fabs(p1[t * 4 + d])) ++failures;
        if (a1[t] != a2[t]) {
          ++failures;
          continue;
        }
        for (int k = 0; k < H; ++k)
          if (std::fabs(e1[t * H + k] - e2[t * H + k]) > 1e-4f + 1e-4f * std::fabs(e1[t * H + k])) ++failures;
      }
    }
  }
  // Loss and gradient: float SIMD backward against the double scalar oracle, within 1e-5·max|g| + 1e-4·|g|.
  for (auto family : families)
    for (int H : {16, 32}) {
      const auto simd = moe::makeCpuBackend(family, 2);
      const moe::Layout L(H);
      moe::Params p{H, 1.3f, std::vector<float>(L.size)};
      for (auto& v : p.w) v = nd(gen) * 0.3f;
      const std::size_t n = 3001;
      std::vector<float> x(n * H), vol(n), risk(n), sw(n), g1(L.size), g2(L.size);
      std::vector<std::uint8_t> labels(n);
      for (auto& v : x) v = nd(gen);
      for (std::size_t i = 0; i < n; ++i) {
        vol[i] = nd(gen);
        risk[i] = nd(gen);
        sw[i] = 0.5f + std::fabs(nd(gen));
        labels[i] = std::uint8_t(gen() % 4);
      }
      const moe::Batch b{x.data(), vol.data(), risk.data(), n};
      const moe::LossOptions o{labels.data(), sw.data(), 0.1f, 0.5f};
      const moe::LossResult r1 = ref->lossAndGrad(p, b, o, g1.data());
      const moe::LossResult r2 = simd->lossAndGrad(p, b, o, g2.data());
      float gmax = 0;
      for (float v : g1) gmax = std::fmax(gmax, std::fabs(v));
      int bad = std::fabs(r1.loss - r2.loss) > 1e-5 * (1 + std::fabs(r1.loss)) ? 1 : 0;
      for (std::size_t i = 0; i < L.size; ++i)
        if (std::fabs(g1[i] - g2[i]) > 1e-5f * gmax + 1e-4f * std::fabs(g1[i])) ++bad;
      std::printf("%s H=%d loss+grad: %d mismatches\n", simd->name(), H, bad);
      failures += bad;
    }
  std::printf("%s (%d mismatches)\n", failures ? "FAIL" : "ok", failures);
  return failures ? 1 : 0;
}
