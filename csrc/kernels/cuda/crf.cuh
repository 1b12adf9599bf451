// CRF forward-backward on the GPU: log Z and its gradients (the marginals).
//
// The CPU's scaled-exponential scheme (cpu/crf.h), one launch per pass with
// the time loop inside:
//
//   alpha_t(j) = c_j + log S_j + e_t(j),  S_j = sum_i A_i exp(W(i, j) - c_j),
//   A_i = exp(log_alpha_{t-1}(i)),  c_j = max_i W(i, j),
//
// where log_alpha_{t-1} is stored relative to its maximum (which is then 0),
// so every factor is <= 1. Entries with S_j below the floor are recomputed by
// an exact log-sum-exp. Thread j of the sequence's group (a warp for
// L <= 32, else a block) owns label j; A and the relative log alpha of the
// previous step sit in shared memory, exp(W - c) in shared memory or global.
//
// The backward pass runs beta the same way (row maxima), writes the unary
// marginals as it goes, and leaves for each pair (t-1, t) a weight vector
// w_t(j) = g exp(c_j + v_t(j) + m1 + K_t) (v = emission + log beta), so that
// the pairwise marginal is exp(log_alpha_{t-1}(i) - m1) * exp(W(i,j) - c_j)
// * w_t(j). A second kernel sums those rank-one terms over all (b, t) as a
// tiled matrix product in a fixed order (deterministic), adding the exact
// terms where the forward pass took the exact route, as the CPU does.
#pragma once

#include "common.cuh"

namespace structinf {
namespace cuda {

template <typename T>
struct ScaleFloor;
template <>
struct ScaleFloor<float> {
  static constexpr float value = 0x1p-80f;
  static constexpr float log_value = -55.451774444795625f;  // log(2^-80)
};
template <>
struct ScaleFloor<double> {
  static constexpr double value = 0x1p-600;
  static constexpr double log_value = -415.88830833596717;  // log(2^-600)
};

// Transition tables for both passes. Thread `line` < L handles column line
// (forward: cmax, ec), thread L + i handles row i (backward: rmax, ert).
//   wm (L, L) transitions with -inf where forbidden
//   ec (L, L) exp(wm(i, j) - cmax[j]), 0 in a column of -inf; cmax (L,)
//   ert (L, L) ert[j * L + i] = exp(wm(i, j) - rmax[i]); rmax (L,)
template <typename T>
__global__ void crf_prepare_kernel(EnergyView<T> e, T* wm, T* ec, T* cmax, T* ert, T* rmax) {
  const int L = static_cast<int>(e.L);
  const int lines = ert != nullptr ? 2 * L : L;
  auto w = [&](int i, int j) {
    const int64_t x = static_cast<int64_t>(i) * L + j;
    return (e.allowed != nullptr && !e.allowed[x]) ? -inf<T>() : e.transitions[x];
  };
  for (int line = blockIdx.x * blockDim.x + threadIdx.x; line < lines;
       line += gridDim.x * blockDim.x) {
    if (line < L) {
      const int j = line;
      T m = -inf<T>();
      for (int i = 0; i < L; ++i) {
        const T x = w(i, j);
        wm[i * L + j] = x;
        m = dmax(m, x);
      }
      cmax[j] = m;
      for (int i = 0; i < L; ++i) ec[i * L + j] = m == -inf<T>() ? T(0) : dexp(w(i, j) - m);
    } else {
      const int i = line - L;
      T m = -inf<T>();
      for (int j = 0; j < L; ++j) m = dmax(m, w(i, j));
      rmax[i] = m;
      for (int j = 0; j < L; ++j) ert[j * L + i] = m == -inf<T>() ? T(0) : dexp(w(i, j) - m);
    }
  }
}

// Forward shared memory: [ec (L, L) if in shared memory][cmax (L)] then per
// group A, P, C (L each): exp(log alpha_{t-1}), log alpha_{t-1}, this step.
template <typename T>
__host__ __device__ inline T* crf_forward_smem_layout(Carver& c, int64_t L, int groups,
                                                      bool table_in_smem, T** table, T** cmax) {
  *table = table_in_smem ? c.take<T>(L * L) : nullptr;
  *cmax = c.take<T>(L);
  return c.take<T>(3 * L * groups);
}

template <typename T, typename Group, bool kSmemTable>
__global__ void __launch_bounds__(kMaxThreads, MinBlocks<T>::value)
    crf_forward_kernel(CrfForwardParams<T> p, const T* __restrict__ wm, const T* __restrict__ ec_global,
                       const T* __restrict__ cmax_global) {
  const EnergyView<T>& e = p.energy;
  const int L = static_cast<int>(e.L);
  const int64_t T_ = e.T;
  const T floor = ScaleFloor<T>::value;
  SI_SHARED(ReduceSlot, slots, kReduceSlots);
  SI_DYNAMIC_SHARED(unsigned char, smem);
  Carver carve(smem);
  T *ec_smem, *cmax;
  T* bufs = crf_forward_smem_layout<T>(carve, L, Group::per_block(), kSmemTable, &ec_smem, &cmax);
  if (kSmemTable)
    for (int i = threadIdx.x; i < L * L; i += blockDim.x) ec_smem[i] = ec_global[i];
  for (int i = threadIdx.x; i < L; i += blockDim.x) cmax[i] = cmax_global[i];
  __syncthreads();
  const T* EC = kSmemTable ? ec_smem : ec_global;
  const int64_t b = static_cast<int64_t>(blockIdx.x) * Group::per_block() + Group::index_in_block();
  if (b >= e.B) return;
  Group g(slots);
  T* A = bufs + Group::index_in_block() * 3 * L;
  T* P = A + L;
  T* C = P + L;
  const int64_t n = e.lengths[b];
  const T* em = e.emissions + b * T_ * L;
  T* la = p.log_alpha + b * T_ * L;
  T* shift = p.log_alpha_shift + b * T_;
  // Stores this step relative to its maximum (left as is when that is -inf
  // or 0, as the CPU does) and prepares the next step's A and P.
  double total_shift = 0.0;
  auto finish_step = [&](int64_t t, T local_max) {
    const T s = g.reduce(local_max, MaxOp());
    for (int j = g.rank(); j < L; j += g.size()) {
      const T x = s == -inf<T>() ? C[j] : C[j] - s;
      la[t * L + j] = x;
      P[j] = x;
      A[j] = dexp(x);
    }
    if (g.rank() == 0) shift[t] = s;
    total_shift += static_cast<double>(s);
    g.sync();
  };
  T local = -inf<T>();
  for (int j = g.rank(); j < L; j += g.size()) {
    C[j] = e.start[j] + em[j];
    local = dmax(local, C[j]);
  }
  finish_step(0, local);
  for (int64_t t = 1; t < n; ++t) {
    const T* emt = em + t * L;
    local = -inf<T>();
    for (int j = g.rank(); j < L; j += g.size()) {
      T s = T(0);
      for (int i = 0; i < L; ++i) s = dfma(A[i], EC[i * L + j], s);
      T c = cmax[j] + dlog(s) + emt[j];
      if (!(s >= floor)) {  // underflow: the exact log-sum-exp
        T m = -inf<T>();
        for (int i = 0; i < L; ++i) m = dmax(m, P[i] + wm[i * L + j]);
        if (m == -inf<T>()) {
          c = m;
        } else {
          T acc = T(0);
          for (int i = 0; i < L; ++i) acc += dexp(P[i] + wm[i * L + j] - m);
          c = m + dlog(acc) + emt[j];
        }
      }
      C[j] = c;
      local = dmax(local, c);
    }
    finish_step(t, local);
  }
  Lse<T> part{-inf<T>(), T(0)};
  for (int j = g.rank(); j < L; j += g.size()) part.m = dmax(part.m, P[j] + e.end[j]);
  if (part.m != -inf<T>())
    for (int j = g.rank(); j < L; j += g.size()) part.s += dexp(P[j] + e.end[j] - part.m);
  const Lse<T> z = g.reduce(part, [](Lse<T> a, Lse<T> c) { return lse_merge(a, c); });
  if (g.rank() == 0) p.log_z[b] = static_cast<T>(static_cast<double>(lse_value(z)) + total_shift);
  for (int64_t i = n * L + g.rank(); i < T_ * L; i += g.size()) la[i] = T(0);
  for (int64_t t = n + g.rank(); t < T_; t += g.size()) shift[t] = T(0);
}

// Backward shared memory: [ert (L, L) if in shared memory][rmax (L)][cmax (L)]
// then per group V, A, LB, C (L each).
template <typename T>
__host__ __device__ inline T* crf_backward_smem_layout(Carver& c, int64_t L, int groups,
                                                       bool table_in_smem, T** table, T** rmax,
                                                       T** cmax) {
  *table = table_in_smem ? c.take<T>(L * L) : nullptr;
  *rmax = c.take<T>(L);
  *cmax = c.take<T>(L);
  return c.take<T>(4 * L * groups);
}

// What phase 1 of a backward step reduces at once: max of v_t, max of
// log alpha_{t-1}, and log Z_t = logsumexp(log alpha_t + log beta_t).
template <typename T>
struct BackStepStats {
  T vmax, m1;
  Lse<T> z;
};

// Pair weights left for the pairs kernel, per (b, t): pw (B, T, L) holds
// w_t(j) or, where flagged in pf (B, T, L), the exact log weight v_t(j) + K_t;
// pm (B, T) holds m1, +inf where (b, t) contributes nothing.
template <typename T, typename Group, bool kSmemTable>
__global__ void __launch_bounds__(kMaxThreads, MinBlocks<T>::value)
    crf_backward_kernel(CrfBackwardParams<T> p, const T* __restrict__ wm, const T* __restrict__ ert_global,
                        const T* __restrict__ rmax_global, const T* __restrict__ cmax_global,
                        T* __restrict__ pw_all, uint8_t* __restrict__ pf_all, T* __restrict__ pm_all) {
  const EnergyView<T>& e = p.energy;
  const int L = static_cast<int>(e.L);
  const int64_t T_ = e.T;
  const T floor = ScaleFloor<T>::value;
  const T log_floor = ScaleFloor<T>::log_value;
  SI_SHARED(ReduceSlot, slots, kReduceSlots);
  SI_DYNAMIC_SHARED(unsigned char, smem);
  Carver carve(smem);
  T *ert_smem, *rmax, *cmax;
  T* bufs = crf_backward_smem_layout<T>(carve, L, Group::per_block(), kSmemTable, &ert_smem, &rmax,
                                        &cmax);
  if (kSmemTable)
    for (int i = threadIdx.x; i < L * L; i += blockDim.x) ert_smem[i] = ert_global[i];
  for (int i = threadIdx.x; i < L; i += blockDim.x) {
    rmax[i] = rmax_global[i];
    cmax[i] = cmax_global[i];
  }
  __syncthreads();
  const T* ERT = kSmemTable ? ert_smem : ert_global;
  const int64_t b = static_cast<int64_t>(blockIdx.x) * Group::per_block() + Group::index_in_block();
  if (b >= e.B) return;
  Group g(slots);
  T* V = bufs + Group::index_in_block() * 4 * L;
  T* A = V + L;
  T* LB = A + L;
  T* C = LB + L;
  const int64_t n = e.lengths[b];
  const T gz = p.grad_log_z[b];
  // A row with no allowed labeling, or no incoming gradient, has zero gradients.
  const bool live = p.log_z[b] > -inf<T>() && gz != T(0);
  const T* em = e.emissions + b * T_ * L;
  const T* la = p.log_alpha + b * T_ * L;
  const T* shift = p.log_alpha_shift + b * T_;
  T* ge = p.grad_emissions + b * T_ * L;
  T* pw = pw_all + b * T_ * L;
  uint8_t* pf = pf_all + b * T_ * L;
  T* pm = pm_all + b * T_;
  const auto merge = [](BackStepStats<T> x, BackStepStats<T> y) {
    return BackStepStats<T>{dmax(x.vmax, y.vmax), dmax(x.m1, y.m1), lse_merge(x.z, y.z)};
  };
  // log beta_{n-1} = end, relative to its maximum.
  {
    T local = -inf<T>();
    for (int j = g.rank(); j < L; j += g.size()) local = dmax(local, e.end[j]);
    const T m = g.reduce(local, MaxOp());
    for (int j = g.rank(); j < L; j += g.size())
      LB[j] = (m == -inf<T>() || m == T(0)) ? e.end[j] : e.end[j] - m;
  }
  for (int64_t t = n - 1; t >= 1; --t) {
    const T* emt = em + t * L;
    const T* la_t = la + t * L;
    const T* la_p = la_t - L;
    // Phase 1: v = e_t + log beta_t and the step's three reductions.
    BackStepStats<T> st{-inf<T>(), -inf<T>(), {-inf<T>(), T(0)}};
    for (int j = g.rank(); j < L; j += g.size()) {
      const T v = emt[j] + LB[j];
      V[j] = v;
      st.vmax = dmax(st.vmax, v);
      st.m1 = dmax(st.m1, la_p[j]);
      st.z.m = dmax(st.z.m, la_t[j] + LB[j]);
    }
    if (st.z.m != -inf<T>())
      for (int j = g.rank(); j < L; j += g.size()) st.z.s += dexp(la_t[j] + LB[j] - st.z.m);
    st = g.reduce(st, merge);
    const T z_t = lse_value(st.z);
    // Phase 2: A for the beta step; unary marginals of t; pair weights of (t-1, t).
    const T k_t = -(shift[t] + z_t);
    const T lshift = shift[t] - st.m1;
    for (int j = g.rank(); j < L; j += g.size()) {
      A[j] = st.vmax == -inf<T>() ? T(0) : dexp(V[j] - st.vmax);
      if (!live) {
        ge[t * L + j] = T(0);
        pw[t * L + j] = T(0);
        pf[t * L + j] = 0;
        continue;
      }
      ge[t * L + j] = gz * dexp(la_t[j] + LB[j] - z_t);
      // Where the forward step's S_j fell below the floor the forward pass
      // took the exact route: so do the pairs.
      const T logs = la_t[j] + lshift - cmax[j] - emt[j];
      const bool exact = logs < log_floor && cmax[j] != -inf<T>();
      pw[t * L + j] = exact ? V[j] + k_t : gz * dexp(cmax[j] + V[j] - (-(st.m1 + k_t)));
      pf[t * L + j] = exact ? 1 : 0;
    }
    if (g.rank() == 0) pm[t] = live ? st.m1 : inf<T>();
    g.sync();
    // Phase 3: log beta_{t-1}(i) = vmax + rmax_i + log S_i, S_i = sum_j A_j ert(j, i).
    T local = -inf<T>();
    for (int i = g.rank(); i < L; i += g.size()) {
      T c = -inf<T>();
      if (st.vmax != -inf<T>()) {
        T s = T(0);
        for (int j = 0; j < L; ++j) s = dfma(A[j], ERT[j * L + i], s);
        c = st.vmax + rmax[i] + dlog(s);
        if (!(s >= floor)) {
          const T* row = wm + static_cast<int64_t>(i) * L;
          T m = -inf<T>();
          for (int j = 0; j < L; ++j) m = dmax(m, row[j] + V[j]);
          if (m == -inf<T>()) {
            c = m;
          } else {
            T acc = T(0);
            for (int j = 0; j < L; ++j) acc += dexp(row[j] + V[j] - m);
            c = m + dlog(acc);
          }
        }
      }
      C[i] = c;
      local = dmax(local, c);
    }
    const T m = g.reduce(local, MaxOp());
    for (int i = g.rank(); i < L; i += g.size())
      LB[i] = (m == -inf<T>() || m == T(0)) ? C[i] : C[i] - m;
  }
  // Position 0: unary marginals only.
  Lse<T> z0{-inf<T>(), T(0)};
  for (int j = g.rank(); j < L; j += g.size()) z0.m = dmax(z0.m, la[j] + LB[j]);
  if (z0.m != -inf<T>())
    for (int j = g.rank(); j < L; j += g.size()) z0.s += dexp(la[j] + LB[j] - z0.m);
  const T z = lse_value(g.reduce(z0, [](Lse<T> x, Lse<T> y) { return lse_merge(x, y); }));
  for (int j = g.rank(); j < L; j += g.size()) {
    ge[j] = live ? gz * dexp(la[j] + LB[j] - z) : T(0);
    pw[j] = T(0);
    pf[j] = 0;
  }
  if (g.rank() == 0) pm[0] = inf<T>();
  for (int64_t i = n * L + g.rank(); i < T_ * L; i += g.size()) {
    ge[i] = T(0);
    pw[i] = T(0);
    pf[i] = 0;
  }
  for (int64_t t = n + g.rank(); t < T_; t += g.size()) pm[t] = inf<T>();
}

// grad_transitions(i, j) = ec(i, j) * sum_q a_q(i) w_q(j) + exact terms, over
// pairs q = (b, t) in order: a_q(i) = exp(log_alpha[b, t-1, i] - pm[q]).
// Output tiles of 32 x 32, 256 threads (4 outputs each); pairs staged 32 at a
// time through shared memory. Work item = (tile, split of the pairs); with one
// split the result goes straight to grad_transitions, else to partial
// (splits, L, L), summed in split order by crf_pairs_reduce_kernel.
constexpr int kPairTile = 32;
constexpr int kPairThreads = 256;
constexpr int kPairRows = kPairThreads / kPairTile;  // 8: rows per pass

template <typename T>
__global__ void __launch_bounds__(kPairThreads, MinBlocks<T>::value)
    crf_pairs_kernel(CrfBackwardParams<T> p, const T* __restrict__ wm, const T* __restrict__ ec,
                     const T* __restrict__ pw_all, const uint8_t* __restrict__ pf_all,
                     const T* __restrict__ pm_all, int splits, T* __restrict__ partial) {
  const EnergyView<T>& e = p.energy;
  const int L = static_cast<int>(e.L);
  const int64_t T_ = e.T;
  const int64_t pairs = e.B * T_;
  const int64_t chunks = (pairs + kPairTile - 1) / kPairTile;
  const int tiles_1d = (L + kPairTile - 1) / kPairTile;
  const int64_t items = static_cast<int64_t>(tiles_1d) * tiles_1d * splits;
  SI_SHARED(T, sa, kPairTile * kPairTile);   // a_q(i)
  SI_SHARED(T, sla, kPairTile * kPairTile);  // log alpha_{t-1}(i)
  SI_SHARED(T, sw, kPairTile * kPairTile);   // w_q(j), 0 where exact
  SI_SHARED(T, sq, kPairTile * kPairTile);   // exact log weight, -inf where not
  SI_SHARED(T, sg, kPairTile);               // grad_log_z of the pair's sequence
  const int tx = threadIdx.x % kPairTile, ty = threadIdx.x / kPairTile;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int split = static_cast<int>(item % splits);
    const int64_t tile = item / splits;
    const int i0 = static_cast<int>(tile / tiles_1d) * kPairTile;
    const int j0 = static_cast<int>(tile % tiles_1d) * kPairTile;
    const int64_t c0 = chunks * split / splits, c1 = chunks * (split + 1) / splits;
    const int j = j0 + tx;
    T acc[kPairTile / kPairRows], ex[kPairTile / kPairRows], wij[kPairTile / kPairRows];
#pragma unroll
    for (int r = 0; r < kPairTile / kPairRows; ++r) {
      const int i = i0 + ty + kPairRows * r;
      acc[r] = T(0);
      ex[r] = T(0);
      wij[r] = (i < L && j < L) ? wm[i * L + j] : -inf<T>();
    }
    for (int64_t c = c0; c < c1; ++c) {
      int any = 0;
      for (int x = threadIdx.x; x < kPairTile * kPairTile; x += kPairThreads) {
        const int kk = x / kPairTile, col = x % kPairTile;
        const int64_t q = c * kPairTile + kk;
        const bool pair = q < pairs && q % T_ != 0;
        const int i = i0 + col, jj = j0 + col;
        T a = T(0), lv = -inf<T>(), w = T(0), qv = -inf<T>();
        if (pair && i < L) {
          lv = p.log_alpha[(q - 1) * L + i];
          a = dexp(lv - pm_all[q]);  // pm = +inf where the pair contributes nothing
        }
        if (pair && jj < L) {
          const T v = pw_all[q * L + jj];
          if (pf_all[q * L + jj]) {
            qv = v;
            any = 1;
          } else {
            w = v;
          }
        }
        sa[x] = a;
        sla[x] = lv;
        sw[x] = w;
        sq[x] = qv;
        if (col == 0) sg[kk] = q < pairs ? p.grad_log_z[q / T_] : T(0);
      }
      const int any_exact = __syncthreads_or(any);
#pragma unroll 4
      for (int kk = 0; kk < kPairTile; ++kk) {
        const T w = sw[kk * kPairTile + tx];
#pragma unroll
        for (int r = 0; r < kPairTile / kPairRows; ++r)
          acc[r] = dfma(sa[kk * kPairTile + ty + kPairRows * r], w, acc[r]);
      }
      if (any_exact) {
        for (int kk = 0; kk < kPairTile; ++kk) {
          const T qv = sq[kk * kPairTile + tx];
          if (qv == -inf<T>()) continue;
#pragma unroll
          for (int r = 0; r < kPairTile / kPairRows; ++r)
            ex[r] += sg[kk] * dexp(sla[kk * kPairTile + ty + kPairRows * r] + wij[r] + qv);
        }
      }
      __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < kPairTile / kPairRows; ++r) {
      const int i = i0 + ty + kPairRows * r;
      if (i >= L || j >= L) continue;
      const T v = ec[i * L + j] * acc[r] + ex[r];
      if (splits == 1)
        p.grad_transitions[i * L + j] = v;
      else
        partial[(static_cast<int64_t>(split) * L + i) * L + j] = v;
    }
  }
}

template <typename T>
__global__ void crf_pairs_reduce_kernel(const T* __restrict__ partial, int splits, int64_t n,
                                        T* __restrict__ out) {
  for (int64_t x = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; x < n;
       x += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    T s = T(0);
    for (int k = 0; k < splits; ++k) s += partial[k * n + x];
    out[x] = s;
  }
}

// grad_start and grad_end: sums over b of the unary marginals at 0 and n-1,
// in b order. Zero when B == 0.
template <typename T>
__global__ void crf_ends_kernel(CrfBackwardParams<T> p) {
  const EnergyView<T>& e = p.energy;
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < e.L; j += gridDim.x * blockDim.x) {
    T s = T(0), f = T(0);
    for (int64_t b = 0; b < e.B; ++b) {
      const T* ge = p.grad_emissions + b * e.T * e.L;
      s += ge[j];
      f += ge[(e.lengths[b] - 1) * e.L + j];
    }
    p.grad_start[j] = s;
    p.grad_end[j] = f;
  }
}

}  // namespace cuda
}  // namespace structinf
