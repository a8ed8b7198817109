// AdamW step on the device, in double like the CPU step (cpu_backend.cpp): one block, because the parameter vector
// is small (3 112 or 11 016 floats) and the clip needs the global norm before any update.
#include "common.cuh"

namespace moe::cuda {

namespace {

constexpr int kThreads = 1024;

template <int H>
__device__ __forceinline__ bool decays(int i) {
  using L = Lay<H>;
  return (i >= L::W1 && i < L::b1) || (i >= L::Wc && i < L::bc) || (i >= L::Wv && i < L::Bv) ||
         (i >= L::Wr && i < L::Br) || (i >= L::Ws && i < L::Bs) || (i >= L::We && i < L::be);
}

// The step itself: the block's threads reduce the squared gradient, then each updates its share of the parameters.
template <int H>
__device__ __forceinline__ void adamwBody(float* __restrict__ p, float* __restrict__ m, float* __restrict__ v,
                                          const float* __restrict__ g, const AdamWArgs& o, double* norm) {
  constexpr int n = Lay<H>::size;
  __shared__ double red[kThreads];
  const int tid = threadIdx.x;
  double sq = 0;
  for (int i = tid; i < n; i += kThreads) sq += double(g[i]) * g[i];
  red[tid] = sq;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (tid < s) red[tid] += red[tid + s];
    __syncthreads();
  }
  const double nrm = sqrt(red[0]);
  const double scale = (o.clipNorm > 0 && nrm > o.clipNorm) ? o.clipNorm / nrm : 1.0;
  for (int i = tid; i < n; i += kThreads) {
    const double gi = g[i] * scale;
    const double mi = o.beta1 * double(m[i]) + (1.0 - o.beta1) * gi;
    const double vi = o.beta2 * double(v[i]) + (1.0 - o.beta2) * gi * gi;
    m[i] = float(mi);
    v[i] = float(vi);
    const double decay = decays<H>(i) ? double(o.weightDecay) * p[i] : 0.0;
    p[i] = float(p[i] - o.lr * ((mi / o.bc1) / (sqrt(vi / o.bc2) + o.eps) + decay));
  }
  if (tid == 0) *norm = nrm;
}

template <int H>
__global__ void __launch_bounds__(kThreads) adamwKernel(float* __restrict__ p, float* __restrict__ m,
                                                        float* __restrict__ v, const float* __restrict__ g,
                                                        AdamWArgs o, double* norm) {
  adamwBody<H>(p, m, v, g, o, norm);
}

// The same step with its arguments read from device memory (a captured graph's steps, whose rates change per call).
template <int H>
__global__ void __launch_bounds__(kThreads) adamwKernelAt(float* __restrict__ p, float* __restrict__ m,
                                                          float* __restrict__ v, const float* __restrict__ g,
                                                          const AdamWArgs* __restrict__ args, double* norm) {
  const AdamWArgs o = *args;
  adamwBody<H>(p, m, v, g, o, norm);
}

template <int H>
__global__ void transposeWeKernel(float* w) {
  using L = Lay<H>;
  constexpr int F = L::F, n = L::D * F * H;
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= n) return;
  const int a = idx / (F * H), f = (idx / H) % F, k = idx % H;
  w[L::WeT + (a * H + k) * F + f] = w[L::We + idx];
}

}  // namespace

void launchAdamW(int H, float* params, float* m, float* v, const float* grad, const AdamWArgs& a, double* norm,
                 cudaStream_t stream) {
  if (H == 16) adamwKernel<16><<<1, kThreads, 0, stream>>>(params, m, v, grad, a, norm);
  else adamwKernel<32><<<1, kThreads, 0, stream>>>(params, m, v, grad, a, norm);
  MOE_LAUNCH_CHECK();
}

void launchAdamWAt(int H, float* params, float* m, float* v, const float* grad, const AdamWArgs* args, double* norm,
                   cudaStream_t stream) {
  if (H == 16) adamwKernelAt<16><<<1, kThreads, 0, stream>>>(params, m, v, grad, args, norm);
  else adamwKernelAt<32><<<1, kThreads, 0, stream>>>(params, m, v, grad, args, norm);
  MOE_LAUNCH_CHECK();
}

void launchTransposeWe(int H, float* w, cudaStream_t stream) {
  const int n = kDomains * 2 * H * H, threads = 256;
  if (H == 16) transposeWeKernel<16><<<(n + threads - 1) / threads, threads, 0, stream>>>(w);
  else transposeWeKernel<32><<<(n + threads - 1) / threads, threads, 0, stream>>>(w);
  MOE_LAUNCH_CHECK();
}

}  // namespace moe::cuda
