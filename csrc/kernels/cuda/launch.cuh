// Host side of the CUDA kernels: workspace layout, the choice of thread
// mapping, and the launches. Included by one .cu per dtype, which
// instantiates it (and by the emulator tests, through those .cu files).
#pragma once

#include "api.h"
#include "crf.cuh"
#include "relaxed.cuh"
#include "relaxed_grad.cuh"
#include "viterbi.cuh"

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

// ------------------------------------------------------------------- CRF

template <typename T>
struct CrfWorkspace {
  T *wm, *ec, *cmax;  // (L, L), (L, L), (L,)
  T *ert, *rmax;      // (L, L), (L,) backward only
  T* pw;              // (B, T, L) pair weights
  uint8_t* pf;        // (B, T, L) exact-route flags
  T* pm;              // (B, T) log alpha maxima
  T* partial;         // (splits, L, L) when the pairs are split
  int splits;
};

// The pairs kernel's split of the (b, t) pairs: enough blocks to fill a GPU
// on small L, a function of the problem only (so results do not depend on
// the device).
inline int pair_splits(int64_t B, int64_t T_, int64_t L) {
  const int64_t chunks = (B * T_ + kPairTile - 1) / kPairTile;
  const int64_t tiles_1d = (L + kPairTile - 1) / kPairTile;
  int64_t s = chunks / 4;  // at least 4 chunks (128 pairs) per split
  const int64_t by_tiles = 1024 / (tiles_1d * tiles_1d);
  if (s > by_tiles) s = by_tiles;
  if (s > 32) s = 32;
  return static_cast<int>(s < 1 ? 1 : s);
}

template <typename T>
CrfWorkspace<T> crf_workspace(const EnergyView<T>& e, bool backward, void* base, size_t* bytes) {
  Carver c(base, kWorkspaceAlign);
  CrfWorkspace<T> w{};
  const int64_t L = e.L;
  w.wm = c.take<T>(L * L);
  w.ec = c.take<T>(L * L);
  w.cmax = c.take<T>(L);
  w.splits = 1;
  if (backward) {
    w.ert = c.take<T>(L * L);
    w.rmax = c.take<T>(L);
    w.pw = c.take<T>(e.B * e.T * L);
    w.pf = c.take<uint8_t>(e.B * e.T * L);
    w.pm = c.take<T>(e.B * e.T);
    w.splits = pair_splits(e.B, e.T, L);
    if (w.splits > 1) w.partial = c.take<T>(w.splits * L * L);
  }
  *bytes = c.bytes();
  return w;
}

template <typename T>
size_t crf_smem(int64_t L, int groups, bool table_in_smem, bool backward) {
  Carver c(nullptr);
  T *a, *b, *d;
  if (backward)
    crf_backward_smem_layout<T>(c, L, groups, table_in_smem, &a, &b, &d);
  else
    crf_forward_smem_layout<T>(c, L, groups, table_in_smem, &a, &b);
  return c.bytes();
}

template <typename T>
Status launch_crf_forward(const CrfForwardParams<T>& p, void* workspace, cudaStream_t stream,
                          Variant requested) {
  const EnergyView<T>& e = p.energy;
  if (e.B == 0 || e.T == 0) return Status::kOk;
  if (e.L > 65535) return Status::kCudaUnsupported;
  size_t bytes = 0;
  const CrfWorkspace<T> w = crf_workspace(e, false, workspace, &bytes);
  Status s = launch(&crf_prepare_kernel<T>, small_grid(e.L, threads_for(e.L)), threads_for(e.L), 0,
                    stream, e, w.wm, w.ec, w.cmax, static_cast<T*>(nullptr),
                    static_cast<T*>(nullptr));
  if (s != Status::kOk) return s;
  const size_t block_smem = crf_smem<T>(e.L, 1, true, false);
  Variant v;
  s = resolve(requested, e.L, block_smem <= shared_bytes_available(), &v);
  if (s != Status::kOk) return s;
  const T* wm = w.wm;
  const T* ec = w.ec;
  const T* cmax = w.cmax;
  if (v == Variant::kWarp) {
    auto kernel = &crf_forward_kernel<T, WarpGroup, true>;
    return launch(kernel, grid_for(e.B, kWarpsPerBlock, 0x7fffffff), kWarpsPerBlock * kWarpSize,
                  crf_smem<T>(e.L, kWarpsPerBlock, true, false), stream, p, wm, ec, cmax);
  }
  if (!grid_ok(e.B)) return Status::kCudaUnsupported;
  if (v == Variant::kBlock) {
    auto kernel = &crf_forward_kernel<T, BlockGroup, true>;
    return launch(kernel, static_cast<unsigned>(e.B), threads_for(e.L), block_smem, stream, p, wm,
                  ec, cmax);
  }
  auto kernel = &crf_forward_kernel<T, BlockGroup, false>;
  return launch(kernel, static_cast<unsigned>(e.B), threads_for(e.L),
                crf_smem<T>(e.L, 1, false, false), stream, p, wm, ec, cmax);
}

template <typename T>
Status launch_crf_backward(const CrfBackwardParams<T>& p, void* workspace, cudaStream_t stream,
                           Variant requested) {
  const EnergyView<T>& e = p.energy;
  if (e.L == 0) return Status::kOk;
  if (e.L > 65535) return Status::kCudaUnsupported;
  size_t bytes = 0;
  const CrfWorkspace<T> w = crf_workspace(e, true, workspace, &bytes);
  Status s = launch(&crf_prepare_kernel<T>, small_grid(2 * e.L, threads_for(2 * e.L)),
                    threads_for(2 * e.L), 0, stream, e, w.wm, w.ec, w.cmax, w.ert, w.rmax);
  if (s != Status::kOk) return s;
  const T* wm = w.wm;
  const T* ert = w.ert;
  const T* rmax = w.rmax;
  const T* cmax = w.cmax;
  if (e.B > 0 && e.T > 0) {
    const size_t block_smem = crf_smem<T>(e.L, 1, true, true);
    Variant v;
    s = resolve(requested, e.L, block_smem <= shared_bytes_available(), &v);
    if (s != Status::kOk) return s;
    if (v == Variant::kWarp) {
      auto kernel = &crf_backward_kernel<T, WarpGroup, true>;
      s = launch(kernel, grid_for(e.B, kWarpsPerBlock, 0x7fffffff), kWarpsPerBlock * kWarpSize,
                 crf_smem<T>(e.L, kWarpsPerBlock, true, true), stream, p, wm, ert, rmax, cmax,
                 w.pw, w.pf, w.pm);
    } else if (!grid_ok(e.B)) {
      return Status::kCudaUnsupported;
    } else if (v == Variant::kBlock) {
      auto kernel = &crf_backward_kernel<T, BlockGroup, true>;
      s = launch(kernel, static_cast<unsigned>(e.B), threads_for(e.L), block_smem, stream, p, wm,
                 ert, rmax, cmax, w.pw, w.pf, w.pm);
    } else {
      auto kernel = &crf_backward_kernel<T, BlockGroup, false>;
      s = launch(kernel, static_cast<unsigned>(e.B), threads_for(e.L),
                 crf_smem<T>(e.L, 1, false, true), stream, p, wm, ert, rmax, cmax, w.pw, w.pf,
                 w.pm);
    }
    if (s != Status::kOk) return s;
  }
  const int64_t tiles_1d = (e.L + kPairTile - 1) / kPairTile;
  const int64_t items = tiles_1d * tiles_1d * w.splits;
  const int64_t cap = 8 * static_cast<int64_t>(multiprocessor_count());
  s = launch(&crf_pairs_kernel<T>, static_cast<unsigned>(items < cap ? items : cap), kPairThreads,
             0, stream, p, wm, static_cast<const T*>(w.ec), static_cast<const T*>(w.pw),
             static_cast<const uint8_t*>(w.pf), static_cast<const T*>(w.pm), w.splits, w.partial);
  if (s != Status::kOk) return s;
  if (w.splits > 1) {
    s = launch(&crf_pairs_reduce_kernel<T>, small_grid(e.L * e.L, threads_for(e.L * e.L)),
               threads_for(e.L * e.L), 0, stream,
               static_cast<const T*>(w.partial), w.splits, e.L * e.L, p.grad_transitions);
    if (s != Status::kOk) return s;
  }
  return launch(&crf_ends_kernel<T>, small_grid(e.L, threads_for(e.L)), threads_for(e.L), 0, stream,
                p);
}

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

template <typename T>
size_t viterbi_workspace_bytes(const ViterbiParams<T>& p) {
  if (p.energy.B == 0 || p.energy.T == 0) return 0;
  size_t bytes = 0;
  detail::viterbi_workspace(p, nullptr, &bytes);
  return bytes;
}
template <typename T>
Status launch_viterbi(const ViterbiParams<T>& p, void* workspace, cudaStream_t stream, Variant v) {
  return detail::launch_viterbi(p, workspace, stream, v);
}
template <typename T>
Status launch_viterbi(const ViterbiParams<T>& p, void* workspace, cudaStream_t stream) {
  return detail::launch_viterbi(p, workspace, stream, Variant::kAuto);
}

template <typename T>
size_t crf_forward_workspace_bytes(const CrfForwardParams<T>& p) {
  if (p.energy.B == 0 || p.energy.T == 0) return 0;
  size_t bytes = 0;
  detail::crf_workspace(p.energy, false, nullptr, &bytes);
  return bytes;
}
template <typename T>
Status launch_crf_forward(const CrfForwardParams<T>& p, void* workspace, cudaStream_t stream,
                          Variant v) {
  return detail::launch_crf_forward(p, workspace, stream, v);
}
template <typename T>
Status launch_crf_forward(const CrfForwardParams<T>& p, void* workspace, cudaStream_t stream) {
  return detail::launch_crf_forward(p, workspace, stream, Variant::kAuto);
}

template <typename T>
size_t crf_backward_workspace_bytes(const CrfBackwardParams<T>& p) {
  if (p.energy.L == 0) return 0;
  size_t bytes = 0;
  detail::crf_workspace(p.energy, true, nullptr, &bytes);
  return bytes;
}
template <typename T>
Status launch_crf_backward(const CrfBackwardParams<T>& p, void* workspace, cudaStream_t stream,
                           Variant v) {
  return detail::launch_crf_backward(p, workspace, stream, v);
}
template <typename T>
Status launch_crf_backward(const CrfBackwardParams<T>& p, void* workspace, cudaStream_t stream) {
  return detail::launch_crf_backward(p, workspace, stream, Variant::kAuto);
}

template <typename T>
size_t relaxed_energy_step_workspace_bytes(const RelaxedStepParams<T>& p) {
  if (p.energy.B == 0 || p.energy.T == 0 || p.steps <= 0) return 0;
  size_t bytes = 0;
  detail::relaxed_workspace(p.energy, nullptr, &bytes);
  return bytes;
}
template <typename T>
Status launch_relaxed_energy_step(const RelaxedStepParams<T>& p, void* workspace,
                                  cudaStream_t stream, Variant v) {
  return detail::launch_relaxed_energy_step(p, workspace, stream, v);
}
template <typename T>
Status launch_relaxed_energy_step(const RelaxedStepParams<T>& p, void* workspace,
                                  cudaStream_t stream) {
  return detail::launch_relaxed_energy_step(p, workspace, stream, Variant::kAuto);
}

template <typename T>
size_t relaxed_energy_forward_workspace_bytes(const RelaxedEnergyParams<T>& p) {
  if (p.energy.B == 0 || p.energy.T == 0) return 0;
  size_t bytes = 0;
  detail::relaxed_energy_workspace(p, nullptr, &bytes);
  return bytes;
}
template <typename T>
Status launch_relaxed_energy_forward(const RelaxedEnergyParams<T>& p, void* workspace,
                                     cudaStream_t stream, Variant v) {
  return detail::launch_relaxed_energy_forward(p, workspace, stream, v);
}
template <typename T>
Status launch_relaxed_energy_forward(const RelaxedEnergyParams<T>& p, void* workspace,
                                     cudaStream_t stream) {
  return detail::launch_relaxed_energy_forward(p, workspace, stream, Variant::kAuto);
}

template <typename T>
size_t relaxed_energy_backward_workspace_bytes(const RelaxedEnergyBackwardParams<T>& p) {
  size_t bytes = 0;
  detail::relaxed_energy_backward_workspace(p, nullptr, &bytes);
  return bytes;
}
template <typename T>
Status launch_relaxed_energy_backward(const RelaxedEnergyBackwardParams<T>& p, void* workspace,
                                      cudaStream_t stream) {
  return detail::launch_relaxed_energy_backward(p, workspace, stream);
}

#define SI_CUDA_INSTANTIATE(T)                                                                   \
  template size_t viterbi_workspace_bytes<T>(const ViterbiParams<T>&);                           \
  template Status launch_viterbi<T>(const ViterbiParams<T>&, void*, cudaStream_t);               \
  template Status launch_viterbi<T>(const ViterbiParams<T>&, void*, cudaStream_t, Variant);      \
  template size_t crf_forward_workspace_bytes<T>(const CrfForwardParams<T>&);                    \
  template Status launch_crf_forward<T>(const CrfForwardParams<T>&, void*, cudaStream_t);        \
  template Status launch_crf_forward<T>(const CrfForwardParams<T>&, void*, cudaStream_t,         \
                                        Variant);                                                \
  template size_t crf_backward_workspace_bytes<T>(const CrfBackwardParams<T>&);                  \
  template Status launch_crf_backward<T>(const CrfBackwardParams<T>&, void*, cudaStream_t);      \
  template Status launch_crf_backward<T>(const CrfBackwardParams<T>&, void*, cudaStream_t,       \
                                         Variant);                                               \
  template size_t relaxed_energy_step_workspace_bytes<T>(const RelaxedStepParams<T>&);           \
  template Status launch_relaxed_energy_step<T>(const RelaxedStepParams<T>&, void*,              \
                                                cudaStream_t);                                   \
  template Status launch_relaxed_energy_step<T>(const RelaxedStepParams<T>&, void*,              \
                                                cudaStream_t, Variant);                          \
  template size_t relaxed_energy_forward_workspace_bytes<T>(const RelaxedEnergyParams<T>&);      \
  template Status launch_relaxed_energy_forward<T>(const RelaxedEnergyParams<T>&, void*,         \
                                                   cudaStream_t);                                \
  template Status launch_relaxed_energy_forward<T>(const RelaxedEnergyParams<T>&, void*,         \
                                                   cudaStream_t, Variant);                       \
  template size_t relaxed_energy_backward_workspace_bytes<T>(                                    \
      const RelaxedEnergyBackwardParams<T>&);                                                    \
  template Status launch_relaxed_energy_backward<T>(const RelaxedEnergyBackwardParams<T>&,       \
                                                    void*, cudaStream_t);

}  // namespace cuda
}  // namespace structinf
