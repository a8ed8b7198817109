#include "moe_router/layout.h"

namespace moe {

Layout::Layout(int hidden) : H(hidden), F(2 * hidden) {
  std::size_t o = 0;
  auto take = [&o](std::size_t n) {
    const std::size_t at = o;
    o += n;
    return at;
  };
  const std::size_t D = kDomains;
  W1 = take(std::size_t(H) * F);
  b1 = take(F);
  Wc = take(std::size_t(F) * D);
  bc = take(D);
  Wv = take(kVolUnits * D);
  Bv = take(kVolUnits * D);
  Wr = take(kRiskUnits * D);
  Br = take(kRiskUnits * D);
  Ws = take(kNumStats * kStatUnits * D);
  Bs = take(kStatUnits * D);
  gates = take(4);
  We = take(D * F * std::size_t(H));
  be = take(D * std::size_t(H));
  size = o;
}

bool Layout::decays(std::size_t i) const {
  return (i >= W1 && i < b1) || (i >= Wc && i < bc) || (i >= Wv && i < Bv) || (i >= Wr && i < Br) ||
         (i >= Ws && i < Bs) || (i >= We && i < be);
}

}  // namespace moe
