// Prints, as a markdown table, the dynamic shared memory each CUDA kernel
// launch asks for at a few label counts, from the same layout code the
// launchers use (for benchmarks/results/cuda-kernels-ptxas.md).
#include <cstdio>
#include <string>

#include "kernels/cuda/launch.cuh"

using namespace structinf::cuda;
using namespace structinf::cuda::detail;

namespace {

const size_t kOptin = 227 * 1024;

void row(const char* kernel, const char* mapping, const char* dtype, long L, long T, size_t bytes) {
  std::printf("| %s | %s | %s | %ld | %s | %zu | %s |\n", kernel, mapping, dtype, L,
              T > 0 ? std::to_string(T).c_str() : "any", bytes, bytes <= kOptin ? "yes" : "no");
}

template <typename T>
void rows(const char* dtype) {
  for (long L : {17L, 25L, 64L, 200L, 401L}) {
    if (L <= 32) {
      row("viterbi_best_kernel", "warp (4 sequences)", dtype, L, 0, viterbi_smem<T>(L, kWarpsPerBlock, true));
      row("crf_forward_kernel", "warp (4 sequences)", dtype, L, 0,
          crf_smem<T>(L, kWarpsPerBlock, true, false));
      row("crf_backward_kernel", "warp (4 sequences)", dtype, L, 0,
          crf_smem<T>(L, kWarpsPerBlock, true, true));
    }
    row("viterbi_best_kernel", "block", dtype, L, 0, viterbi_smem<T>(L, 1, true));
    row("viterbi_best_kernel", "global", dtype, L, 0, viterbi_smem<T>(L, 1, false));
    row("crf_forward_kernel", "block", dtype, L, 0, crf_smem<T>(L, 1, true, false));
    row("crf_forward_kernel", "global", dtype, L, 0, crf_smem<T>(L, 1, false, false));
    row("crf_backward_kernel", "block", dtype, L, 0, crf_smem<T>(L, 1, true, true));
    row("crf_backward_kernel", "global", dtype, L, 0, crf_smem<T>(L, 1, false, true));
    for (long T_ : {30L, 100L}) {
      const int warps = static_cast<int>(T_ < 8 ? T_ : 8);
      if (L <= 32)
        row("relaxed_step_kernel", "warp, on chip (1 sequence)", dtype, L, T_,
            relaxed_smem<T>(L, T_, 1, 1, kWarpSize, true, true));
      row("relaxed_step_kernel", "block, on chip", dtype, L, T_,
          relaxed_smem<T>(L, T_, kWarpSize, 1, warps, true, true));
      row("relaxed_step_kernel", "global, on chip", dtype, L, T_,
          relaxed_smem<T>(L, T_, kWarpSize, 1, warps, false, true));
    }
    row("relaxed_step_kernel", "block, streamed", dtype, L, 0,
        relaxed_smem<T>(L, 1, kWarpSize, 1, 8, true, false));
    row("relaxed_step_kernel", "global, streamed", dtype, L, 0,
        relaxed_smem<T>(L, 1, kWarpSize, 1, 8, false, false));
    for (long T_ : {30L, 100L}) {
      if (L <= 32)
        row("relaxed_energy_forward_kernel", "warp, on chip (1 sequence)", dtype, L, T_,
            relaxed_energy_smem<T>(L, T_, 1, 1, true, true));
      row("relaxed_energy_forward_kernel", "block, on chip", dtype, L, T_,
          relaxed_energy_smem<T>(L, T_, kWarpSize, 1, true, true));
      row("relaxed_energy_forward_kernel", "global, on chip", dtype, L, T_,
          relaxed_energy_smem<T>(L, T_, kWarpSize, 1, false, true));
    }
    row("relaxed_energy_forward_kernel", "block, p in global memory", dtype, L, 0,
        relaxed_energy_smem<T>(L, 1, kWarpSize, 1, true, false));
    row("relaxed_energy_forward_kernel", "global, p in global memory", dtype, L, 0,
        relaxed_energy_smem<T>(L, 1, kWarpSize, 1, false, false));
  }
}

}  // namespace

int main() {
  std::printf("| kernel | mapping | dtype | L | T | dynamic smem (B) | fits 227 KB |\n");
  std::printf("|---|---|---|---:|---:|---:|---|\n");
  rows<float>("float");
  rows<double>("double");
  return 0;
}
