// JS class `Router` of the addon: holds one parameter snapshot, the optimizer state and a backend (CPU or CUDA).
// Contracts (shapes, dtypes, errors) are listed at each method in router_wrap.cpp.
#pragma once
#include <napi.h>

#include <memory>
#include <string>

#include "moe_router/router.h"
#include "workers.h"

namespace moe::addon {

class RouterWrap : public Napi::ObjectWrap<RouterWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit RouterWrap(const Napi::CallbackInfo& info);

 private:
  Napi::Value BackendName(const Napi::CallbackInfo& info);
  Napi::Value BackendInfo(const Napi::CallbackInfo& info);
  Napi::Value ParamCount(const Napi::CallbackInfo& info);
  Napi::Value SetParams(const Napi::CallbackInfo& info);
  Napi::Value GetParams(const Napi::CallbackInfo& info);
  Napi::Value ForwardSync(const Napi::CallbackInfo& info);
  Napi::Value Forward(const Napi::CallbackInfo& info);
  Napi::Value LossAndGrad(const Napi::CallbackInfo& info);
  Napi::Value AdamwStep(const Napi::CallbackInfo& info);
  Napi::Value TrainSteps(const Napi::CallbackInfo& info);
  Napi::Value TrainStepsSupported(const Napi::CallbackInfo& info);
  Napi::Value SetTrainingSet(const Napi::CallbackInfo& info);
  Napi::Value TrainStepsOnSet(const Napi::CallbackInfo& info);
  Napi::Value TrainStepsOnSetSync(const Napi::CallbackInfo& info);
  // trainStepsOnSet's arguments, checked, into a baton's inputs (indices, loss terms, lr and AdamW options).
  StepsBaton stepsOnSetBaton(const Napi::CallbackInfo& info);
  // A steps call's starting state into b: this router's backend, its parameters (a copy of them receives the update)
  // and a copy of its optimizer state.
  void startSteps(StepsBaton& b) const;
  // The shared tail of TrainSteps and TrainStepsOnSet (b's inputs, lr and AdamW options filled): startSteps, the
  // settle filled, the call queued.
  Napi::Value queueStepsCall(const Napi::CallbackInfo& info, StepsBaton b);
  Napi::Value ResetOptimizer(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  void requireOpen(Napi::Env env) const;
  void requireIdle(Napi::Env env) const;  // throws while a trainSteps call is in flight

  int hidden_ = 16;
  std::size_t paramCount_ = 0;
  bool closed_ = false;
  bool stepping_ = false;
  std::size_t setTokens_ = 0;  // tokens of the training set the backend holds (setTrainingSet), 0: none
  std::shared_ptr<const Backend> backend_;
  std::string fallback_;  // why 'auto' did not get the GPU ('' when it did, or when a CPU backend was asked for)
  std::string device_;    // GPU description when the CUDA backend runs
  ParamsPtr params_;
  AdamWState adam_;
  std::shared_ptr<StagingPool> staging_ = std::make_shared<StagingPool>();  // native copies for async calls
};

}  // namespace moe::addon
