// Viterbi on the GPU: best path (k = 1) and k-best paths.
//
// One launch runs the whole time loop. k = 1: the group of threads that owns
// a sequence (a warp for L <= 32, else a block) keeps delta_{t-1} in shared
// memory; thread j computes max_i delta_{t-1}(i) + W(i, j) with a strict >
// in increasing i, so ties go to the lowest label as on the CPU, and stores
// the argmax as a backpointer (uint8 for L <= 256, uint16 above) in the
// workspace. The additions are the CPU's, in the same order, so scores and
// paths agree bit for bit. The final argmax is a warp-shuffle reduction on
// (score, label) pairs, and one thread walks the backpointers.
//
// k > 1: one block per sequence, thread j merges the L sorted predecessor
// lists exactly as the CPU does (same candidates, same order, same tie rule);
// the lists and backpointers live in the workspace. Simple and exact; k-best
// is for analysis, not the hot path.
#pragma once

#include "common.cuh"

namespace structinf {
namespace cuda {

// Forbidden transitions folded in as -inf, once per call: wm (L, L).
template <typename T>
__global__ void viterbi_prepare_kernel(EnergyView<T> e, T* wm) {
  const int64_t n = e.L * e.L;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    wm[i] = (e.allowed != nullptr && !e.allowed[i]) ? -inf<T>() : e.transitions[i];
}

// Shared memory of the k = 1 kernel: [W (L, L) if in shared memory] then per
// group two delta rows (L each).
template <typename T>
__host__ __device__ inline void viterbi_smem_layout(Carver& c, int64_t L, int groups,
                                                    bool w_in_smem, T** w, T** delta) {
  T* wp = w_in_smem ? c.take<T>(L * L) : nullptr;
  T* dp = c.take<T>(2 * L * groups);
  if (w != nullptr) *w = wp;
  if (delta != nullptr) *delta = dp;
}

template <typename T, typename Group, typename BP, bool kSmemW>
__global__ void __launch_bounds__(kMaxThreads, MinBlocks<T>::value)
    viterbi_best_kernel(ViterbiParams<T> p, const T* __restrict__ wm_global, BP* __restrict__ bp_all) {
  const EnergyView<T>& e = p.energy;
  const int L = static_cast<int>(e.L);
  const int64_t T_ = e.T;
  SI_SHARED(ReduceSlot, slots, kReduceSlots);
  SI_DYNAMIC_SHARED(unsigned char, smem);
  Carver carve(smem);
  T* w_smem = nullptr;
  T* delta_all = nullptr;
  viterbi_smem_layout<T>(carve, L, Group::per_block(), kSmemW, &w_smem, &delta_all);
  if (kSmemW) {
    for (int i = threadIdx.x; i < L * L; i += blockDim.x) w_smem[i] = wm_global[i];
    __syncthreads();
  }
  const T* W = kSmemW ? w_smem : wm_global;
  const int64_t b = static_cast<int64_t>(blockIdx.x) * Group::per_block() + Group::index_in_block();
  if (b >= e.B) return;
  Group g(slots);
  const int64_t n = e.lengths[b];
  const T* em = e.emissions + b * T_ * L;
  BP* bp = bp_all + b * T_ * L;
  T* prev = delta_all + Group::index_in_block() * 2 * L;
  T* cur = prev + L;
  for (int j = g.rank(); j < L; j += g.size()) prev[j] = e.start[j] + em[j];
  g.sync();
  for (int64_t t = 1; t < n; ++t) {
    const T* emt = em + t * L;
    for (int j = g.rank(); j < L; j += g.size()) {
      T best = -inf<T>();
      int arg = 0;
      for (int i = 0; i < L; ++i) {
        const T v = prev[i] + W[i * L + j];
        if (v > best) {
          best = v;
          arg = i;
        }
      }
      cur[j] = best + emt[j];
      bp[t * L + j] = static_cast<BP>(arg);
    }
    g.sync();
    T* tmp = prev;
    prev = cur;
    cur = tmp;
  }
  ArgMax<T> local{-inf<T>(), L};
  for (int j = g.rank(); j < L; j += g.size()) local = ArgMaxOp()(local, ArgMax<T>{prev[j] + e.end[j], j});
  const ArgMax<T> best = g.reduce(local, ArgMaxOp());
  int64_t* path = p.paths + b * T_;
  const bool found = best.value != -inf<T>();
  for (int64_t t = found ? n + g.rank() : g.rank(); t < T_; t += g.size()) path[t] = -1;
  if (g.rank() == 0) {
    p.scores[b] = best.value;
    if (found) {
      int y = best.index;
      path[n - 1] = y;
      for (int64_t t = n - 1; t > 0; --t) {
        y = bp[t * L + y];
        path[t - 1] = y;
      }
    }
  }
}

// Inserts (score, code) into the descending list s[0:k], c[0:k] unless it is
// not strictly better than the last entry; equal scores keep earlier entries
// first (the CPU's rule). False when not inserted.
template <typename T>
__device__ __forceinline__ bool topk_insert(T* s, int32_t* c, int k, T score, int32_t code) {
  if (!(score > s[k - 1])) return false;
  int pos = k - 1;
  while (pos > 0 && s[pos - 1] < score) {
    s[pos] = s[pos - 1];
    c[pos] = c[pos - 1];
    --pos;
  }
  s[pos] = score;
  c[pos] = code;
  return true;
}

// k-best workspace per sequence: two (L, k) score lists and (T, L, k) codes.
template <typename T>
__global__ void __launch_bounds__(kMaxThreads, MinBlocks<T>::value)
    viterbi_kbest_kernel(ViterbiParams<T> p, const T* __restrict__ wm, T* __restrict__ lists_all,
                         int32_t* __restrict__ codes_all) {
  const EnergyView<T>& e = p.energy;
  const int L = static_cast<int>(e.L);
  const int64_t T_ = e.T;
  const int k = static_cast<int>(p.k);  // 32-bit: the code arithmetic below divides by k
  const int64_t b = blockIdx.x;
  SI_DYNAMIC_SHARED(unsigned char, smem);
  Carver carve(smem);
  T* fs = carve.take<T>(k);
  int32_t* fc = carve.take<int32_t>(k);
  const int64_t n = e.lengths[b];
  const T* em = e.emissions + b * T_ * L;
  T* prev = lists_all + b * 2 * L * k;
  T* cur = prev + L * k;
  int32_t* codes = codes_all + b * T_ * L * k;
  for (int j = threadIdx.x; j < L; j += blockDim.x)
    for (int r = 0; r < k; ++r) prev[j * k + r] = r == 0 ? e.start[j] + em[j] : -inf<T>();
  __syncthreads();
  for (int64_t t = 1; t < n; ++t) {
    for (int j = threadIdx.x; j < L; j += blockDim.x) {
      T* s = cur + j * k;
      int32_t* c = codes + (t * L + j) * k;
      for (int r = 0; r < k; ++r) {
        s[r] = -inf<T>();
        c[r] = -1;
      }
      for (int i = 0; i < L; ++i)
        for (int r = 0; r < k; ++r)
          if (!topk_insert(s, c, k, prev[i * k + r] + wm[i * L + j], static_cast<int32_t>(i * k + r)))
            break;  // the list of i is sorted: nothing later can enter
      for (int r = 0; r < k; ++r)
        if (c[r] >= 0) s[r] += em[t * L + j];
    }
    __syncthreads();
    T* tmp = prev;
    prev = cur;
    cur = tmp;
  }
  if (threadIdx.x == 0) {
    for (int r = 0; r < k; ++r) {
      fs[r] = -inf<T>();
      fc[r] = -1;
    }
    for (int j = 0; j < L; ++j)
      for (int r = 0; r < k; ++r)
        if (!topk_insert(fs, fc, k, prev[j * k + r] + e.end[j], static_cast<int32_t>(j * k + r)))
          break;
  }
  __syncthreads();
  for (int q = threadIdx.x; q < k; q += blockDim.x) {
    int64_t* path = p.paths + (b * k + q) * T_;
    for (int64_t t = 0; t < T_; ++t) path[t] = -1;
    if (fc[q] < 0 || fs[q] == -inf<T>()) {
      p.scores[b * k + q] = -inf<T>();
      continue;
    }
    p.scores[b * k + q] = fs[q];
    int j = fc[q] / k, r = fc[q] % k;
    path[n - 1] = j;
    for (int64_t t = n - 1; t > 0; --t) {
      const int32_t code = codes[(t * L + j) * k + r];
      j = code / k;
      r = code % k;
      path[t - 1] = j;
    }
  }
}

}  // namespace cuda
}  // namespace structinf
