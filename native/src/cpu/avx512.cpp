// AVX-512 backend. Compiled alone with AVX-512 flags; selected at run time only when CPUID reports them.
#include "vec_avx512.h"
#include "forward_simd.inl"
#include "lossgrad.inl"

const moe::CpuKernels& moe::avx512Kernels() {
  static const CpuKernels k{"simd-avx512", forwardSimd<V512>, lossGradRangeT<float>};
  return k;
}
