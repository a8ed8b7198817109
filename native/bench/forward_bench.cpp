// Kernel-only forward throughput (no Node, no allocation in the timed loop):
//   build with -DMOE_BUILD_TESTS=ON, run `moe_forward_bench [tokens] [simd]`. Prints tokens/s for every kernel
//   family this CPU has (scalar too unless `simd`), H = 16 and 32, 1 and 2 threads.
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "moe_router/router.h"

int main(int argc, char** argv) {
  const std::size_t n = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 200000;
  const bool simdOnly = argc > 2 && std::string(argv[2]) == "simd";
  std::mt19937 gen(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int H : {16, 32}) {
    const moe::Layout L(H);
    moe::Params p{H, 1.0f, std::vector<float>(L.size)};
    for (auto& v : p.w) v = nd(gen) * 0.25f;
    std::vector<float> x(n * H), vol(n), risk(n), probs(n * 4), expert(n * H);
    std::vector<std::uint8_t> assign(n);
    for (auto& v : x) v = nd(gen);
    for (std::size_t i = 0; i < n; ++i) { vol[i] = std::abs(nd(gen)) * 0.02f; risk[i] = nd(gen); }
    const moe::Batch b{x.data(), vol.data(), risk.data(), n};
    const moe::ForwardOut out{probs.data(), assign.data(), expert.data()};
    const std::string level = moe::cpuSimdLevel();
    std::vector<moe::BackendChoice> choices;
    if (!simdOnly) choices.push_back(moe::BackendChoice::Scalar);
    if (level == "avx512" || level == "avx2") choices.push_back(moe::BackendChoice::Avx2);
    if (level == "avx512") choices.push_back(moe::BackendChoice::Avx512);
    for (auto choice : choices) {
      for (int threads : {1, 2}) {
        auto be = moe::makeCpuBackend(choice, threads);
        be->forward(p, b, out);
        double best = 0, bestCpu = 0;
        for (int r = 0; r < 5; ++r) {
          timespec c0, c1;
          clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
          const auto t0 = std::chrono::steady_clock::now();
          be->forward(p, b, out);
          const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
          const double cpu = (c1.tv_sec - c0.tv_sec) + 1e-9 * (c1.tv_nsec - c0.tv_nsec);
          if (n / s > best) best = n / s;
          if (n / cpu > bestCpu) bestCpu = n / cpu;
        }
        // CPU time discounts other users of a shared machine; per-CPU-second rate for 2 threads is per core.
        std::printf("H=%d %-12s threads=%d  %.2f M tokens/s wall, %.2f M tokens per CPU-second\n", H, be->name(),
                    threads, best / 1e6, bestCpu / 1e6);
      }
    }
  }
  return 0;
}
