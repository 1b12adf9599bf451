// Host side of the CUDA kernels, shared by every op's launcher: grid sizes,
// the choice of thread mapping, the checked launch.
#pragma once

#include "api.h"
#include "common.cuh"

namespace structinf {
namespace cuda {
namespace detail {


inline unsigned grid_for(int64_t n, int threads, int64_t cap) {
  int64_t g = (n + threads - 1) / threads;
  if (g < 1) g = 1;
  return static_cast<unsigned>(g < cap ? g : cap);
}

// Grid for the elementwise kernels (grid-stride loops): a few blocks per SM.
inline unsigned small_grid(int64_t n, int threads) {
  return grid_for(n, threads, 4 * static_cast<int64_t>(multiprocessor_count()));
}

// The mapping to run: kAuto resolved by L and by whether the block mapping's
// shared memory fits; a forced variant that cannot run is kCudaUnsupported.
inline Status resolve(Variant requested, int64_t L, bool block_fits, Variant* out) {
  switch (requested) {
    case Variant::kAuto:
      *out = L <= kWarpSize ? Variant::kWarp : (block_fits ? Variant::kBlock : Variant::kGlobal);
      return Status::kOk;
    case Variant::kWarp:
      *out = requested;
      return L <= kWarpSize ? Status::kOk : Status::kCudaUnsupported;
    case Variant::kBlock:
      *out = requested;
      return block_fits ? Status::kOk : Status::kCudaUnsupported;
    case Variant::kGlobal:
      *out = requested;
      return Status::kOk;
  }
  return Status::kCudaUnsupported;
}

inline bool grid_ok(int64_t blocks) { return blocks <= 0x7fffffff; }

template <typename K, typename... A>
Status launch(K kernel, unsigned grid, int threads, size_t smem, cudaStream_t stream, A... args) {
  if (!allow_shared(kernel, smem)) return Status::kCudaLaunchError;
  SI_LAUNCH(kernel, dim3(grid), dim3(static_cast<unsigned>(threads)), smem, stream, args...);
  return launch_status();
}

}  // namespace detail
}  // namespace cuda
}  // namespace structinf
