// GPU benchmark (build with -DMOE_BUILD_TESTS=ON where nvcc exists):
//   moe_cuda_bench <router16.safetensors> <router32.safetensors> [trainSteps]
// Prints one JSON object per line (the device script turns them into the table of docs/performance.md):
//   copy       device-to-device and pinned host<->device bandwidth (cudaMemcpy, CUDA events, median of repeats)
//   hostcopy   pageable -> pinned and pinned -> pageable memcpy through the backend's CopyPool, 1..16 threads
//   hostregister  cost of page-locking 1 GiB of pageable memory (the MOE_CUDA_HOST_REGISTER=1 variant)
//   kernel     forward kernel only (the fp32 versions 2, 4 and 8, see forward.cu, the tensor-core versions 9 and 11
//              in bf16x3, tf32x3, tf32 and bf16 and 12 and 13 in the first three, see forward_tc.cu), inputs and outputs on the device, 1e4 / 1e6 / 1e7
//              tokens, with and without the expert output; tokens/s and achieved GB/s (bytes of each input read
//              once, each output written once)
//   accuracy   v8 (fp32), v9, v11, v12 and v13 (each precision) against the scalar oracle on these weights, 1e6 tokens of the kernel
//              rows' inputs, T = 0.7, and at H = 16 the feature tokens of MOE_BENCH_TOKENS16 (see below) if set:
//              max |Δp| and max |Δp| / p, argmax differences where the oracle's top two logits differ by more than
//              1e-2 and within it, max |Δy| / (1 + |y|) of the expert output where the argmax agrees
// MOE_BENCH_KERNEL_TOKENS=N: kernel rows of N tokens only (1e4, 1e6 or 1e7).
// MOE_BENCH_ONLY=kernels: the kernel and accuracy rows only (no copy, pipeline or training rows); =train: the
// training rows only; =concurrent: the train-concurrent rows only (MOE_BENCH_CONCURRENT_ALL=1: at batch 65,536 too).
//   pipeline   Backend::forward from host arrays (pageable, as JS memory is): staging + transfers + kernel
//   train      lossAndGrad + adamwStep steps from host batches, as the TypeScript trainer drove them
//   train-fused   the same steps as Backend::trainSteps calls of 1 and of 16 steps (host batches)
//   train-set  the same steps as Backend::trainStepsOnSet calls of 16 steps on a set held on the device (the
//              trainer's path on the GPU)
//   train-concurrent  1, 2, 4 and 8 routers making train-set's calls at once, each on its own host thread (the
//              training command's members and folds share one card so); wall time over all their steps
//   train-device  the step's kernels alone on a batch already on the device (as the PyTorch baseline runs), and the
//              loss-and-gradient kernel alone
// Weights come from the same safetensors files the PyTorch comparison loads.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../src/cuda/common.cuh"
#include "../src/cuda/copy_pool.h"

namespace {

// Reads the flat parameter vector from a safetensors file: tensors in layout order, float32.
std::vector<float> loadSafetensors(const std::string& path, int& H) {
  std::ifstream f(path, std::ios::binary);
  MOE_CHECK(f.good(), "cannot open " + path);
  std::uint64_t len = 0;
  f.read(reinterpret_cast<char*>(&len), 8);
  std::string header(len, '\0');
  f.read(&header[0], std::streamsize(len));
  std::stringstream rest;
  rest << f.rdbuf();
  const std::string data = rest.str();
  auto tensor = [&](const std::string& name, std::size_t& begin, std::size_t& end) {
    const std::size_t at = header.find("\"" + name + "\":");
    MOE_CHECK(at != std::string::npos, "tensor " + name + " missing in " + path);
    const std::size_t off = header.find("\"data_offsets\":[", at);
    std::sscanf(header.c_str() + off + 16, "%zu,%zu", &begin, &end);
  };
  std::size_t b = 0, e = 0;
  tensor("W1", b, e);
  H = 0;
  for (int h : {16, 32})
    if ((e - b) / 4 == std::size_t(h) * 2 * h) H = h;
  MOE_CHECK(H != 0, "unexpected W1 size in " + path);
  std::vector<float> w;
  for (const char* name : {"W1", "b1", "Wc", "bc", "Wv", "Bv", "Wr", "Br", "Ws", "Bs", "gates", "We", "be"}) {
    tensor(name, b, e);
    const float* p = reinterpret_cast<const float*>(data.data() + b);
    w.insert(w.end(), p, p + (e - b) / 4);
  }
  MOE_CHECK(w.size() == moe::Layout(H).size, "parameter count mismatch in " + path);
  return w;
}

// Fast uniform fill in [-2, 2) (xorshift): the 1e7-token buffers hold 3.2e8 floats, too many for normal_distribution
// within a short device session; the distribution matters little for timing.
void fillUniform(std::vector<float>& v, std::uint32_t seed) {
  for (auto& x : v) {
    seed ^= seed << 13, seed ^= seed >> 17, seed ^= seed << 5;
    x = float(seed) * (4.0f / 4294967296.0f) - 2.0f;
  }
}

struct Timer {
  cudaEvent_t a, b;
  Timer() {
    MOE_CUDA_CHECK(cudaEventCreate(&a));
    MOE_CUDA_CHECK(cudaEventCreate(&b));
  }
  template <class Fn>
  double medianMs(int reps, Fn fn) {
    std::vector<double> ms;
    for (int r = 0; r < reps; ++r) {
      MOE_CUDA_CHECK(cudaEventRecord(a));
      fn();
      MOE_CUDA_CHECK(cudaEventRecord(b));
      MOE_CUDA_CHECK(cudaEventSynchronize(b));
      float t = 0;
      MOE_CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
      ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  }
};

double wallMedianMs(int reps, const std::function<void()>& fn) {
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: moe_cuda_bench <router16.safetensors> <router32.safetensors> [trainSteps]\n");
    return 2;
  }
  const int trainSteps = argc > 3 ? std::atoi(argv[3]) : 200;
  const char* onlyEnv = std::getenv("MOE_BENCH_ONLY");
  const bool kernelsOnly = onlyEnv && std::string(onlyEnv) == "kernels";
  const bool concurrentOnly = onlyEnv && std::string(onlyEnv) == "concurrent";
  const bool trainOnly = concurrentOnly || (onlyEnv && std::string(onlyEnv) == "train");
  try {
    const moe::CudaProbe& probe = moe::probeCuda();
    MOE_CHECK(probe.ok, probe.reason);
    std::printf("{\"kind\":\"device\",\"device\":\"%s\"}\n", probe.device.c_str());
    Timer timer;

    // ---- copy bandwidths ----
    if (!kernelsOnly && !trainOnly) {
      const std::size_t bytes = std::size_t(1) << 30;
      char *d1 = nullptr, *d2 = nullptr, *h = nullptr;
      MOE_CUDA_CHECK(cudaMalloc(&d1, bytes));
      MOE_CUDA_CHECK(cudaMalloc(&d2, bytes));
      MOE_CUDA_CHECK(cudaMallocHost(&h, bytes));
      std::memset(h, 1, bytes);
      MOE_CUDA_CHECK(cudaMemset(d1, 2, bytes));
      const double d2d = timer.medianMs(10, [&] { MOE_CUDA_CHECK(cudaMemcpyAsync(d2, d1, bytes, cudaMemcpyDeviceToDevice)); });
      const double h2d = timer.medianMs(5, [&] { MOE_CUDA_CHECK(cudaMemcpyAsync(d1, h, bytes, cudaMemcpyHostToDevice)); });
      const double d2h = timer.medianMs(5, [&] { MOE_CUDA_CHECK(cudaMemcpyAsync(h, d1, bytes, cudaMemcpyDeviceToHost)); });
      std::printf("{\"kind\":\"copy\",\"d2dGBs\":%.1f,\"h2dGBs\":%.2f,\"d2hGBs\":%.2f,\"note\":\"d2d counts bytes read + written\"}\n",
                  2.0 * bytes / d2d / 1e6, bytes / h2d / 1e6, bytes / d2h / 1e6);
      // Host copies the pipeline makes: pageable (like JS memory) to pinned and back, 256 MiB.
      const std::size_t hb = std::size_t(256) << 20;
      std::vector<char> pageable(hb, 3);
      for (int threads : {1, 4, 8, 16}) {
        moe::cuda::CopyPool pool(threads);
        pool.run({{h, pageable.data(), hb}});
        const double in = wallMedianMs(5, [&] { pool.run({{h, pageable.data(), hb}}); });
        const double out = wallMedianMs(5, [&] { pool.run({{pageable.data(), h, hb}}); });
        std::printf("{\"kind\":\"hostcopy\",\"threads\":%d,\"toPinnedGBs\":%.1f,\"fromPinnedGBs\":%.1f}\n", threads,
                    hb / in / 1e6, hb / out / 1e6);
      }
      // Page-locking caller memory instead (cudaHostRegister + cudaHostUnregister of 1 GiB of touched pageable memory).
      {
        std::vector<char> big(bytes, 5);
        const double ms = wallMedianMs(3, [&] {
          MOE_CUDA_CHECK(cudaHostRegister(big.data(), bytes, cudaHostRegisterDefault));
          MOE_CUDA_CHECK(cudaHostUnregister(big.data()));
        });
        std::printf("{\"kind\":\"hostregister\",\"GiB\":1,\"ms\":%.1f,\"GBs\":%.1f}\n", ms, bytes / ms / 1e6);
      }
      cudaFree(d1), cudaFree(d2), cudaFreeHost(h);
    }

    std::mt19937 gen(12345);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (int which = 0; which < 2; ++which) {
      int H = 0;
      const std::vector<float> w = loadSafetensors(argv[1 + which], H);
      const std::size_t withT = H == 16 ? moe::cuda::Lay<16>::sizeWithT : moe::cuda::Lay<32>::sizeWithT;
      float* dW = nullptr;
      MOE_CUDA_CHECK(cudaMalloc(&dW, withT * 4));
      MOE_CUDA_CHECK(cudaMemcpy(dW, w.data(), w.size() * 4, cudaMemcpyHostToDevice));
      moe::cuda::launchTransposeWe(H, dW, nullptr);
      moe::cuda::prepareForward(H);
      const moe::cuda::DeviceParams dp{dW, 1.0f};
      if (trainOnly) cudaFree(dW);
      else {

      // ---- kernel only ----
      const std::size_t nMax = 10000000;
      float *x, *vol, *risk, *probs, *expert;
      std::uint8_t* assign;
      MOE_CUDA_CHECK(cudaMalloc(&x, nMax * H * 4));
      MOE_CUDA_CHECK(cudaMalloc(&vol, nMax * 4));
      MOE_CUDA_CHECK(cudaMalloc(&risk, nMax * 4));
      MOE_CUDA_CHECK(cudaMalloc(&probs, nMax * 16));
      MOE_CUDA_CHECK(cudaMalloc(&expert, nMax * H * 4));
      MOE_CUDA_CHECK(cudaMalloc(&assign, nMax));
      {
        std::vector<float> hx(nMax * H), hv(nMax), hr(nMax);
        fillUniform(hx, 17);
        for (std::size_t i = 0; i < nMax; ++i) {
          hv[i] = std::fabs(nd(gen)) * 0.02f;
          hr[i] = nd(gen);
        }
        MOE_CUDA_CHECK(cudaMemcpy(x, hx.data(), hx.size() * 4, cudaMemcpyHostToDevice));
        MOE_CUDA_CHECK(cudaMemcpy(vol, hv.data(), nMax * 4, cudaMemcpyHostToDevice));
        MOE_CUDA_CHECK(cudaMemcpy(risk, hr.data(), nMax * 4, cudaMemcpyHostToDevice));
      }
      using moe::cuda::Precision;
      const std::pair<int, Precision> kernels[] = {{2, Precision::FP32},   {4, Precision::FP32},
                                                   {8, Precision::FP32},   {9, Precision::BF16X3},
                                                   {9, Precision::TF32X3}, {9, Precision::TF32},
                                                   {9, Precision::BF16},   {11, Precision::BF16X3},
                                                   {11, Precision::TF32X3}, {11, Precision::TF32},
                                                   {11, Precision::BF16},   {12, Precision::BF16X3},
                                                   {12, Precision::TF32X3}, {12, Precision::TF32},
                                                   {13, Precision::BF16X3}, {13, Precision::TF32X3},
                                                   {13, Precision::TF32}};
      // MOE_BENCH_KERNELS=13:bf16x3,12:bf16x3,...: only those versions and precisions (an A/B of two builds).
      const char* pickEnv = std::getenv("MOE_BENCH_KERNELS");
      const std::string pick = pickEnv ? "," + std::string(pickEnv) + "," : "";
      auto picked = [&](const std::pair<int, Precision>& kp) {
        return pick.empty() ||
               pick.find("," + std::to_string(kp.first) + ":" + moe::cuda::precisionName(kp.second) + ",") !=
                   std::string::npos;
      };
      MOE_CHECK(std::any_of(std::begin(kernels), std::end(kernels), picked),
                "MOE_BENCH_KERNELS must name kernels as version:precision (e.g. 13:bf16x3,12:bf16x3) but received " +
                    std::string(pickEnv ? pickEnv : ""));
      // MOE_BENCH_KERNEL_TOKENS=N: the kernel rows at that size only (a profiler then finds each instance's N-token
      // launch first: v12 and v11 share an instance without the expert output).
      const char* sizeEnv = std::getenv("MOE_BENCH_KERNEL_TOKENS");
      const std::size_t onlySize = sizeEnv ? std::size_t(std::strtoull(sizeEnv, nullptr, 10)) : 0;
      for (std::size_t n : {std::size_t(10000), std::size_t(1000000), std::size_t(10000000)}) {
        if (onlySize != 0 && n != onlySize) continue;
        for (const auto& kp : kernels)
        for (bool withExpert : {true, false}) {
          if (!picked(kp)) continue;
          const int version = kp.first;
          const Precision precision = kp.second;
          // Small batches rotate through the 1e7-token buffers so repeats do not run out of L2.
          const std::size_t slots = nMax / n;
          std::size_t k = 0;
          auto run = [&] {
            const std::size_t at = (k++ % slots) * n;
            moe::cuda::launchForward(H, dp, {x + at * H, vol + at, risk + at, probs + at * 4, assign + at,
                                             withExpert ? expert + at * H : nullptr, int(n)}, nullptr, version,
                                             precision);
          };
          for (int i = 0; i < 3; ++i) run();
          const int reps = n >= 10000000 ? 20 : n >= 1000000 ? 50 : 200;
          const double ms = timer.medianMs(reps, run);
          const double bytes = double(n) * (H * 4 + 8 + 16 + 1 + (withExpert ? H * 4 : 0));
          std::printf("{\"kind\":\"kernel\",\"version\":%d,\"precision\":\"%s\",\"H\":%d,\"tokens\":%zu,\"expert\":%s,\"ms\":%.4f,\"tokensPerSec\":%.4e,\"GBs\":%.1f}\n",
                      version, moe::cuda::precisionName(precision), H, n, withExpert ? "true" : "false", ms,
                      n / ms * 1e3, bytes / ms / 1e6);
        }
      }

      // ---- accuracy against the scalar oracle on these weights: `inputs` names the tokens, hx/hv/hr hold them ----
      auto accuracy = [&](const char* inputs, const std::vector<float>& hx, const std::vector<float>& hv,
                          const std::vector<float>& hr, float T) {
        const std::size_t n = hv.size();
        std::vector<float> p1(n * 4), y1(n * H), p2(n * 4), y2(n * H);
        std::vector<std::uint8_t> a1(n), a2(n);
        MOE_CUDA_CHECK(cudaMemcpy(x, hx.data(), n * H * 4, cudaMemcpyHostToDevice));
        MOE_CUDA_CHECK(cudaMemcpy(vol, hv.data(), n * 4, cudaMemcpyHostToDevice));
        MOE_CUDA_CHECK(cudaMemcpy(risk, hr.data(), n * 4, cudaMemcpyHostToDevice));
        const auto oracle = moe::makeCpuBackend(moe::BackendChoice::Scalar, 16);
        const moe::Params pr{H, T, w};
        oracle->forward(pr, {hx.data(), hv.data(), hr.data(), n}, {p1.data(), a1.data(), y1.data()});
        const moe::cuda::DeviceParams dpT{dW, 1.0f / T};
        for (const auto& kp : kernels) {
          const int version = kp.first;
          const Precision precision = kp.second;
          if (version < 8 || !picked(kp)) continue;
          moe::cuda::launchForward(H, dpT, {x, vol, risk, probs, assign, expert, int(n)}, nullptr, version, precision);
          MOE_CUDA_CHECK(cudaMemcpy(p2.data(), probs, n * 16, cudaMemcpyDeviceToHost));
          MOE_CUDA_CHECK(cudaMemcpy(a2.data(), assign, n, cudaMemcpyDeviceToHost));
          MOE_CUDA_CHECK(cudaMemcpy(y2.data(), expert, n * H * 4, cudaMemcpyDeviceToHost));
          double maxP = 0, maxRelP = 0, maxY = 0;
          std::size_t badA = 0, tieA = 0, pOver = 0;
          for (std::size_t t = 0; t < n; ++t) {
            for (int d = 0; d < 4; ++d) {
              const double e = std::fabs(double(p2[t * 4 + d]) - p1[t * 4 + d]);
              maxP = std::max(maxP, std::isnan(e) ? INFINITY : e);
              if (p1[t * 4 + d] > 1e-30f) maxRelP = std::max(maxRelP, std::isnan(e) ? INFINITY : e / p1[t * 4 + d]);
              if (!(e <= 2e-3)) ++pOver;
            }
            if (a1[t] != a2[t]) {
              double top = -1, second = -1;
              for (int d = 0; d < 4; ++d) {
                const double v = p1[t * 4 + d];
                if (v > top) { second = top; top = v; } else if (v > second) second = v;
              }
              if (std::log(top / second) > 1e-2) ++badA;
              else ++tieA;
              continue;
            }
            for (int k = 0; k < H; ++k) {
              const double r = y1[t * H + k], e = std::fabs(double(y2[t * H + k]) - r) / (1 + std::fabs(r));
              maxY = std::max(maxY, std::isnan(e) ? INFINITY : e);
            }
          }
          std::printf("{\"kind\":\"accuracy\",\"inputs\":\"%s\",\"version\":%d,\"precision\":\"%s\",\"H\":%d,\"tokens\":%zu,\"T\":%.4f,"
                      "\"maxAbsProb\":%.3e,\"maxRelProb\":%.3e,\"probsOver2e-3\":%zu,\"argmaxDiffGapOver1e-2\":%zu,\"argmaxDiffNearTie\":%zu,"
                      "\"maxExpertRel\":%.3e,\"meetsContract\":%s}\n",
                      inputs, version, moe::cuda::precisionName(precision), H, n, T, maxP, maxRelP, pOver, badA, tieA, maxY,
                      pOver == 0 && badA == 0 ? "true" : "false");
        }
      };
      {
        // The first 1e6 tokens of the kernel rows' inputs (x uniform in [-2, 2), vol |N(0, 0.02²)|, risk N(0, 1)).
        const std::size_t n = 1000000;
        std::vector<float> hx(n * H), hv(n), hr(n);
        MOE_CUDA_CHECK(cudaMemcpy(hx.data(), x, n * H * 4, cudaMemcpyDeviceToHost));
        MOE_CUDA_CHECK(cudaMemcpy(hv.data(), vol, n * 4, cudaMemcpyDeviceToHost));
        MOE_CUDA_CHECK(cudaMemcpy(hr.data(), risk, n * 4, cudaMemcpyDeviceToHost));
        accuracy("uniform", hx, hv, hr, 0.7f);
      }
      // MOE_BENCH_TOKENS16=FILE (uint64 n, then float32 x[n·16], vol[n], risk[n]): feature tokens for the H = 16
      // weights, routed at MOE_BENCH_T (default 0.7; the committed H = 16 model was fitted at 0.6627).
      const char* tokEnv = std::getenv("MOE_BENCH_TOKENS16");
      if (H == 16 && tokEnv && *tokEnv) {
        std::ifstream f(tokEnv, std::ios::binary);
        MOE_CHECK(f.good(), std::string("cannot open ") + tokEnv);
        std::uint64_t n = 0;
        f.read(reinterpret_cast<char*>(&n), 8);
        MOE_CHECK(n >= 1 && n <= nMax, "token count out of range in " + std::string(tokEnv));
        std::vector<float> hx(n * H), hv(n), hr(n);
        f.read(reinterpret_cast<char*>(hx.data()), std::streamsize(n * H * 4));
        f.read(reinterpret_cast<char*>(hv.data()), std::streamsize(n * 4));
        f.read(reinterpret_cast<char*>(hr.data()), std::streamsize(n * 4));
        MOE_CHECK(f.good(), "short read of " + std::string(tokEnv));
        const char* tEnv = std::getenv("MOE_BENCH_T");
        accuracy("features", hx, hv, hr, tEnv && *tEnv ? std::strtof(tEnv, nullptr) : 0.7f);
      }
      cudaFree(x), cudaFree(vol), cudaFree(risk), cudaFree(probs), cudaFree(expert), cudaFree(assign), cudaFree(dW);
      }  // !trainOnly

      if (kernelsOnly) continue;

      // ---- pipeline from pageable host memory (what the addon does for a JS Float32Array) ----
      const auto be = moe::makeCudaBackend();
      moe::Params p{H, 1.0f, w};
      for (std::size_t n : {std::size_t(1000000), std::size_t(10000000)}) {
        if (trainOnly) break;
        std::vector<float> hx(n * H), hv(n), hr(n), hp(n * 4), he(n * H);
        std::vector<std::uint8_t> ha(n);
        fillUniform(hx, 23);
        for (std::size_t i = 0; i < n; ++i) hv[i] = std::fabs(nd(gen)) * 0.02f, hr[i] = nd(gen);
        const moe::Batch b{hx.data(), hv.data(), hr.data(), n};
        be->forward(p, b, {hp.data(), ha.data(), he.data()});
        const double ms = wallMedianMs(5, [&] { be->forward(p, b, {hp.data(), ha.data(), he.data()}); });
        std::printf("{\"kind\":\"pipeline\",\"H\":%d,\"tokens\":%zu,\"ms\":%.3f,\"tokensPerSec\":%.4e,\"inBytes\":%.0f,\"outBytes\":%.0f}\n",
                    H, n, ms, n / ms * 1e3, double(n) * (H * 4 + 8), double(n) * (16 + 1 + H * 4));
      }

      // ---- training steps (batch of the shipped recipe, 4096 tokens; and a large one) ----
      for (std::size_t n : {std::size_t(4096), std::size_t(65536)}) {
        std::vector<float> hx(n * H), hv(n), hr(n), sw(n), grad(w.size());
        std::vector<std::uint8_t> labels(n);
        for (auto& v : hx) v = nd(gen);
        for (std::size_t i = 0; i < n; ++i) {
          hv[i] = std::fabs(nd(gen)) * 0.02f, hr[i] = nd(gen), sw[i] = 1.0f, labels[i] = std::uint8_t(gen() % 4);
        }
        const moe::Batch b{hx.data(), hv.data(), hr.data(), n};
        const moe::LossOptions lo{labels.data(), sw.data(), 0.05f, 0.1f};
        const moe::AdamWOptions ao{5e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 1.0f};
        // Routers trained at once, as the training command's members and folds are on one card: K backends, each on
        // its own host thread with its own copy of the set, each making the same calls of 16 steps as train-set.
        // msPerStep is the wall time over all K routers' steps (K = 1 repeats train-set on a fresh backend); the
        // speedup is K = 1's msPerStep over it (K routers at once against one after another).
        if (n == 4096 || std::getenv("MOE_BENCH_CONCURRENT_ALL")) {
          const std::size_t per = 16;
          const int calls = std::max<int>(1, trainSteps / int(per));
          double msOne = 0;
          for (int K : {1, 2, 4, 8}) {
            std::vector<std::unique_ptr<moe::Backend>> bes;
            std::vector<std::shared_ptr<moe::Params>> ps;
            std::vector<moe::AdamWState> sts(static_cast<std::size_t>(K));
            std::vector<std::vector<moe::StepResult>> rs(static_cast<std::size_t>(K), std::vector<moe::StepResult>(per));
            std::vector<std::uint32_t> index(per * n);
            for (std::size_t i = 0; i < index.size(); ++i) index[i] = std::uint32_t(i % n);
            std::vector<float> lrs(per, ao.lr);
            const moe::LossOptions so{nullptr, nullptr, lo.labelSmoothing, lo.reconWeight};
            for (int k = 0; k < K; ++k) {
              bes.push_back(moe::makeCudaBackend());
              moe::Backend::TrainingSet set{{{hx.data(), hv.data(), hr.data(), labels.data(), n}}, {1.0f, 1.0f, 1.0f, 1.0f}};
              bes.back()->setTrainingSet(H, set);
              ps.push_back(std::make_shared<moe::Params>(moe::Params{H, 1.0f, w}));
            }
            const auto callOf = [&](int k) {
              bes[std::size_t(k)]->trainStepsOnSet(*ps[std::size_t(k)], ps[std::size_t(k)]->w, sts[std::size_t(k)],
                                                   index.data(), index.size(), so, per, lrs.data(), 0.0f, ao,
                                                   rs[std::size_t(k)].data());
            };
            for (int k = 0; k < K; ++k) callOf(k), callOf(k);  // warm-up: buffers grown, kernels loaded
            std::vector<std::string> failures(static_cast<std::size_t>(K));
            const auto t1 = std::chrono::steady_clock::now();
            std::vector<std::thread> threads;
            for (int k = 0; k < K; ++k)
              threads.emplace_back([&, k] {
                try {
                  for (int i = 0; i < calls; ++i) callOf(k);
                } catch (const std::exception& e) {
                  failures[std::size_t(k)] = e.what();
                }
              });
            for (std::thread& t : threads) t.join();
            const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t1).count();
            for (const std::string& e : failures) MOE_CHECK(e.empty(), "train-concurrent: " + e);
            const double perStep = ms / double(std::size_t(K) * std::size_t(calls) * per);
            if (K == 1) msOne = perStep;
            std::printf("{\"kind\":\"train-concurrent\",\"H\":%d,\"batch\":%zu,\"routers\":%d,\"stepsEach\":%zu,\"msPerStep\":%.4f,\"speedup\":%.2f}\n",
                        H, n, K, std::size_t(calls) * per, perStep, msOne / perStep);
          }
        }
        if (concurrentOnly) continue;

        auto params = std::make_shared<moe::Params>(moe::Params{H, 1.0f, w});
        moe::AdamWState st;
        const moe::Layout L(H);
        double lossFirst = 0, lossLast = 0;
        auto step = [&] {
          const moe::LossResult r = be->lossAndGrad(*params, b, lo, grad.data());
          be->adamwStep(L, params->w, st, grad.data(), ao);
          if (st.t == 1) lossFirst = r.loss;
          lossLast = r.loss;
        };
        for (int i = 0; i < 5; ++i) step();
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < trainSteps; ++i) step();
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        std::printf("{\"kind\":\"train\",\"H\":%d,\"batch\":%zu,\"steps\":%d,\"msPerStep\":%.4f,\"lossFirst\":%.5f,\"lossLast\":%.5f}\n",
                    H, n, trainSteps, ms / trainSteps, lossFirst, lossLast);

        // Times `call` (`per` steps a call, each step's results in res): two warm-up calls, then trainSteps / per
        // calls; prints one row of `kind` with the first and last loss of the first timed run.
        const auto timeCalls = [&](const char* kind, std::size_t per, std::vector<moe::StepResult>& res,
                                   const std::function<void()>& call) {
          const auto run = [&] {
            call();
            if (st.t == std::int64_t(per)) lossFirst = res[0].loss.loss;
            lossLast = res[per - 1].loss.loss;
          };
          const int calls = std::max<int>(1, trainSteps / int(per));
          for (int i = 0; i < 2; ++i) run();
          const auto t1 = std::chrono::steady_clock::now();
          for (int i = 0; i < calls; ++i) run();
          const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t1).count();
          std::printf("{\"kind\":\"%s\",\"H\":%d,\"batch\":%zu,\"stepsPerCall\":%zu,\"steps\":%zu,\"msPerStep\":%.4f,\"lossFirst\":%.5f,\"lossLast\":%.5f}\n",
                      kind, H, n, per, calls * per, ms / double(calls * per), lossFirst, lossLast);
        };

        // The same steps as fused calls (Backend::trainSteps: the gradient stays on the device): one step per call,
        // and 16 per call (16 batches in one array, the trainer's default on the GPU).
        for (std::size_t per : {std::size_t(1), std::size_t(16)}) {
          std::vector<float> gx(per * n * H), gv(per * n), gr(per * n), gw(per * n), lrs(per, ao.lr);
          std::vector<std::uint8_t> gl(per * n);
          for (std::size_t k = 0; k < per; ++k) {
            std::copy(hx.begin(), hx.end(), gx.begin() + k * n * H);
            std::copy(hv.begin(), hv.end(), gv.begin() + k * n);
            std::copy(hr.begin(), hr.end(), gr.begin() + k * n);
            std::copy(sw.begin(), sw.end(), gw.begin() + k * n);
            std::copy(labels.begin(), labels.end(), gl.begin() + k * n);
          }
          const moe::Batch gb{gx.data(), gv.data(), gr.data(), per * n};
          const moe::LossOptions glo{gl.data(), gw.data(), lo.labelSmoothing, lo.reconWeight};
          std::vector<moe::StepResult> res(per);
          params = std::make_shared<moe::Params>(moe::Params{H, 1.0f, w});
          st = moe::AdamWState{};
          timeCalls("train-fused", per, res,
                    [&] { be->trainSteps(*params, params->w, st, gb, glo, per, lrs.data(), 0.0f, ao, res.data()); });
        }

        // The trainer's path on the GPU since 2026-12-06: the batch's 16 copies as a training set held on the device
        // (Backend::setTrainingSet), each call of 16 steps sending only their token indices (trainStepsOnSet; each
        // step the same batch, so the rows compare with train-fused's).
        {
          const std::size_t per = 16;
          moe::Backend::TrainingSet set{{{hx.data(), hv.data(), hr.data(), labels.data(), n}}, {1.0f, 1.0f, 1.0f, 1.0f}};
          be->setTrainingSet(H, set);
          std::vector<std::uint32_t> index(per * n);
          for (std::size_t i = 0; i < index.size(); ++i) index[i] = std::uint32_t(i % n);
          std::vector<float> lrs(per, ao.lr);
          std::vector<moe::StepResult> res(per);
          params = std::make_shared<moe::Params>(moe::Params{H, 1.0f, w});
          st = moe::AdamWState{};
          const moe::LossOptions so{nullptr, nullptr, lo.labelSmoothing, lo.reconWeight};
          timeCalls("train-set", per, res, [&] {
            be->trainStepsOnSet(*params, params->w, st, index.data(), index.size(), so, per, lrs.data(), 0.0f, ao, res.data());
          });
        }

        // The step's kernels alone on a batch already on the device, as the PyTorch baseline runs: zero the partial
        // rows, loss and gradient, the fixed-order reduction, AdamW and the WeT refresh (CUDA events, median).
        {
          const std::size_t P = L.size, row = P + 3;
          const int rows = moe::cuda::lossGradRowsFor(H, n);
          float *dW = nullptr, *dM = nullptr, *dV = nullptr, *dG = nullptr, *dx = nullptr, *dvol = nullptr,
                *drisk = nullptr, *dsw = nullptr;
          std::uint8_t* dlab = nullptr;
          double *dPart = nullptr, *dRed = nullptr, *dNorm = nullptr;
          const std::size_t withT = H == 16 ? moe::cuda::Lay<16>::sizeWithT : moe::cuda::Lay<32>::sizeWithT;
          MOE_CUDA_CHECK(cudaMalloc(&dW, withT * 4));
          MOE_CUDA_CHECK(cudaMalloc(&dM, P * 4));
          MOE_CUDA_CHECK(cudaMalloc(&dV, P * 4));
          MOE_CUDA_CHECK(cudaMalloc(&dG, P * 4));
          MOE_CUDA_CHECK(cudaMalloc(&dx, n * H * 4));
          MOE_CUDA_CHECK(cudaMalloc(&dvol, n * 4));
          MOE_CUDA_CHECK(cudaMalloc(&drisk, n * 4));
          MOE_CUDA_CHECK(cudaMalloc(&dsw, n * 4));
          MOE_CUDA_CHECK(cudaMalloc(&dlab, n));
          MOE_CUDA_CHECK(cudaMalloc(&dPart, std::size_t(rows) * row * 8));
          MOE_CUDA_CHECK(cudaMalloc(&dRed, row * 8));
          MOE_CUDA_CHECK(cudaMalloc(&dNorm, 8));
          MOE_CUDA_CHECK(cudaMemcpy(dW, w.data(), P * 4, cudaMemcpyHostToDevice));
          MOE_CUDA_CHECK(cudaMemset(dM, 0, P * 4));
          MOE_CUDA_CHECK(cudaMemset(dV, 0, P * 4));
          MOE_CUDA_CHECK(cudaMemcpy(dx, hx.data(), n * H * 4, cudaMemcpyHostToDevice));
          MOE_CUDA_CHECK(cudaMemcpy(dvol, hv.data(), n * 4, cudaMemcpyHostToDevice));
          MOE_CUDA_CHECK(cudaMemcpy(drisk, hr.data(), n * 4, cudaMemcpyHostToDevice));
          MOE_CUDA_CHECK(cudaMemcpy(dsw, sw.data(), n * 4, cudaMemcpyHostToDevice));
          MOE_CUDA_CHECK(cudaMemcpy(dlab, labels.data(), n, cudaMemcpyHostToDevice));
          moe::cuda::launchTransposeWe(H, dW, nullptr);
          const moe::cuda::LossArgs la{dx, dvol, drisk, dlab, dsw, int(n), lo.labelSmoothing, lo.reconWeight, 0.0f};
          int t = 0;
          auto deviceStep = [&] {
            ++t;
            const moe::cuda::AdamWArgs a{ao.lr, ao.beta1, ao.beta2, ao.eps, ao.weightDecay, ao.clipNorm,
                                         1.0 - std::pow(double(ao.beta1), double(t)),
                                         1.0 - std::pow(double(ao.beta2), double(t))};
            MOE_CUDA_CHECK(cudaMemsetAsync(dPart, 0, std::size_t(rows) * row * 8, nullptr));
            moe::cuda::launchLossGrad(H, {dW, 1.0f}, la, rows, dPart, nullptr);
            moe::cuda::launchReduceLossGrad(H, dPart, rows, 1.0 / double(n), dRed, dG, nullptr);
            moe::cuda::launchAdamW(H, dW, dM, dV, dG, a, dNorm, nullptr);
            moe::cuda::launchTransposeWe(H, dW, nullptr);
          };
          for (int i = 0; i < 5; ++i) deviceStep();
          const double msD = timer.medianMs(7, [&] {
            for (int i = 0; i < 20; ++i) deviceStep();
          }) / 20;
          // The loss-and-gradient kernel alone.
          const double msK = timer.medianMs(7, [&] {
            for (int i = 0; i < 20; ++i) moe::cuda::launchLossGrad(H, {dW, 1.0f}, la, rows, dPart, nullptr);
          }) / 20;
          std::printf("{\"kind\":\"train-device\",\"H\":%d,\"batch\":%zu,\"rows\":%d,\"msPerStep\":%.4f,\"msLossGradKernel\":%.4f}\n",
                      H, n, rows, msD, msK);
          for (void* q : {(void*)dW, (void*)dM, (void*)dV, (void*)dG, (void*)dx, (void*)dvol, (void*)drisk, (void*)dsw,
                          (void*)dlab, (void*)dPart, (void*)dRed, (void*)dNorm})
            cudaFree(q);
        }
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moe_cuda_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
