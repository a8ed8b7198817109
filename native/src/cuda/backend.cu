// CUDA backend: device selection and probing, device-resident weights, reused buffers, and the host pipeline that
// moves batches through pinned staging buffers on two streams.
//
// Pipeline of forward (two slots, each a stream + pinned and device buffers for one chunk of up to kChunk tokens):
//   host: wait for chunk i-2, then copy its results out of slot i%2 and chunk i into it (one CopyPool job) →
//   enqueue H2D, kernel, D2H of chunk i on stream[i%2] → next chunk
// so the host copies of two chunks overlap the transfers and kernel of the chunk between them. The caller's arrays
// are pageable (JS memory), so they are never handed to the DMA engines directly: staging through pinned memory
// keeps the transfers at the pinned bandwidth, and the host copies run on a pool of threads to keep up with them.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "common.cuh"
#include "copy_pool.h"

namespace moe {

namespace cuda {

bool waitSpins() {
  static const bool spin = [] {
    const char* e = std::getenv("MOE_CUDA_WAIT");
    const std::string v = e ? e : "";
    if (v.empty() || v == "block") return false;
    if (v == "spin") return true;
    MOE_FAIL("MOE_CUDA_WAIT must be unset, block or spin (how a thread waits for the device's training steps) but is '" +
             v + "'");
  }();
  return spin;
}

bool stepGraphs() {
  const char* e = std::getenv("MOE_CUDA_GRAPH");
  const std::string v = e ? e : "";
  if (v.empty() || v == "1") return true;
  if (v == "0") return false;
  MOE_FAIL("MOE_CUDA_GRAPH must be unset, 1 or 0 (whether a call of training steps on a held set runs as one CUDA "
           "graph) but is '" + v + "'");
}

}  // namespace cuda

namespace {

using cuda::Lay;

constexpr std::size_t kChunk = std::size_t(1) << 18;  // tokens per pipeline chunk (32 MiB of x at H = 32)

std::string cudaErr(cudaError_t e) { return std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")"; }

// *bad = min(*bad, base + i) over the i with v[i] NaN or ±Inf. Each thread stops at its first: its later indices are
// larger, so the least index over all threads is found.
__global__ void firstNonFinite(const float* __restrict__ v, std::size_t n, unsigned long long base,
                               unsigned long long* bad) {
  for (std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x)
    if (!isfinite(v[i])) {
      atomicMin(bad, base + i);
      return;
    }
}

void launchFirstNonFinite(const float* v, std::size_t n, std::size_t base, unsigned long long* bad, cudaStream_t s) {
  const unsigned blocks = unsigned(std::min<std::size_t>((n + 255) / 256, 1024));
  firstNonFinite<<<blocks, 256, 0, s>>>(v, n, base, bad);
  MOE_CUDA_CHECK(cudaGetLastError());
}

// Batch row i of a held training set's tokens index[i] (i < m): x, vol, risk and the label copied, the sample weight
// the label's class weight. One thread per value of x; the first m threads also take the token's other fields.
__global__ void gatherTokens(int H, const float* __restrict__ x, const float* __restrict__ vol,
                             const float* __restrict__ risk, const std::uint8_t* __restrict__ labels,
                             const std::uint32_t* __restrict__ index, std::size_t m, float4 cw, float* __restrict__ ox,
                             float* __restrict__ ovol, float* __restrict__ orisk, std::uint8_t* __restrict__ olabels,
                             float* __restrict__ osw) {
  const std::size_t stride = std::size_t(gridDim.x) * blockDim.x;
  for (std::size_t i = std::size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < m * H; i += stride) {
    const std::size_t j = i / H;
    ox[i] = x[std::size_t(index[j]) * H + (i - j * H)];
    if (i < m) {
      const std::uint32_t t = index[i];
      const std::uint8_t c = labels[t];
      ovol[i] = vol[t];
      orisk[i] = risk[t];
      olabels[i] = c;
      osw[i] = c == 0 ? cw.x : c == 1 ? cw.y : c == 2 ? cw.z : cw.w;
    }
  }
}

CudaProbe doProbe() {
  CudaProbe r;
  r.built = true;
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    r.reason = "no usable CUDA driver or device: cudaGetDeviceCount returned " + cudaErr(e);
    return r;
  }
  if (count == 0) {
    const char* vis = std::getenv("CUDA_VISIBLE_DEVICES");
    r.reason = std::string("no CUDA device visible") + (vis ? std::string(" (CUDA_VISIBLE_DEVICES=") + vis + ")" : "");
    return r;
  }
  cudaDeviceProp p{};
  e = cudaGetDeviceProperties(&p, 0);
  if (e != cudaSuccess) {
    cudaGetLastError();
    r.reason = "cudaGetDeviceProperties(0) returned " + cudaErr(e);
    return r;
  }
  const std::string desc = std::string(p.name) + " (sm_" + std::to_string(p.major) + std::to_string(p.minor) + ")";
  if (p.major < 8) {
    r.reason = "device 0 is " + desc + "; this build has kernels for compute capability 8.0 and newer";
    return r;
  }
  e = cudaSetDevice(0);
  if (e == cudaSuccess) e = cudaFree(nullptr);  // creates the context: fails early on a broken driver
  if (e != cudaSuccess) {
    cudaGetLastError();
    r.reason = "could not create a CUDA context on " + desc + ": " + cudaErr(e);
    return r;
  }
  r.ok = true;
  r.device = desc;
  return r;
}

template <class T>
void devAlloc(T*& p, std::size_t count) {
  MOE_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p), std::max<std::size_t>(count, 1) * sizeof(T)));
}
template <class T>
void hostAlloc(T*& p, std::size_t count) {
  MOE_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&p), std::max<std::size_t>(count, 1) * sizeof(T)));
}
template <class T>
void devFree(T*& p) {
  if (p) cudaFree(p);
  p = nullptr;
}
template <class T>
void hostFree(T*& p) {
  if (p) cudaFreeHost(p);
  p = nullptr;
}

// One pipeline slot: a stream, an event, and device + pinned buffers for one chunk.
struct Slot {
  cudaStream_t stream = nullptr;
  cudaEvent_t done = nullptr;
  std::size_t cap = 0;  // tokens
  int capH = 0;
  float *x = nullptr, *vol = nullptr, *risk = nullptr, *probs = nullptr, *expert = nullptr, *sw = nullptr;
  std::uint8_t *assign = nullptr, *labels = nullptr;
  float *hx = nullptr, *hvol = nullptr, *hrisk = nullptr, *hprobs = nullptr, *hexpert = nullptr, *hsw = nullptr;
  std::uint8_t *hassign = nullptr, *hlabels = nullptr;

  void freeBuffers() {
    devFree(x), devFree(vol), devFree(risk), devFree(probs), devFree(expert), devFree(sw), devFree(assign),
        devFree(labels);
    hostFree(hx), hostFree(hvol), hostFree(hrisk), hostFree(hprobs), hostFree(hexpert), hostFree(hsw),
        hostFree(hassign), hostFree(hlabels);
    cap = 0;
    capH = 0;
  }
  void ensure(std::size_t n, int H) {
    if (n <= cap && H <= capH) return;
    freeBuffers();
    const std::size_t c = std::max(n, cap);
    devAlloc(x, c * H), devAlloc(vol, c), devAlloc(risk, c), devAlloc(probs, c * 4), devAlloc(expert, c * H);
    devAlloc(sw, c), devAlloc(assign, c), devAlloc(labels, c);
    hostAlloc(hx, c * H), hostAlloc(hvol, c), hostAlloc(hrisk, c), hostAlloc(hprobs, c * 4), hostAlloc(hexpert, c * H);
    hostAlloc(hsw, c), hostAlloc(hassign, c), hostAlloc(hlabels, c);
    cap = c;
    capH = H;
  }
};

class CudaBackend final : public Backend {
 public:
  CudaBackend()
      : pool_(std::make_unique<cuda::CopyPool>(int(std::min(16u, std::max(1u, std::thread::hardware_concurrency()))))) {
    MOE_CUDA_CHECK(cudaSetDevice(0));
    for (Slot& s : slots_) {
      MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
      MOE_CUDA_CHECK(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming));
    }
    MOE_CUDA_CHECK(cudaEventCreateWithFlags(&waited_, cudaEventDisableTiming | cudaEventBlockingSync));
    static_assert(Lay<16>::size == 3112 && Lay<32>::size == 11016, "layout constants drifted from layout.ts");
    MOE_CHECK(Layout(16).size == std::size_t(Lay<16>::size) && Layout(32).size == std::size_t(Lay<32>::size),
              "CUDA layout constants do not match moe::Layout");
  }
  ~CudaBackend() override { freeAll(); }

  const char* name() const override { return "cuda"; }

  // Contract: Backend::forward. b.x etc. are host (pageable) arrays; n >= 1.
  void forward(const Params& p, const Batch& b, const ForwardOut& out) const override {
    std::lock_guard<std::mutex> lock(mu_);
    requireOpen();
    const int H = p.H;
    ensureWeights(H, p.w, p.temperature);
    const std::size_t n = b.n;
    MOE_CHECK(n >= 1, "forward needs at least one token");
    const std::size_t C = std::min(n, kChunk);
    for (Slot& s : slots_) s.ensure(C, H);
    const std::size_t chunks = (n + C - 1) / C;
    const cuda::DeviceParams dp{dW_, invT_};
    const char* reg = std::getenv("MOE_CUDA_HOST_REGISTER");
    if (allPinned(H, b, out)) return forwardDirect(H, b, out, C, dp);
    if (!b.checkFinite && reg && std::string(reg) == "1" && forwardRegistered(H, b, out, C, dp)) return;
    std::vector<cuda::CopyPool::Task> copies;
    // With b.checkFinite the staging copies scan the inputs as they go; the first NaN/±Inf (x, then vol, then risk)
    // fails the call once its chunk is staged.
    constexpr std::size_t kNone = ~std::size_t(0);
    std::size_t bad[3] = {kNone, kNone, kNone};
    try {
      for (std::size_t i = 0; i < chunks + 2; ++i) {
        copies.clear();
        if (i >= 2) {  // results of chunk i-2 leave slot i%2 ...
          Slot& s = slots_[i % 2];
          const std::size_t at = (i - 2) * C, m = std::min(C, n - at);
          MOE_CUDA_CHECK(cudaEventSynchronize(s.done));
          copies.push_back({out.probs + at * 4, s.hprobs, m * 4 * sizeof(float)});
          copies.push_back({out.assign + at, s.hassign, m});
          if (out.expert) copies.push_back({out.expert + at * H, s.hexpert, m * H * sizeof(float)});
        }
        if (i < chunks) {  // ... while the inputs of chunk i enter it
          Slot& s = slots_[i % 2];
          const std::size_t at = i * C, m = std::min(C, n - at);
          const bool chk = b.checkFinite;
          copies.push_back({s.hx, b.x + at * H, m * H * sizeof(float), chk ? &bad[0] : nullptr, at * H});
          copies.push_back({s.hvol, b.vol + at, m * sizeof(float), chk ? &bad[1] : nullptr, at});
          copies.push_back({s.hrisk, b.risk + at, m * sizeof(float), chk ? &bad[2] : nullptr, at});
        }
        pool_->run(copies);
        if (bad[0] != kNone || bad[1] != kNone || bad[2] != kNone) {
          const int k = bad[0] != kNone ? 0 : bad[1] != kNone ? 1 : 2;
          const float* arr[3] = {b.x, b.vol, b.risk};
          const char* names[3] = {"x", "vol", "risk"};
          MOE_FAIL(nonFiniteMessage(names[k], arr[k][bad[k]], bad[k]));
        }
        if (i >= chunks) continue;
        Slot& s = slots_[i % 2];
        const std::size_t at = i * C, m = std::min(C, n - at);
        MOE_CUDA_CHECK(cudaMemcpyAsync(s.x, s.hx, m * H * sizeof(float), cudaMemcpyHostToDevice, s.stream));
        MOE_CUDA_CHECK(cudaMemcpyAsync(s.vol, s.hvol, m * sizeof(float), cudaMemcpyHostToDevice, s.stream));
        MOE_CUDA_CHECK(cudaMemcpyAsync(s.risk, s.hrisk, m * sizeof(float), cudaMemcpyHostToDevice, s.stream));
        cuda::launchForward(H, dp, {s.x, s.vol, s.risk, s.probs, s.assign, out.expert ? s.expert : nullptr, int(m)},
                            s.stream);
        MOE_CUDA_CHECK(cudaMemcpyAsync(s.hprobs, s.probs, m * 4 * sizeof(float), cudaMemcpyDeviceToHost, s.stream));
        MOE_CUDA_CHECK(cudaMemcpyAsync(s.hassign, s.assign, m, cudaMemcpyDeviceToHost, s.stream));
        if (out.expert)
          MOE_CUDA_CHECK(cudaMemcpyAsync(s.hexpert, s.expert, m * H * sizeof(float), cudaMemcpyDeviceToHost, s.stream));
        MOE_CUDA_CHECK(cudaEventRecord(s.done, s.stream));
      }
    } catch (...) {
      drain();
      throw;
    }
  }

  // Contract: Backend::lossAndGrad.
  LossResult lossAndGrad(const Params& p, const Batch& b, const LossOptions& o, float* grad) const override {
    std::lock_guard<std::mutex> lock(mu_);
    requireOpen();
    const std::size_t P = Layout(p.H).size, row = P + 3;
    cudaStream_t st = slots_[0].stream;
    try {
      lossGradOnDevice(p, b, o, 0.0f, false);
      MOE_CUDA_CHECK(cudaMemcpyAsync(hReduced_, dReduced_, row * sizeof(double), cudaMemcpyDeviceToHost, st));
      MOE_CUDA_CHECK(cudaStreamSynchronize(st));
    } catch (...) {
      drain();
      throw;
    }
    for (std::size_t i = 0; i < P; ++i) grad[i] = float(hReduced_[i]);
    return lossParts(P);
  }

  bool supportsTrainSteps() const override { return true; }

  // Contract: Backend::trainSteps. Every step's loss, gradient, AdamW and WeT refresh are queued on slot 0's stream
  // with no host synchronisation between steps: the gradient stays on the device (the reduction writes it as floats
  // for the AdamW kernel), each step's loss sums and norm are copied on the device into one small array, and the
  // host waits once, for the final parameters and that array. Batch k+1 is staged into the other slot's pinned
  // buffers while step k runs.
  void trainSteps(const Params& p, std::vector<float>& params, AdamWState& st, const Batch& b, const LossOptions& o,
                  std::size_t steps, const float* lr, float focalGamma, const AdamWOptions& ao,
                  StepResult* out) const override {
    std::lock_guard<std::mutex> lock(mu_);
    requireOpen();
    const int H = p.H;
    MOE_CHECK(steps >= 1 && b.n >= steps && b.n % steps == 0, "trainSteps needs a token count that is a multiple of steps");
    const std::size_t m = b.n / steps;
    runSteps(p, params, st, steps, lr, focalGamma, ao, out, [&](std::size_t k) {
      const Batch bk{b.x + k * m * H, b.vol + k * m, b.risk + k * m, m};
      const LossOptions ok{o.labels + k * m, o.sampleWeight ? o.sampleWeight + k * m : nullptr, o.labelSmoothing,
                           o.reconWeight};
      // Step 0 uploads p when the device holds other weights; later steps start from what the last one left.
      lossGradOnDevice(p, bk, ok, focalGamma, true, k == 0, int(k % 2));
    });
  }

  // Contract: Backend::setTrainingSet. Each part's arrays are copied (from pageable memory) to their place in one set
  // of device arrays; a set held before is freed first, and nothing is held after a failure.
  void setTrainingSet(int H, const TrainingSet& set) const override {
    std::lock_guard<std::mutex> lock(mu_);
    requireOpen();
    MOE_CHECK(H == 16 || H == 32, "setTrainingSet needs H = 16 or 32");
    const std::size_t n = set.tokens();
    MOE_CHECK(n >= 1, "setTrainingSet needs at least one token");
    freeSet();
    try {
      devAlloc(set_.x, n * H), devAlloc(set_.vol, n), devAlloc(set_.risk, n), devAlloc(set_.labels, n);
      cudaStream_t s = slots_[0].stream;
      std::size_t at = 0;
      for (const TokenRows& r : set.parts) {
        const auto copy = [&](void* dst, const void* src, std::size_t bytes) {
          MOE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s));
        };
        copy(set_.x + at * H, r.x, r.n * H * sizeof(float));
        copy(set_.vol + at, r.vol, r.n * sizeof(float));
        copy(set_.risk + at, r.risk, r.n * sizeof(float));
        copy(set_.labels + at, r.labels, r.n);
        at += r.n;
      }
      waitFor(s);
    } catch (...) {
      drain();
      freeSet();
      throw;
    }
    set_.n = n;
    set_.H = H;
    set_.cw = make_float4(set.classWeight[0], set.classWeight[1], set.classWeight[2], set.classWeight[3]);
  }

  // Contract: Backend::trainStepsOnSet. As trainSteps, each step's batch gathered on the device from the held set
  // into a slot's buffers (the indices uploaded once for the call), so the kernels read the same bytes.
  void trainStepsOnSet(const Params& p, std::vector<float>& params, AdamWState& st, const std::uint32_t* index,
                       std::size_t n, const LossOptions& o, std::size_t steps, const float* lr, float focalGamma,
                       const AdamWOptions& ao, StepResult* out) const override {
    std::lock_guard<std::mutex> lock(mu_);
    requireOpen();
    MOE_CHECK(set_.n > 0, "trainStepsOnSet needs a training set: call setTrainingSet first");
    MOE_CHECK(set_.H == p.H, "trainStepsOnSet: the training set was made for H = " + std::to_string(set_.H) +
                                 ", the parameters are for H = " + std::to_string(p.H));
    MOE_CHECK(steps >= 1 && n >= steps && n % steps == 0, "trainStepsOnSet needs an index count that is a multiple of steps");
    const std::size_t m = n / steps;
    if (indexCap_ < n) {
      devFree(dIndex_), hostFree(hIndex_);
      devAlloc(dIndex_, n), hostAlloc(hIndex_, n);
      indexCap_ = n;
    }
    std::memcpy(hIndex_, index, n * sizeof(std::uint32_t));
    MOE_CUDA_CHECK(cudaMemcpyAsync(dIndex_, hIndex_, n * sizeof(std::uint32_t), cudaMemcpyHostToDevice, slots_[0].stream));
    const LossOptions ok{nullptr, nullptr, o.labelSmoothing, o.reconWeight};
    if (useGraphs_) return runStepsGraph(p, params, st, steps, m, lr, ok, focalGamma, ao, out);
    runSteps(p, params, st, steps, lr, focalGamma, ao, out, [&](std::size_t k) {
      lossGradOnDevice(p, Batch{nullptr, nullptr, nullptr, m}, ok, focalGamma, true, k == 0, int(k % 2), dIndex_ + k * m);
    });
  }

  // AdamW with the moments on the device; `params` receives the updated vector, which also stays on the device
  // (the next forward or lossAndGrad with these parameters uploads nothing).
  double adamwStep(const Layout& layout, std::vector<float>& params, AdamWState& st, const float* grad,
                   const AdamWOptions& o) const override {
    std::lock_guard<std::mutex> lock(mu_);
    requireOpen();
    const int H = layout.H;
    const std::size_t P = layout.size;
    MOE_CHECK(params.size() == P, "parameter vector does not match the layout");
    ensureWeights(H, params, mirrorT_ > 0 ? mirrorT_ : 1.0f);
    stepOnDevice(params, st, 1, [&](cudaStream_t s) {
      std::memcpy(hGrad_, grad, P * sizeof(float));
      MOE_CUDA_CHECK(cudaMemcpyAsync(dGrad_, hGrad_, P * sizeof(float), cudaMemcpyHostToDevice, s));
      queueAdamW(H, P, st.t, o);
      MOE_CUDA_CHECK(cudaMemcpyAsync(hNorm_, dNorm_, sizeof(double), cudaMemcpyDeviceToHost, s));
    });
    return *hNorm_;
  }

  // Variant measured against the staged pipeline (MOE_CUDA_HOST_REGISTER=1): page-lock the caller's arrays for the
  // call (cudaHostRegister) and let the copy engines read and write them directly, with no host copies. Returns
  // false, having changed nothing, when an array cannot be registered (e.g. it shares a page with another one).
  bool forwardRegistered(int H, const Batch& b, const ForwardOut& out, std::size_t C, const cuda::DeviceParams& dp) const {
    std::vector<void*> done;
    for (const HostRange& r : hostRanges(H, b, out)) {
      if (cudaHostRegister(r.p, r.bytes, cudaHostRegisterDefault) != cudaSuccess) {
        cudaGetLastError();
        for (void* p : done) cudaHostUnregister(p);
        return false;
      }
      done.push_back(r.p);
    }
    auto unregister = [&] {
      for (void* p : done) cudaHostUnregister(p);
    };
    try {
      forwardDirect(H, b, out, C, dp);
    } catch (...) {
      unregister();
      throw;
    }
    unregister();
    return true;
  }

  struct HostRange {
    void* p;
    std::size_t bytes;
  };
  static std::vector<HostRange> hostRanges(int H, const Batch& b, const ForwardOut& out) {
    const std::size_t n = b.n;
    std::vector<HostRange> r{{const_cast<float*>(b.x), n * H * sizeof(float)},
                             {const_cast<float*>(b.vol), n * sizeof(float)},
                             {const_cast<float*>(b.risk), n * sizeof(float)},
                             {out.probs, n * 4 * sizeof(float)},
                             {out.assign, n}};
    if (out.expert) r.push_back({out.expert, n * H * sizeof(float)});
    return r;
  }

  // Whether every array of the call lies in page-locked host memory (allocPinnedHost, or registered), its first and
  // last byte both: then forward hands them to the copy engines as they are (forwardDirect).
  static bool allPinned(int H, const Batch& b, const ForwardOut& out) {
    const auto pinned = [](const void* p) {
      cudaPointerAttributes a{};
      if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        cudaGetLastError();
        return false;
      }
      return a.type == cudaMemoryTypeHost;
    };
    for (const HostRange& r : hostRanges(H, b, out))
      if (!pinned(r.p) || !pinned(static_cast<const char*>(r.p) + r.bytes - 1)) return false;
    return true;
  }

  // The caller's arrays are page-locked: each chunk goes host → device, through the kernel and back by DMA alone on
  // the two slots' streams, no host copy at all. With b.checkFinite the inputs are scanned on the device once they
  // are there (firstNonFinite, the least bad index of x, vol and risk each); the first NaN/±Inf (x, then vol, then
  // risk) fails the call when every chunk is done, as the staged path's message says it (the outputs then hold
  // whatever the kernel made of it, as the chunks staged before a bad one do there).
  void forwardDirect(int H, const Batch& b, const ForwardOut& out, std::size_t C, const cuda::DeviceParams& dp) const {
    const std::size_t n = b.n;
    if (b.checkFinite) {
      if (!dBad_) devAlloc(dBad_, 3);
      MOE_CUDA_CHECK(cudaMemset(dBad_, 0xff, 3 * sizeof(unsigned long long)));
    }
    try {
      const std::size_t chunks = (n + C - 1) / C;
      for (std::size_t i = 0; i < chunks; ++i) {
        Slot& s = slots_[i % 2];
        const std::size_t at = i * C, m = std::min(C, n - at);
        MOE_CUDA_CHECK(cudaMemcpyAsync(s.x, b.x + at * H, m * H * sizeof(float), cudaMemcpyHostToDevice, s.stream));
        MOE_CUDA_CHECK(cudaMemcpyAsync(s.vol, b.vol + at, m * sizeof(float), cudaMemcpyHostToDevice, s.stream));
        MOE_CUDA_CHECK(cudaMemcpyAsync(s.risk, b.risk + at, m * sizeof(float), cudaMemcpyHostToDevice, s.stream));
        if (b.checkFinite) {
          launchFirstNonFinite(s.x, m * H, at * H, dBad_, s.stream);
          launchFirstNonFinite(s.vol, m, at, dBad_ + 1, s.stream);
          launchFirstNonFinite(s.risk, m, at, dBad_ + 2, s.stream);
        }
        cuda::launchForward(H, dp, {s.x, s.vol, s.risk, s.probs, s.assign, out.expert ? s.expert : nullptr, int(m)},
                            s.stream);
        MOE_CUDA_CHECK(cudaMemcpyAsync(out.probs + at * 4, s.probs, m * 4 * sizeof(float), cudaMemcpyDeviceToHost, s.stream));
        MOE_CUDA_CHECK(cudaMemcpyAsync(out.assign + at, s.assign, m, cudaMemcpyDeviceToHost, s.stream));
        if (out.expert)
          MOE_CUDA_CHECK(cudaMemcpyAsync(out.expert + at * H, s.expert, m * H * sizeof(float), cudaMemcpyDeviceToHost,
                                         s.stream));
      }
      for (Slot& s : slots_) MOE_CUDA_CHECK(cudaStreamSynchronize(s.stream));
    } catch (...) {
      drain();
      throw;
    }
    if (!b.checkFinite) return;
    unsigned long long bad[3];
    MOE_CUDA_CHECK(cudaMemcpy(bad, dBad_, sizeof bad, cudaMemcpyDeviceToHost));
    const float* arr[3] = {b.x, b.vol, b.risk};
    const char* names[3] = {"x", "vol", "risk"};
    for (int k = 0; k < 3; ++k)
      if (bad[k] != ~0ull) MOE_FAIL(nonFiniteMessage(names[k], arr[k][bad[k]], std::size_t(bad[k])));
  }

  void release() const override {
    std::lock_guard<std::mutex> lock(mu_);
    freeAll();
    released_ = true;
  }

 private:
  // Loss and gradient of batch b at parameters p, queued on slot 0's stream and not waited for: the reduced sums in
  // dReduced_ (gradient, then Σ w·CE, Σ rec, Σ loss, all divided by n) and, with toGrad, the gradient as floats in
  // dGrad_ (named only after ensureWeights, which may allocate it). With upload false the device weights are used as
  // they are (the last trainSteps step left them). Chunks of up to kChunk tokens run in order on that one stream
  // (their kernels add into the same partial rows); the two slots (chunk i in slot (i + slotShift) % 2) still let the
  // host stage chunk i+1 while chunk i runs. Caller holds mu_.
  // With dIndex (device, b.n indices into the held set), each chunk is gathered from the set on the stream instead
  // (b's and o's arrays are not read).
  void lossGradOnDevice(const Params& p, const Batch& b, const LossOptions& o, float focalGamma, bool toGrad,
                        bool upload = true, int slotShift = 0, const std::uint32_t* dIndex = nullptr) const {
    MOE_CHECK(b.n > 0, "lossAndGrad needs at least one token");
    const int H = p.H;
    if (upload) ensureWeights(H, p.w, p.temperature);
    const std::size_t n = b.n;
    const int rows = prepareLossGrad(H, n);
    if (dIndex) return queueGatheredLossGrad(H, n, rows, o, focalGamma, toGrad, slotShift, dIndex, true);
    cudaStream_t st = slots_[0].stream;
    queueLossGrad(H, n, rows, toGrad, slotShift, [&](Slot& s, std::size_t at, std::size_t m) {
      MOE_CUDA_CHECK(cudaEventSynchronize(s.done));  // the slot's last chunk (of any call) has left its buffers
      std::vector<cuda::CopyPool::Task> copies{{s.hx, b.x + at * H, m * H * sizeof(float)},
                                               {s.hvol, b.vol + at, m * sizeof(float)},
                                               {s.hrisk, b.risk + at, m * sizeof(float)},
                                               {s.hlabels, o.labels + at, m}};
      if (o.sampleWeight) copies.push_back({s.hsw, o.sampleWeight + at, m * sizeof(float)});
      pool_->run(copies);
      MOE_CUDA_CHECK(cudaMemcpyAsync(s.x, s.hx, m * H * sizeof(float), cudaMemcpyHostToDevice, st));
      MOE_CUDA_CHECK(cudaMemcpyAsync(s.vol, s.hvol, m * sizeof(float), cudaMemcpyHostToDevice, st));
      MOE_CUDA_CHECK(cudaMemcpyAsync(s.risk, s.hrisk, m * sizeof(float), cudaMemcpyHostToDevice, st));
      MOE_CUDA_CHECK(cudaMemcpyAsync(s.labels, s.hlabels, m, cudaMemcpyHostToDevice, st));
      if (o.sampleWeight)
        MOE_CUDA_CHECK(cudaMemcpyAsync(s.sw, s.hsw, m * sizeof(float), cudaMemcpyHostToDevice, st));
      const cuda::LossArgs la{s.x, s.vol, s.risk, s.labels, o.sampleWeight ? s.sw : nullptr, int(m),
                              o.labelSmoothing, o.reconWeight, focalGamma};
      cuda::launchLossGrad(H, {dW_, invT_}, la, rows, dPartial_, st);
      MOE_CUDA_CHECK(cudaEventRecord(s.done, st));
    });
  }

  // The buffers of a loss and gradient over n tokens at H (partial rows, reduced sums, both slots' chunk buffers),
  // grown as needed; returns the partial rows used. Caller holds mu_.
  int prepareLossGrad(int H, std::size_t n) const {
    const std::size_t row = Layout(H).size + 3;
    const int rows = cuda::lossGradRowsFor(H, n);
    growDoubles(partialCap_, std::size_t(rows) * row, dPartial_);
    growDoubles(reducedCap_, row, dReduced_, &hReduced_);
    const std::size_t C = std::min(n, kChunk);
    for (Slot& s : slots_) s.ensure(C, H);
    return rows;
  }

  // A loss and gradient's work on slot 0's stream, in prepareLossGrad's buffers: zero the partial rows, then
  // chunk(slot, at, m) for each chunk of up to kChunk tokens (chunk i in slot (i + slotShift) % 2), which queues its
  // inputs and the kernel that adds into the rows, then the reduction (dReduced_, and dGrad_ with toGrad).
  template <class Chunk>
  void queueLossGrad(int H, std::size_t n, int rows, bool toGrad, int slotShift, Chunk chunk) const {
    const std::size_t row = Layout(H).size + 3;
    const std::size_t C = std::min(n, kChunk);
    cudaStream_t st = slots_[0].stream;
    MOE_CUDA_CHECK(cudaMemsetAsync(dPartial_, 0, std::size_t(rows) * row * sizeof(double), st));
    for (std::size_t i = 0, at = 0; at < n; ++i, at += C)
      chunk(slots_[(i + std::size_t(slotShift)) % 2], at, std::min(C, n - at));
    cuda::launchReduceLossGrad(H, dPartial_, rows, 1.0 / double(n), dReduced_, toGrad ? dGrad_ : nullptr, st);
  }

  // lossGradOnDevice's work for a batch gathered from the held set by dIndex (device, n indices), with no host work:
  // each chunk gathered into its slot's buffers (the same stream as every kernel that read them before: no wait),
  // then its loss and gradient. With record, each chunk's slot event is recorded after it (not while a graph is
  // captured: see captureSteps). Caller holds mu_.
  void queueGatheredLossGrad(int H, std::size_t n, int rows, const LossOptions& o, float focalGamma, bool toGrad,
                             int slotShift, const std::uint32_t* dIndex, bool record) const {
    cudaStream_t st = slots_[0].stream;
    queueLossGrad(H, n, rows, toGrad, slotShift, [&](Slot& s, std::size_t at, std::size_t m) {
      const unsigned blocks = unsigned(std::min<std::size_t>((m * H + 255) / 256, 4096));
      gatherTokens<<<blocks, 256, 0, st>>>(H, set_.x, set_.vol, set_.risk, set_.labels, dIndex + at, m, set_.cw, s.x,
                                           s.vol, s.risk, s.labels, s.sw);
      MOE_LAUNCH_CHECK();
      const cuda::LossArgs la{s.x, s.vol, s.risk, s.labels, s.sw, int(m), o.labelSmoothing, o.reconWeight, focalGamma};
      cuda::launchLossGrad(H, {dW_, invT_}, la, rows, dPartial_, st);
      if (record) MOE_CUDA_CHECK(cudaEventRecord(s.done, st));
    });
  }

  // The steps of trainSteps / trainStepsOnSet: lossGrad(k) queues step k's loss and gradient on slot 0's stream,
  // then its AdamW, WeT refresh and loss sums are queued after it; one wait at the end (stepOnDevice). Caller holds
  // mu_.
  template <class LossGrad>
  void runSteps(const Params& p, std::vector<float>& params, AdamWState& st, std::size_t steps, const float* lr,
                float focalGamma, const AdamWOptions& ao, StepResult* out, LossGrad lossGrad) const {
    const int H = p.H;
    const std::size_t P = Layout(H).size;
    checkSteps(p, params, focalGamma);
    growDoubles(stepsCap_, 4 * steps, dSteps_, &hSteps_);
    stepOnDevice(params, st, std::int64_t(steps), [&](cudaStream_t s) {
      for (std::size_t k = 0; k < steps; ++k) {
        lossGrad(k);
        AdamWOptions ak = ao;
        ak.lr = lr[k];
        queueAdamW(H, P, st.t + std::int64_t(k), ak);
        queueStepSums(P, k, s);
      }
      MOE_CUDA_CHECK(cudaMemcpyAsync(hSteps_, dSteps_, 4 * steps * sizeof(double), cudaMemcpyDeviceToHost, s));
    });
    stepResults(steps, out);
  }

  // trainStepsOnSet's steps as one CUDA graph (MOE_CUDA_GRAPH, on by default): the operations runSteps queues for
  // the gathered batches (zero the partial rows, gather, loss and gradient, reduction, AdamW, WeT refresh, the step's
  // sums), captured once and launched with one call, where queuing them costs the host about 130 launches and copies
  // a call of 16 steps, made under the driver's lock that every router of the process shares. The graph reads each
  // step's AdamW arguments (the rate, the bias corrections of step t + k) from dArgs_, copied before each launch, so
  // one graph serves every call of the same shape; it is captured again when any pointer, size or value captured in
  // it changes (graphKey_). The same kernels with the same arguments in the same order as runSteps: the same bits.
  // The moments are zeroed before the graph when st.t == 0 (runSteps zeroes them before the first AdamW; nothing
  // between reads them). dIndex_ holds the call's indices. Caller holds mu_.
  void runStepsGraph(const Params& p, std::vector<float>& params, AdamWState& st, std::size_t steps, std::size_t m,
                     const float* lr, const LossOptions& o, float focalGamma, const AdamWOptions& ao,
                     StepResult* out) const {
    const int H = p.H;
    const std::size_t P = Layout(H).size;
    checkSteps(p, params, focalGamma);
    growDoubles(stepsCap_, 4 * steps, dSteps_, &hSteps_);
    ensureWeights(H, p.w, p.temperature);
    const int rows = prepareLossGrad(H, m);
    if (argsCap_ < steps) {
      devFree(dArgs_), hostFree(hArgs_);
      devAlloc(dArgs_, steps), hostAlloc(hArgs_, steps);
      argsCap_ = steps;
    }
    for (std::size_t k = 0; k < steps; ++k) {
      AdamWOptions ak = ao;
      ak.lr = lr[k];
      hArgs_[k] = adamwArgs(st.t + std::int64_t(k), ak);
    }
    const std::vector<std::uint64_t> key = stepsGraphKey(H, steps, m, rows, o, focalGamma);
    if (!graph_ || key != graphKey_) captureSteps(H, steps, m, rows, o, focalGamma, key);
    stepOnDevice(params, st, std::int64_t(steps), [&](cudaStream_t s) {
      if (st.t == 0) {
        MOE_CUDA_CHECK(cudaMemsetAsync(dM_, 0, P * sizeof(float), s));
        MOE_CUDA_CHECK(cudaMemsetAsync(dV_, 0, P * sizeof(float), s));
      }
      MOE_CUDA_CHECK(cudaMemcpyAsync(dArgs_, hArgs_, steps * sizeof(cuda::AdamWArgs), cudaMemcpyHostToDevice, s));
      MOE_CUDA_CHECK(cudaGraphLaunch(graph_, s));
      // The slots' events mark their buffers' last use, as the steps queued one by one record them.
      for (Slot& sl : slots_) MOE_CUDA_CHECK(cudaEventRecord(sl.done, s));
      MOE_CUDA_CHECK(cudaMemcpyAsync(hSteps_, dSteps_, 4 * steps * sizeof(double), cudaMemcpyDeviceToHost, s));
    });
    stepResults(steps, out);
  }

  // Everything captureSteps bakes into the graph: sizes, device pointers, and the values passed to kernels by value.
  std::vector<std::uint64_t> stepsGraphKey(int H, std::size_t steps, std::size_t m, int rows, const LossOptions& o,
                                           float focalGamma) const {
    const auto bits = [](float v) {
      std::uint32_t u;
      std::memcpy(&u, &v, sizeof u);
      return std::uint64_t(u);
    };
    const auto ptr = [](const void* q) { return std::uint64_t(reinterpret_cast<std::uintptr_t>(q)); };
    std::vector<std::uint64_t> key{std::uint64_t(H), steps, m, std::uint64_t(rows), ptr(dIndex_), ptr(set_.x),
                                   ptr(set_.vol), ptr(set_.risk), ptr(set_.labels), bits(set_.cw.x), bits(set_.cw.y),
                                   bits(set_.cw.z), bits(set_.cw.w), ptr(dW_), ptr(dM_), ptr(dV_), ptr(dGrad_),
                                   ptr(dNorm_), ptr(dPartial_), ptr(dReduced_), ptr(dSteps_), ptr(dArgs_),
                                   bits(invT_), bits(o.labelSmoothing), bits(o.reconWeight), bits(focalGamma)};
    for (const Slot& sl : slots_)
      for (const void* q : {static_cast<const void*>(sl.x), static_cast<const void*>(sl.vol),
                            static_cast<const void*>(sl.risk), static_cast<const void*>(sl.labels),
                            static_cast<const void*>(sl.sw)})
        key.push_back(ptr(q));
    return key;
  }

  // Captures runStepsGraph's graph on slot 0's stream (thread-local capture mode: other routers' threads of this
  // process go on launching meanwhile; the slots' streams are non-blocking, so no legacy-stream work joins it) and
  // instantiates it, replacing the one held.
  void captureSteps(int H, std::size_t steps, std::size_t m, int rows, const LossOptions& o, float focalGamma,
                    const std::vector<std::uint64_t>& key) const {
    destroyGraph();
    const std::size_t P = Layout(H).size;
    cudaStream_t s = slots_[0].stream;
    MOE_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    cudaGraph_t g = nullptr;
    try {
      for (std::size_t k = 0; k < steps; ++k) {
        queueGatheredLossGrad(H, m, rows, o, focalGamma, true, int(k % 2), dIndex_ + k * m, false);
        cuda::launchAdamWAt(H, dW_, dM_, dV_, dGrad_, dArgs_ + k, dNorm_, s);
        cuda::launchTransposeWe(H, dW_, s);
        queueStepSums(P, k, s);
      }
    } catch (...) {
      if (cudaStreamEndCapture(s, &g) == cudaSuccess && g) cudaGraphDestroy(g);
      cudaGetLastError();
      throw;
    }
    MOE_CUDA_CHECK(cudaStreamEndCapture(s, &g));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, g, 0);
    cudaGraphDestroy(g);
    MOE_CUDA_CHECK(e);
    graph_ = exec;
    graphKey_ = key;
  }

  void destroyGraph() const {
    if (graph_) cudaGraphExecDestroy(graph_);
    graph_ = nullptr;
    graphKey_.clear();
  }

  // What every call of training steps checks before queuing anything.
  static void checkSteps(const Params& p, const std::vector<float>& params, float focalGamma) {
    const std::size_t P = Layout(p.H).size;
    MOE_CHECK(params.size() == P && p.w.size() == P, "parameter vector does not match the layout");
    MOE_CHECK(focalGamma >= 0 && std::isfinite(focalGamma), "focalGamma must be a finite number >= 0");
  }

  // Step k's loss sums (Σ w·CE, Σ rec, Σ loss ÷ n) and gradient norm copied on the device into dSteps_[4k ...].
  void queueStepSums(std::size_t P, std::size_t k, cudaStream_t s) const {
    MOE_CUDA_CHECK(cudaMemcpyAsync(dSteps_ + 4 * k, dReduced_ + P, 3 * sizeof(double), cudaMemcpyDeviceToDevice, s));
    MOE_CUDA_CHECK(cudaMemcpyAsync(dSteps_ + 4 * k + 3, dNorm_, sizeof(double), cudaMemcpyDeviceToDevice, s));
  }

  // The steps' sums, back in hSteps_ after the call's wait, into out[0 … steps).
  void stepResults(std::size_t steps, StepResult* out) const {
    for (std::size_t k = 0; k < steps; ++k) {
      out[k].loss.ce = hSteps_[4 * k];
      out[k].loss.rec = hSteps_[4 * k + 1];
      out[k].loss.loss = hSteps_[4 * k + 2];
      out[k].gradNorm = hSteps_[4 * k + 3];
    }
  }

  void freeSet() const {
    devFree(set_.x), devFree(set_.vol), devFree(set_.risk), devFree(set_.labels);
    set_.n = 0;
    set_.H = 0;
  }

  // Makes `dev` (and its pinned twin `*host`, when given) hold at least `need` doubles, `cap` their current size;
  // the contents are not kept. Buffers only grow, so later calls of the same size reuse them.
  void growDoubles(std::size_t& cap, std::size_t need, double*& dev, double** host = nullptr) const {
    if (cap >= need) return;
    devFree(dev);
    devAlloc(dev, need);
    if (host) {
      hostFree(*host);
      hostAlloc(*host, need);
    }
    cap = need;
  }

  // Runs `queue(stream)` (work on slot 0's stream that updates the device parameters), then brings the parameters
  // back into `params` (through hGrad_, after whatever `queue` read from it) and the mirror, waits once, and advances
  // st.t by `steps`. On a failure the mirror is cleared (the device copy may be half-updated: upload again next time)
  // and the streams drained. Caller holds mu_.
  template <class Queue>
  void stepOnDevice(std::vector<float>& params, AdamWState& st, std::int64_t steps, Queue queue) const {
    cudaStream_t s = slots_[0].stream;
    try {
      queue(s);
      MOE_CUDA_CHECK(cudaMemcpyAsync(hGrad_, dW_, params.size() * sizeof(float), cudaMemcpyDeviceToHost, s));
      waitFor(s);
    } catch (...) {
      mirror_.clear();
      drain();
      throw;
    }
    std::memcpy(params.data(), hGrad_, params.size() * sizeof(float));
    mirror_.assign(params.begin(), params.end());
    st.t += steps;
  }

  // AdamW step t + 1 (t steps done before it) on the device from the gradient in dGrad_, then the WeT refresh, queued on
  // slot 0's stream after what the caller queued there (the moments are zeroed first when t == 0); the norm goes to
  // dNorm_. Caller holds mu_, and ensureWeights(H, …) has run.
  void queueAdamW(int H, std::size_t P, std::int64_t t, const AdamWOptions& o) const {
    cudaStream_t s = slots_[0].stream;
    if (t == 0) {
      MOE_CUDA_CHECK(cudaMemsetAsync(dM_, 0, P * sizeof(float), s));
      MOE_CUDA_CHECK(cudaMemsetAsync(dV_, 0, P * sizeof(float), s));
    }
    cuda::launchAdamW(H, dW_, dM_, dV_, dGrad_, adamwArgs(t, o), dNorm_, s);
    cuda::launchTransposeWe(H, dW_, s);
  }

  // The kernel's arguments for AdamW step t + 1: the options and the bias corrections, in double as the CPU has them.
  static cuda::AdamWArgs adamwArgs(std::int64_t t, const AdamWOptions& o) {
    const double n = double(t + 1);
    return {o.lr, o.beta1, o.beta2, o.eps, o.weightDecay, o.clipNorm, 1.0 - std::pow(double(o.beta1), n),
            1.0 - std::pow(double(o.beta2), n)};
  }

  LossResult lossParts(std::size_t P) const {
    LossResult r;
    r.ce = hReduced_[P];
    r.rec = hReduced_[P + 1];
    r.loss = hReduced_[P + 2];
    return r;
  }

  void requireOpen() const { MOE_CHECK(!released_, "the CUDA backend was released (environment shutting down)"); }

  // Makes the device weights equal to w (and 1/T), uploading only when they differ from the last upload. The
  // comparison costs ~3 µs for 11 016 floats; it replaces any versioning of parameter snapshots.
  void ensureWeights(int H, const std::vector<float>& w, float T) const {
    if (H != wH_) {
      devFree(dW_), devFree(dM_), devFree(dV_), devFree(dGrad_), devFree(dNorm_);
      hostFree(hGrad_), hostFree(hNorm_);
      const std::size_t withT = H == 16 ? Lay<16>::sizeWithT : Lay<32>::sizeWithT;
      devAlloc(dW_, withT), devAlloc(dM_, w.size()), devAlloc(dV_, w.size()), devAlloc(dGrad_, w.size());
      devAlloc(dNorm_, 1), hostAlloc(hGrad_, w.size()), hostAlloc(hNorm_, 1);
      cuda::prepareForward(H);
      wH_ = H;
      mirror_.clear();
    }
    invT_ = 1.0f / T;
    mirrorT_ = T;
    if (mirror_.size() == w.size() && std::memcmp(mirror_.data(), w.data(), w.size() * sizeof(float)) == 0) return;
    cudaStream_t s = slots_[0].stream;
    MOE_CUDA_CHECK(cudaStreamSynchronize(slots_[1].stream));  // no kernel of the other slot still reads dW_
    MOE_CUDA_CHECK(cudaMemcpyAsync(dW_, w.data(), w.size() * sizeof(float), cudaMemcpyHostToDevice, s));
    cuda::launchTransposeWe(H, dW_, s);
    MOE_CUDA_CHECK(cudaStreamSynchronize(s));
    mirror_ = w;
  }

  // Waits for what is queued on stream s, asleep (an event made with cudaEventBlockingSync) rather than spinning on a
  // core as a stream's synchronisation does while the process has fewer contexts than cores: routers trained at once
  // each wait on a thread of their own, and the host's cores simulate and feed them meanwhile (MOE_CUDA_WAIT=spin
  // spins instead). Used where the wait is long: the end of a call of training steps, a training set's upload.
  void waitFor(cudaStream_t s) const {
    if (cuda::waitSpins()) {
      MOE_CUDA_CHECK(cudaStreamSynchronize(s));
      return;
    }
    MOE_CUDA_CHECK(cudaEventRecord(waited_, s));
    MOE_CUDA_CHECK(cudaEventSynchronize(waited_));
  }

  // After a failure: wait for whatever was queued so no copy writes into a buffer being freed or reused.
  void drain() const {
    for (Slot& s : slots_)
      if (s.stream) cudaStreamSynchronize(s.stream);
    cudaGetLastError();
  }

  void freeAll() const {
    drain();
    for (Slot& s : slots_) {
      s.freeBuffers();
      if (s.stream) cudaStreamDestroy(s.stream);
      if (s.done) cudaEventDestroy(s.done);
      s.stream = nullptr;
      s.done = nullptr;
    }
    if (waited_) cudaEventDestroy(waited_);
    waited_ = nullptr;
    devFree(dW_), devFree(dM_), devFree(dV_), devFree(dGrad_), devFree(dNorm_), devFree(dPartial_), devFree(dReduced_);
    hostFree(hGrad_), hostFree(hNorm_), hostFree(hReduced_);
    destroyGraph();
    devFree(dSteps_), hostFree(hSteps_), devFree(dBad_), devFree(dIndex_), hostFree(hIndex_);
    devFree(dArgs_), hostFree(hArgs_);
    freeSet();
    partialCap_ = reducedCap_ = stepsCap_ = indexCap_ = argsCap_ = 0;
    wH_ = 0;
    mirror_.clear();
  }

  mutable std::mutex mu_;
  mutable bool released_ = false;
  std::unique_ptr<cuda::CopyPool> pool_;
  mutable Slot slots_[2];
  mutable cudaEvent_t waited_ = nullptr;  // waitFor's event (blocking sync)
  mutable int wH_ = 0;
  mutable float invT_ = 1.0f, mirrorT_ = 0.0f;
  mutable std::vector<float> mirror_;
  mutable float *dW_ = nullptr, *dM_ = nullptr, *dV_ = nullptr, *dGrad_ = nullptr, *hGrad_ = nullptr;
  mutable double *dNorm_ = nullptr, *hNorm_ = nullptr;
  mutable unsigned long long* dBad_ = nullptr;  // forwardDirect's least non-finite index of x, vol, risk (~0: none)
  mutable double *dPartial_ = nullptr, *dReduced_ = nullptr, *hReduced_ = nullptr;
  mutable double *dSteps_ = nullptr, *hSteps_ = nullptr;  // trainSteps: per step Σ w·CE, Σ rec, Σ loss (÷ n), norm
  // Sizes in doubles of dPartial_, of dReduced_ and hReduced_, and of dSteps_ and hSteps_ (growDoubles).
  mutable std::size_t partialCap_ = 0, reducedCap_ = 0, stepsCap_ = 0;
  // runStepsGraph: its graph and what it was captured with, and each step's AdamW arguments (device, pinned twin).
  const bool useGraphs_ = cuda::stepGraphs();
  mutable cudaGraphExec_t graph_ = nullptr;
  mutable std::vector<std::uint64_t> graphKey_;
  mutable cuda::AdamWArgs *dArgs_ = nullptr, *hArgs_ = nullptr;
  mutable std::size_t argsCap_ = 0;
  // The held training set (setTrainingSet; n == 0: none) and trainStepsOnSet's indices (device, pinned twin).
  struct HeldSet {
    float *x = nullptr, *vol = nullptr, *risk = nullptr;
    std::uint8_t* labels = nullptr;
    std::size_t n = 0;
    int H = 0;
    float4 cw{};
  };
  mutable HeldSet set_;
  mutable std::uint32_t *dIndex_ = nullptr, *hIndex_ = nullptr;
  mutable std::size_t indexCap_ = 0;
};

}  // namespace

const CudaProbe& probeCuda() {
  static const CudaProbe probe = doProbe();
  return probe;
}

std::unique_ptr<Backend> makeCudaBackend() {
  const CudaProbe& p = probeCuda();
  MOE_CHECK(p.ok, "CUDA backend unavailable: " + p.reason);
  // A malformed MOE_CUDA_FORWARD_KERNEL or MOE_CUDA_PRECISION, or a forced kernel that does not compute in the
  // precision asked for, fails when the backend is made (a JS Router constructor throws), before any device resource
  // exists, rather than at the first forward.
  cuda::forcedForwardKernel();
  cuda::forwardKernelVersion(16, true, cuda::forwardPrecision());
  cuda::waitSpins();
  return std::make_unique<CudaBackend>();
}

void* allocPinnedHost(std::size_t bytes) {
  if (!probeCuda().ok || bytes == 0) return nullptr;
  void* p = nullptr;
  if (cudaSetDevice(0) != cudaSuccess || cudaHostAlloc(&p, bytes, cudaHostAllocPortable) != cudaSuccess) {
    cudaGetLastError();
    return nullptr;
  }
  return p;
}

void freePinnedHost(void* p) {
  if (p) cudaFreeHost(p);
}

}  // namespace moe
