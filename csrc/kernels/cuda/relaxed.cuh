// Fused gradient-descent steps on the relaxed energy (paper section 3), all
// `steps` of them in one launch.
//
// A group of threads (a warp for L <= 32, else a block) owns a sequence for
// all its steps. Where they fit, its logits, velocity, emissions and
// probabilities stay in shared memory from the first step to the last (read
// once, written once); otherwise they are streamed from global memory, the
// probabilities through the workspace. Rows (positions) are spread over
// "row workers": a single thread for L <= 32 (its labels in a serial loop:
// no shuffles, and the warp's lanes read a row each, conflict-free with an
// odd row stride), a warp otherwise (lanes over labels, shuffle reductions
// per row). Per step and row:
//   p_t = softmax(z_t); d_t = e_t + W p_{t+1} + W^T p_{t-1} (+ start, end);
//   E -= p_t . (e_t + W^T p_{t-1} + start + end);
//   g = p_t * (p_t . d_t - d_t) (dE/dz through the softmax);
//   v = mu v + g; z -= lr v.
#pragma once

#include "common.cuh"

namespace structinf {
namespace cuda {

// W^T (L, L) for the workspace: both W p and W^T p then read consecutive
// labels on consecutive lanes.
template <typename T>
__global__ void relaxed_prepare_kernel(EnergyView<T> e, T* wt) {
  const int64_t L = e.L;
  for (int64_t x = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; x < L * L;
       x += static_cast<int64_t>(gridDim.x) * blockDim.x)
    wt[x] = e.transitions[(x % L) * L + x / L];
}

// Shared memory: [W, W^T ((L, L) each) if in shared memory] then, per group,
// Z, V, E, P ((T, ld) each) if on chip, then one row of d (L) per row worker.
template <typename T>
__host__ __device__ inline void relaxed_smem_layout(Carver& c, int64_t L, int64_t T_, int64_t ld,
                                                    int groups, int workers, bool w_in_smem,
                                                    bool on_chip, T** w, T** bufs, T** d) {
  *w = w_in_smem ? c.take<T>(2 * L * L) : nullptr;
  *bufs = on_chip ? c.take<T>(4 * T_ * ld * groups) : nullptr;
  *d = c.take<T>(L * workers * groups);
}

// Row stride on chip: odd for one thread per row (no bank conflicts).
__host__ __device__ inline int64_t relaxed_row_stride(int64_t L, int row_lanes) {
  return row_lanes == 1 ? (L | 1) : L;
}

template <typename T>
struct RowDots {
  T pe, pq, ps, pend, pd;
};
struct RowDotsOp {
  template <typename T>
  __device__ __forceinline__ RowDots<T> operator()(RowDots<T> a, RowDots<T> b) const {
    return {a.pe + b.pe, a.pq + b.pq, a.ps + b.ps, a.pend + b.pend, a.pd + b.pd};
  }
};

template <int kRowLanes, typename V, typename Op>
__device__ __forceinline__ V row_reduce(V v, Op op) {
  if (kRowLanes == 1) return v;
  return warp_reduce(v, op);
}

// With kSmemW, W and W^T into the first 2 L*L of w_smem (every thread of the
// block takes part, then a barrier); the pointers the rows read them from.
template <bool kSmemW, typename T>
__device__ __forceinline__ void stage_transitions(const T* w_global, const T* wt_global, int L,
                                                  T* w_smem, const T** W, const T** Wt) {
  if (kSmemW) {
    for (int i = threadIdx.x; i < L * L; i += blockDim.x) {
      w_smem[i] = w_global[i];
      w_smem[L * L + i] = wt_global[i];
    }
    __syncthreads();
  }
  *W = kSmemW ? w_smem : w_global;
  *Wt = kSmemW ? w_smem + L * L : wt_global;
}

// softmax(x) over one row, this lane's labels (j = lane, lane + kRowLanes,
// ...): each lane's (max, sum of exponentials), merged over the row's lanes
// in one reduction, one exponential per label. Writes the exponentials to p
// and returns this lane's factor that turns them into probabilities. With
// kMaybeInf labels at -inf have probability 0 (a lane holding only such
// labels contributes (-inf, 0); a row of them has no distribution).
template <int kRowLanes, bool kMaybeInf, typename T>
__device__ __forceinline__ T row_softmax(const T* x, T* p, int L, int lane) {
  T lm = -inf<T>();
  for (int j = lane; j < L; j += kRowLanes) lm = dmax(lm, x[j]);
  const bool none = kMaybeInf && lm == -inf<T>();
  T ls = T(0);
  for (int j = lane; j < L; j += kRowLanes) {
    const T v = none ? T(0) : dexp(x[j] - lm);
    p[j] = v;
    ls += v;
  }
  const Lse<T> ms = row_reduce<kRowLanes>(Lse<T>{lm, ls},
                                          [](Lse<T> a, Lse<T> c) { return lse_merge(a, c); });
  return (kRowLanes == 1 || none ? T(1) : dexp(lm - ms.m)) / ms.s;
}

// Row t of a sequence of n, this lane's labels, summed over the row's lanes:
// the score terms p_t . e_t, p_t . W^T p_{t-1} [t > 0], p_t . start [t = 0],
// p_t . end [t = n-1] and, with kD, d_t = dscore/dp_t = e_t + W p_{t+1}
// [t+1 < n] + W^T p_{t-1} [t > 0] + start [t = 0] + end [t = n-1] (the CPU's
// order), written to d, with p_t . d_t. Rows of p are ld apart.
template <int kRowLanes, bool kD, typename T>
__device__ __forceinline__ RowDots<T> row_terms(const T* pt, const T* et, int64_t ld, const T* W,
                                                const T* Wt, const T* start, const T* end,
                                                int64_t t, int64_t n, int L, int lane, T* d) {
  RowDots<T> r{T(0), T(0), T(0), T(0), T(0)};
  for (int j = lane; j < L; j += kRowLanes) {
    const T pj = pt[j], ej = et[j];
    T dj = ej;
    r.pe = dfma(pj, ej, r.pe);
    if (kD && t + 1 < n) {  // (W p_{t+1})_j
      const T* pn = pt + ld;
      T q = T(0);
      for (int k = 0; k < L; ++k) q = dfma(Wt[k * L + j], pn[k], q);
      dj += q;
    }
    if (t > 0) {  // (W^T p_{t-1})_j
      const T* pp = pt - ld;
      T q = T(0);
      for (int k = 0; k < L; ++k) q = dfma(W[k * L + j], pp[k], q);
      dj += q;
      r.pq = dfma(pj, q, r.pq);
    }
    if (t == 0) {
      dj += start[j];
      r.ps = dfma(pj, start[j], r.ps);
    }
    if (t == n - 1) {
      dj += end[j];
      r.pend = dfma(pj, end[j], r.pend);
    }
    if (kD) {
      d[j] = dj;
      r.pd = dfma(pj, dj, r.pd);
    }
  }
  return row_reduce<kRowLanes>(r, RowDotsOp());
}

// The row's share of the score, in double, from row_terms' sums.
template <typename T>
__device__ __forceinline__ double row_score(const RowDots<T>& r, int64_t t, int64_t n) {
  double s = static_cast<double>(r.pe);
  if (t > 0) s += static_cast<double>(r.pq);
  if (t == 0) s += static_cast<double>(r.ps);
  if (t == n - 1) s += static_cast<double>(r.pend);
  return s;
}

template <typename T, typename Group, int kRowLanes, bool kSmemW, bool kOnChip>
__global__ void __launch_bounds__(kMaxThreads, MinBlocks<T>::value)
    relaxed_step_kernel(RelaxedStepParams<T> p, const T* __restrict__ wt_global,
                        T* __restrict__ prob_ws) {
  const EnergyView<T>& e = p.energy;
  const int L = static_cast<int>(e.L);
  const int64_t T_ = e.T;
  SI_SHARED(ReduceSlot, slots, kReduceSlots);
  SI_DYNAMIC_SHARED(unsigned char, smem);
  const int workers = static_cast<int>(blockDim.x) / Group::per_block() / kRowLanes;
  const int64_t ldc = relaxed_row_stride(L, kRowLanes);
  Carver carve(smem);
  T *w_smem, *bufs, *dbuf;
  relaxed_smem_layout<T>(carve, L, T_, ldc, Group::per_block(), workers, kSmemW, kOnChip, &w_smem,
                         &bufs, &dbuf);
  const T *W, *Wt;
  stage_transitions<kSmemW>(e.transitions, wt_global, L, w_smem, &W, &Wt);
  const int64_t b = static_cast<int64_t>(blockIdx.x) * Group::per_block() + Group::index_in_block();
  if (b >= e.B) return;
  Group g(slots);
  const int worker = g.rank() / kRowLanes, lane = g.rank() % kRowLanes;
  const int64_t n = e.lengths[b];
  const T lr = p.lr[b], mu = p.momentum;
  T* z_g = p.logits + b * T_ * L;
  T* v_g = p.velocity + b * T_ * L;
  const T* e_g = e.emissions + b * T_ * L;
  T *Z, *Vel, *P;
  const T* E;
  int64_t ld;
  if (kOnChip) {
    ld = ldc;
    T* base = bufs + Group::index_in_block() * 4 * T_ * ld;
    Z = base;
    Vel = base + T_ * ld;
    T* Em = base + 2 * T_ * ld;
    P = base + 3 * T_ * ld;
    for (int64_t t = 0; t < n; ++t)
      for (int j = g.rank(); j < L; j += g.size()) {
        Z[t * ld + j] = z_g[t * L + j];
        Vel[t * ld + j] = v_g[t * L + j];
        Em[t * ld + j] = e_g[t * L + j];
      }
    E = Em;
    g.sync();
  } else {
    ld = L;
    Z = z_g;
    Vel = v_g;
    E = e_g;
    P = prob_ws + b * T_ * L;
  }
  T* D = dbuf + (Group::index_in_block() * workers + worker) * L;
  for (int64_t step = 0; step < p.steps; ++step) {
    for (int64_t t = worker; t < n; t += workers) {
      const T* zt = Z + t * ld;
      T* pt = P + t * ld;
      const T inv = row_softmax<kRowLanes, false>(zt, pt, L, lane);
      for (int j = lane; j < L; j += kRowLanes) pt[j] *= inv;
    }
    g.sync();
    double score = 0.0;
    for (int64_t t = worker; t < n; t += workers) {
      const T* pt = P + t * ld;
      const RowDots<T> r = row_terms<kRowLanes, true>(pt, E + t * ld, ld, W, Wt, e.start, e.end,
                                                      t, n, L, lane, D);
      score += row_score(r, t, n);
      T* zt = Z + t * ld;
      T* vt = Vel + t * ld;
      for (int j = lane; j < L; j += kRowLanes) {
        const T grad = pt[j] * (r.pd - D[j]);
        const T v = mu * vt[j] + grad;
        vt[j] = v;
        zt[j] -= lr * v;
      }
    }
    // Every thread of the group gets the same total, so all stop together.
    const double total = g.reduce(lane == 0 ? score : 0.0, SumOp());
    if (g.rank() == 0) p.energy_out[step * e.B + b] = static_cast<T>(-total);
    // Logits that overflowed (a learning rate far too large) give a NaN or
    // infinite energy: stop this sequence, as the CPU does.
    if (!(total - total == 0.0)) break;
  }
  if (kOnChip) {
    g.sync();
    for (int64_t t = 0; t < n; ++t)
      for (int j = g.rank(); j < L; j += g.size()) {
        z_g[t * L + j] = Z[t * ld + j];
        v_g[t * L + j] = Vel[t * ld + j];
      }
  }
}

}  // namespace cuda
}  // namespace structinf
