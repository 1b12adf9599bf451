// Viterbi on the CPU: best path (k = 1) and k-best paths.
//
// k = 1: the forward pass is a max-plus matrix product per time step over a
// block of sequences (gemm.h), keeping only the scores delta_t (no
// backpointers). The backtrace recomputes delta_{t-1}(i) + W(i, y_t) for the
// one label on the path: the same additions as the forward pass, so the
// lowest-index argmax it finds is exactly the backpointer the forward pass
// would have stored. That halves the inner loop (add + max, no compare and
// blend of indices) for O(T * L) extra work per sequence.
//
// k > 1: per (t, j) a top-k list merged from the L predecessor lists, each
// sorted, with ties ordered by (predecessor label, rank). Scalar; k-best is
// for analysis, not the hot path.
#pragma once

#include <atomic>

#include "common.h"
#include "gemm.h"

namespace structinf {
namespace cpu {
namespace SI_ISA_NS {

template <typename T>
struct ViterbiPrep {
  int64_t L = 0, ld = 0;
  Buffer<T> w;   // (L, ld) masked transitions; padded columns -inf
  Buffer<T> wt;  // (L, L) transpose of the masked transitions
};

template <typename T>
ViterbiPrep<T> viterbi_prepare(const EnergyView<T>& e) {
  ViterbiPrep<T> prep;
  const int64_t L = e.L;
  prep.L = L;
  prep.ld = round_up(L, kLanes<T>);
  prep.w.resize(L * prep.ld);
  prep.wt.resize(L * L);
  Buffer<T> wm(L * L);
  masked_transitions(e, wm.data());
  for (int64_t i = 0; i < L; ++i) {
    for (int64_t j = 0; j < prep.ld; ++j) prep.w[i * prep.ld + j] = j < L ? wm[i * L + j] : -kInf<T>;
    for (int64_t j = 0; j < L; ++j) prep.wt[j * L + i] = wm[i * L + j];
  }
  return prep;
}

// Lowest index attaining the maximum of x[0:n].
template <typename T>
inline int64_t argmax_first(const T* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

template <typename T>
void viterbi_best_chunk(const ViterbiParams<T>& p, const ViterbiPrep<T>& prep, int64_t b0,
                        int64_t b1, std::atomic<bool>& nan_seen) {
  constexpr int64_t kRowBlock = 32;
  const EnergyView<T>& e = p.energy;
  const int64_t L = e.L, T_ = e.T, ld = prep.ld;
  const std::vector<int64_t> order = order_by_length(e.lengths, b0, b1);
  const int64_t n_rows = b1 - b0;
  Buffer<T> delta, cand(L);
  bool nan_here = false;
  for (int64_t r0 = 0; r0 < n_rows; r0 += kRowBlock) {
    const int64_t R = std::min(kRowBlock, n_rows - r0);
    const int64_t* rows = order.data() + r0;
    const int64_t t_max = e.lengths[rows[0]];
    const int64_t rs = t_max * ld;  // row stride of delta: (R, t_max, ld)
    delta.resize(R * rs);
    for (int64_t r = 0; r < R; ++r) {
      const T* em = e.emissions + rows[r] * T_ * L;
      T* d = delta.data() + r * rs;
      for (int64_t j = 0; j < ld; ++j) d[j] = j < L ? e.start[j] + em[j] : -kInf<T>;
      nan_here |= any_nan(em, L);
    }
    for (int64_t t = 1; t < t_max; ++t) {
      const int64_t na = active_prefix(e.lengths, rows, R, t);
      T* prev = delta.data() + (t - 1) * ld;
      T* cur = delta.data() + t * ld;
      gemm<T, Semiring::kMax>(na, ld, L, prev, rs, 1, prep.w.data(), ld, cur, rs, false);
      for (int64_t r = 0; r < na; ++r) {
        const T* em = e.emissions + (rows[r] * T_ + t) * L;
        T* d = cur + r * rs;
        for (int64_t j = 0; j < L; ++j) d[j] += em[j];
        nan_here |= any_nan(em, L);
      }
    }
    for (int64_t r = 0; r < R; ++r) {
      const int64_t b = rows[r], n = e.lengths[b];
      int64_t* path = p.paths + b * T_;  // k == 1
      for (int64_t t = n; t < T_; ++t) path[t] = -1;
      const T* d = delta.data() + r * rs;
      for (int64_t j = 0; j < L; ++j) cand[j] = d[(n - 1) * ld + j] + e.end[j];
      int64_t y = argmax_first(cand.data(), L);
      const T score = cand[y];
      p.scores[b] = score;
      if (score == -kInf<T>) {
        for (int64_t t = 0; t < n; ++t) path[t] = -1;
        continue;
      }
      path[n - 1] = y;
      for (int64_t t = n - 1; t > 0; --t) {
        const T* prev = d + (t - 1) * ld;
        const T* col = prep.wt.data() + y * L;
        for (int64_t i = 0; i < L; ++i) cand[i] = prev[i] + col[i];
        y = argmax_first(cand.data(), L);
        path[t - 1] = y;
      }
    }
  }
  if (nan_here) nan_seen.store(true, std::memory_order_relaxed);
}

// Inserts (score, code) into the descending list s[0:k], c[0:k] unless it is
// not strictly better than the last entry; equal scores keep earlier entries
// first. Returns false when the candidate was not inserted.
template <typename T>
inline bool topk_insert(T* s, int32_t* c, int64_t k, T score, int32_t code) {
  if (!(score > s[k - 1])) return false;
  int64_t pos = k - 1;
  while (pos > 0 && s[pos - 1] < score) {
    s[pos] = s[pos - 1];
    c[pos] = c[pos - 1];
    --pos;
  }
  s[pos] = score;
  c[pos] = code;
  return true;
}

template <typename T>
void viterbi_kbest_chunk(const ViterbiParams<T>& p, const ViterbiPrep<T>& prep, int64_t b0,
                         int64_t b1, std::atomic<bool>& nan_seen) {
  const EnergyView<T>& e = p.energy;
  const int64_t L = e.L, T_ = e.T, k = p.k;
  std::vector<T> sc;
  std::vector<int32_t> bp;
  std::vector<T> fs(static_cast<size_t>(k));
  std::vector<int32_t> fc(static_cast<size_t>(k));
  bool nan_here = false;
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t n = e.lengths[b];
    const T* em = e.emissions + b * T_ * L;
    nan_here |= any_nan(em, n * L);
    sc.assign(static_cast<size_t>(n * L * k), -kInf<T>);
    bp.assign(static_cast<size_t>(n * L * k), -1);
    for (int64_t j = 0; j < L; ++j) sc[j * k] = e.start[j] + em[j];
    for (int64_t t = 1; t < n; ++t) {
      const T* prev = sc.data() + (t - 1) * L * k;
      for (int64_t j = 0; j < L; ++j) {
        T* s = sc.data() + (t * L + j) * k;
        int32_t* c = bp.data() + (t * L + j) * k;
        const T* col = prep.wt.data() + j * L;
        for (int64_t i = 0; i < L; ++i)
          for (int64_t r = 0; r < k; ++r)
            if (!topk_insert(s, c, k, prev[i * k + r] + col[i], static_cast<int32_t>(i * k + r)))
              break;  // the list of i is sorted: nothing later can enter
        for (int64_t r = 0; r < k; ++r)
          if (c[r] >= 0) s[r] += em[t * L + j];
      }
    }
    std::fill(fs.begin(), fs.end(), -kInf<T>);
    std::fill(fc.begin(), fc.end(), -1);
    const T* last = sc.data() + (n - 1) * L * k;
    for (int64_t j = 0; j < L; ++j)
      for (int64_t r = 0; r < k; ++r)
        if (!topk_insert(fs.data(), fc.data(), k, last[j * k + r] + e.end[j],
                         static_cast<int32_t>(j * k + r)))
          break;
    for (int64_t q = 0; q < k; ++q) {
      int64_t* path = p.paths + (b * k + q) * T_;
      std::fill(path, path + T_, int64_t(-1));
      p.scores[b * k + q] = fs[q];
      if (fc[q] < 0 || fs[q] == -kInf<T>) {
        p.scores[b * k + q] = -kInf<T>;
        continue;
      }
      int64_t j = fc[q] / k, r = fc[q] % k;
      path[n - 1] = j;
      for (int64_t t = n - 1; t > 0; --t) {
        const int32_t code = bp[(t * L + j) * k + r];
        j = code / k;
        r = code % k;
        path[t - 1] = j;
      }
    }
  }
  if (nan_here) nan_seen.store(true, std::memory_order_relaxed);
}

template <typename T>
Status viterbi_impl(const ViterbiParams<T>& p, const Exec& exec) {
  const EnergyView<T>& e = p.energy;
  if (e.B == 0 || e.T == 0) return Status::kOk;
  const Status s = check_scores(e, &any_nan<T>);
  if (s != Status::kOk) return s;
  const ViterbiPrep<T> prep = viterbi_prepare(e);
  std::atomic<bool> nan_seen{false};
  const int64_t grain = grain_for(e.T * e.L * e.L * p.k);
  exec.parallel_for(e.B, grain, [&](int64_t b0, int64_t b1) {
    if (p.k == 1)
      viterbi_best_chunk(p, prep, b0, b1, nan_seen);
    else
      viterbi_kbest_chunk(p, prep, b0, b1, nan_seen);
  });
  return nan_seen.load() ? Status::kNanEmissions : Status::kOk;
}

}  // namespace SI_ISA_NS
}  // namespace cpu
}  // namespace structinf
