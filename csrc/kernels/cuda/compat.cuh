// What lets one kernel source compile with nvcc and, for the C++ tests, with
// g++ on the CUDA-on-CPU emulator (cpp_tests/cuda_emu/cuda_emu.h, found on
// the include path when STRUCTINF_CUDA_EMULATOR is defined).
//
//   SI_LAUNCH(kernel, grid, block, smem_bytes, stream, args...)
//     launches `kernel` (a function pointer or a plain name: template
//     arguments would split the macro's arguments);
//   SI_SHARED(type, name, count)  a static __shared__ array, per block;
//   SI_DYNAMIC_SHARED(type, name) the block's dynamic shared memory as type*.
#pragma once

#if defined(STRUCTINF_CUDA_EMULATOR)

#include "cuda_emu.h"

#define SI_LAUNCH(kernel, grid, block, smem, stream, ...) \
  ::si_emu::launch(kernel, grid, block, smem, stream, __VA_ARGS__)
#define SI_SHARED(type, name, count) \
  static char si_key_##name;         \
  type* name = ::si_emu::static_shared<type>(&si_key_##name, count)
#define SI_DYNAMIC_SHARED(type, name) \
  type* name = reinterpret_cast<type*>(::si_emu::dynamic_shared())

#elif defined(__CUDACC__)

#include <cuda_runtime.h>

#define SI_LAUNCH(kernel, grid, block, smem, stream, ...) \
  kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
#define SI_SHARED(type, name, count) __shared__ type name[count]
#define SI_DYNAMIC_SHARED(type, name)                          \
  extern __shared__ __align__(16) unsigned char si_dynamic_smem[]; \
  type* name = reinterpret_cast<type*>(si_dynamic_smem)

#else
#error "compile CUDA kernels with nvcc, or define STRUCTINF_CUDA_EMULATOR"
#endif
