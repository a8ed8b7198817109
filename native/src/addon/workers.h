// Async work for big batches, and the native memory it runs in.
//
// Why async calls never touch JS memory off the JS thread: while the work runs, JS can detach an input or output
// ArrayBuffer (postMessage/structuredClone with `transfer`) and the next GC frees the memory the new owner was
// handed; a pointer taken at call start then reads or writes freed memory (SIGSEGV, seen with 1e6 tokens and
// gc()). A Napi::Reference keeps the ArrayBuffer *object* alive, not the backing store a transfer moves away, and
// Node-API has no way to hold the backing store itself. So an async call copies its inputs into native buffers
// on the JS thread (the finite check rides along in the same pass), the backend reads and writes only native
// buffers, and OnOK copies the results into the caller's output arrays if they are still attached at their size,
// else rejects with an Error naming the array. Sync calls (forwardSync, adamwStep) still read in place: no JS can
// run while they do, and so does an async forward whose arrays all live in SharedArrayBuffers: those can be neither
// detached nor shrunk, and a reference to the typed array keeps the shared memory alive (the backend then checks
// the inputs for NaN/±Inf itself, Batch::checkFinite, and the promise rejects naming the array and the index).
// What that costs is measured at RouterWrap::Forward. (A zero-copy fix would need V8's BackingStore, outside
// Node-API and its ABI promise.)
#pragma once
#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "moe_router/router.h"

namespace moe::addon {

class StagingPool;

// One native buffer of at least `bytes()` bytes (uninitialised), lent by a StagingPool and given back when
// destroyed. Its address never changes, so Batch/ForwardOut pointers into it stay valid while it moves.
class Staged {
 public:
  Staged() = default;
  Staged(Staged&&) noexcept = default;
  Staged& operator=(Staged&&) noexcept;
  Staged(const Staged&) = delete;
  Staged& operator=(const Staged&) = delete;
  ~Staged();

  void* data() const { return data_.get(); }
  float* f32() const { return reinterpret_cast<float*>(data_.get()); }
  std::uint8_t* u8() const { return data_.get(); }
  std::size_t bytes() const { return bytes_; }

 private:
  friend class StagingPool;
  void giveBack();
  std::shared_ptr<StagingPool> pool_;
  std::unique_ptr<std::uint8_t[]> data_;
  std::size_t capacity_ = 0;
  std::size_t bytes_ = 0;
};

// Buffers kept between async calls of one Router, so a worker that routes batches of similar size copies into
// warm memory: a fresh 72 MB buffer costs 28 ms of first-touch page faults on top of a 9.5 ms memcpy (2-core EPYC
// dev VM; 36 ms against 10 ms on the H200 host's Xeon). Holds at
// most kMaxCachedBytes when idle; freed with the Router (close() or GC) once no call in flight still uses it.
class StagingPool : public std::enable_shared_from_this<StagingPool> {
 public:
  // 1e6 tokens at H = 16 with expert outputs stage 153 MB; a batch bigger than the cap still works, its
  // buffers just go back to the allocator afterwards.
  static constexpr std::size_t kMaxCachedBytes = std::size_t(256) << 20;

  Staged take(std::size_t bytes);

 private:
  friend class Staged;
  struct Free {
    std::unique_ptr<std::uint8_t[]> data;
    std::size_t capacity;
  };
  void give(std::unique_ptr<std::uint8_t[]> data, std::size_t capacity);

  std::mutex mu_;  // take runs on the JS thread; give too today, but a lock costs nothing next to the copy
  std::vector<Free> free_;  // oldest first
  std::size_t cached_ = 0;
};

struct ForwardBaton {
  std::shared_ptr<const Backend> backend;
  ParamsPtr params;
  std::vector<Staged> buffers;  // native copies of the inputs and room for the outputs; batch and out point here
  Batch batch{};
  ForwardOut out{};
  // In place instead (every array over a SharedArrayBuffer, which cannot be detached): batch and out point into the
  // caller's memory, kept alive by these references until the worker is gone (released on the JS thread).
  std::vector<std::shared_ptr<Napi::ObjectReference>> pins;
  std::vector<std::shared_ptr<void>> blocks;  // the allocPinned blocks among them (pinned.h)
};

struct LossBaton {
  std::shared_ptr<const Backend> backend;
  ParamsPtr params;
  std::vector<Staged> buffers;
  Batch batch{};
  LossOptions opts{};
  float* grad = nullptr;  // points into buffers
  LossResult result;
};

// Fused training steps (Backend::trainSteps) on a copy of the optimizer state; `settle` runs on the JS thread when
// they are done, with the baton on success and nullptr on failure, before the promise settles.
struct StepsBaton {
  std::shared_ptr<const Backend> backend;
  ParamsPtr params;                    // the steps start from these
  std::shared_ptr<Params> next;        // receives the updated parameters (a copy of *params before the steps)
  AdamWState adam;
  std::vector<Staged> buffers;
  Batch batch{};
  LossOptions opts{};
  std::vector<float> lr;               // one per step
  float focalGamma = 0;
  AdamWOptions adamw{};
  // trainStepsOnSet instead (non-empty): the batch's indices into the training set the backend holds; batch unused,
  // opts' labels and sampleWeight null.
  std::vector<std::uint32_t> index;
  std::vector<StepResult> results;
  std::function<void(StepsBaton*)> settle;
};

// A caller's output typed array and the native buffer whose `bytes` bytes are copied into it in OnOK.
struct CopyBack {
  Napi::ObjectReference array;
  const char* name;
  const void* from;
  std::size_t bytes;
};

// Queue the work and return a promise that settles with undefined (forward) or {loss, ce, rec} (loss), or
// rejects with the native failure, or with `output buffer <name> was detached during <call>` when an output
// array lost its memory while the work ran (no output is written then).
Napi::Promise queueForward(Napi::Env env, ForwardBaton baton, std::vector<CopyBack> outputs);
Napi::Promise queueLoss(Napi::Env env, LossBaton baton, std::vector<CopyBack> outputs);
// The baton's steps (trainStepsOnSet where it holds indices, else trainSteps) into b.next, b.adam and b.results; on
// the calling thread.
void runSteps(StepsBaton& b);
// What a steps call resolves with: {loss, ce, rec, gradNorm: Float64Array[steps], timing: Float64Array [the wait for
// a thread of Node's pool, the run], both in ms}.
Napi::Object stepsResult(Napi::Env env, const std::vector<StepResult>& results, double queueMs, double runMs);
// Settles with stepsResult's object.
Napi::Promise queueSteps(Napi::Env env, StepsBaton baton);

}  // namespace moe::addon
