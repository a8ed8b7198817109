#include "router_wrap.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <string>

#include "addon.h"
#include "args.h"
#include "pinned.h"
#include "workers.h"

namespace moe::addon {

namespace {

bool isHidden(double x) { return x == 16 || x == 32; }
bool isThreads(double x) { return x >= 1 && x <= 64 && x == static_cast<int>(x); }
bool isBeta(double x) { return x >= 0 && x < 1; }

// Inputs shared by forward and loss: (x [n*H], vol [n], risk [n]) at info[0..2]; n comes from vol. Types and
// lengths only: the values are checked by inPlace / staged, after every cheap check of the call has passed.
struct BatchArrays {
  Napi::Float32Array x, vol, risk;
  std::size_t n = 0;
};

BatchArrays readBatch(const Napi::CallbackInfo& info, int H) {
  if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    failExpected(info.Env(), false, "Float32Array", "vol", info[1]);
  const std::size_t n = info[1].As<Napi::Float32Array>().ElementLength();
  if (n == 0)
    throw Napi::RangeError::New(info.Env(), "Expected at least 1 token for vol but received Float32Array of length 0");
  BatchArrays a;
  a.x = requireF32(info[0], "x", n * std::size_t(H));
  a.vol = requireF32(info[1], "vol", n);
  a.risk = requireF32(info[2], "risk", n);
  a.n = n;
  return a;
}

// Sync calls: refuses NaN/±Inf, then reads the JS memory in place (no JS runs until the call returns).
Batch inPlace(Napi::Env env, const BatchArrays& a) {
  requireFinite(env, "x", a.x.Data(), a.x.ElementLength());
  requireFinite(env, "vol", a.vol.Data(), a.n);
  requireFinite(env, "risk", a.risk.Data(), a.n);
  return Batch{a.x.Data(), a.vol.Data(), a.risk.Data(), a.n};
}

// Async calls: a native copy of a Float32Array input, checked for NaN/±Inf in the same pass (workers.h says why).
const float* stageFinite(Napi::Env env, StagingPool& pool, std::vector<Staged>& keep, const Napi::Float32Array& a,
                         const char* name) {
  Staged s = pool.take(a.ByteLength());
  const std::size_t n = a.ElementLength();
  requireFiniteAt(env, name, a.Data(), copyFindNonFinite(s.f32(), a.Data(), n), n);
  keep.push_back(std::move(s));
  return keep.back().f32();
}

Batch staged(Napi::Env env, StagingPool& pool, std::vector<Staged>& keep, const BatchArrays& a) {
  const float* x = stageFinite(env, pool, keep, a.x, "x");
  const float* vol = stageFinite(env, pool, keep, a.vol, "vol");
  const float* risk = stageFinite(env, pool, keep, a.risk, "risk");
  return Batch{x, vol, risk, a.n};
}

// Async calls: native room for an output, copied into `a` when the work is done.
void* stageOutput(StagingPool& pool, std::vector<Staged>& keep, std::vector<CopyBack>& outputs,
                  const Napi::TypedArray& a, const char* name) {
  keep.push_back(pool.take(a.ByteLength()));
  outputs.push_back(CopyBack{Napi::Persistent(a.As<Napi::Object>()), name, keep.back().data(), a.ByteLength()});
  return keep.back().data();
}

// Outputs of forward and forwardSync: (probs [n*4], assign Uint8Array[n], expert [n*H] | null) at info[3..5].
struct OutputArrays {
  Napi::Float32Array probs;
  Napi::Uint8Array assign;
  Napi::Float32Array expert;  // empty: not requested
};

OutputArrays readForwardOut(const Napi::CallbackInfo& info, std::size_t n, int H) {
  return OutputArrays{requireF32(info[3], "probs", n * 4), requireU8(info[4], "assign", n),
                      optionalF32(info[5], "expert", n * std::size_t(H))};
}

// Throws an Error naming the backend where `what` (trainSteps and its kin) cannot run.
void requireTrainSteps(Napi::Env env, const Backend& backend, const char* what) {
  if (!backend.supportsTrainSteps())
    throw Napi::Error::New(env, std::string(what) + " needs the CUDA backend but this router runs on " +
                                    backend.name() + "; use lossAndGrad and adamwStep");
}

}  // namespace

Napi::Function RouterWrap::Define(Napi::Env env) {
  return DefineClass(env, "Router",
                     {InstanceMethod<&RouterWrap::BackendName>("backendName"),
                      InstanceMethod<&RouterWrap::BackendInfo>("backendInfo"),
                      InstanceMethod<&RouterWrap::ParamCount>("paramCount"),
                      InstanceMethod<&RouterWrap::SetParams>("setParams"),
                      InstanceMethod<&RouterWrap::GetParams>("getParams"),
                      InstanceMethod<&RouterWrap::ForwardSync>("forwardSync"),
                      InstanceMethod<&RouterWrap::Forward>("forward"),
                      InstanceMethod<&RouterWrap::LossAndGrad>("lossAndGrad"),
                      InstanceMethod<&RouterWrap::AdamwStep>("adamwStep"),
                      InstanceMethod<&RouterWrap::TrainSteps>("trainSteps"),
                      InstanceMethod<&RouterWrap::TrainStepsSupported>("trainStepsSupported"),
                      InstanceMethod<&RouterWrap::SetTrainingSet>("setTrainingSet"),
                      InstanceMethod<&RouterWrap::TrainStepsOnSet>("trainStepsOnSet"),
                      InstanceMethod<&RouterWrap::TrainStepsOnSetSync>("trainStepsOnSetSync"),
                      InstanceMethod<&RouterWrap::ResetOptimizer>("resetOptimizer"),
                      InstanceMethod<&RouterWrap::Close>("close")});
}

// new Router(hidden: 16|32, backend: 'auto'|'cuda'|'simd'|'scalar', threads: 1..64). Parameters start at zero, T = 1.
// 'auto' runs on the GPU when probeCuda() finds one, else on the best SIMD family (else scalar) and records why in
// backendInfo().fallback. 'cuda' without a usable GPU throws an Error naming the reason. 'simd-avx2' and
// 'simd-avx512' pin one SIMD family (tests reach the AVX2 kernels on AVX-512 machines with it).
RouterWrap::RouterWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<RouterWrap>(info) {
  Napi::Env env = info.Env();
  hidden_ = int(requireNumber(info[0], "hidden", "16 or 32", isHidden));
  const std::string choice = requireString(info[1], "backend");
  const int threads = int(requireNumber(info[2], "threads", "integer in 1..64", isThreads));
  BackendChoice c = BackendChoice::Auto;
  const bool wantCuda = choice == "cuda";
  if (choice == "auto" || wantCuda) c = BackendChoice::Auto;
  else if (choice == "simd") c = BackendChoice::Simd;
  else if (choice == "scalar") c = BackendChoice::Scalar;
  else if (choice == "simd-avx2") c = BackendChoice::Avx2;
  else if (choice == "simd-avx512") c = BackendChoice::Avx512;
  else failExpected(env, true, "'auto', 'cuda', 'simd' or 'scalar'", "backend", info[1]);
  try {
    if (choice == "auto" || wantCuda) {
      const CudaProbe& gpu = probeCuda();
      if (gpu.ok) {
        backend_ = makeCudaBackend();
        device_ = gpu.device;
      } else if (wantCuda) {
        throw Napi::Error::New(env, "Expected a usable CUDA device for backend 'cuda' but " + gpu.reason);
      } else {
        fallback_ = gpu.reason;
      }
    }
    if (!backend_) backend_ = makeCpuBackend(c, threads);
    env.GetInstanceData<MoeRouterAddon>()->track(backend_);
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  paramCount_ = Layout(hidden_).size;
  params_ = std::make_shared<const Params>(Params{hidden_, 1.0f, std::vector<float>(paramCount_, 0.0f)});
}

void RouterWrap::requireOpen(Napi::Env env) const {
  if (closed_) throw Napi::Error::New(env, "Router is closed");
}

void RouterWrap::requireIdle(Napi::Env env) const {
  if (stepping_) throw Napi::Error::New(env, "a trainSteps call of this Router is still running: await it first");
}

Napi::Value RouterWrap::BackendName(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), backend_ ? backend_->name() : "closed");
}

// backendInfo() → {name, fallback: string | null, device: string | null}: fallback says why 'auto' runs on the CPU.
Napi::Value RouterWrap::BackendInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", backend_ ? backend_->name() : "closed");
  o.Set("fallback", fallback_.empty() ? env.Null() : Napi::String::New(env, fallback_));
  o.Set("device", device_.empty() ? env.Null() : Napi::String::New(env, device_));
  return o;
}

Napi::Value RouterWrap::ParamCount(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), double(paramCount_));
}

// setParams(params: Float32Array[paramCount] (finite), temperature: number in [1e-3, 1e3]). Copies; resets the
// optimizer. RangeError on a NaN/±Inf parameter or a temperature outside the range (args.h says why that range).
Napi::Value RouterWrap::SetParams(const Napi::CallbackInfo& info) {
  requireOpen(info.Env());
  requireIdle(info.Env());
  Napi::Float32Array p = requireF32(info[0], "params", paramCount_);
  const float T = float(requireNumber(info[1], "temperature", kTemperatureText, isTemperature));
  requireFinite(info.Env(), "params", p.Data(), paramCount_);
  params_ = std::make_shared<const Params>(Params{hidden_, T, std::vector<float>(p.Data(), p.Data() + paramCount_)});
  adam_ = AdamWState{};
  return info.Env().Undefined();
}

Napi::Value RouterWrap::GetParams(const Napi::CallbackInfo& info) {
  requireOpen(info.Env());
  Napi::Float32Array out = Napi::Float32Array::New(info.Env(), paramCount_);
  std::memcpy(out.Data(), params_->w.data(), paramCount_ * sizeof(float));
  return out;
}

// forwardSync(x [n*H], vol [n], risk [n], probs [n*4], assign Uint8Array[n], expert [n*H] | null) → undefined.
// Float32Array inputs: TypeError on a wrong type, RangeError on a wrong length or a NaN/±Inf value (first index
// named). Reads and writes the JS arrays in place: no JS can run, so none can be detached, until it returns.
// The finite scan costs 2.3-3.3 ms for 1e6 tokens at H = 16 on the H200 host (72 MB over 4 threads).
Napi::Value RouterWrap::ForwardSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  requireOpen(env);
  const BatchArrays in = readBatch(info, hidden_);
  OutputArrays out = readForwardOut(info, in.n, hidden_);
  const Batch batch = inPlace(env, in);
  try {
    backend_->forward(*params_, batch,
                      ForwardOut{out.probs.Data(), out.assign.Data(), out.expert.IsEmpty() ? nullptr : out.expert.Data()});
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  return env.Undefined();
}

// forward(...same arguments and checks as forwardSync) → Promise<undefined>; runs on the libuv pool.
// Works on native copies (workers.h says why): inputs are copied and checked at the call, so the caller may reuse
// or detach them as soon as it returns; outputs are copied back when the work is done, and the promise rejects
// with `output buffer <name> was detached during forward` (nothing written) when one was detached meanwhile.
// Cost, 1e6 tokens at H = 16 on the H200 host (16-core Xeon), best of 15: on the JS thread, copy and finite check
// of the 72 MB of inputs 3.6-4.6 ms (4 threads; 10.4 on one), copy back of the 17 MB of probs and assign 0.9-1.2
// ms (with a 64 MB expert output 3.7 ms, or 11 ms into freshly allocated arrays, whose first-touch page faults
// now fall on the JS thread). End to end: CUDA 3.0 → 8.4 ms, AVX-512 on 8 threads 6.8 → 12.3 ms, on 1 thread
// 37.6 → 42.2 ms. Staging through pinned memory in the CUDA backend could take one of those copies back.
// When every array lives in a SharedArrayBuffer none of that happens: the worker reads and writes them in place
// (workers.h says why that is safe) and the backend checks the inputs while it reads them (Batch::checkFinite); a
// NaN/±Inf then rejects the promise, naming the array and the index, instead of throwing here.
Napi::Value RouterWrap::Forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  requireOpen(env);
  const BatchArrays in = readBatch(info, hidden_);
  OutputArrays out = readForwardOut(info, in.n, hidden_);
  ForwardBaton b{backend_, params_, {}, {}, {}, {}, {}};
  std::vector<Napi::TypedArray> all{in.x, in.vol, in.risk, out.probs, out.assign};
  if (!out.expert.IsEmpty()) all.push_back(out.expert);
  // In place when every array is over a SharedArrayBuffer or in an allocPinned block (whose memory the baton holds,
  // so a detached buffer cannot free it under the worker): nothing copied on this thread; the backend checks the
  // inputs as it reads them (the CUDA backend moves arrays that are all pinned by DMA alone).
  std::vector<std::shared_ptr<void>> blocks;
  const bool inPlace = std::all_of(all.begin(), all.end(), [&](const Napi::TypedArray& a) {
    if (onSharedMemory(env, a)) return true;
    void* data = nullptr;
    if (napi_get_typedarray_info(env, a, nullptr, nullptr, &data, nullptr, nullptr) != napi_ok || data == nullptr)
      return false;
    std::shared_ptr<void> block = pinnedBlockOf(data, a.ByteLength());
    if (!block) return false;
    blocks.push_back(std::move(block));
    return true;
  });
  if (inPlace) {
    for (const Napi::TypedArray& a : all)
      b.pins.push_back(std::make_shared<Napi::ObjectReference>(Napi::Persistent(a.As<Napi::Object>())));
    b.blocks = std::move(blocks);
    b.batch = Batch{in.x.Data(), in.vol.Data(), in.risk.Data(), in.n, true};
    b.out = ForwardOut{out.probs.Data(), out.assign.Data(), out.expert.IsEmpty() ? nullptr : out.expert.Data()};
    return queueForward(env, std::move(b), {});
  }
  std::vector<CopyBack> outputs;
  b.buffers.reserve(6);
  b.batch = staged(env, *staging_, b.buffers, in);
  b.out.probs = static_cast<float*>(stageOutput(*staging_, b.buffers, outputs, out.probs, "probs"));
  b.out.assign = static_cast<std::uint8_t*>(stageOutput(*staging_, b.buffers, outputs, out.assign, "assign"));
  b.out.expert =
      out.expert.IsEmpty() ? nullptr : static_cast<float*>(stageOutput(*staging_, b.buffers, outputs, out.expert, "expert"));
  return queueForward(env, std::move(b), std::move(outputs));
}

namespace {

// RangeError `Expected values in 0..3 for labels but received 7 at index i` for the first label out of range.
void requireLabels(Napi::Env env, const std::uint8_t* labels, std::size_t n, const std::string& name = "labels") {
  const std::uint8_t* bad = std::find_if(labels, labels + n, [](std::uint8_t c) { return c >= kDomains; });
  const std::size_t i = std::size_t(bad - labels);
  if (i < n)
    throw Napi::RangeError::New(env, "Expected values in 0..3 for " + name + " but received " +
                                         std::to_string(labels[i]) + " at index " + std::to_string(i));
}

// labelSmoothing [0,1) and reconWeight ≥ 0 at info[at], info[at + 1], into o.
void readLossTerms(const Napi::CallbackInfo& info, std::size_t at, LossOptions& o) {
  o.labelSmoothing = float(requireNumber(info[at], "labelSmoothing", "number in [0, 1)", isUnitInterval));
  o.reconWeight = float(requireNumber(info[at + 1], "reconWeight", "finite number >= 0", isNonNegativeFinite));
}

// (labels Uint8Array[n] (values 0..3), sampleWeight [n] (finite) | null, labelSmoothing [0,1), reconWeight ≥ 0) at
// info[3..6], checked and staged into `keep`.
LossOptions stagedLossOptions(const Napi::CallbackInfo& info, StagingPool& pool, std::vector<Staged>& keep,
                              std::size_t n) {
  Napi::Env env = info.Env();
  Napi::Uint8Array labels = requireU8(info[3], "labels", n);
  Napi::Float32Array sw = optionalF32(info[4], "sampleWeight", n);
  LossOptions o{};
  readLossTerms(info, 5, o);
  requireLabels(env, labels.Data(), n);
  keep.push_back(pool.take(n));
  copyBytes(keep.back().u8(), labels.Data(), n);
  o.labels = keep.back().u8();
  o.sampleWeight = sw.IsEmpty() ? nullptr : stageFinite(env, pool, keep, sw, "sampleWeight");
  return o;
}

// (lr > 0, beta1 [0,1), beta2 [0,1), eps > 0, weightDecay ≥ 0, clipNorm ≥ 0) from info[at], or without lr (left 0)
// from beta1 at info[at].
AdamWOptions readAdamW(const Napi::CallbackInfo& info, int at, bool withLr = true) {
  AdamWOptions o{};
  if (withLr) o.lr = float(requireNumber(info[at++], "lr", "finite number > 0", isPositiveFinite));
  o.beta1 = float(requireNumber(info[at], "beta1", "number in [0, 1)", isBeta));
  o.beta2 = float(requireNumber(info[at + 1], "beta2", "number in [0, 1)", isBeta));
  o.eps = float(requireNumber(info[at + 2], "eps", "finite number > 0", isPositiveFinite));
  o.weightDecay = float(requireNumber(info[at + 3], "weightDecay", "finite number >= 0", isNonNegativeFinite));
  o.clipNorm = float(requireNumber(info[at + 4], "clipNorm", "finite number >= 0", isNonNegativeFinite));
  return o;
}

}  // namespace

// lossAndGrad(x, vol, risk, labels Uint8Array[n] (values 0..3), sampleWeight [n] (finite) | null,
//             labelSmoothing [0,1), reconWeight ≥ 0, grad Float32Array[paramCount] (written)) → Promise<{loss, ce, rec}>.
// Inputs are checked like forward's and staged the same way; grad is written when the work is done (rejects,
// grad untouched, when it was detached meanwhile).
Napi::Value RouterWrap::LossAndGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  requireOpen(env);
  const BatchArrays in = readBatch(info, hidden_);
  Napi::Float32Array grad = requireF32(info[7], "grad", paramCount_);
  LossBaton b;
  b.backend = backend_;
  b.params = params_;
  b.buffers.reserve(6);
  b.batch = staged(env, *staging_, b.buffers, in);
  b.opts = stagedLossOptions(info, *staging_, b.buffers, in.n);
  std::vector<CopyBack> outputs;
  b.grad = static_cast<float*>(stageOutput(*staging_, b.buffers, outputs, grad, "grad"));
  return queueLoss(env, std::move(b), std::move(outputs));
}

// The learning rates of a steps call at info[at] (a Float32Array of one finite value > 0 per step, its length
// dividing the call's token count) and the AdamW options after them, into b.lr and b.adamw.
void readStepsOptions(const Napi::CallbackInfo& info, std::size_t at, std::size_t tokens, StepsBaton& b) {
  Napi::Env env = info.Env();
  if (!info[at].IsTypedArray() || info[at].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    failExpected(env, false, "Float32Array", "lr", info[at]);
  Napi::Float32Array lr = info[at].As<Napi::Float32Array>();
  const std::size_t steps = lr.ElementLength();
  if (steps == 0 || tokens % steps != 0)
    throw Napi::RangeError::New(env, "Expected a token count that is a multiple of the steps (lr.length " +
                                         std::to_string(steps) + ") but received " + std::to_string(tokens) + " tokens");
  for (std::size_t k = 0; k < steps; ++k)
    if (!isPositiveFinite(lr[k]))
      throw Napi::RangeError::New(env, "Expected finite numbers > 0 for lr but received " + std::to_string(lr[k]) +
                                           " at index " + std::to_string(k));
  b.lr.assign(lr.Data(), lr.Data() + steps);
  b.adamw = readAdamW(info, int(at + 1), false);
}

// trainStepsSupported() → whether trainSteps runs on this router's backend (the CUDA one).
Napi::Value RouterWrap::TrainStepsSupported(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), backend_ && backend_->supportsTrainSteps());
}

// trainSteps(x, vol, risk, labels, sampleWeight | null, labelSmoothing, reconWeight (as lossAndGrad, n tokens),
//            focalGamma ≥ 0, lr Float32Array[steps] (each finite > 0; n a multiple of steps), beta1, beta2, eps,
//            weightDecay, clipNorm (as adamwStep)) → Promise<{loss, ce, rec, gradNorm: Float64Array[steps]}>.
// Backend::trainSteps: step k trains on tokens [k·n/steps, (k+1)·n/steps) with learning rate lr[k], each sample
// weight times (1 - p[label])^focalGamma, as lossAndGrad then adamwStep would, the gradient never leaving the backend.
// The inputs are copied (and checked for NaN/±Inf) at the call; trainStepsOnSet sends only indices into a set held
// on the device. The parameters and optimizer state change when the promise resolves. Only where trainStepsSupported()
// (else an Error naming the backend); one call at a time: while one is in flight, trainSteps, trainStepsOnSet,
// setTrainingSet, setParams, adamwStep and resetOptimizer throw.
Napi::Value RouterWrap::TrainSteps(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  requireOpen(env);
  requireIdle(env);
  requireTrainSteps(env, *backend_, "trainSteps");
  const BatchArrays in = readBatch(info, hidden_);
  StepsBaton b;
  b.focalGamma = float(requireNumber(info[7], "focalGamma", "finite number >= 0", isNonNegativeFinite));
  readStepsOptions(info, 8, in.n, b);
  b.buffers.reserve(6);
  b.batch = staged(env, *staging_, b.buffers, in);
  b.opts = stagedLossOptions(info, *staging_, b.buffers, in.n);
  return queueStepsCall(info, std::move(b));
}

// setTrainingSet(parts Array of {x [n*H], vol [n], risk [n], labels Uint8Array [n] (each 0..3)}, at least one token
// each; classWeights Float32Array [4] (each finite ≥ 0)) → undefined. Copies the parts' tokens, one part after another,
// to the device as one set (Backend::setTrainingSet), replacing any set held before, for trainStepsOnSet; every part's
// x, vol and risk are checked for NaN/±Inf first (RangeError naming the array, as parts[i].vol where there are several
// parts, and the index; nothing changes then; a failure of the copy itself leaves no set held). Synchronous: about 0.3 s for 1.7 GB. Only where
// trainStepsSupported(); not while a trainSteps or trainStepsOnSet call is in flight.
Napi::Value RouterWrap::SetTrainingSet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  requireOpen(env);
  requireIdle(env);
  requireTrainSteps(env, *backend_, "setTrainingSet");
  if (!info[0].IsArray() || info[0].As<Napi::Array>().Length() == 0)
    failExpected(env, false, "a non-empty Array of {x, vol, risk, labels}", "parts", info[0]);
  const Napi::Array parts = info[0].As<Napi::Array>();
  const Napi::Float32Array cw = requireF32(info[1], "classWeights", kDomains);
  for (std::size_t c = 0; c < kDomains; ++c)
    if (!isNonNegativeFinite(cw[c]))
      throw Napi::RangeError::New(env, "Expected finite numbers >= 0 for classWeights but received " +
                                           std::to_string(cw[c]) + " at index " + std::to_string(c));
  Backend::TrainingSet set{{}, {cw[0], cw[1], cw[2], cw[3]}};
  for (std::uint32_t i = 0; i < parts.Length(); ++i) {
    // Errors name the part where there are several (parts[1].vol), else the array alone (vol).
    const std::string at = parts.Length() > 1 ? "parts[" + std::to_string(i) + "]." : "";
    const Napi::Value part = parts.Get(i);
    if (!part.IsObject() || part.IsTypedArray() || part.IsArray())
      failExpected(env, false, "an object {x, vol, risk, labels}", ("parts[" + std::to_string(i) + "]").c_str(), part);
    const Napi::Object o = part.As<Napi::Object>();
    const std::string name[] = {at + "x", at + "vol", at + "risk", at + "labels"};
    const Napi::Float32Array vol = requireAnyF32(o.Get("vol"), name[1].c_str());
    const std::size_t n = vol.ElementLength();
    if (n == 0)
      throw Napi::RangeError::New(env, "Expected at least 1 token for " + name[1] + " but received Float32Array of length 0");
    const Napi::Float32Array x = requireF32(o.Get("x"), name[0].c_str(), n * std::size_t(hidden_));
    const Napi::Float32Array risk = requireF32(o.Get("risk"), name[2].c_str(), n);
    const Napi::Uint8Array labels = requireU8(o.Get("labels"), name[3].c_str(), n);
    requireLabels(env, labels.Data(), n, name[3]);
    requireFinite(env, name[0].c_str(), x.Data(), x.ElementLength());
    requireFinite(env, name[1].c_str(), vol.Data(), n);
    requireFinite(env, name[2].c_str(), risk.Data(), n);
    // The arrays stay reachable through `parts` (held by the caller) while this synchronous call runs.
    set.parts.push_back({x.Data(), vol.Data(), risk.Data(), labels.Data(), n});
  }
  setTokens_ = 0;
  try {
    backend_->setTrainingSet(hidden_, set);
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  setTokens_ = set.tokens();
  return env.Undefined();
}

// trainStepsOnSet(index Uint32Array [n] (each < the held set's tokens), labelSmoothing, reconWeight, focalGamma ≥ 0,
//                 lr Float32Array [steps] (n a multiple of steps), beta1, beta2, eps, weightDecay, clipNorm)
// → Promise<{loss, ce, rec, gradNorm: Float64Array[steps]}>. What trainSteps does with the batch of the held set's
// tokens index[0..n) (the labels the set's, each sample weight its label's class weight), the batches gathered on
// the device (Backend::trainStepsOnSet): the same steps bit for bit, 4 bytes a token crossing to the device instead
// of (H + 3)·4 + 1. The indices are copied at the call. Errors and one-call-at-a-time as trainSteps; an Error when
// no set is held.
Napi::Value RouterWrap::TrainStepsOnSet(const Napi::CallbackInfo& info) {
  return queueStepsCall(info, stepsOnSetBaton(info));
}

// trainStepsOnSetSync(the arguments of trainStepsOnSet) → {loss, ce, rec, gradNorm: Float64Array[steps], timing:
// Float64Array [0, the run in ms]}: trainStepsOnSet on the calling thread, which waits for the steps (no thread of
// Node's pool, no promise): for a worker thread that trains one router and does nothing else meanwhile. The
// parameters and the optimizer state change before it returns; a failure throws and changes neither. Errors as
// trainStepsOnSet's.
Napi::Value RouterWrap::TrainStepsOnSetSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  StepsBaton b = stepsOnSetBaton(info);
  startSteps(b);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    runSteps(b);
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  params_ = std::move(b.next);
  adam_ = b.adam;
  return stepsResult(env, b.results, 0, ms);
}

StepsBaton RouterWrap::stepsOnSetBaton(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  requireOpen(env);
  requireIdle(env);
  requireTrainSteps(env, *backend_, "trainStepsOnSet");
  if (setTokens_ == 0) throw Napi::Error::New(env, "trainStepsOnSet needs a training set: call setTrainingSet first");
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
    failExpected(env, false, "Uint32Array", "index", info[0]);
  const Napi::Uint32Array index = info[0].As<Napi::Uint32Array>();
  const std::size_t n = index.ElementLength();
  if (n == 0) throw Napi::RangeError::New(env, "Expected at least 1 token for index but received Uint32Array of length 0");
  StepsBaton b;
  readLossTerms(info, 1, b.opts);
  b.focalGamma = float(requireNumber(info[3], "focalGamma", "finite number >= 0", isNonNegativeFinite));
  readStepsOptions(info, 4, n, b);
  const std::uint32_t* ix = index.Data();
  const std::size_t bad = std::size_t(std::find_if(ix, ix + n, [&](std::uint32_t i) { return i >= setTokens_; }) - ix);
  if (bad < n)
    throw Napi::RangeError::New(env, "Expected indices below the training set's " + std::to_string(setTokens_) +
                                         " tokens for index but received " + std::to_string(ix[bad]) + " at index " +
                                         std::to_string(bad));
  b.index.assign(ix, ix + n);
  return b;
}

void RouterWrap::startSteps(StepsBaton& b) const {
  b.backend = backend_;
  b.params = params_;
  b.next = std::make_shared<Params>(*params_);
  b.adam = adam_;
}

Napi::Value RouterWrap::queueStepsCall(const Napi::CallbackInfo& info, StepsBaton b) {
  Napi::Env env = info.Env();
  startSteps(b);
  auto self = std::make_shared<Napi::ObjectReference>(Napi::Persistent(info.This().As<Napi::Object>()));
  b.settle = [this, self](StepsBaton* done) {
    stepping_ = false;
    if (done && !closed_) {
      params_ = std::move(done->next);
      adam_ = done->adam;
    }
    self->Reset();
  };
  stepping_ = true;
  return queueSteps(env, std::move(b));
}

// adamwStep(grad [paramCount] (finite), lr > 0, beta1 [0,1), beta2 [0,1), eps > 0, weightDecay ≥ 0, clipNorm ≥ 0)
// → pre-clip gradient norm. Replaces the parameter snapshot (batches already queued keep the old one). A NaN/±Inf
// gradient value is a RangeError thrown before anything changes: one such value would otherwise turn every
// parameter and both moments into NaN (the global norm that scales the clip becomes NaN).
Napi::Value RouterWrap::AdamwStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  requireOpen(env);
  requireIdle(env);
  Napi::Float32Array grad = requireF32(info[0], "grad", paramCount_);
  const AdamWOptions o = readAdamW(info, 1);
  requireFinite(env, "grad", grad.Data(), paramCount_);
  auto next = std::make_shared<Params>(*params_);
  double norm = 0;
  try {
    norm = backend_->adamwStep(Layout(hidden_), next->w, adam_, grad.Data(), o);
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  params_ = std::move(next);
  return Napi::Number::New(env, norm);
}

Napi::Value RouterWrap::ResetOptimizer(const Napi::CallbackInfo& info) {
  requireOpen(info.Env());
  requireIdle(info.Env());
  adam_ = AdamWState{};
  return info.Env().Undefined();
}

// Frees parameters, optimizer state and backend; batches already queued finish with their own references.
Napi::Value RouterWrap::Close(const Napi::CallbackInfo& info) {
  closed_ = true;
  backend_.reset();
  params_.reset();
  adam_ = AdamWState{};
  staging_.reset();  // calls in flight keep the pool until they finish
  return info.Env().Undefined();
}

}  // namespace moe::addon
