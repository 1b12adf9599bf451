// Host side of the CRF forward-backward kernels: workspace layout, the choice of thread
// mapping, and the launches (structinf::cuda::detail; the public entry points
// are in launch.cuh).
#pragma once

#include "launch_common.cuh"
#include "crf.cuh"

namespace structinf {
namespace cuda {
namespace detail {

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

}  // namespace detail
}  // namespace cuda
}  // namespace structinf
