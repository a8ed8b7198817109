// AVX2 + FMA vector traits (8 float lanes). Only included by avx2.cpp (compiled with -mavx2 -mfma);
// everything here has internal linkage.
#pragma once
#include <immintrin.h>

namespace {

struct V256 {
  using V = __m256;
  using M = __m256;
  static constexpr int W = 8;
  static constexpr int kRegs = 16;  // vector registers
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V a) { _mm256_storeu_ps(p, a); }
  static V set1(float a) { return _mm256_set1_ps(a); }
  static V zero() { return _mm256_setzero_ps(); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V fnma(V a, V b, V c) { return _mm256_fnmadd_ps(a, b, c); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V min(V a, V b) { return _mm256_min_ps(a, b); }
  static V abs(V a) { return _mm256_and_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))); }
  static V signOf(V a) { return _mm256_and_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(int(0x80000000u)))); }
  static V orBits(V a, V b) { return _mm256_or_ps(a, b); }
  static M lt(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static M gt(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static V select(M m, V t, V f) { return _mm256_blendv_ps(f, t, m); }
  static V roundNearest(V a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static V pow2i(V n) {
    const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
  }
  static V allSum(V a) {
    a = _mm256_add_ps(a, _mm256_permute2f128_ps(a, a, 0x01));
    a = _mm256_add_ps(a, _mm256_permute_ps(a, 0x4E));
    return _mm256_add_ps(a, _mm256_permute_ps(a, 0xB1));
  }
  static __m128 fold4(V a) { return _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1)); }
  // Lane l gets h[g*2 + l/4]: matches 2 consecutive rows of a row-major [F,4] matrix (8 floats).
  static V spreadGroup(V h, int g) {
    const __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(g * 2), _mm256_set_epi32(1, 1, 1, 1, 0, 0, 0, 0));
    return _mm256_permutevar8x32_ps(h, idx);
  }
};

}  // namespace
