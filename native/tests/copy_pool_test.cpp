// ctest: the CUDA pipeline's host copy pool (no GPU needed): every byte of every task copied, across the pool's
// 2 MB parts and threads, and for checked tasks the index of the first NaN/±Inf reported, whichever part or thread
// meets it first, and nothing reported for finite values (-0, subnormals, the float32 extremes).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

#include "cuda/copy_pool.h"

int main() {
  int failures = 0;
  auto expect = [&](bool ok, const char* what, std::size_t got, std::size_t want) {
    if (!ok) {
      ++failures;
      std::printf("FAIL %s: got %zu, expected %zu\n", what, got, want);
    }
  };
  constexpr std::size_t kNone = ~std::size_t(0);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (int threads : {1, 4}) {
    moe::cuda::CopyPool pool(threads);
    // 3.3 M floats (13 MB) in a large task and two small ones: several parts, the pool's threads, a ragged tail.
    const std::size_t n = 3'300'001, m = 1'001;
    std::vector<float> src(n), dst(n), s2(m), d2(m);
    for (std::size_t i = 0; i < n; ++i) src[i] = float(i % 977) * 0.37f - 150.0f;
    src[5] = -0.0f, src[6] = 1e-45f, src[7] = std::numeric_limits<float>::max(), src[8] = -src[7];
    for (std::size_t i = 0; i < m; ++i) s2[i] = float(i);
    std::vector<std::uint8_t> b1(777, 7), b2(777, 0);
    std::size_t bad[2] = {kNone, kNone};
    pool.run({{dst.data(), src.data(), n * 4, &bad[0], 0}, {d2.data(), s2.data(), m * 4, &bad[1], 0},
              {b2.data(), b1.data(), b1.size()}});
    expect(std::memcmp(dst.data(), src.data(), n * 4) == 0 && std::memcmp(d2.data(), s2.data(), m * 4) == 0 &&
               b1 == b2, "copies", 0, 0);
    expect(bad[0] == kNone && bad[1] == kNone, "finite values reported", bad[0], kNone);
    // The first bad value by index, with later ones in other parts (another thread may meet those first).
    for (std::size_t at : {std::size_t(0), std::size_t(4095), std::size_t(524'288), std::size_t(2'000'003), n - 1}) {
      std::vector<float> s = src;
      s[at] = at % 2 ? nan : -inf;
      if (at + 600'000 < n) s[at + 600'000] = inf;
      s[n - 1] = at == n - 1 ? inf : nan;
      std::size_t first = kNone;
      pool.run({{dst.data(), s.data(), n * 4, &first, 0}});
      expect(first == at, "first non-finite index", first, at);
    }
    // A task's base offsets what it reports (a chunk of a larger array).
    std::vector<float> s = s2;
    s[17] = nan;
    std::size_t first = kNone;
    pool.run({{d2.data(), s.data(), m * 4, &first, 40'000}});
    expect(first == 40'017, "index with a base", first, 40'017);
    std::printf("copy pool, %d thread(s): %s\n", threads, failures ? "FAILED" : "ok");
  }
  return failures ? 1 : 0;
}
