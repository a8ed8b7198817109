// Pinned (page-locked) host memory handed to JS as ArrayBuffers (`allocPinned`), and the registry that tells the
// async forward an array lives in such a block, so it may route it in place (router_wrap.cpp, Forward).
#pragma once
#include <napi.h>

#include <cstddef>
#include <memory>

namespace moe::addon {

// allocPinned(bytes) → ArrayBuffer over `bytes` of page-locked host memory, or null where none can be had (no usable
// GPU, an addon built without CUDA, or the allocation failed). The memory is freed once the ArrayBuffer has been
// collected and no forward in flight uses it.
Napi::Value AllocPinned(const Napi::CallbackInfo& info);

// The block of allocPinned memory holding [p, p + bytes), or null. Holding the pointer keeps the memory alive: a
// forward in flight holds one for each array, so neither collection nor a detached (transferred) ArrayBuffer can
// free it under the worker.
std::shared_ptr<void> pinnedBlockOf(const void* p, std::size_t bytes);

}  // namespace moe::addon
