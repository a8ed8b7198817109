#include "pinned.h"

#include <cmath>
#include <cstdint>
#include <map>
#include <mutex>

#include "args.h"
#include "moe_router/router.h"

namespace moe::addon {

namespace {

// Process-wide on purpose: a block is identified by its address, which means the same thing in every environment
// of the process (a worker thread's addon instance sees no other blocks than its own, but a lookup by address
// cannot confuse them).
std::mutex mu;
std::map<std::uintptr_t, std::pair<std::size_t, std::shared_ptr<void>>> blocks;  // start → (bytes, block)

// The ArrayBuffer's finalizer: the registry lets go of the block; the memory goes when the last forward holding
// it is done.
void forget(napi_env, void* data, void*) {
  std::lock_guard<std::mutex> lock(mu);
  blocks.erase(reinterpret_cast<std::uintptr_t>(data));
}

}  // namespace

Napi::Value AllocPinned(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const double bytes = requireNumber(info[0], "bytes", "integer in [1, 2^40]",
                                     [](double x) { return x >= 1 && x <= 1099511627776.0 && x == std::floor(x); });
  void* p = allocPinnedHost(std::size_t(bytes));
  if (p == nullptr) return env.Null();
  std::shared_ptr<void> block(p, [](void* q) { freePinnedHost(q); });
  napi_value ab = nullptr;
  if (napi_create_external_arraybuffer(env, p, std::size_t(bytes), forget, nullptr, &ab) != napi_ok) {
    // Runtimes that refuse external buffers (a V8 sandbox): the caller falls back to ordinary memory.
    bool pending = false;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
      napi_value e;
      napi_get_and_clear_last_exception(env, &e);
    }
    return env.Null();
  }
  std::lock_guard<std::mutex> lock(mu);
  blocks[reinterpret_cast<std::uintptr_t>(p)] = {std::size_t(bytes), std::move(block)};
  return Napi::Value(env, ab);
}

std::shared_ptr<void> pinnedBlockOf(const void* p, std::size_t bytes) {
  const auto at = reinterpret_cast<std::uintptr_t>(p);
  std::lock_guard<std::mutex> lock(mu);
  auto it = blocks.upper_bound(at);
  if (it == blocks.begin()) return nullptr;
  --it;
  const auto& [start, entry] = *it;
  return at + bytes <= start + entry.first ? entry.second : nullptr;
}

}  // namespace moe::addon
