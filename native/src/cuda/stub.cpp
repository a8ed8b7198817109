// Built instead of the CUDA backend when CMake found no CUDA compiler: the addon still loads and reports why
// `backend: 'auto'` runs on the CPU.
#include "moe_router/router.h"

namespace moe {

const CudaProbe& probeCuda() {
  static const CudaProbe probe{false, false, "this addon was built without CUDA (no CUDA compiler at build time)", ""};
  return probe;
}

std::unique_ptr<Backend> makeCudaBackend() { MOE_FAIL("CUDA backend unavailable: " + probeCuda().reason); }

void* allocPinnedHost(std::size_t) { return nullptr; }
void freePinnedHost(void*) {}

}  // namespace moe
