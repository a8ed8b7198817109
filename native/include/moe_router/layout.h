// Flat parameter layout of the router; mirrors src/router/layout.ts exactly (same order, same shapes).
// Every backend reads the same float32 vector through these offsets.
#pragma once
#include <cstddef>

namespace moe {

constexpr int kDomains = 4;
constexpr int kVolUnits = 8;
constexpr int kRiskUnits = 8;
constexpr int kStatUnits = 12;
constexpr int kNumStats = 3;
constexpr float kLogitClip = 15.0f;

struct Layout {
  int H = 0, F = 0;
  std::size_t W1, b1, Wc, bc, Wv, Bv, Wr, Br, Ws, Bs, gates, We, be, size;

  // Out of line (layout.cpp, base flags) so no copy compiled with AVX-512 flags can be picked by the linker.
  explicit Layout(int hidden);

  // Weight decay applies to matrices only (layout.ts `decay: true`).
  bool decays(std::size_t i) const;
};

}  // namespace moe
