// Whether this build of structinf._C has the CUDA kernels: setup.py compiles
// this file into every build and defines STRUCTINF_WITH_CUDA=1 only where it
// compiles the CUDA sources in. structinf.ops reports it as cuda_built();
// torch.ops.structinf._cuda_built() answers even with no GPU or driver.
#include <torch/library.h>

#ifndef STRUCTINF_WITH_CUDA
#define STRUCTINF_WITH_CUDA 0
#endif

namespace structinf {
namespace {

bool cuda_built() { return STRUCTINF_WITH_CUDA != 0; }

}  // namespace

TORCH_LIBRARY_FRAGMENT(structinf, m) { m.def("_cuda_built", &cuda_built); }

}  // namespace structinf
