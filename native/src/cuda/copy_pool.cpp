#include "copy_pool.h"

#include <algorithm>
#include <cstring>
#include <system_error>

#include "moe_router/router.h"

namespace moe::cuda {

namespace {
constexpr std::size_t kPart = std::size_t(2) << 20;      // bytes per unit of work
constexpr std::size_t kPoolFrom = std::size_t(4) << 20;  // smaller jobs are copied on the caller
}  // namespace

CopyPool::CopyPool(int threads) : threads_(std::max(1, threads)) {}

CopyPool::~CopyPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : pool_) t.join();
}

void CopyPool::start() {
  for (int k = 1; k < threads_; ++k) {
    try {
      pool_.emplace_back([this] { worker(); });
    } catch (const std::system_error&) {
      break;  // fewer threads than asked (resource limits): the caller and the others do the work
    }
  }
}

// memcpy, or for a checked task the copy with the NaN/±Inf test fused into it (copyFirstNonFinite: one pass over the
// values; a memcpy and then a scan of the copy read them twice: 1.5–2.1× slower on the development VM, 2026-12-06).
void CopyPool::copyPart(const Task& t) {
  if (!t.firstBad) {
    if (t.bytes) std::memcpy(t.dst, t.src, t.bytes);
    return;
  }
  const std::size_t n = t.bytes / sizeof(float),
                    i = copyFirstNonFinite(static_cast<float*>(t.dst), static_cast<const float*>(t.src), n);
  if (i == n) return;
  std::lock_guard<std::mutex> lock(mu_);
  *t.firstBad = std::min(*t.firstBad, t.base + i);
}

bool CopyPool::takePart(std::size_t& idx) {
  std::lock_guard<std::mutex> lock(mu_);
  if (next_ >= parts_.size()) return false;
  idx = next_++;
  return true;
}

void CopyPool::worker() {
  std::uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return stop_ || gen_ != seen; });
      if (stop_) return;
      seen = gen_;
    }
    std::size_t idx = 0;
    while (takePart(idx)) {
      copyPart(parts_[idx]);
      std::lock_guard<std::mutex> lock(mu_);
      if (++done_ == parts_.size()) finished_.notify_one();
    }
  }
}

void CopyPool::run(const std::vector<Task>& tasks) {
  std::size_t total = 0;
  for (const Task& t : tasks) total += t.bytes;
  if (threads_ == 1 || total < kPoolFrom) {
    for (const Task& t : tasks) copyPart(t);
    return;
  }
  if (pool_.empty()) start();
  {
    std::lock_guard<std::mutex> lock(mu_);
    parts_.clear();
    for (const Task& t : tasks)
      for (std::size_t at = 0; at < t.bytes; at += kPart)
        parts_.push_back({static_cast<char*>(t.dst) + at, static_cast<const char*>(t.src) + at,
                          std::min(kPart, t.bytes - at), t.firstBad, t.base + at / sizeof(float)});
    next_ = done_ = 0;
    ++gen_;
  }
  wake_.notify_all();
  std::size_t idx = 0;
  while (takePart(idx)) {
    copyPart(parts_[idx]);
    std::lock_guard<std::mutex> lock(mu_);
    ++done_;
  }
  std::unique_lock<std::mutex> lock(mu_);
  finished_.wait(lock, [&] { return done_ == parts_.size(); });
}

}  // namespace moe::cuda
