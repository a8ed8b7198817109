// Registers the addon's exports. Context-aware (Napi::Addon): every environment — main thread, worker_threads,
// piscina workers — gets its own instance and no state is shared through globals.
#include <napi.h>

#include "moe_router/router.h"
#include "router_wrap.h"

namespace {

class MoeRouterAddon : public Napi::Addon<MoeRouterAddon> {
 public:
  MoeRouterAddon(Napi::Env env, Napi::Object exports) {
    DefineAddon(exports, {InstanceValue("Router", moe::addon::RouterWrap::Define(env), napi_enumerable),
                          InstanceMethod("simdLevel", &MoeRouterAddon::SimdLevel, napi_enumerable),
                          InstanceMethod("cudaStatus", &MoeRouterAddon::CudaStatus, napi_enumerable),
                          InstanceValue("abiVersion", Napi::Number::New(env, 1), napi_enumerable)});
  }

 private:
  // 'avx512' | 'avx2' | '' — what `backend: 'auto'` will pick on this CPU.
  Napi::Value SimdLevel(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), moe::cpuSimdLevel()); }

  // {built, available, reason, device}: whether this addon has the CUDA backend and whether a GPU can run it.
  Napi::Value CudaStatus(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const moe::CudaProbe& p = moe::probeCuda();
    Napi::Object o = Napi::Object::New(env);
    o.Set("built", p.built);
    o.Set("available", p.ok);
    o.Set("reason", p.ok ? env.Null() : Napi::String::New(env, p.reason));
    o.Set("device", p.ok ? Napi::String::New(env, p.device) : env.Null());
    return o;
  }
};

}  // namespace

NODE_API_ADDON(MoeRouterAddon)
