// The addon's per-environment instance (Napi::Addon): its exports, and the backends created in this environment,
// so that environment teardown (process exit, a worker thread ending) frees their device memory even when the JS
// Router objects are never closed or collected.
#pragma once
#include <napi.h>

#include <memory>
#include <vector>

#include "moe_router/router.h"

namespace moe::addon {

class MoeRouterAddon : public Napi::Addon<MoeRouterAddon> {
 public:
  MoeRouterAddon(Napi::Env env, Napi::Object exports);
  // Runs at environment teardown: releases every backend still alive (waits for a batch in flight to finish).
  ~MoeRouterAddon();

  void track(const std::shared_ptr<const Backend>& backend);

 private:
  Napi::Value SimdLevel(const Napi::CallbackInfo& info);
  Napi::Value CudaStatus(const Napi::CallbackInfo& info);

  std::vector<std::weak_ptr<const Backend>> backends_;
};

}  // namespace moe::addon
