// float64 instantiation of the CUDA kernels.
#include "launch.cuh"

namespace structinf {
namespace cuda {

SI_CUDA_INSTANTIATE(double)

}  // namespace cuda
}  // namespace structinf
