// Host side of the relaxed-energy kernels: workspace layout, the choice of thread
// mapping, and the launches (structinf::cuda::detail; the public entry points
// are in launch.cuh).
#pragma once

#include "launch_common.cuh"
#include "relaxed.cuh"
#include "relaxed_grad.cuh"

namespace structinf {
namespace cuda {
namespace detail {

// --------------------------------------------------------------- Relaxed

template <typename T>
struct RelaxedWorkspace {
  T* wt;    // (L, L) transposed transitions
  T* prob;  // (B, T, L) probabilities when streamed
};

template <typename T>
RelaxedWorkspace<T> relaxed_workspace(const EnergyView<T>& e, void* base, size_t* bytes) {
  Carver c(base, kWorkspaceAlign);
  RelaxedWorkspace<T> w{};
  w.wt = c.take<T>(e.L * e.L);
  w.prob = c.take<T>(e.B * e.T * e.L);
  *bytes = c.bytes();
  return w;
}

template <typename T>
size_t relaxed_smem(int64_t L, int64_t T_, int row_lanes, int groups, int workers, bool w_in_smem,
                    bool on_chip) {
  Carver c(nullptr);
  T *a, *b, *d;
  relaxed_smem_layout<T>(c, L, T_, relaxed_row_stride(L, row_lanes), groups, workers, w_in_smem,
                         on_chip, &a, &b, &d);
  return c.bytes();
}

template <typename T, typename Group, int kRowLanes, bool kSmemW>
Status launch_relaxed_mapping(const RelaxedStepParams<T>& p, const RelaxedWorkspace<T>& w,
                              cudaStream_t stream, unsigned grid, int threads, int groups,
                              bool on_chip) {
  const int workers = threads / groups / kRowLanes;
  const size_t smem =
      relaxed_smem<T>(p.energy.L, p.energy.T, kRowLanes, groups, workers, kSmemW, on_chip);
  const T* wt = w.wt;
  if (on_chip)
    return launch(&relaxed_step_kernel<T, Group, kRowLanes, kSmemW, true>, grid, threads, smem,
                  stream, p, wt, w.prob);
  return launch(&relaxed_step_kernel<T, Group, kRowLanes, kSmemW, false>, grid, threads, smem,
                stream, p, wt, w.prob);
}

template <typename T>
Status launch_relaxed_energy_step(const RelaxedStepParams<T>& p, void* workspace,
                                  cudaStream_t stream, Variant requested) {
  const EnergyView<T>& e = p.energy;
  if (e.B == 0 || e.T == 0 || p.steps <= 0) return Status::kOk;
  if (e.L > 65535) return Status::kCudaUnsupported;
  size_t bytes = 0;
  const RelaxedWorkspace<T> w = relaxed_workspace(e, workspace, &bytes);
  Status s = launch(&relaxed_prepare_kernel<T>, small_grid(e.L * e.L, threads_for(e.L * e.L)),
                    threads_for(e.L * e.L), 0, stream, e, w.wt);
  if (s != Status::kOk) return s;
  const size_t avail = shared_bytes_available();
  // Block mappings: one warp per row worker, as many as rows up to 8.
  const int warps = static_cast<int>(e.T < kMaxThreads / kWarpSize ? e.T : kMaxThreads / kWarpSize);
  const int block_threads = warps * kWarpSize;
  const bool block_fits = relaxed_smem<T>(e.L, e.T, kWarpSize, 1, warps, true, false) <= avail;
  Variant v;
  s = resolve(requested, e.L, block_fits, &v);
  if (s != Status::kOk) return s;
  if (v == Variant::kWarp) {
    // As many sequences per block as fit on chip (at most 4); streamed if none.
    int groups = kWarpsPerBlock;
    while (groups > 1 && relaxed_smem<T>(e.L, e.T, 1, groups, kWarpSize, true, true) > avail)
      --groups;
    const bool on_chip = relaxed_smem<T>(e.L, e.T, 1, groups, kWarpSize, true, true) <= avail;
    if (!on_chip) groups = kWarpsPerBlock;
    return launch_relaxed_mapping<T, WarpGroup, 1, true>(
        p, w, stream, grid_for(e.B, groups, 0x7fffffff), groups * kWarpSize, groups, on_chip);
  }
  if (!grid_ok(e.B)) return Status::kCudaUnsupported;
  const bool w_smem = v == Variant::kBlock;
  const bool on_chip =
      relaxed_smem<T>(e.L, e.T, kWarpSize, 1, warps, w_smem, true) <= avail;
  if (w_smem)
    return launch_relaxed_mapping<T, BlockGroup, kWarpSize, true>(
        p, w, stream, static_cast<unsigned>(e.B), block_threads, 1, on_chip);
  return launch_relaxed_mapping<T, BlockGroup, kWarpSize, false>(
      p, w, stream, static_cast<unsigned>(e.B), block_threads, 1, on_chip);
}


// ---------------------------------------------------- Relaxed energy (differentiable)

template <typename T>
struct RelaxedEnergyWorkspace {
  T* wt;    // (L, L) transposed transitions
  T* prob;  // (B, T, L) softmax rows when neither kept on chip nor written to p_out
};

// A function of the params only (not of the variant or the device): the
// probability scratch is there whenever softmax rows have nowhere else to go.
template <typename T>
RelaxedEnergyWorkspace<T> relaxed_energy_workspace(const RelaxedEnergyParams<T>& p, void* base,
                                                   size_t* bytes) {
  const EnergyView<T>& e = p.energy;
  Carver c(base, kWorkspaceAlign);
  RelaxedEnergyWorkspace<T> w{};
  w.wt = c.take<T>(e.L * e.L);
  w.prob = (!p.probs && p.input_grad == nullptr) ? c.take<T>(e.B * e.T * e.L) : nullptr;
  *bytes = c.bytes();
  return w;
}

template <typename T>
size_t relaxed_energy_smem(int64_t L, int64_t T_, int row_lanes, int groups, bool w_in_smem,
                           bool on_chip) {
  Carver c(nullptr);
  T *a, *b;
  relaxed_energy_smem_layout<T>(c, L, T_, relaxed_row_stride(L, row_lanes), groups, w_in_smem,
                                on_chip, &a, &b);
  return c.bytes();
}

template <typename T>
Status launch_relaxed_energy_forward(const RelaxedEnergyParams<T>& p, void* workspace,
                                     cudaStream_t stream, Variant requested) {
  const EnergyView<T>& e = p.energy;
  if (e.B == 0 || e.T == 0) return Status::kOk;
  if (e.L > 65535) return Status::kCudaUnsupported;
  size_t bytes = 0;
  const RelaxedEnergyWorkspace<T> w = relaxed_energy_workspace(p, workspace, &bytes);
  Status s = launch(&relaxed_prepare_kernel<T>, small_grid(e.L * e.L, threads_for(e.L * e.L)),
                    threads_for(e.L * e.L), 0, stream, e, w.wt);
  if (s != Status::kOk) return s;
  const size_t avail = shared_bytes_available();
  // Block mappings: one warp per row worker, as many as rows up to 8.
  const int warps = static_cast<int>(e.T < kMaxThreads / kWarpSize ? e.T : kMaxThreads / kWarpSize);
  const int block_threads = warps * kWarpSize;
  const bool block_fits = relaxed_energy_smem<T>(e.L, e.T, kWarpSize, 1, true, false) <= avail;
  Variant v;
  s = resolve(requested, e.L, block_fits, &v);
  if (s != Status::kOk) return s;
  const T* wt = w.wt;
  if (v == Variant::kWarp) {
    // As many sequences per block as fit on chip (at most 4); in global memory if none.
    int groups = kWarpsPerBlock;
    while (groups > 1 && relaxed_energy_smem<T>(e.L, e.T, 1, groups, true, true) > avail) --groups;
    const bool on_chip = relaxed_energy_smem<T>(e.L, e.T, 1, groups, true, true) <= avail;
    if (!on_chip) groups = kWarpsPerBlock;
    return launch(&relaxed_energy_forward_kernel<T, WarpGroup, 1, true>,
                  grid_for(e.B, groups, 0x7fffffff), groups * kWarpSize,
                  relaxed_energy_smem<T>(e.L, e.T, 1, groups, true, on_chip), stream, p, wt,
                  w.prob, on_chip);
  }
  if (!grid_ok(e.B)) return Status::kCudaUnsupported;
  const bool w_smem = v == Variant::kBlock;
  const bool on_chip = relaxed_energy_smem<T>(e.L, e.T, kWarpSize, 1, w_smem, true) <= avail;
  const size_t smem = relaxed_energy_smem<T>(e.L, e.T, kWarpSize, 1, w_smem, on_chip);
  if (w_smem)
    return launch(&relaxed_energy_forward_kernel<T, BlockGroup, kWarpSize, true>,
                  static_cast<unsigned>(e.B), block_threads, smem, stream, p, wt, w.prob, on_chip);
  return launch(&relaxed_energy_forward_kernel<T, BlockGroup, kWarpSize, false>,
                static_cast<unsigned>(e.B), block_threads, smem, stream, p, wt, w.prob, on_chip);
}

template <typename T>
struct RelaxedEnergyBackwardWorkspace {
  T* partial;  // (splits, L, L) when the pairs are split
  int splits;
};

template <typename T>
RelaxedEnergyBackwardWorkspace<T> relaxed_energy_backward_workspace(
    const RelaxedEnergyBackwardParams<T>& p, void* base, size_t* bytes) {
  Carver c(base, kWorkspaceAlign);
  RelaxedEnergyBackwardWorkspace<T> w{};
  w.splits = p.grad_transitions != nullptr ? pair_splits(p.B, p.T, p.L) : 1;
  if (w.splits > 1) w.partial = c.take<T>(w.splits * p.L * p.L);
  *bytes = c.bytes();
  return w;
}

template <typename T>
Status launch_relaxed_energy_backward(const RelaxedEnergyBackwardParams<T>& p, void* workspace,
                                      cudaStream_t stream) {
  if (p.L == 0) return Status::kOk;
  if (p.L > 65535) return Status::kCudaUnsupported;
  size_t bytes = 0;
  const RelaxedEnergyBackwardWorkspace<T> w = relaxed_energy_backward_workspace(p, workspace, &bytes);
  Status s = Status::kOk;
  const int64_t n_all = p.B * p.T * p.L;
  if ((p.grad_input != nullptr || p.grad_emissions != nullptr) && n_all > 0) {
    s = launch(&relaxed_energy_scale_kernel<T>, small_grid(n_all, kMaxThreads), kMaxThreads, 0,
               stream, p);
    if (s != Status::kOk) return s;
  }
  if (p.grad_transitions != nullptr) {
    // Also with B == 0 or T == 0: then no pairs, and the tiles are written as zeros.
    const int64_t tiles_1d = (p.L + kPairTile - 1) / kPairTile;
    const int64_t items = tiles_1d * tiles_1d * w.splits;
    const int64_t cap = 8 * static_cast<int64_t>(multiprocessor_count());
    s = launch(&relaxed_energy_pairs_kernel<T>, static_cast<unsigned>(items < cap ? items : cap),
               kPairThreads, 0, stream, p, w.splits, w.partial);
    if (s != Status::kOk) return s;
    if (w.splits > 1) {
      s = launch(&crf_pairs_reduce_kernel<T>, small_grid(p.L * p.L, threads_for(p.L * p.L)),
                 threads_for(p.L * p.L), 0, stream, static_cast<const T*>(w.partial), w.splits,
                 p.L * p.L, p.grad_transitions);
      if (s != Status::kOk) return s;
    }
  }
  if (p.grad_start != nullptr || p.grad_end != nullptr)
    s = launch(&relaxed_energy_ends_kernel<T>, small_grid(p.L, threads_for(p.L)),
               threads_for(p.L), 0, stream, p);
  return s;
}

}  // namespace detail
}  // namespace cuda
}  // namespace structinf
