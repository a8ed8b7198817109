// Shared by the CUDA translation units: error checks, the compile-time parameter layout, kernel launchers.
// Layout and math: moe_router/layout.h and docs/router.md; every kernel keeps the scalar oracle's order of
// summation where one thread owns a sum (src/cpu/scalar.cpp, src/cpu/lossgrad.inl).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "moe_router/router.h"

// Every CUDA call and every launch goes through one of these: a failure becomes moe::Error with file:line, the
// call's text and the runtime's error name, so a JS stack points at the line that failed.
#define MOE_CUDA_CHECK(call)                                                                        \
  do {                                                                                              \
    const cudaError_t moeErr_ = (call);                                                             \
    if (moeErr_ != cudaSuccess)                                                                     \
      MOE_FAIL(std::string(#call) + " failed: " + cudaGetErrorName(moeErr_) + " (" +               \
               cudaGetErrorString(moeErr_) + ")");                                                  \
  } while (0)
#define MOE_LAUNCH_CHECK() MOE_CUDA_CHECK(cudaGetLastError())

namespace moe::cuda {

// Offsets of moe::Layout as constants, so kernels index weights without run-time arithmetic. backend.cu checks
// them against Layout(H) once.
template <int H>
struct Lay {
  static constexpr int F = 2 * H, D = kDomains;
  static constexpr int W1 = 0, b1 = W1 + H * F, Wc = b1 + F, bc = Wc + F * D, Wv = bc + D, Bv = Wv + kVolUnits * D,
                       Wr = Bv + kVolUnits * D, Br = Wr + kRiskUnits * D, Ws = Br + kRiskUnits * D,
                       Bs = Ws + kNumStats * kStatUnits * D, gates = Bs + kStatUnits * D, We = gates + 4,
                       be = We + D * F * H, size = be + D * H;
  // Offset of the transposed expert weights WeT[a][k][f] that the backward pass appends after the parameters.
  static constexpr int WeT = size;
  static constexpr int sizeWithT = size + D * F * H;
};

// Weights as the kernels read them: the parameter vector, then WeT (see Lay::WeT). invT = 1 / temperature as the
// CPU computes it (float division on the host).
struct DeviceParams {
  const float* w;
  float invT;
};

// ---- forward (forward.cu) ----
// Contract: x[n*H], vol[n], risk[n] device pointers, x 16-byte aligned; probs[n*4] 16-byte aligned, assign[n];
// expert[n*H] or nullptr. n >= 1. Launched on `stream`; the launch is checked. Returns nothing; errors throw.
struct ForwardArgs {
  const float* x;
  const float* vol;
  const float* risk;
  float* probs;
  std::uint8_t* assign;
  float* expert;
  int n;
};
// Arithmetic of the forward's two matrix products (x·W1 and h·We[a]): FP32 (versions 2, 4 and 8), or on the tensor
// cores with FP32 accumulation (versions 9, 11, 12 and 13, forward_tc.cu): BF16X3 (x·W1 in split BF16; h·We in TF32,
// FP16 in v12 and v13), TF32X3 (x·W1 in split TF32, near FP32; h·We likewise), TF32 or BF16 inputs. Env: MOE_CUDA_PRECISION.
enum class Precision : int { Env = -1, FP32 = 0, TF32 = 1, BF16 = 2, TF32X3 = 3, BF16X3 = 4 };
// The precision when MOE_CUDA_PRECISION is unset or empty (docs/performance.md, "Tensor-core forward"): bf16x3 is the
// fastest that meets the accuracy contract with the trained model (probabilities within 2e-3 of the oracle, argmax
// equal where the top two logits differ by more than 1e-2; measured 8.6e-5, no argmax difference; tf32 misses it) and
// `evaluate` gives the CPU's rows with it (H200, 2026-12-05). The training path (lossgrad.cu) is FP32 always.
constexpr Precision kDefaultPrecision = Precision::BF16X3;
// The tensor-core kernel the precisions other than fp32 run unless MOE_CUDA_FORWARD_KERNEL forces 9, 11, 12 or 13: v13
// (v12, the expert product dense and in FP16, with the gate on the tensor cores and by tables as well): faster than
// v12 with and without the expert output at 1e6 and 1e7 tokens (1.19× at H = 32 and 1.21× at H = 16 with its tiles
// prefetched, 1e7 tokens with the expert output, bf16x3; H100, 2026-12-06; docs/performance.md, "Version 13"), within
// the accuracy contract (its sums run in another order than v12's, so its probabilities are not v12's bits) and
// `evaluate` gives the CPU's rows with it.
// Until 2026-12-06 v12 (the same probabilities and argmax as v9 and v11 bit for bit).
constexpr int kDefaultTensorKernel = 13;
// MOE_CUDA_PRECISION=fp32|bf16x3|tf32x3|tf32|bf16, read once; unset or empty: kDefaultPrecision, except fp32 when
// MOE_CUDA_FORWARD_KERNEL forces an fp32 kernel (2, 4 or 8); any other value throws moe::Error naming the allowed
// values (here and on every later call).
Precision forwardPrecision();
const char* precisionName(Precision p);
// MOE_CUDA_WAIT=block|spin, read once: how a thread waits for a call of training steps or a training set's upload
// (backend.cu, waitFor): asleep until the device is done (block, the default) or spinning on its core (spin); any
// other value throws moe::Error naming the allowed values (here and on every later call).
bool waitSpins();
// MOE_CUDA_GRAPH=1|0, read by each backend when it is made: whether trainStepsOnSet launches its call's steps as one
// captured CUDA graph (1, the default) or queues each step's operations on the stream (0); the same kernels and
// arguments in the same order either way, so the same bits. Any other value throws moe::Error naming the allowed ones.
bool stepGraphs();
// version: 0 = the default (forwardKernelVersion), 2, 4 or 8 = that FP32 kernel, 9, 11, 12 or 13 = a tensor-core kernel
// (forward.cu and forward_tc.cu explain them); precision: Env = forwardPrecision(). Versions 2, 4 and 8 need FP32,
// versions 9, 11, 12 and 13 BF16X3, TF32X3, TF32 or BF16; any other value or combination throws before anything is launched.
void launchForward(int H, const DeviceParams& p, const ForwardArgs& a, cudaStream_t stream, int version = 0,
                   Precision precision = Precision::Env);
// MOE_CUDA_FORWARD_KERNEL=2|4|8|9|11|12|13 forces a version; else, for FP32, the fastest measured for this H and output
// set, and kDefaultTensorKernel (13) for the other precisions. Throws when a forced version does not compute in `precision` (Env:
// forwardPrecision()).
int forwardKernelVersion(int H, bool expert, Precision precision = Precision::Env);
// The version MOE_CUDA_FORWARD_KERNEL forces, 0 when it is unset or empty; any other value throws moe::Error.
int forcedForwardKernel();
// Dynamic shared memory the forward kernels need (the backend raises the kernels' limits once).
void prepareForward(int H);
// The tensor-core kernel (forward_tc.cu), called through prepareForward and launchForward.
void prepareForwardTC(int H);
// version 9 (the expert product bucketed by expert), 11 (dense over the experts a tile's rows chose), 12 (11 with
// that product in FP16) or 13 (12 with h·Wc and the statistics' signal on the tensor cores, vol and risk by tables).
void launchForwardTC(int H, int version, Precision precision, const DeviceParams& p, const ForwardArgs& a,
                     cudaStream_t stream);

// ---- loss and gradient (lossgrad.cu) ----
// Contract: inputs as forward, labels[n] (0..3, checked by the caller), sampleWeight[n] or nullptr, focalGamma ≥ 0
// (0: none; else each token's weight is multiplied by (1 - p[label])^focalGamma at the current parameters).
// Accumulates unnormalised sums into partial[rows][rowLen] (rowLen = Lay<H>::size + 3: gradient, then Σ w·CE,
// Σ rec, Σ loss), one row per block; rows must be zeroed before the first chunk. reduceLossGrad then sums the rows
// in a fixed order into out[rowLen] doubles (gradient already divided by nTotal) and, when gradF is not null, the
// gradient as floats into gradF[Lay<H>::size].
struct LossArgs {
  const float* x;
  const float* vol;
  const float* risk;
  const std::uint8_t* labels;
  const float* sampleWeight;
  int n;
  float labelSmoothing;
  float reconWeight;
  float focalGamma;
};
int lossGradRows(int H);                       // most rows (= blocks) this device runs at once
int lossGradRowsFor(int H, std::size_t n);      // rows used for a batch of n tokens (fixed per n and device)
void launchLossGrad(int H, const DeviceParams& p, const LossArgs& a, int rows, double* partial, cudaStream_t stream);
void launchReduceLossGrad(int H, const double* partial, int rows, double invN, double* out, float* gradF,
                          cudaStream_t stream);

// ---- AdamW (adamw.cu) ----
// One step on params[size] with moments m, v (device). Bias corrections come from the host in double, as the CPU
// computes them. Writes the pre-clip norm to *norm (device double).
struct AdamWArgs {
  float lr, beta1, beta2, eps, weightDecay, clipNorm;
  double bc1, bc2;
};
void launchAdamW(int H, float* params, float* m, float* v, const float* grad, const AdamWArgs& a, double* norm,
                 cudaStream_t stream);
// The same step with its arguments at args (device memory), read when the kernel runs: the same arithmetic, for the
// steps of a captured CUDA graph, whose rates and bias corrections change from one launch to the next.
void launchAdamWAt(int H, float* params, float* m, float* v, const float* grad, const AdamWArgs* args, double* norm,
                   cudaStream_t stream);
// Refreshes WeT (Lay<H>::WeT) from We in the device weight buffer w[Lay<H>::sizeWithT].
void launchTransposeWe(int H, float* w, cudaStream_t stream);

}  // namespace moe::cuda
