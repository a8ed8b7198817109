// AVX2 + FMA backend. Compiled alone with -mavx2 -mfma; selected at run time only when CPUID reports them.
#include "vec_avx2.h"
#include "forward_simd.inl"
#include "lossgrad.inl"

const moe::CpuKernels& moe::avx2Kernels() {
  static const CpuKernels k{"simd-avx2", forwardSimd<V256>, lossGradRangeT<float>};
  return k;
}
