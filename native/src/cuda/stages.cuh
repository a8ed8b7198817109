// Per-token stages that every forward version (forward.cu) shares, and that the gradient kernel (lossgrad.cu) shares
// where it computes the same thing: the statistics of x, the four routing signals, the clipped logits, argmax and
// softmax. Each is written once, in the scalar oracle's order of summation (src/cpu/scalar.cpp), so a change of the
// math cannot reach one version and miss another.
// All are __forceinline__ with compile-time sizes: once inlined, the arrays are registers again and each kernel keeps
// the unrolling and register allocation it had with its own copy (ptxas: same registers, no spills, same code).
#pragma once
#include "common.cuh"

namespace moe::cuda {

// mean, variance (population) and mean |x| of one token's x row in shared memory, as st = {mean, var, absMean}.
// V16 reads the row as float4 (row 16-byte aligned); the order of summation is the same either way.
template <int H, bool V16>
__device__ __forceinline__ void tokenStats(const float* xr, float (&st)[3]) {
  float mean = 0, absMean = 0, var = 0;
  if constexpr (V16) {
#pragma unroll
    for (int i4 = 0; i4 < H; i4 += 4) {
      const float4 v = *reinterpret_cast<const float4*>(xr + i4);
      mean += v.x;
      absMean += fabsf(v.x);
      mean += v.y;
      absMean += fabsf(v.y);
      mean += v.z;
      absMean += fabsf(v.z);
      mean += v.w;
      absMean += fabsf(v.w);
    }
    mean /= H;
    absMean /= H;
#pragma unroll
    for (int i4 = 0; i4 < H; i4 += 4) {
      const float4 v = *reinterpret_cast<const float4*>(xr + i4);
      var += (v.x - mean) * (v.x - mean);
      var += (v.y - mean) * (v.y - mean);
      var += (v.z - mean) * (v.z - mean);
      var += (v.w - mean) * (v.w - mean);
    }
  } else {
#pragma unroll
    for (int i = 0; i < H; ++i) {
      mean += xr[i];
      absMean += fabsf(xr[i]);
    }
    mean /= H;
    absMean /= H;
#pragma unroll
    for (int i = 0; i < H; ++i) var += (xr[i] - mean) * (xr[i] - mean);
  }
  var /= H;
  st[0] = mean;
  st[1] = var;
  st[2] = absMean;
}

// The vol, risk and stats signals of N tokens, summed over their units but not yet averaged:
//   vs[t][d] = Σ_j relu(vol[t]·Wv[j][d] + Bv[j][d]), rs likewise with risk, ss[t][d] = Σ_j relu(Bs[j][d] +
//   Σ_k st[t][k]·Ws[k][j][d]).
// The unit loop is outside the token loop so that each float4 of weights read from shared memory (a broadcast)
// serves all N tokens of the thread.
template <int H, int N>
__device__ __forceinline__ void signalSums(const float* w, const float (&vol)[N], const float (&risk)[N],
                                           const float (&st)[N][3], float (&vs)[N][4], float (&rs)[N][4],
                                           float (&ss)[N][4]) {
  using L = Lay<H>;
#pragma unroll
  for (int t = 0; t < N; ++t)
#pragma unroll
    for (int d = 0; d < 4; ++d) vs[t][d] = rs[t][d] = ss[t][d] = 0.0f;
#pragma unroll
  for (int j = 0; j < kVolUnits; ++j) {
    const float4 wv = reinterpret_cast<const float4*>(w + L::Wv)[j];
    const float4 bv = reinterpret_cast<const float4*>(w + L::Bv)[j];
    const float4 wr = reinterpret_cast<const float4*>(w + L::Wr)[j];
    const float4 br = reinterpret_cast<const float4*>(w + L::Br)[j];
#pragma unroll
    for (int t = 0; t < N; ++t) {
      vs[t][0] += fmaxf(vol[t] * wv.x + bv.x, 0.0f);
      vs[t][1] += fmaxf(vol[t] * wv.y + bv.y, 0.0f);
      vs[t][2] += fmaxf(vol[t] * wv.z + bv.z, 0.0f);
      vs[t][3] += fmaxf(vol[t] * wv.w + bv.w, 0.0f);
      rs[t][0] += fmaxf(risk[t] * wr.x + br.x, 0.0f);
      rs[t][1] += fmaxf(risk[t] * wr.y + br.y, 0.0f);
      rs[t][2] += fmaxf(risk[t] * wr.z + br.z, 0.0f);
      rs[t][3] += fmaxf(risk[t] * wr.w + br.w, 0.0f);
    }
  }
#pragma unroll
  for (int j = 0; j < kStatUnits; ++j) {
    const float4 bs = reinterpret_cast<const float4*>(w + L::Bs)[j];
    float4 acc[N];
#pragma unroll
    for (int t = 0; t < N; ++t) acc[t] = bs;
#pragma unroll
    for (int k = 0; k < kNumStats; ++k) {
      const float4 ws = reinterpret_cast<const float4*>(w + L::Ws)[k * kStatUnits + j];
#pragma unroll
      for (int t = 0; t < N; ++t) {
        acc[t].x += st[t][k] * ws.x;
        acc[t].y += st[t][k] * ws.y;
        acc[t].z += st[t][k] * ws.z;
        acc[t].w += st[t][k] * ws.w;
      }
    }
#pragma unroll
    for (int t = 0; t < N; ++t) {
      ss[t][0] += fmaxf(acc[t].x, 0.0f);
      ss[t][1] += fmaxf(acc[t].y, 0.0f);
      ss[t][2] += fmaxf(acc[t].z, 0.0f);
      ss[t][3] += fmaxf(acc[t].w, 0.0f);
    }
  }
}

// Logit of one domain from its gated pre-activation s: clipped to ±kLogitClip, then divided by the temperature.
__device__ __forceinline__ float clippedLogit(float s, float invT) {
  return fminf(fmaxf(s, -kLogitClip), kLogitClip) * invT;
}

// Index of the first maximum of z (the oracle's tie rule) and the maximum in zm.
__device__ __forceinline__ int argmax4(const float (&z)[4], float& zm) {
  int best = 0;
  float top = z[0];
  if (z[1] > top) { top = z[1]; best = 1; }
  if (z[2] > top) { top = z[2]; best = 2; }
  if (z[3] > top) { top = z[3]; best = 3; }
  zm = top;
  return best;
}

// e[d] = exp(z[d] - zm); returns their sum (domain order), the softmax denominator.
__device__ __forceinline__ float softmaxTerms(const float (&z)[4], float zm, float (&e)[4]) {
  float sum = 0;
#pragma unroll
  for (int d = 0; d < 4; ++d) {
    e[d] = expf(z[d] - zm);
    sum += e[d];
  }
  return sum;
}

// Logits (clipped, over the temperature), argmax and softmax of N tokens from their gated pre-activations s, stored
// where row[t] < m (a row of the tile: token base + row[t]). am[t] receives the argmax (the token's expert).
template <int N>
__device__ __forceinline__ void gateFinish(const float (&s)[N][4], float invT, const int (&row)[N], int m, int base,
                                           const ForwardArgs& a, int (&am)[N]) {
#pragma unroll
  for (int t = 0; t < N; ++t) {
    float z[4];
#pragma unroll
    for (int d = 0; d < 4; ++d) z[d] = clippedLogit(s[t][d], invT);
    float zm, e[4];
    am[t] = argmax4(z, zm);
    const float sum = softmaxTerms(z, zm, e);
    if (row[t] < m) {
      const int tok = base + row[t];
      reinterpret_cast<float4*>(a.probs)[tok] = make_float4(e[0] / sum, e[1] / sum, e[2] / sum, e[3] / sum);
      a.assign[tok] = std::uint8_t(am[t]);
    }
  }
}

// The end of every forward version for the N tokens a thread owns: signals from vol, risk and the statistics, then
// per token the gated pre-activations of base b (b = bc + h·Wc) and gateFinish. g: the four gates. am[t] receives
// the argmax (the token's expert).
template <int H, int N>
__device__ __forceinline__ void gateTokens(const float* w, const float (&g)[4], float invT, const float (&b)[N][4],
                                           const float (&st)[N][3], const float (&vol)[N], const float (&risk)[N],
                                           const int (&row)[N], int m, int base, const ForwardArgs& a,
                                           int (&am)[N]) {
  float vs[N][4], rs[N][4], ss[N][4];
  signalSums<H, N>(w, vol, risk, st, vs, rs, ss);
  float s[N][4];
#pragma unroll
  for (int t = 0; t < N; ++t)
#pragma unroll
    for (int d = 0; d < 4; ++d)
      s[t][d] = g[0] * b[t][d] + g[1] * (vs[t][d] / kVolUnits) + g[2] * (rs[t][d] / kRiskUnits) +
                g[3] * (ss[t][d] / kStatUnits);
  gateFinish<N>(s, invT, row, m, base, a, am);
}

}  // namespace moe::cuda
