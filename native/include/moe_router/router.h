// C++ API of the router core. Backends (scalar oracle, AVX2, AVX-512, CUDA) implement `Backend`;
// callers never see which kernels run. Math: see docs/router.md and the router section of the design.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "moe_router/layout.h"

namespace moe {

// Errors raised inside the core carry the source position so a JS stack can be traced to a line of C++.
class Error : public std::runtime_error {
 public:
  Error(const char* file, int line, const std::string& msg);
};
#define MOE_FAIL(msg) throw ::moe::Error(__FILE__, __LINE__, (msg))
#define MOE_CHECK(cond, msg) \
  do {                       \
    if (!(cond)) MOE_FAIL(msg); \
  } while (0)

// Immutable parameter snapshot. Async work holds a shared_ptr, so replacing the parameters while a batch
// runs never changes the numbers that batch sees.
struct Params {
  int H;
  float temperature;
  std::vector<float> w;  // Layout(H).size floats
};
using ParamsPtr = std::shared_ptr<const Params>;

// What kernels see: a raw view, so SIMD translation units never instantiate std:: templates (an inline function
// compiled with AVX-512 flags could otherwise be the copy the linker keeps for everyone).
struct ParamView {
  const float* w;
  int H;
  float temperature;
};

// Inputs of n tokens: x[n*H] row-major, vol[n], risk[n]. Pointers are borrowed for the call only.
struct Batch {
  const float* x;
  const float* vol;
  const float* risk;
  std::size_t n;
  // The caller has not checked x, vol and risk for NaN/±Inf: forward does, and throws moe::Error with
  // nonFiniteMessage for one it finds (the CPU backends: the first of x, else of vol, else of risk; the CUDA
  // backend: the same within the first chunk of 2^18 tokens that has one, or over the whole batch when every array
  // is in pinned memory) instead of routing it.
  bool checkFinite = false;
};

// True for NaN and ±Inf (every exponent bit set): an integer test compilers vectorise.
inline bool nonFiniteBits(float v) {
  std::uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return (u & 0x7F800000u) == 0x7F800000u;
}
// Index of the first NaN/±Inf in p[0..n), n when there is none (a vectorised scan of 4,096-value blocks, a block
// searched again only when it has one).
std::size_t firstNonFinite(const float* p, std::size_t n);
// Copies src[0..n) to dst and returns the index of the first NaN/±Inf among the values, n when there is none: one
// pass with the test fused into the copy (as fast as memcpy on the hosts measured; a copy and then a scan of it read
// the values twice), a block searched again only when it has one.
std::size_t copyFirstNonFinite(float* dst, const float* src, std::size_t n);
// "Expected finite values for <name> but received NaN|Infinity|-Infinity at index <i>".
std::string nonFiniteMessage(const char* name, float v, std::size_t i);
// Throws moe::Error (nonFiniteMessage) for the first non-finite value of b.x (n·H values), b.vol or b.risk.
void requireFiniteBatch(const Batch& b, int H);

// Outputs: probs[n*4], assign[n], expert[n*H] (nullptr = not computed).
struct ForwardOut {
  float* probs;
  std::uint8_t* assign;
  float* expert;
};

struct LossOptions {
  const std::uint8_t* labels;       // n values in 0..3
  const float* sampleWeight;        // n values or nullptr (= all 1)
  float labelSmoothing;             // ε in [0, 1)
  float reconWeight;                // λ ≥ 0
};

struct LossResult {
  double loss = 0, ce = 0, rec = 0;
};

// One step of Backend::trainSteps: its batch's loss parts (at the parameters before the step) and the pre-clip
// gradient norm.
struct StepResult {
  LossResult loss;
  double gradNorm = 0;
};

// One kernel family. Every function processes tokens [begin, end) of the batch; the caller splits work.
// lossGrad accumulates *unnormalised* sums (Σ w·CE, Σ rec and Σ over tokens of ∂/∂θ) into grad/result;
// normalisation by N happens once, after all ranges are reduced.
struct CpuKernels {
  const char* name;
  void (*forward)(const ParamView&, const Batch&, const ForwardOut&, std::size_t begin, std::size_t end);
  void (*lossGrad)(const ParamView&, const Batch&, const LossOptions&, std::size_t begin, std::size_t end,
                   double* grad, LossResult* sums);
};

const CpuKernels& scalarKernels();
#if defined(MOE_HAVE_X86_SIMD)
const CpuKernels& avx2Kernels();
const CpuKernels& avx512Kernels();
#endif

// Auto: best SIMD family, else scalar. Simd: best SIMD family, error when none. Avx2 / Avx512: that family
// exactly (tests and benchmarks use these to reach the AVX2 kernels on an AVX-512 machine).
enum class BackendChoice { Auto, Simd, Scalar, Avx2, Avx512 };

struct AdamWOptions {
  float lr, beta1, beta2, eps, weightDecay, clipNorm;
};

// Host-side optimizer state. The CPU backends keep the moments in m and v; the CUDA backend keeps them on the
// device and leaves m and v empty. t == 0 means "fresh": the next step starts from zero moments on any backend.
struct AdamWState {
  std::vector<float> m, v;
  std::int64_t t = 0;
};

// The backend interface a Router talks to: CPU (scalar / SIMD) and CUDA implement the same calls. Methods are
// const and safe to call from several threads at once (the CUDA backend serialises them internally).
class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;  // 'simd-avx512' | 'simd-avx2' | 'scalar' | 'cuda'
  virtual void forward(const Params& p, const Batch& b, const ForwardOut& out) const = 0;
  // Returns normalised loss parts and writes the mean gradient into grad (Layout(H).size floats).
  virtual LossResult lossAndGrad(const Params& p, const Batch& b, const LossOptions& o, float* grad) const = 0;
  // One AdamW step of `params` (see adamwStep below); the default runs on the CPU. Returns the pre-clip norm.
  virtual double adamwStep(const Layout& layout, std::vector<float>& params, AdamWState& st, const float* grad,
                           const AdamWOptions& o) const;
  // `steps` training steps in one call, the gradient never leaving the backend: step k takes tokens
  // [k·m, (k+1)·m) of b (m = b.n / steps; b.n a multiple of steps) and computes their loss and gradient at the
  // parameters step k-1 left (each sample weight multiplied by (1 - p[label])^focalGamma there, focalGamma ≥ 0; a
  // weight, not differentiated), then AdamW with learning rate lr[k] (ao.lr is not read). Starts from p.w, leaves
  // the result in `params` (same size) and st, and step k's loss parts and norm in out[k]. Only where
  // supportsTrainSteps(): the default throws moe::Error.
  virtual bool supportsTrainSteps() const { return false; }
  virtual void trainSteps(const Params& p, std::vector<float>& params, AdamWState& st, const Batch& b,
                          const LossOptions& o, std::size_t steps, const float* lr, float focalGamma,
                          const AdamWOptions& ao, StepResult* out) const;
  // A training set held by the backend (where supportsTrainSteps()): setTrainingSet copies its tokens (finite
  // inputs, labels in 0..3: the caller checks both) to the device, replacing any set held before (none held after a
  // failure). The set comes in parts, one after another (token i of the set is part 0's first, then part 1's, …), so
  // a caller whose tokens lie in several arrays (simulated and real) never joins them on the host.
  // trainStepsOnSet then does what trainSteps does
  // with the batch b.x[i] = set.x[index[i]] … (n = steps·m indices, each < the set's tokens(), checked by the caller),
  // the labels the set's and each sample weight set.classWeight[label]: the same batches bit for bit, gathered on the
  // device instead of copied from the host (o.labels and o.sampleWeight are not read). Defaults throw moe::Error.
  struct TokenRows {
    const float* x;  // [n·H]
    const float* vol;
    const float* risk;
    const std::uint8_t* labels;
    std::size_t n;
  };
  struct TrainingSet {
    std::vector<TokenRows> parts;
    float classWeight[kDomains];
    std::size_t tokens() const {
      std::size_t n = 0;
      for (const TokenRows& r : parts) n += r.n;
      return n;
    }
  };
  virtual void setTrainingSet(int H, const TrainingSet& set) const;
  virtual void trainStepsOnSet(const Params& p, std::vector<float>& params, AdamWState& st, const std::uint32_t* index,
                               std::size_t n, const LossOptions& o, std::size_t steps, const float* lr,
                               float focalGamma, const AdamWOptions& ao, StepResult* out) const;
  // Frees device resources early (environment teardown); later calls fail with moe::Error. No-op on the CPU.
  virtual void release() const {}
};

// Scalar or SIMD CPU backend running on `threads` std::threads. Throws moe::Error when `Simd` is requested but
// the CPU has neither AVX2+FMA nor AVX-512.
std::unique_ptr<Backend> makeCpuBackend(BackendChoice choice, int threads);

// Best SIMD level this CPU supports: "avx512", "avx2" or "" (none).
const char* cpuSimdLevel();

// One AdamW step with global-norm clipping on the flat vector; weight decay only where Layout::decays.
// Returns the gradient norm before clipping.
double adamwStep(const Layout& layout, std::vector<float>& params, AdamWState& st, const float* grad,
                 const AdamWOptions& o);

// ---- CUDA (native/src/cuda; a stub when the addon is built without nvcc) ----

// What the CUDA backend would run on. `ok` false: `reason` says why (not built with CUDA, no driver, no device,
// compute capability too old, ...). Probed once per process; honours CUDA_VISIBLE_DEVICES (device 0 of those).
struct CudaProbe {
  bool built = false;
  bool ok = false;
  std::string reason;
  std::string device;  // e.g. "NVIDIA H100 80GB HBM3 (sm_90)"
};
const CudaProbe& probeCuda();

// CUDA backend on device 0 of the visible devices. Throws moe::Error (with probeCuda().reason) when unavailable.
std::unique_ptr<Backend> makeCudaBackend();

// Page-locked (pinned) host memory of `bytes` bytes (cudaHostAlloc, portable), or nullptr where the CUDA backend is
// unavailable or the allocation fails. The CUDA backend's forward moves arrays that all live in such memory by DMA
// alone, with no staging copies on the host (CudaBackend::forward). Free with freePinnedHost.
void* allocPinnedHost(std::size_t bytes);
void freePinnedHost(void* p);

}  // namespace moe
