// float32 instantiation of the CUDA kernels (one file per dtype, so the
// dtypes compile in parallel).
#include "launch.cuh"

namespace structinf {
namespace cuda {

SI_CUDA_INSTANTIATE(float)

void set_shared_memory_budget(size_t bytes) { shared_budget_override().store(bytes); }

}  // namespace cuda
}  // namespace structinf
