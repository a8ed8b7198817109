#include "router_wrap.h"

#include <cmath>
#include <cstring>

#include "addon.h"
#include "args.h"
#include "workers.h"

namespace moe::addon {

namespace {

bool isHidden(double x) { return x == 16 || x == 32; }
bool isThreads(double x) { return x >= 1 && x <= 64 && x == static_cast<int>(x); }
bool isNonNegative(double x) { return x >= 0 && std::isfinite(x); }
bool isBeta(double x) { return x >= 0 && x < 1; }

// Inputs shared by forward and loss: (x [n*H], vol [n], risk [n]) at info[0..2]; n comes from vol.
struct BatchArgs {
  Batch batch{};
  Pins pins;
};

BatchArgs readBatch(const Napi::CallbackInfo& info, int H) {
  BatchArgs r;
  if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw Napi::TypeError::New(info.Env(), "Expected Float32Array for vol but received " + describe(info[1]));
  const std::size_t n = info[1].As<Napi::Float32Array>().ElementLength();
  if (n == 0)
    throw Napi::RangeError::New(info.Env(), "Expected at least 1 token for vol but received Float32Array of length 0");
  Napi::Float32Array x = requireF32(info[0], "x", n * std::size_t(H));
  Napi::Float32Array vol = requireF32(info[1], "vol", n);
  Napi::Float32Array risk = requireF32(info[2], "risk", n);
  r.batch = Batch{x.Data(), vol.Data(), risk.Data(), n};
  for (const Napi::Float32Array& a : {x, vol, risk}) r.pins.push_back(Napi::Persistent(a.As<Napi::Object>()));
  return r;
}

// Outputs of forward and forwardSync: (probs [n*4], assign Uint8Array[n], expert [n*H] | null) at info[3..5].
// Adds them to `pins` so an async call keeps them alive; a sync call simply drops the pins afterwards.
ForwardOut readForwardOut(const Napi::CallbackInfo& info, std::size_t n, int H, Pins& pins) {
  Napi::Float32Array probs = requireF32(info[3], "probs", n * 4);
  Napi::Uint8Array assign = requireU8(info[4], "assign", n);
  Napi::Float32Array expert = optionalF32(info[5], "expert", n * std::size_t(H));
  pins.push_back(Napi::Persistent(probs.As<Napi::Object>()));
  pins.push_back(Napi::Persistent(assign.As<Napi::Object>()));
  if (!expert.IsEmpty()) pins.push_back(Napi::Persistent(expert.As<Napi::Object>()));
  return ForwardOut{probs.Data(), assign.Data(), expert.IsEmpty() ? nullptr : expert.Data()};
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
  else throw Napi::RangeError::New(env, "Expected 'auto', 'cuda', 'simd' or 'scalar' for backend but received '" + choice + "'");
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

// setParams(params: Float32Array[paramCount], temperature: finite > 0). Copies; resets the optimizer.
Napi::Value RouterWrap::SetParams(const Napi::CallbackInfo& info) {
  requireOpen(info.Env());
  Napi::Float32Array p = requireF32(info[0], "params", paramCount_);
  const float T = float(requireNumber(info[1], "temperature", "finite number > 0", isPositiveFinite));
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
Napi::Value RouterWrap::ForwardSync(const Napi::CallbackInfo& info) {
  requireOpen(info.Env());
  BatchArgs in = readBatch(info, hidden_);
  const ForwardOut out = readForwardOut(info, in.batch.n, hidden_, in.pins);
  try {
    backend_->forward(*params_, in.batch, out);
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
  return info.Env().Undefined();
}

// forward(...same arguments as forwardSync) → Promise<undefined>; runs on the libuv pool.
Napi::Value RouterWrap::Forward(const Napi::CallbackInfo& info) {
  requireOpen(info.Env());
  BatchArgs in = readBatch(info, hidden_);
  ForwardBaton b{backend_, params_, in.batch, readForwardOut(info, in.batch.n, hidden_, in.pins)};
  return queueForward(info.Env(), std::move(b), std::move(in.pins));
}

// lossAndGrad(x, vol, risk, labels Uint8Array[n] (values 0..3), sampleWeight [n] | null, labelSmoothing [0,1),
//             reconWeight ≥ 0, grad Float32Array[paramCount] (written)) → Promise<{loss, ce, rec}>.
Napi::Value RouterWrap::LossAndGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  requireOpen(env);
  BatchArgs in = readBatch(info, hidden_);
  const std::size_t n = in.batch.n;
  Napi::Uint8Array labels = requireU8(info[3], "labels", n);
  for (std::size_t i = 0; i < n; ++i)
    if (labels[i] > 3)
      throw Napi::RangeError::New(env, "Expected values in 0..3 for labels but received " +
                                           std::to_string(labels[i]) + " at index " + std::to_string(i));
  Napi::Float32Array sw = optionalF32(info[4], "sampleWeight", n);
  const float eps = float(requireNumber(info[5], "labelSmoothing", "number in [0, 1)", isUnitInterval));
  const float lam = float(requireNumber(info[6], "reconWeight", "finite number >= 0", isNonNegativeFinite));
  Napi::Float32Array grad = requireF32(info[7], "grad", paramCount_);
  LossBaton b;
  b.backend = backend_;
  b.params = params_;
  b.batch = in.batch;
  b.opts = LossOptions{labels.Data(), sw.IsEmpty() ? nullptr : sw.Data(), eps, lam};
  b.grad = grad.Data();
  in.pins.push_back(Napi::Persistent(labels.As<Napi::Object>()));
  if (!sw.IsEmpty()) in.pins.push_back(Napi::Persistent(sw.As<Napi::Object>()));
  in.pins.push_back(Napi::Persistent(grad.As<Napi::Object>()));
  return queueLoss(env, std::move(b), std::move(in.pins));
}

// adamwStep(grad [paramCount], lr > 0, beta1 [0,1), beta2 [0,1), eps > 0, weightDecay ≥ 0, clipNorm ≥ 0) →
// pre-clip gradient norm. Replaces the parameter snapshot (batches already queued keep the old one).
Napi::Value RouterWrap::AdamwStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  requireOpen(env);
  Napi::Float32Array grad = requireF32(info[0], "grad", paramCount_);
  AdamWOptions o{};
  o.lr = float(requireNumber(info[1], "lr", "finite number > 0", isPositiveFinite));
  o.beta1 = float(requireNumber(info[2], "beta1", "number in [0, 1)", isBeta));
  o.beta2 = float(requireNumber(info[3], "beta2", "number in [0, 1)", isBeta));
  o.eps = float(requireNumber(info[4], "eps", "finite number > 0", isPositiveFinite));
  o.weightDecay = float(requireNumber(info[5], "weightDecay", "finite number >= 0", isNonNegative));
  o.clipNorm = float(requireNumber(info[6], "clipNorm", "finite number >= 0", isNonNegative));
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
  adam_ = AdamWState{};
  return info.Env().Undefined();
}

// Frees parameters, optimizer state and backend; batches already queued finish with their own references.
Napi::Value RouterWrap::Close(const Napi::CallbackInfo& info) {
  closed_ = true;
  backend_.reset();
  params_.reset();
  adam_ = AdamWState{};
  return info.Env().Undefined();
}

}  // namespace moe::addon
