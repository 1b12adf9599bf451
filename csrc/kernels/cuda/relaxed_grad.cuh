// The differentiable relaxed energy E(p) = -score(p) (RelaxedEnergyParams,
// RelaxedEnergyBackwardParams): the CUDA twin of the CPU kernels in
// cpu/relaxed.h, with the same mathematics.
//
// Forward. A group of threads owns a sequence, mapped as in the fused step
// (relaxed.cuh): a warp for L <= 32 with one thread per row (position; its
// labels in a serial loop, no shuffles), else a block with one warp per row
// (lanes over labels, shuffle reductions per row). Two passes over the rows:
//   1. p_t = softmax(x_t) (or x_t itself when probs), kept on chip where the
//      group's (T, ld) rows fit, else in global memory (p_out when the
//      gradient is wanted, the workspace otherwise; probabilities are read
//      in place). p_out gets its copy in the same pass.
//   2. per row: the score terms p_t . e_t, p_t . W^T p_{t-1}, p_t . start
//      [t = 0], p_t . end [t = n-1] and, with gradients,
//        d_t = e_t + W p_{t+1} + W^T p_{t-1} (+ start, end) = dscore/dp_t,
//      staged in input_grad (each lane rewrites only the labels it wrote,
//      so no barrier) and turned into dE/dinput = -d (probs) or
//      p * (p . d - d) (through the softmax) once the row's p . d is known.
// Row scores are summed per row worker in double, then over the group.
// The energy takes the same products, in the same order, with or without
// gradients: both give the same number.
//
// Backward. grad_input = g * input_grad and grad_emissions = -g * p are
// elementwise (one grid-stride kernel). grad_transitions = -sum over pairs
// q = (b, t >= 1) of g[b] p_{t-1} p_t^T is a product with a long inner
// dimension: output tiles of 32 x 32 over splits of the pairs, as for the CRF
// pairwise marginals (crf.cuh), each split's tile written to its own slice of
// the workspace and the slices summed in split order by a second kernel.
// grad_start / grad_end are sums over b in b order (one thread per label).
// No atomics: every result is the same on every run and every device.
#pragma once

#include "common.cuh"
#include "crf.cuh"
#include "relaxed.cuh"

namespace structinf {
namespace cuda {

// Shared memory: [W, W^T ((L, L) each) if in shared memory] then, per group,
// P ((T, ld)) if on chip.
template <typename T>
__host__ __device__ inline void relaxed_energy_smem_layout(Carver& c, int64_t L, int64_t T_,
                                                           int64_t ld, int groups, bool w_in_smem,
                                                           bool on_chip, T** w, T** pbuf) {
  *w = w_in_smem ? c.take<T>(2 * L * L) : nullptr;
  *pbuf = on_chip ? c.take<T>(T_ * ld * groups) : nullptr;
}

template <typename T, typename Group, int kRowLanes, bool kSmemW>
__global__ void __launch_bounds__(kMaxThreads, MinBlocks<T>::value)
    relaxed_energy_forward_kernel(RelaxedEnergyParams<T> p, const T* __restrict__ wt_global,
                                  T* __restrict__ prob_ws, bool on_chip) {
  const EnergyView<T>& e = p.energy;
  const int L = static_cast<int>(e.L);
  const int64_t T_ = e.T;
  SI_SHARED(ReduceSlot, slots, kReduceSlots);
  SI_DYNAMIC_SHARED(unsigned char, smem);
  const int workers = static_cast<int>(blockDim.x) / Group::per_block() / kRowLanes;
  const int64_t ldc = relaxed_row_stride(L, kRowLanes);
  Carver carve(smem);
  T *w_smem, *pbuf;
  relaxed_energy_smem_layout<T>(carve, L, T_, ldc, Group::per_block(), kSmemW, on_chip, &w_smem,
                                &pbuf);
  const T *W, *Wt;
  stage_transitions<kSmemW>(e.transitions, wt_global, L, w_smem, &W, &Wt);
  const int64_t b = static_cast<int64_t>(blockIdx.x) * Group::per_block() + Group::index_in_block();
  if (b >= e.B) return;
  Group g(slots);
  const int worker = g.rank() / kRowLanes, lane = g.rank() % kRowLanes;
  const int64_t n = e.lengths[b];
  const bool grad = p.input_grad != nullptr;
  const T* x = p.input + b * T_ * L;
  const T* em = e.emissions + b * T_ * L;
  T* pout = grad ? p.p_out + b * T_ * L : nullptr;
  T* gout = grad ? p.input_grad + b * T_ * L : nullptr;
  // Where p is written (null: probabilities read in place) and read.
  T* Pw;
  int64_t ld;
  if (on_chip) {
    Pw = pbuf + Group::index_in_block() * T_ * ldc;
    ld = ldc;
  } else {
    Pw = p.probs ? nullptr : (grad ? pout : prob_ws + b * T_ * L);
    ld = L;
  }
  const T* P = Pw != nullptr ? Pw : x;
  const bool copy_out = grad && Pw != pout;

  for (int64_t t = worker; t < n; t += workers) {
    const T* xt = x + t * L;
    T* pt = Pw != nullptr ? Pw + t * ld : nullptr;
    if (p.probs) {
      for (int j = lane; j < L; j += kRowLanes) {
        const T v = xt[j];
        if (pt != nullptr) pt[j] = v;
        if (copy_out) pout[t * L + j] = v;
      }
      continue;
    }
    // Labels at -inf have probability 0 (the binding rejects a row of them).
    const T inv = row_softmax<kRowLanes, true>(xt, pt, L, lane);
    for (int j = lane; j < L; j += kRowLanes) {
      const T v = pt[j] * inv;
      pt[j] = v;
      if (copy_out) pout[t * L + j] = v;
    }
  }
  if (grad)
    for (int64_t i = n * L + g.rank(); i < T_ * L; i += g.size()) {
      pout[i] = T(0);
      gout[i] = T(0);
    }
  g.sync();

  double score = 0.0;
  for (int64_t t = worker; t < n; t += workers) {
    const T* pt = P + t * ld;
    const T* et = em + t * L;
    T* gt = grad ? gout + t * L : nullptr;
    // d_t (with gradients) staged in gt.
    const RowDots<T> r =
        grad ? row_terms<kRowLanes, true>(pt, et, ld, W, Wt, e.start, e.end, t, n, L, lane, gt)
             : row_terms<kRowLanes, false>(pt, et, ld, W, Wt, e.start, e.end, t, n, L, lane, gt);
    score += row_score(r, t, n);
    if (!grad) continue;
    // dE/dp = -d; through the softmax dE/dz = p * (dE/dp - <p, dE/dp>).
    for (int j = lane; j < L; j += kRowLanes) {
      const T d = gt[j];
      gt[j] = p.probs ? -d : pt[j] * (r.pd - d);
    }
  }
  const double total = g.reduce(lane == 0 ? score : 0.0, SumOp());
  if (g.rank() == 0) p.energy_out[b] = static_cast<T>(-total);
}

// grad_input and grad_emissions, zero at padding; p and input_grad are read
// at t < lengths[b] only.
template <typename T>
__global__ void relaxed_energy_scale_kernel(RelaxedEnergyBackwardParams<T> p) {
  const int64_t L = p.L, TL = p.T * p.L, n_all = p.B * TL;
  for (int64_t x = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; x < n_all;
       x += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = x / TL;
    const bool live = (x - b * TL) / L < p.lengths[b];
    const T g = p.grad_energy[b];
    if (p.grad_input != nullptr) p.grad_input[x] = live ? g * p.input_grad[x] : T(0);
    if (p.grad_emissions != nullptr) p.grad_emissions[x] = live ? -g * p.p[x] : T(0);
  }
}

// grad_transitions(i, j) = sum over pairs q = (b, t), 1 <= t < lengths[b], of
// p[q-1](i) * (-g[b] p[q](j)), pairs in (b, t) order. Work item = (32 x 32
// output tile, split of the pairs); pairs staged 32 at a time through shared
// memory, 4 outputs per thread. One split writes grad_transitions, several
// write partial (splits, L, L) for crf_pairs_reduce_kernel.
template <typename T>
__global__ void __launch_bounds__(kPairThreads, MinBlocks<T>::value)
    relaxed_energy_pairs_kernel(RelaxedEnergyBackwardParams<T> p, int splits,
                                T* __restrict__ partial) {
  const int L = static_cast<int>(p.L);
  const int64_t T_ = p.T;
  const int64_t pairs = p.B * T_;
  const int64_t chunks = (pairs + kPairTile - 1) / kPairTile;
  const int tiles_1d = (L + kPairTile - 1) / kPairTile;
  const int64_t items = static_cast<int64_t>(tiles_1d) * tiles_1d * splits;
  SI_SHARED(T, sa, kPairTile * kPairTile);  // p[q-1](i0 + col), 0 where no pair
  SI_SHARED(T, sw, kPairTile * kPairTile);  // -g[b] p[q](j0 + col), 0 where no pair
  const int tx = threadIdx.x % kPairTile, ty = threadIdx.x / kPairTile;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int split = static_cast<int>(item % splits);
    const int64_t tile = item / splits;
    const int i0 = static_cast<int>(tile / tiles_1d) * kPairTile;
    const int j0 = static_cast<int>(tile % tiles_1d) * kPairTile;
    const int64_t c0 = chunks * split / splits, c1 = chunks * (split + 1) / splits;
    T acc[kPairTile / kPairRows];
#pragma unroll
    for (int r = 0; r < kPairTile / kPairRows; ++r) acc[r] = T(0);
    for (int64_t c = c0; c < c1; ++c) {
      for (int x = threadIdx.x; x < kPairTile * kPairTile; x += kPairThreads) {
        const int kk = x / kPairTile, col = x % kPairTile;
        const int64_t q = c * kPairTile + kk;
        T a = T(0), w = T(0);
        if (q < pairs) {
          const int64_t b = q / T_, t = q - b * T_;
          if (t >= 1 && t < p.lengths[b]) {
            const int i = i0 + col, j = j0 + col;
            if (i < L) a = p.p[(q - 1) * L + i];
            if (j < L) w = -p.grad_energy[b] * p.p[q * L + j];
          }
        }
        sa[x] = a;
        sw[x] = w;
      }
      __syncthreads();
#pragma unroll 4
      for (int kk = 0; kk < kPairTile; ++kk) {
        const T w = sw[kk * kPairTile + tx];
#pragma unroll
        for (int r = 0; r < kPairTile / kPairRows; ++r)
          acc[r] = dfma(sa[kk * kPairTile + ty + kPairRows * r], w, acc[r]);
      }
      __syncthreads();
    }
    const int j = j0 + tx;
#pragma unroll
    for (int r = 0; r < kPairTile / kPairRows; ++r) {
      const int i = i0 + ty + kPairRows * r;
      if (i >= L || j >= L) continue;
      if (splits == 1)
        p.grad_transitions[i * L + j] = acc[r];
      else
        partial[(static_cast<int64_t>(split) * L + i) * L + j] = acc[r];
    }
  }
}

// grad_start = -sum_b g[b] p[b, 0], grad_end = -sum_b g[b] p[b, n-1], in b
// order; zero when B == 0.
template <typename T>
__global__ void relaxed_energy_ends_kernel(RelaxedEnergyBackwardParams<T> p) {
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < p.L;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    T s = T(0), f = T(0);
    for (int64_t b = 0; b < p.B; ++b) {
      const T* pb = p.p + b * p.T * p.L;
      const T g = p.grad_energy[b];
      s -= g * pb[j];
      f -= g * pb[(p.lengths[b] - 1) * p.L + j];
    }
    if (p.grad_start != nullptr) p.grad_start[j] = s;
    if (p.grad_end != nullptr) p.grad_end[j] = f;
  }
}

}  // namespace cuda
}  // namespace structinf
