// Host side of the Viterbi kernels: workspace layout, the choice of thread
// mapping, and the launches (structinf::cuda::detail; the public entry points
// are in launch.cuh).
#pragma once

#include "launch_common.cuh"
#include "viterbi.cuh"

namespace structinf {
namespace cuda {
namespace detail {

// ---------------------------------------------------------------- Viterbi

template <typename T>
struct ViterbiWorkspace {
  T* wm;            // (L, L) masked transitions
  void* bp;         // (B, T, L) uint8 or uint16 backpointers (k == 1)
  T* lists;         // (B, 2, L, k) score lists (k > 1)
  int32_t* codes;   // (B, T, L, k) backpointer codes (k > 1)
};

template <typename T>
ViterbiWorkspace<T> viterbi_workspace(const ViterbiParams<T>& p, void* base, size_t* bytes) {
  const EnergyView<T>& e = p.energy;
  Carver c(base, kWorkspaceAlign);
  ViterbiWorkspace<T> w{};
  w.wm = c.take<T>(e.L * e.L);
  if (p.k == 1) {
    if (e.L <= 256)
      w.bp = c.take<uint8_t>(e.B * e.T * e.L);
    else
      w.bp = c.take<uint16_t>(e.B * e.T * e.L);
  } else {
    w.lists = c.take<T>(e.B * 2 * e.L * p.k);
    w.codes = c.take<int32_t>(e.B * e.T * e.L * p.k);
  }
  *bytes = c.bytes();
  return w;
}

template <typename T>
size_t viterbi_smem(int64_t L, int groups, bool w_in_smem) {
  Carver c(nullptr);
  viterbi_smem_layout<T>(c, L, groups, w_in_smem, nullptr, nullptr);
  return c.bytes();
}

template <typename T, typename BP>
Status launch_viterbi_best(const ViterbiParams<T>& p, const ViterbiWorkspace<T>& w,
                           cudaStream_t stream, Variant requested) {
  const int64_t L = p.energy.L, B = p.energy.B;
  const size_t block_smem = viterbi_smem<T>(L, 1, true);
  Variant v;
  const Status s = resolve(requested, L, block_smem <= shared_bytes_available(), &v);
  if (s != Status::kOk) return s;
  BP* bp = static_cast<BP*>(w.bp);
  if (v == Variant::kWarp) {
    if constexpr (sizeof(BP) == 1) {
      auto kernel = &viterbi_best_kernel<T, WarpGroup, BP, true>;
      return launch(kernel, grid_for(B, kWarpsPerBlock, 0x7fffffff), kWarpsPerBlock * kWarpSize,
                    viterbi_smem<T>(L, kWarpsPerBlock, true), stream, p,
                    static_cast<const T*>(w.wm), bp);
    }
    return Status::kCudaUnsupported;
  }
  if (!grid_ok(B)) return Status::kCudaUnsupported;
  if (v == Variant::kBlock) {
    auto kernel = &viterbi_best_kernel<T, BlockGroup, BP, true>;
    return launch(kernel, static_cast<unsigned>(B), threads_for(L), block_smem, stream, p,
                  static_cast<const T*>(w.wm), bp);
  }
  auto kernel = &viterbi_best_kernel<T, BlockGroup, BP, false>;
  return launch(kernel, static_cast<unsigned>(B), threads_for(L), viterbi_smem<T>(L, 1, false),
                stream, p, static_cast<const T*>(w.wm), bp);
}

template <typename T>
Status launch_viterbi(const ViterbiParams<T>& p, void* workspace, cudaStream_t stream,
                      Variant requested) {
  const EnergyView<T>& e = p.energy;
  if (e.B == 0 || e.T == 0) return Status::kOk;
  if (e.L > 65535 || p.k < 1) return Status::kCudaUnsupported;
  size_t bytes = 0;
  const ViterbiWorkspace<T> w = viterbi_workspace(p, workspace, &bytes);
  Status s = launch(&viterbi_prepare_kernel<T>, small_grid(e.L * e.L, threads_for(e.L * e.L)),
                    threads_for(e.L * e.L), 0, stream, e, w.wm);
  if (s != Status::kOk) return s;
  if (p.k > 1) {
    if (!grid_ok(e.B)) return Status::kCudaUnsupported;
    Carver c(nullptr);
    c.take<T>(p.k);
    c.take<int32_t>(p.k);
    if (c.bytes() > shared_bytes_available()) return Status::kCudaUnsupported;
    return launch(&viterbi_kbest_kernel<T>, static_cast<unsigned>(e.B), threads_for(e.L),
                  c.bytes(), stream, p, static_cast<const T*>(w.wm), w.lists, w.codes);
  }
  if (e.L <= 256) return launch_viterbi_best<T, uint8_t>(p, w, stream, requested);
  return launch_viterbi_best<T, uint16_t>(p, w, stream, requested);
}

}  // namespace detail
}  // namespace cuda
}  // namespace structinf
