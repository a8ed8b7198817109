// Registers the addon's exports. Context-aware (Napi::Addon): every environment — main thread, worker_threads,
// piscina workers — gets its own instance and no state is shared through globals.
#include "addon.h"

#include "pinned.h"
#include "router_wrap.h"

namespace moe::addon {

MoeRouterAddon::MoeRouterAddon(Napi::Env env, Napi::Object exports) {
  DefineAddon(exports, {InstanceValue("Router", RouterWrap::Define(env), napi_enumerable),
                        InstanceMethod("simdLevel", &MoeRouterAddon::SimdLevel, napi_enumerable),
                        InstanceMethod("cudaStatus", &MoeRouterAddon::CudaStatus, napi_enumerable),
                        InstanceValue("allocPinned", Napi::Function::New(env, AllocPinned, "allocPinned"), napi_enumerable),
                        InstanceValue("abiVersion", Napi::Number::New(env, 1), napi_enumerable)});
}

MoeRouterAddon::~MoeRouterAddon() {
  for (auto& weak : backends_)
    if (auto b = weak.lock()) b->release();
}

void MoeRouterAddon::track(const std::shared_ptr<const Backend>& backend) {
  // Drop entries of backends already destroyed, so a long-lived environment does not accumulate them.
  std::vector<std::weak_ptr<const Backend>> live;
  for (auto& weak : backends_)
    if (!weak.expired()) live.push_back(weak);
  live.push_back(backend);
  backends_.swap(live);
}

// 'avx512' | 'avx2' | '' — what `backend: 'auto'` picks on this CPU when no GPU runs.
Napi::Value MoeRouterAddon::SimdLevel(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), cpuSimdLevel());
}

// {built, available, reason, device}: whether this addon has the CUDA backend and whether a GPU can run it.
Napi::Value MoeRouterAddon::CudaStatus(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const CudaProbe& p = probeCuda();
  Napi::Object o = Napi::Object::New(env);
  o.Set("built", p.built);
  o.Set("available", p.ok);
  o.Set("reason", p.ok ? env.Null() : Napi::String::New(env, p.reason));
  o.Set("device", p.ok ? Napi::String::New(env, p.device) : env.Null());
  return o;
}

}  // namespace moe::addon

using moe::addon::MoeRouterAddon;
NODE_API_ADDON(MoeRouterAddon)
