// CPU backend: picks a kernel family (scalar / AVX2 / AVX-512) at run time and splits batches over std::threads.
// Compiled with base flags only; the SIMD families live in their own translation units.
#include <algorithm>
#include <cmath>
#include <exception>
#include <system_error>
#include <thread>
#include <vector>

#include "moe_router/router.h"

namespace moe {

Error::Error(const char* file, int line, const std::string& msg)
    : std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + msg) {}

const char* cpuSimdLevel() {
#if defined(MOE_HAVE_X86_SIMD)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma"))
    return "avx512";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2";
#endif
  return "";
}

namespace {

// Below this many tokens per thread, starting a thread (~30 µs) costs about as much as it saves (~0.1 µs/token).
constexpr std::size_t kMinTokensPerThread = 1024;

// Runs fn(begin, end, slot) over [0, n) split into `parts` contiguous ranges aligned to 16 tokens, one per
// thread (the calling thread takes the first). Rethrows the first failure after every thread has joined.
template <class Fn>
void parallelRanges(std::size_t n, int parts, Fn fn) {
  if (parts <= 1) {
    fn(std::size_t(0), n, 0);
    return;
  }
  std::vector<std::exception_ptr> errors(parts);
  std::vector<std::thread> pool;
  const std::size_t step = ((n + parts - 1) / parts + 15) / 16 * 16;
  auto task = [&](int k) {
    const std::size_t b = std::min(n, step * k), e = std::min(n, step * (k + 1));
    try {
      fn(b, e, k);
    } catch (...) {
      errors[k] = std::current_exception();
    }
  };
  pool.reserve(parts - 1);
  for (int k = 1; k < parts; ++k) {
    try {
      pool.emplace_back(task, k);
    } catch (const std::system_error&) {
      task(k);  // no thread available (resource limits): do that range here rather than fail the batch
    }
  }
  task(0);
  for (auto& t : pool) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

int partsFor(std::size_t n, int threads) {
  const std::size_t byWork = std::max<std::size_t>(1, n / kMinTokensPerThread);
  return int(std::min<std::size_t>(std::size_t(threads), byWork));
}

class CpuBackend final : public Backend {
 public:
  CpuBackend(const CpuKernels& k, int threads) : k_(k), threads_(threads) {}
  const char* name() const override { return k_.name; }

  void forward(const Params& p, const Batch& b, const ForwardOut& out) const override {
    if (b.checkFinite) requireFiniteBatch(b, p.H);
    const ParamView v{p.w.data(), p.H, p.temperature};
    parallelRanges(b.n, partsFor(b.n, threads_),
                   [&](std::size_t s, std::size_t e, int) { k_.forward(v, b, out, s, e); });
  }

  LossResult lossAndGrad(const Params& p, const Batch& b, const LossOptions& o, float* grad) const override {
    MOE_CHECK(b.n > 0, "lossAndGrad needs at least one token");
    const ParamView v{p.w.data(), p.H, p.temperature};
    const std::size_t size = Layout(p.H).size;
    const int parts = partsFor(b.n, threads_);
    std::vector<std::vector<double>> g(parts, std::vector<double>(size, 0.0));
    std::vector<LossResult> sums(parts);
    parallelRanges(b.n, parts, [&](std::size_t s, std::size_t e, int k) {
      k_.lossGrad(v, b, o, s, e, g[k].data(), &sums[k]);
    });
    const double invN = 1.0 / double(b.n);
    LossResult r;
    for (int k = 0; k < parts; ++k) {
      r.loss += sums[k].loss;
      r.ce += sums[k].ce;
      r.rec += sums[k].rec;
    }
    r.loss *= invN;
    r.ce *= invN;
    r.rec *= invN;
    for (std::size_t i = 0; i < size; ++i) {
      double acc = 0;
      for (int k = 0; k < parts; ++k) acc += g[k][i];
      grad[i] = float(acc * invN);
    }
    return r;
  }

 private:
  const CpuKernels& k_;
  int threads_;
};

}  // namespace

std::unique_ptr<Backend> makeCpuBackend(BackendChoice choice, int threads) {
  MOE_CHECK(threads >= 1 && threads <= 64, "threads must be in 1..64");
  if (choice == BackendChoice::Scalar) return std::make_unique<CpuBackend>(scalarKernels(), threads);
  const std::string level = cpuSimdLevel();
  if (choice == BackendChoice::Avx512) {
    MOE_CHECK(level == "avx512", "backend 'simd-avx512' requested but this CPU lacks AVX-512 F/VL/BW/DQ");
  }
  if (choice == BackendChoice::Avx2) {
    MOE_CHECK(level == "avx512" || level == "avx2", "backend 'simd-avx2' requested but this CPU lacks AVX2+FMA");
#if defined(MOE_HAVE_X86_SIMD)
    return std::make_unique<CpuBackend>(avx2Kernels(), threads);
#endif
  }
#if defined(MOE_HAVE_X86_SIMD)
  if (level == "avx512") return std::make_unique<CpuBackend>(avx512Kernels(), threads);
  if (level == "avx2") return std::make_unique<CpuBackend>(avx2Kernels(), threads);
#endif
  MOE_CHECK(choice != BackendChoice::Simd, "backend 'simd' requested but this CPU has neither AVX2+FMA nor AVX-512");
  return std::make_unique<CpuBackend>(scalarKernels(), threads);
}

std::size_t firstNonFinite(const float* p, std::size_t n) {
  constexpr std::size_t kBlock = 4096;  // small enough to stay in L1 when a block is searched again for the index
  for (std::size_t b = 0; b < n; b += kBlock) {
    const std::size_t e = std::min(n, b + kBlock);
    std::uint32_t bad = 0;
    for (std::size_t i = b; i < e; ++i) bad |= std::uint32_t(nonFiniteBits(p[i]));
    if (bad)
      for (std::size_t i = b; i < e; ++i)
        if (nonFiniteBits(p[i])) return i;
  }
  return n;
}

std::size_t copyFirstNonFinite(float* dst, const float* src, std::size_t n) {
  constexpr std::size_t kBlock = 4096;  // as firstNonFinite's
  for (std::size_t b = 0; b < n; b += kBlock) {
    const std::size_t e = std::min(n, b + kBlock);
    std::uint32_t bad = 0;
    for (std::size_t i = b; i < e; ++i) {
      const float v = src[i];
      dst[i] = v;
      bad |= std::uint32_t(nonFiniteBits(v));
    }
    if (bad) return b + firstNonFinite(src + b, e - b);
  }
  return n;
}

std::string nonFiniteMessage(const char* name, float v, std::size_t i) {
  const char* text = std::isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity";
  return std::string("Expected finite values for ") + name + " but received " + text + " at index " + std::to_string(i);
}

void requireFiniteBatch(const Batch& b, int H) {
  const struct {
    const char* name;
    const float* p;
    std::size_t n;
  } arrays[] = {{"x", b.x, b.n * std::size_t(H)}, {"vol", b.vol, b.n}, {"risk", b.risk, b.n}};
  for (const auto& a : arrays) {
    const std::size_t i = firstNonFinite(a.p, a.n);
    if (i < a.n) MOE_FAIL(nonFiniteMessage(a.name, a.p[i], i));
  }
}

void Backend::trainSteps(const Params&, std::vector<float>&, AdamWState&, const Batch&, const LossOptions&,
                         std::size_t, const float*, float, const AdamWOptions&, StepResult*) const {
  MOE_FAIL(std::string("trainSteps needs the CUDA backend; backend ") + name() +
           " trains with lossAndGrad and adamwStep");
}

void Backend::setTrainingSet(int, const TrainingSet&) const {
  MOE_FAIL(std::string("setTrainingSet needs the CUDA backend; backend ") + name() +
           " trains with lossAndGrad and adamwStep");
}

void Backend::trainStepsOnSet(const Params&, std::vector<float>&, AdamWState&, const std::uint32_t*, std::size_t,
                              const LossOptions&, std::size_t, const float*, float, const AdamWOptions&,
                              StepResult*) const {
  MOE_FAIL(std::string("trainStepsOnSet needs the CUDA backend; backend ") + name() +
           " trains with lossAndGrad and adamwStep");
}

double Backend::adamwStep(const Layout& layout, std::vector<float>& params, AdamWState& st, const float* grad,
                          const AdamWOptions& o) const {
  return ::moe::adamwStep(layout, params, st, grad, o);
}

double adamwStep(const Layout& layout, std::vector<float>& params, AdamWState& st, const float* grad,
                 const AdamWOptions& o) {
  const std::size_t n = layout.size;
  MOE_CHECK(params.size() == n, "parameter vector does not match the layout");
  double sq = 0;
  for (std::size_t i = 0; i < n; ++i) sq += double(grad[i]) * grad[i];
  // Before any state changes: one NaN/Inf makes the norm NaN/Inf, and through the clip scale every parameter and
  // moment NaN. Finite float32 squares summed in double cannot overflow (n·3.4e38² ≪ 1.8e308), so this is exact.
  MOE_CHECK(std::isfinite(sq), "adamwStep refuses a gradient with NaN or infinite values");
  if (st.m.size() != n) {
    st.m.assign(n, 0.0f);
    st.v.assign(n, 0.0f);
    st.t = 0;
  }
  const double norm = std::sqrt(sq);
  const double scale = (o.clipNorm > 0 && norm > o.clipNorm) ? o.clipNorm / norm : 1.0;
  st.t += 1;
  const double bc1 = 1.0 - std::pow(double(o.beta1), double(st.t));
  const double bc2 = 1.0 - std::pow(double(o.beta2), double(st.t));
  for (std::size_t i = 0; i < n; ++i) {
    const double g = grad[i] * scale;
    const double m = o.beta1 * double(st.m[i]) + (1.0 - o.beta1) * g;
    const double v = o.beta2 * double(st.v[i]) + (1.0 - o.beta2) * g * g;
    st.m[i] = float(m);
    st.v[i] = float(v);
    const double decay = layout.decays(i) ? double(o.weightDecay) * params[i] : 0.0;
    params[i] = float(params[i] - o.lr * ((m / bc1) / (std::sqrt(v / bc2) + o.eps) + decay));
  }
  return norm;
}

}  // namespace moe
