// Persistent threads for the host-side copies of the CUDA pipeline (pageable caller memory ↔ pinned staging).
// One core copies ~10 GB/s, a PCIe 5 link moves ~55 GB/s each way, so the copies are split over threads; the
// threads live as long as the backend, because starting them for every chunk cost more than the copies.
#pragma once
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace moe::cuda {

class CopyPool {
 public:
  struct Task {
    void* dst;
    const void* src;
    std::size_t bytes;
    // When set, the bytes are floats and *firstBad (SIZE_MAX before run) receives the index of the first NaN/±Inf
    // among them, checked on the copy as it is made (SIZE_MAX stays when there is none).
    std::size_t* firstBad = nullptr;
    std::size_t base = 0;  // index of the task's first float (parts of a split task carry their own)
  };
  // threads: copying threads including the caller (1 = plain memcpy on the caller). Started on first large copy.
  explicit CopyPool(int threads);
  ~CopyPool();
  CopyPool(const CopyPool&) = delete;
  CopyPool& operator=(const CopyPool&) = delete;

  // Copies every task and returns when all bytes are in place. Not reentrant: one caller at a time.
  void run(const std::vector<Task>& tasks);

 private:
  void start();
  void worker();
  bool takePart(std::size_t& idx);
  void copyPart(const Task& t);

  int threads_;
  std::vector<std::thread> pool_;
  std::mutex mu_;
  std::condition_variable wake_, finished_;
  std::vector<Task> parts_;
  std::size_t next_ = 0, done_ = 0;
  std::uint64_t gen_ = 0;
  bool stop_ = false;
};

}  // namespace moe::cuda
