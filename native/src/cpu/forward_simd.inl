// SIMD forward pass, written once over a vector-traits type V (V256 or V512) and a hidden size H.
// Included by avx2.cpp and avx512.cpp; each compiles it with its own ISA flags. Internal linkage only.
//
// Contract (CpuKernels::forward): tokens [begin, end) of the batch; x row-major [n,H]; writes probs [n,4]
// (softmax of clip(s,±15)/T), assign [n] (argmax, ties → lowest index) and, when non-null, expert [n,H].
//
// How it vectorises (W = lanes per vector, a block = 64 tokens):
//  1. h = relu(x·W1 + b1): 4 tokens at a time; each W1 row chunk is loaded once and FMA'd with a broadcast
//     x[t][i] for all 4 tokens (register blocking; at H = 32 on AVX-512, 16 accumulators and 2 FMAs per load).
//  2. Signals: every [·,4] matrix is read as W-lane vectors whose lane l belongs to domain l % 4, so
//     relu(vol·Wv + Bv), the stats units and h·Wc (h spread 4× by a lane permute) accumulate in W lanes and
//     fold to 4 values once per token.
//  3. Softmax/argmax: logits are stored transposed, [4][block], so clip, exp, sum, divide and argmax run
//     W tokens per instruction.
//  4. Expert: tokens of the block are bucketed by expert and done in groups of up to 4 that share every We
//     load; y = h·We[a] + be[a] over H/W vectors, relu / 0.8· / tanh vectorised over the H lanes of a token.
#include <cstddef>
#include <cstdint>
#include <immintrin.h>

#include "moe_router/router.h"

namespace {

// -DMOE_PROFILE keeps the phases out of line so `perf report` can attribute time to each of them.
#if defined(MOE_PROFILE)
#define MOE_PHASE __attribute__((noinline))
#else
#define MOE_PHASE
#endif

// exp(x) for x ≤ 88: Cody–Waite range reduction by ln 2 and a degree-6 polynomial (Cephes expf);
// relative error about 1e-7. Inputs are clamped to [−87.3, 88], so results below ~1e−38 come out as ~1e−38
// (a probability that small is 0 for every purpose here, and the clamp keeps 2^n a normal float).
template <class V>
inline typename V::V vexp(typename V::V x) {
  using T = typename V::V;
  x = V::min(x, V::set1(88.0f));
  x = V::max(x, V::set1(-87.3f));
  const T n = V::roundNearest(V::mul(x, V::set1(1.44269504088896341f)));
  T r = V::fnma(n, V::set1(0.693359375f), x);
  r = V::fnma(n, V::set1(-2.12194440e-4f), r);
  T p = V::set1(1.9875691500e-4f);
  p = V::fma(p, r, V::set1(1.3981999507e-3f));
  p = V::fma(p, r, V::set1(8.3334519073e-3f));
  p = V::fma(p, r, V::set1(4.1665795894e-2f));
  p = V::fma(p, r, V::set1(1.6666665459e-1f));
  p = V::fma(p, r, V::set1(5.0000001201e-1f));
  p = V::fma(p, V::mul(r, r), V::add(r, V::set1(1.0f)));
  return V::mul(p, V::pow2i(n));
}

// tanh(y): odd minimax polynomial for |y| < 0.625 (keeps the relative error small near 0, where
// 1 − 2/(e^{2y}+1) would cancel), else 1 − 2/(e^{2|y|}+1) with the sign restored (Cephes tanhf).
template <class V>
inline typename V::V vtanh(typename V::V y) {
  using T = typename V::V;
  const T ay = V::abs(y);
  const T z = V::mul(y, y);
  T p = V::set1(-5.70498872745e-3f);
  p = V::fma(p, z, V::set1(2.06390887954e-2f));
  p = V::fma(p, z, V::set1(-5.37397155531e-2f));
  p = V::fma(p, z, V::set1(1.33314422036e-1f));
  p = V::fma(p, z, V::set1(-3.33332819422e-1f));
  const T small = V::fma(V::mul(p, z), y, y);
  const T e = vexp<V>(V::min(V::add(ay, ay), V::set1(40.0f)));
  const T big = V::sub(V::set1(1.0f), V::div(V::set1(2.0f), V::add(e, V::set1(1.0f))));
  return V::select(V::lt(ay, V::set1(0.625f)), small, V::orBits(big, V::signOf(y)));
}

template <class V, int H>
struct SimdForward {
  using T = typename V::V;
  static constexpr int W = V::W;
  static constexpr int F = 2 * H;
  static constexpr int D = moe::kDomains;
  static constexpr int FC = F / W;                    // vectors per h
  static constexpr int HC = H / W > 0 ? H / W : 1;    // vectors per x / expert row
  static constexpr int TB = 4;                        // tokens sharing each W1 load
  static constexpr int kBlock = 64;                   // tokens per block: hbuf is 16 KiB at H = 32, in L1
  static_assert(H % W == 0 && F % W == 0, "H must be a multiple of the lane count");

  struct Weights {
    const float *W1, *b1, *Wc, *bc, *Wv, *Bv, *Wr, *Br, *Ws, *Bs, *We, *be;
    float g[4];
  };

  // Step 1 for NT tokens: h into hbuf rows, then the signals, folded logits into s[d][slot]. The F chunks are
  // done CG at a time so NT·CG accumulators fit in half the register file (AVX2 at H = 32 spilled otherwise).
  template <int NT>
  MOE_PHASE static void hiddenAndLogits(const Weights& w, const float* x, const float* vol, const float* risk,
                                        float (*hbuf)[F], float (*s)[kBlock], int slot) {
    constexpr int CG = FC * NT <= V::kRegs / 2 ? FC : (V::kRegs / 2 / NT > 0 ? V::kRegs / 2 / NT : 1);
    static_assert(FC % CG == 0, "chunk groups must tile F");
    for (int c0 = 0; c0 < FC; c0 += CG) {
      T acc[NT][CG];
      for (int c = 0; c < CG; ++c) {
        const T b = V::load(w.b1 + (c0 + c) * W);
        for (int t = 0; t < NT; ++t) acc[t][c] = b;
      }
      for (int i = 0; i < H; ++i) {
        T bx[NT];
        for (int t = 0; t < NT; ++t) bx[t] = V::set1(x[t * H + i]);
        const float* row = w.W1 + i * F + c0 * W;
        for (int c = 0; c < CG; ++c) {
          const T wv = V::load(row + c * W);
          for (int t = 0; t < NT; ++t) acc[t][c] = V::fma(bx[t], wv, acc[t][c]);
        }
      }
      for (int t = 0; t < NT; ++t)
        for (int c = 0; c < CG; ++c) V::store(hbuf[slot + t] + (c0 + c) * W, V::max(acc[t][c], V::zero()));
    }
    for (int t = 0; t < NT; ++t) {
      T h[FC];
      for (int c = 0; c < FC; ++c) h[c] = V::load(hbuf[slot + t] + c * W);
      logits(w, x + t * H, vol[t], risk[t], h, s, slot + t);
    }
  }

  MOE_PHASE static void logits(const Weights& w, const float* x, float vol, float risk, const T* h, float (*s)[kBlock],
                     int slot) {
    // stats = (mean, population variance, mean |x|), each broadcast to all lanes.
    T sx = V::zero(), sa = V::zero();
    for (int c = 0; c < H / W; ++c) {
      const T v = V::load(x + c * W);
      sx = V::add(sx, v);
      sa = V::add(sa, V::abs(v));
    }
    const T invH = V::set1(1.0f / H);
    const T st0 = V::mul(V::allSum(sx), invH);
    const T st2 = V::mul(V::allSum(sa), invH);
    T sv = V::zero();
    for (int c = 0; c < H / W; ++c) {
      const T dv = V::sub(V::load(x + c * W), st0);
      sv = V::fma(dv, dv, sv);
    }
    const T st1 = V::mul(V::allSum(sv), invH);

    T base = V::zero(), base2 = V::zero();
    for (int c = 0; c < FC; ++c) {
      const float* wc = w.Wc + c * W * D;  // W rows of 4
      base = V::fma(V::spreadGroup(h[c], 0), V::load(wc), base);
      base2 = V::fma(V::spreadGroup(h[c], 1), V::load(wc + W), base2);
      base = V::fma(V::spreadGroup(h[c], 2), V::load(wc + 2 * W), base);
      base2 = V::fma(V::spreadGroup(h[c], 3), V::load(wc + 3 * W), base2);
    }
    base = V::add(base, base2);
    T volA = V::zero(), riskA = V::zero(), statA = V::zero();
    const T bvol = V::set1(vol), brisk = V::set1(risk);
    for (int c = 0; c < moe::kVolUnits * D / W; ++c) {
      volA = V::add(volA, V::max(V::fma(bvol, V::load(w.Wv + c * W), V::load(w.Bv + c * W)), V::zero()));
      riskA = V::add(riskA, V::max(V::fma(brisk, V::load(w.Wr + c * W), V::load(w.Br + c * W)), V::zero()));
    }
    constexpr int SU = moe::kStatUnits * D;  // 48 lanes per stat row
    for (int c = 0; c < SU / W; ++c) {
      T a = V::load(w.Bs + c * W);
      a = V::fma(st0, V::load(w.Ws + c * W), a);
      a = V::fma(st1, V::load(w.Ws + SU + c * W), a);
      a = V::fma(st2, V::load(w.Ws + 2 * SU + c * W), a);
      statA = V::add(statA, V::max(a, V::zero()));
    }
    T tot = V::mul(V::set1(w.g[0]), base);
    tot = V::fma(V::set1(w.g[1] / moe::kVolUnits), volA, tot);
    tot = V::fma(V::set1(w.g[2] / moe::kRiskUnits), riskA, tot);
    tot = V::fma(V::set1(w.g[3] / moe::kStatUnits), statA, tot);
    alignas(16) float f4[4];
    _mm_store_ps(f4, V::fold4(tot));
    for (int d = 0; d < D; ++d) s[d][slot] = f4[d] + w.g[0] * w.bc[d];
  }

  // Expert matvec for NT tokens routed to the same expert `a`: each We[a] row chunk is loaded once for all NT
  // tokens. K partial sums (even/odd f) shorten the FMA dependency chains; K does not depend on NT, so a token's
  // output is bit-identical whatever group it lands in (results never depend on batch composition).
  static constexpr int K = W == 16 ? 2 : 1;
  template <int NT>
  MOE_PHASE static void expertGroup(const Weights& w, int a, float (*hbuf)[F], const std::uint8_t* slots, float* out,
                          std::size_t n0) {
    const float* We = w.We + a * F * H;
    T acc[K][NT][HC];
    for (int k = 0; k < K; ++k)
      for (int t = 0; t < NT; ++t)
        for (int c = 0; c < HC; ++c) acc[k][t][c] = V::zero();
    const float* hs[NT];
    for (int t = 0; t < NT; ++t) hs[t] = hbuf[slots[t]];
    for (int f = 0; f < F; f += K) {
      for (int k = 0; k < K; ++k) {
        T bh[NT];
        for (int t = 0; t < NT; ++t) bh[t] = V::set1(hs[t][f + k]);
        for (int c = 0; c < HC; ++c) {
          const T wv = V::load(We + (f + k) * H + c * W);
          for (int t = 0; t < NT; ++t) acc[k][t][c] = V::fma(bh[t], wv, acc[k][t][c]);
        }
      }
    }
    for (int t = 0; t < NT; ++t) {
      float* dst = out + (n0 + slots[t]) * H;
      for (int c = 0; c < HC; ++c) {
        T y = V::load(w.be + a * H + c * W);
        for (int k = 0; k < K; ++k) y = V::add(y, acc[k][t][c]);
        if (a == 3) y = vtanh<V>(y);
        else if (a == 1) y = V::mul(y, V::set1(0.8f));
        else y = V::max(y, V::zero());
        V::store(dst + c * W, y);
      }
    }
  }

  // Tokens of one block grouped by expert so groups share weight loads (4 tokens per group, fewer at the end).
  static void experts(const Weights& w, float (*hbuf)[F], const float* ab, int cnt, float* out, std::size_t n0) {
    constexpr int G = 8 / HC >= 4 ? 4 : (8 / HC >= 2 ? 2 : 1);
    std::uint8_t slots[D][kBlock];
    int count[D] = {0, 0, 0, 0};
    for (int i = 0; i < cnt; ++i) {
      const int a = int(ab[i]);
      slots[a][count[a]++] = std::uint8_t(i);
    }
    for (int a = 0; a < D; ++a) {
      int i = 0;
      for (; i + G <= count[a]; i += G) expertGroup<G>(w, a, hbuf, slots[a] + i, out, n0);
      if (G > 2)
        for (; i + 2 <= count[a]; i += 2) expertGroup<2>(w, a, hbuf, slots[a] + i, out, n0);
      for (; i < count[a]; ++i) expertGroup<1>(w, a, hbuf, slots[a] + i, out, n0);
    }
  }

  static void run(const moe::ParamView& P, const moe::Batch& b, const moe::ForwardOut& out, std::size_t begin,
                  std::size_t end) {
    const moe::Layout L(H);
    const float* p = P.w;
    Weights w{p + L.W1, p + L.b1, p + L.Wc, p + L.bc, p + L.Wv, p + L.Bv, p + L.Wr, p + L.Br,
              p + L.Ws, p + L.Bs, p + L.We, p + L.be, {p[L.gates], p[L.gates + 1], p[L.gates + 2], p[L.gates + 3]}};
    const T invT = V::set1(1.0f / P.temperature);
    alignas(64) float hbuf[kBlock][F];
    alignas(64) float s[D][kBlock];
    alignas(64) float pb[D][kBlock];
    alignas(64) float ab[kBlock];
    for (std::size_t n0 = begin; n0 < end; n0 += kBlock) {
      const int cnt = end - n0 < std::size_t(kBlock) ? int(end - n0) : kBlock;
      int t = 0;
      for (; t + TB <= cnt; t += TB)
        hiddenAndLogits<TB>(w, b.x + (n0 + t) * H, b.vol + n0 + t, b.risk + n0 + t, hbuf, s, t);
      for (; t < cnt; ++t) hiddenAndLogits<1>(w, b.x + (n0 + t) * H, b.vol + n0 + t, b.risk + n0 + t, hbuf, s, t);
      const int padded = (cnt + W - 1) / W * W;
      for (; t < padded; ++t)
        for (int d = 0; d < D; ++d) s[d][t] = 0.0f;

      const T lo = V::set1(-moe::kLogitClip), hi = V::set1(moe::kLogitClip);
      for (int v = 0; v < padded; v += W) {
        T z[D];
        for (int d = 0; d < D; ++d) z[d] = V::mul(V::min(V::max(V::load(s[d] + v), lo), hi), invT);
        T best = z[0], idx = V::zero();
        for (int d = 1; d < D; ++d) {
          const auto m = V::gt(z[d], best);
          best = V::select(m, z[d], best);
          idx = V::select(m, V::set1(float(d)), idx);
        }
        T e[D], sum = V::zero();
        for (int d = 0; d < D; ++d) {
          e[d] = vexp<V>(V::sub(z[d], best));
          sum = V::add(sum, e[d]);
        }
        for (int d = 0; d < D; ++d) V::store(pb[d] + v, V::div(e[d], sum));
        V::store(ab + v, idx);
      }
      for (int i = 0; i < cnt; ++i) {
        float* pr = out.probs + (n0 + i) * D;
        for (int d = 0; d < D; ++d) pr[d] = pb[d][i];
        out.assign[n0 + i] = std::uint8_t(ab[i]);
      }
      if (out.expert) experts(w, hbuf, ab, cnt, out.expert, n0);
    }
  }
};

template <class V>
void forwardSimd(const moe::ParamView& P, const moe::Batch& b, const moe::ForwardOut& out, std::size_t begin,
                 std::size_t end) {
  if (P.H == 16) SimdForward<V, 16>::run(P, b, out, begin, end);
  else SimdForward<V, 32>::run(P, b, out, begin, end);
}

}  // namespace
