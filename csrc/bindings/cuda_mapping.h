// The thread mapping the CUDA binding asks the kernels for: auto (picked by L,
// dtype and the device's shared memory) or one forced mapping, so that tests
// and the sanitizer script reach every mapping at any size. Process-wide;
// set from Python with structinf.ops.cuda_mapping(). Compiled into every build
// (cuda_info.cpp): a CPU build stores the choice and has nothing to apply it to.
#pragma once

#include <cstddef>

namespace structinf {

// The values of cuda::Variant (csrc/kernels/cuda/api.h): 0 auto, 1 warp,
// 2 block, 3 global.
int forced_cuda_mapping();

// The shared memory per block the launchers plan with (0: the device's maximum).
size_t cuda_shared_memory_budget();

// How the CUDA ops validate their inputs (validation_cuda.h): 0 sync, 1 device.
// Set from Python with structinf.ops.validation().
int validation_setting();

}  // namespace structinf
