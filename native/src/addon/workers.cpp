#include "workers.h"

#include <exception>

namespace moe::addon {

namespace {

// Shared shape: run `work` off the JS thread, turn any C++ failure into a rejected promise.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, Pins pins)
      : Napi::AsyncWorker(env, "moe_router"), deferred_(Napi::Promise::Deferred::New(env)), pins_(std::move(pins)) {}
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

  Napi::Promise::Deferred deferred_;

 private:
  Pins pins_;
};

class ForwardWorker final : public PromiseWorker {
 public:
  ForwardWorker(Napi::Env env, ForwardBaton b, Pins pins) : PromiseWorker(env, std::move(pins)), b_(std::move(b)) {}

 private:
  void run() override { b_.backend->forward(*b_.params, b_.batch, b_.out); }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  ForwardBaton b_;
};

class LossWorker final : public PromiseWorker {
 public:
  LossWorker(Napi::Env env, LossBaton b, Pins pins) : PromiseWorker(env, std::move(pins)), b_(std::move(b)) {}

 private:
  void run() override { b_.result = b_.backend->lossAndGrad(*b_.params, b_.batch, b_.opts, b_.grad); }
  void OnOK() override {
    Napi::Object r = Napi::Object::New(Env());
    r.Set("loss", b_.result.loss);
    r.Set("ce", b_.result.ce);
    r.Set("rec", b_.result.rec);
    deferred_.Resolve(r);
  }
  LossBaton b_;
};

}  // namespace

Napi::Promise queueForward(Napi::Env env, ForwardBaton baton, Pins pins) {
  auto* w = new ForwardWorker(env, std::move(baton), std::move(pins));  // deletes itself after OnOK/OnError
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

Napi::Promise queueLoss(Napi::Env env, LossBaton baton, Pins pins) {
  auto* w = new LossWorker(env, std::move(baton), std::move(pins));
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

}  // namespace moe::addon
