// AVX-512 vector traits (16 float lanes). Only included by avx512.cpp, which is compiled with
// -mavx512f -mavx512vl -mavx512bw -mavx512dq -mfma; everything here has internal linkage.
#pragma once
#include <immintrin.h>

namespace {

struct V512 {
  using V = __m512;
  using M = __mmask16;
  static constexpr int W = 16;
  static constexpr int kRegs = 32;  // vector registers
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V a) { _mm512_storeu_ps(p, a); }
  static V set1(float a) { return _mm512_set1_ps(a); }
  static V zero() { return _mm512_setzero_ps(); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V div(V a, V b) { return _mm512_div_ps(a, b); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }    // a*b + c
  static V fnma(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); }  // c - a*b
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V min(V a, V b) { return _mm512_min_ps(a, b); }
  static V abs(V a) { return _mm512_abs_ps(a); }
  static V signOf(V a) { return _mm512_and_ps(a, _mm512_castsi512_ps(_mm512_set1_epi32(int(0x80000000u)))); }
  static V orBits(V a, V b) { return _mm512_or_ps(a, b); }
  static M lt(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static M gt(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static V select(M m, V t, V f) { return _mm512_mask_blend_ps(m, f, t); }
  static V roundNearest(V a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  // 2^n for integral n in [-126, 127], built in the exponent field.
  static V pow2i(V n) {
    const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
  }
  // Sum of all lanes, in every lane (butterfly: no round trip through a scalar register).
  static V allSum(V a) {
    a = _mm512_add_ps(a, _mm512_shuffle_f32x4(a, a, 0x4E));
    a = _mm512_add_ps(a, _mm512_shuffle_f32x4(a, a, 0xB1));
    a = _mm512_add_ps(a, _mm512_permute_ps(a, 0x4E));
    return _mm512_add_ps(a, _mm512_permute_ps(a, 0xB1));
  }
  // Lane l holds a value for domain l % 4: fold the W lanes into 4 sums.
  static __m128 fold4(V a) {
    const __m256 s = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
    return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  }
  // Lane l gets h[g*4 + l/4]: matches 4 consecutive rows of a row-major [F,4] matrix (16 floats).
  static V spreadGroup(V h, int g) {
    const __m512i idx = _mm512_add_epi32(_mm512_set1_epi32(g * 4),
                                         _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0));
    return _mm512_permutexvar_ps(idx, h);
  }
};

}  // namespace
