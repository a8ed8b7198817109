#include "workers.h"

#include <chrono>
#include <cstring>
#include <exception>
#include <string>

#include "args.h"

namespace moe::addon {

// ---- staging buffers ----

Staged& Staged::operator=(Staged&& other) noexcept {
  if (this != &other) {
    giveBack();
    pool_ = std::move(other.pool_);
    data_ = std::move(other.data_);
    capacity_ = other.capacity_;
    bytes_ = other.bytes_;
  }
  return *this;
}

Staged::~Staged() { giveBack(); }

void Staged::giveBack() {
  if (data_ && pool_) pool_->give(std::move(data_), capacity_);
  data_.reset();
  pool_.reset();
}

Staged StagingPool::take(std::size_t bytes) {
  Staged s;
  s.pool_ = shared_from_this();
  s.bytes_ = bytes;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Smallest cached buffer that fits without wasting more than half of it, so a small call does not take the
    // big buffer the next big call needs.
    std::size_t best = free_.size();
    for (std::size_t i = 0; i < free_.size(); ++i) {
      const std::size_t c = free_[i].capacity;
      if (c >= bytes && c / 2 <= bytes && (best == free_.size() || c < free_[best].capacity)) best = i;
    }
    if (best < free_.size()) {
      s.data_ = std::move(free_[best].data);
      s.capacity_ = free_[best].capacity;
      cached_ -= s.capacity_;
      free_.erase(free_.begin() + std::ptrdiff_t(best));
      return s;
    }
  }
  // new[] of a trivial type leaves the memory uninitialised: no zeroing pass before the copy overwrites it.
  s.capacity_ = bytes > 0 ? bytes : 1;
  s.data_.reset(new std::uint8_t[s.capacity_]);
  return s;
}

void StagingPool::give(std::unique_ptr<std::uint8_t[]> data, std::size_t capacity) {
  if (capacity > kMaxCachedBytes) return;  // freed here, outside the cache
  std::lock_guard<std::mutex> lock(mu_);
  while (!free_.empty() && cached_ + capacity > kMaxCachedBytes) {
    cached_ -= free_.front().capacity;
    free_.erase(free_.begin());
  }
  cached_ += capacity;
  free_.push_back(Free{std::move(data), capacity});
}

// ---- workers ----

namespace {

// Shared shape: run `work` off the JS thread on native buffers only, copy the outputs back on the JS thread,
// turn any C++ failure into a rejected promise.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, const char* call, std::vector<CopyBack> outputs)
      : Napi::AsyncWorker(env, "moe_router"),
        deferred_(Napi::Promise::Deferred::New(env)),
        call_(call),
        outputs_(std::move(outputs)) {}
  Napi::Promise promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      run();
    } catch (const std::exception& e) {
      SetError(e.what());
    } catch (...) {
      SetError(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": unknown native failure");
    }
  }
  void OnOK() override {
    if (!copyBack()) return;
    deferred_.Resolve(result());
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }
  // A worker thread terminated with this batch in flight completes it during environment teardown, when no JS
  // can run: settling the promise fails and node-addon-api would throw out of a C callback (std::terminate).
  // Nobody is left to tell, so drop the result and free the worker.
  void OnWorkComplete(Napi::Env env, napi_status status) override {
    try {
      Napi::AsyncWorker::OnWorkComplete(env, status);
    } catch (...) {
      Destroy();
    }
  }
  virtual void run() = 0;
  virtual Napi::Value result() = 0;

  Napi::Promise::Deferred deferred_;

 private:
  // Every output still attached at its original size gets its values; if any is not (detached, or a resizable
  // buffer shrunk), none is written and the promise rejects, so a caller never sees half of a result. An output over
  // a SharedArrayBuffer (the inputs not: no in-place call) cannot be detached; it is written like any other.
  bool copyBack() {
    std::vector<std::uint8_t*> to(outputs_.size());
    const napi_env env = Env();
    for (std::size_t i = 0; i < outputs_.size(); ++i) {
      const CopyBack& o = outputs_[i];
      const Napi::TypedArray a = o.array.Value().As<Napi::TypedArray>();
      void* data = nullptr;  // the first element's address (napi adds the byte offset)
      napi_value buffer = nullptr;
      bool attached = napi_get_typedarray_info(env, a, nullptr, nullptr, &data, &buffer, nullptr) == napi_ok &&
                      data != nullptr && buffer != nullptr;
      if (attached && !isSharedBuffer(env, buffer)) {  // an ArrayBuffer, which can be detached
        bool detached = true;
        attached = napi_is_detached_arraybuffer(env, buffer, &detached) == napi_ok && !detached;
      }
      if (!attached || a.ByteLength() != o.bytes) {
        deferred_.Reject(Napi::Error::New(Env(), std::string("output buffer ") + o.name + " was detached during " +
                                                     call_ + "; its results were dropped")
                             .Value());
        return false;
      }
      to[i] = static_cast<std::uint8_t*>(data);
    }
    for (std::size_t i = 0; i < outputs_.size(); ++i) copyBytes(to[i], outputs_[i].from, outputs_[i].bytes);
    return true;
  }

  const char* call_;
  std::vector<CopyBack> outputs_;
};

class ForwardWorker final : public PromiseWorker {
 public:
  ForwardWorker(Napi::Env env, ForwardBaton b, std::vector<CopyBack> outputs)
      : PromiseWorker(env, "forward", std::move(outputs)), b_(std::move(b)) {}

 private:
  void run() override { b_.backend->forward(*b_.params, b_.batch, b_.out); }
  Napi::Value result() override { return Env().Undefined(); }
  ForwardBaton b_;
};

class LossWorker final : public PromiseWorker {
 public:
  LossWorker(Napi::Env env, LossBaton b, std::vector<CopyBack> outputs)
      : PromiseWorker(env, "lossAndGrad", std::move(outputs)), b_(std::move(b)) {}

 private:
  void run() override { b_.result = b_.backend->lossAndGrad(*b_.params, b_.batch, b_.opts, b_.grad); }
  Napi::Value result() override {
    Napi::Object r = Napi::Object::New(Env());
    r.Set("loss", b_.result.loss);
    r.Set("ce", b_.result.ce);
    r.Set("rec", b_.result.rec);
    return r;
  }
  LossBaton b_;
};

class StepsWorker final : public PromiseWorker {
 public:
  StepsWorker(Napi::Env env, StepsBaton b)
      : PromiseWorker(env, "trainSteps", {}), b_(std::move(b)), queued_(std::chrono::steady_clock::now()) {}

 private:
  void run() override {
    started_ = std::chrono::steady_clock::now();
    runSteps(b_);
    finished_ = std::chrono::steady_clock::now();
  }
  Napi::Value result() override {
    if (b_.settle) b_.settle(&b_);
    using Ms = std::chrono::duration<double, std::milli>;
    return stepsResult(Env(), b_.results, Ms(started_ - queued_).count(), Ms(finished_ - started_).count());
  }
  void OnError(const Napi::Error& e) override {
    if (b_.settle) b_.settle(nullptr);
    PromiseWorker::OnError(e);
  }
  StepsBaton b_;
  std::chrono::steady_clock::time_point queued_, started_, finished_;
};

}  // namespace

void runSteps(StepsBaton& b) {
  b.results.resize(b.lr.size());
  if (!b.index.empty()) {
    b.backend->trainStepsOnSet(*b.params, b.next->w, b.adam, b.index.data(), b.index.size(), b.opts, b.lr.size(),
                               b.lr.data(), b.focalGamma, b.adamw, b.results.data());
  } else {
    b.backend->trainSteps(*b.params, b.next->w, b.adam, b.batch, b.opts, b.lr.size(), b.lr.data(), b.focalGamma,
                          b.adamw, b.results.data());
  }
}

Napi::Object stepsResult(Napi::Env env, const std::vector<StepResult>& results, double queueMs, double runMs) {
  const std::size_t k = results.size();
  Napi::Float64Array loss = Napi::Float64Array::New(env, k), ce = Napi::Float64Array::New(env, k),
                     rec = Napi::Float64Array::New(env, k), norm = Napi::Float64Array::New(env, k);
  for (std::size_t i = 0; i < k; ++i) {
    loss[i] = results[i].loss.loss;
    ce[i] = results[i].loss.ce;
    rec[i] = results[i].loss.rec;
    norm[i] = results[i].gradNorm;
  }
  Napi::Object r = Napi::Object::New(env);
  r.Set("loss", loss);
  r.Set("ce", ce);
  r.Set("rec", rec);
  r.Set("gradNorm", norm);
  // Where the call's time went: waiting for a thread of the pool, then running (the device's work and the wait
  // for it), in milliseconds; the caller's own clock gives the rest (its thread's turn).
  Napi::Float64Array timing = Napi::Float64Array::New(env, 2);
  timing[0] = queueMs;
  timing[1] = runMs;
  r.Set("timing", timing);
  return r;
}

Napi::Promise queueSteps(Napi::Env env, StepsBaton baton) {
  auto* w = new StepsWorker(env, std::move(baton));
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

Napi::Promise queueForward(Napi::Env env, ForwardBaton baton, std::vector<CopyBack> outputs) {
  auto* w = new ForwardWorker(env, std::move(baton), std::move(outputs));  // deletes itself after OnOK/OnError
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

Napi::Promise queueLoss(Napi::Env env, LossBaton baton, std::vector<CopyBack> outputs) {
  auto* w = new LossWorker(env, std::move(baton), std::move(outputs));
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

}  // namespace moe::addon
