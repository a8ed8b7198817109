// Async work for big batches. Each worker owns a plain-data baton (no JS values) that Execute reads and writes
// on a libuv thread; the JS typed arrays behind the baton's pointers are pinned by references held until OnOK.
#pragma once
#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "moe_router/router.h"

namespace moe::addon {

struct ForwardBaton {
  std::shared_ptr<const Backend> backend;
  ParamsPtr params;
  Batch batch{};
  ForwardOut out{};
};

struct LossBaton {
  std::shared_ptr<const Backend> backend;
  ParamsPtr params;
  Batch batch{};
  LossOptions opts{};
  float* grad = nullptr;
  LossResult result;
};

// Keeps the JS objects whose memory a baton points into alive for the duration of the async work.
using Pins = std::vector<Napi::ObjectReference>;

// Queues the work and returns a promise that settles with undefined (forward) or {loss, ce, rec} (loss).
Napi::Promise queueForward(Napi::Env env, ForwardBaton baton, Pins pins);
Napi::Promise queueLoss(Napi::Env env, LossBaton baton, Pins pins);

}  // namespace moe::addon
