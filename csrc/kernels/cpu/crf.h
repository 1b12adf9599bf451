// CRF forward-backward on the CPU: log Z and its gradients (the marginals).
//
// Values are stored in log space (log alpha, log beta), as in the textbook
// algorithm, so nothing overflows at any length or score scale. Each step's
// log-sum-exp over predecessors is evaluated as a matrix product of
// exponentials, which runs on the FMA units instead of L^2 exponentials:
//
//   alpha_t(j) = m + c_j + log S_j + e_t(j),
//   S_j = sum_i exp(alpha_{t-1}(i) - m) * exp(W(i, j) - c_j),
//   m = max_i alpha_{t-1}(i),  c_j = max_i W(i, j).
//
// Every factor is <= 1, so S_j cannot overflow, and when S_j >= kScaleFloor
// the terms that underflowed carry a relative weight below L * 2^-126 /
// kScaleFloor (about 1e-14 in float32): S_j, hence alpha_t(j), is accurate to
// rounding. When S_j < kScaleFloor (a label reachable only through paths far
// below the best one, or forbidden transitions) that entry is recomputed by
// an exact log-sum-exp. The result is the log-space algorithm's answer, at
// the cost of a matrix product. The backward pass runs the same scheme on
// beta (with row maxima) and accumulates the pairwise marginals of the
// transition scores as one more matrix product (A^T W over (b, t) pairs).
#pragma once

#include <atomic>
#include <cmath>

#include "common.h"
#include "gemm.h"

namespace structinf {
namespace cpu {
namespace SI_ISA_NS {

template <typename T>
struct ScaleFloor;
template <>
struct ScaleFloor<float> {
  static constexpr float value = 0x1p-80f;
};
template <>
struct ScaleFloor<double> {
  static constexpr double value = 0x1p-600;
};

template <typename T>
struct CrfPrep {
  int64_t L = 0, ld = 0;
  Buffer<T> wm;    // (L, L) transitions with -inf where forbidden
  Buffer<T> wmt;   // (L, L) its transpose
  Buffer<T> cmax;  // (ld) column maxima of wm (0 in padding)
  Buffer<T> ec;    // (L, ld) exp(wm(i, j) - cmax[j]); 0 in padding and empty columns
  Buffer<T> rmax;  // (ld) row maxima of wm (backward only)
  Buffer<T> ert;   // (L, ld) ert[j * ld + i] = exp(wm(i, j) - rmax[i]) (backward only)
};

// For each line k of the (L, L) matrix src: mx[k] = its maximum, and column k
// of out (L, ld) = exp(line - mx[k]) (zero for a line of -inf, and in padding).
template <typename T>
void exp_lines_as_columns(const T* src, int64_t L, Buffer<T>& mx, Buffer<T>& out, int64_t ld) {
  mx.resize(ld);
  mx.fill(T(0), ld);
  out.resize(L * ld);
  out.fill(T(0), L * ld);
  for (int64_t k = 0; k < L; ++k) {
    const T* line = src + k * L;
    const T m = row_max(line, L);
    mx[k] = m;
    if (m == -kInf<T>) continue;
    for (int64_t i = 0; i < L; ++i) out[i * ld + k] = sexp(line[i] - m);
  }
}

template <typename T>
CrfPrep<T> crf_prepare(const EnergyView<T>& e, bool for_backward) {
  CrfPrep<T> pr;
  const int64_t L = e.L, ld = round_up(L, kLanes<T>);
  pr.L = L;
  pr.ld = ld;
  pr.wm.resize(L * L);
  pr.wmt.resize(L * L);
  masked_transitions(e, pr.wm.data());
  for (int64_t i = 0; i < L; ++i)
    for (int64_t j = 0; j < L; ++j) pr.wmt[j * L + i] = pr.wm[i * L + j];
  // Column-normalised exponentials for the forward pass (lines of wm^T),
  // row-normalised ones, transposed, for the backward pass (lines of wm).
  exp_lines_as_columns(pr.wmt.data(), L, pr.cmax, pr.ec, ld);
  if (for_backward) exp_lines_as_columns(pr.wm.data(), L, pr.rmax, pr.ert, ld);
  return pr;
}

// Subtracts the maximum of x[0:n] in place and returns it; a row of -inf is
// left as it is (and -inf returned).
template <typename T>
inline T subtract_max(T* x, int64_t n) {
  const T m = row_max(x, n);
  if (m == -kInf<T> || m == T(0)) return m;
  for (int64_t j = 0; j < n; ++j) x[j] -= m;
  return m;
}

template <typename T>
void crf_forward_chunk(const CrfForwardParams<T>& p, const CrfPrep<T>& pr, int64_t b0, int64_t b1,
                       std::atomic<bool>& bad_seen) {
  constexpr int64_t kRowBlock = 32;
  const EnergyView<T>& e = p.energy;
  const int64_t L = e.L, T_ = e.T, ld = pr.ld;
  const T floor = ScaleFloor<T>::value;
  const std::vector<int64_t> order = order_by_length(e.lengths, b0, b1);
  const int64_t n_rows = b1 - b0;
  Buffer<T> A(kRowBlock * ld), S(kRowBlock * ld), prev_max(kRowBlock), tmp(L);
  bool bad = false;
  for (int64_t r0 = 0; r0 < n_rows; r0 += kRowBlock) {
    const int64_t R = std::min(kRowBlock, n_rows - r0);
    const int64_t* rows = order.data() + r0;
    const int64_t t_max = e.lengths[rows[0]];
    for (int64_t r = 0; r < R; ++r) {
      const int64_t b = rows[r], n = e.lengths[b];
      const T* em = e.emissions + b * T_ * L;
      T* la = p.log_alpha + b * T_ * L;
      T* shift = p.log_alpha_shift + b * T_;
      for (int64_t j = 0; j < L; ++j) la[j] = e.start[j] + em[j];
      shift[0] = subtract_max(la, L);
      std::fill(la + n * L, la + T_ * L, T(0));
      std::fill(shift + n, shift + T_, T(0));
      bad |= bad_scores(em, L);
    }
    for (int64_t t = 1; t < t_max; ++t) {
      const int64_t na = active_prefix(e.lengths, rows, R, t);
      for (int64_t r = 0; r < na; ++r) {
        const T* prev = p.log_alpha + (rows[r] * T_ + t - 1) * L;
        prev_max[r] = row_max(prev, L);  // 0, or -inf once no labeling is left
        exp_shifted(prev, L, prev_max[r], A.data() + r * ld, ld);
      }
      gemm<T, Semiring::kSum>(na, ld, L, A.data(), ld, 1, pr.ec.data(), ld, S.data(), ld, false);
      for (int64_t r = 0; r < na; ++r) {
        const int64_t b = rows[r], off = (b * T_ + t) * L;
        const T* em = e.emissions + off;
        const T* prev = p.log_alpha + off - L;
        T* cur = p.log_alpha + off;
        bad |= bad_scores(em, L);
        if (prev_max[r] == -kInf<T>) {  // no labeling of finite score reaches t
          std::fill(cur, cur + L, -kInf<T>);
          p.log_alpha_shift[b * T_ + t] = -kInf<T>;
          continue;
        }
        const T* s = S.data() + r * ld;
        log_combine(s, pr.cmax.data(), prev_max[r], em, L, cur);
        if (any_below(s, L, floor))
          for (int64_t j = 0; j < L; ++j) {
            if (s[j] >= floor) continue;
            const T* col = pr.wmt.data() + j * L;
            for (int64_t i = 0; i < L; ++i) tmp[i] = prev[i] + col[i];
            cur[j] = log_sum_exp(tmp.data(), L) + em[j];
          }
        p.log_alpha_shift[b * T_ + t] = subtract_max(cur, L);
      }
    }
    for (int64_t r = 0; r < R; ++r) {
      const int64_t b = rows[r], n = e.lengths[b];
      const T* la = p.log_alpha + (b * T_ + n - 1) * L;
      const T* shift = p.log_alpha_shift + b * T_;
      for (int64_t j = 0; j < L; ++j) tmp[j] = la[j] + e.end[j];
      double log_z = static_cast<double>(log_sum_exp(tmp.data(), L));
      for (int64_t t = 0; t < n; ++t) log_z += static_cast<double>(shift[t]);
      p.log_z[b] = static_cast<T>(log_z);
    }
  }
  if (bad) bad_seen.store(true, std::memory_order_relaxed);
}

template <typename T>
Status crf_forward_impl(const CrfForwardParams<T>& p, const Exec& exec) {
  const EnergyView<T>& e = p.energy;
  if (e.B == 0 || e.T == 0) return Status::kOk;
  const Status s = check_scores(e, &bad_scores<T>);
  if (s != Status::kOk) return s;
  const CrfPrep<T> pr = crf_prepare(e, false);
  std::atomic<bool> bad{false};
  exec.parallel_for(e.B, grain_for(e.T * e.L * e.L), [&](int64_t b0, int64_t b1) {
    crf_forward_chunk(p, pr, b0, b1, bad);
  });
  return bad.load() ? Status::kNanEmissions : Status::kOk;
}

// Per-task partial sums of the parameter gradients, reduced at the end.
template <typename T>
struct CrfGradPartial {
  Buffer<T> gacc;    // (L, ld) sum over (b, t) of a(i) w(j), to be scaled by ec
  Buffer<T> gexact;  // (L, L) exact contributions of entries below the floor
  Buffer<T> gstart;  // (L,)
  Buffer<T> gend;    // (L,)
};

// The backward pass needs no global offsets: at each position t,
// Z_t = logsumexp_j(log_alpha[t, j] + log_beta[t, j]) (both stored relative)
// normalises the unary marginals, and K_t = -(shift_t + Z_t) the pairwise
// marginals of (t-1, t). Every exponent is then a difference of quantities of
// modest size, so float32 marginals stay accurate at any length.
//
// One sweep from t = T-1 down to 1 does, per position: the beta step (a
// matrix product over the block's rows), the unary marginals of t (written
// over log beta_t, which is no longer needed), and the pairs (t-1, t) for the
// transition gradient, accumulated as a matrix product every kPairs pairs.

template <typename T>
void crf_backward_chunk(const CrfBackwardParams<T>& p, const CrfPrep<T>& pr, int64_t b0,
                        int64_t b1, CrfGradPartial<T>& part) {
  constexpr int64_t kRowBlock = 32;
  constexpr int64_t kPairs = 256;
  const EnergyView<T>& e = p.energy;
  const int64_t L = e.L, T_ = e.T, ld = pr.ld;
  const T floor = ScaleFloor<T>::value;
  const T log_floor = std::log(floor);
  const std::vector<int64_t> order = order_by_length(e.lengths, b0, b1);
  const int64_t n_rows = b1 - b0;
  Buffer<T> A(kRowBlock * ld), S(kRowBlock * ld), V(kRowBlock * ld), vmax_(kRowBlock), tmp(ld);
  Buffer<T> PA(kPairs * ld), PW(kPairs * ld), logs(ld);
  int64_t np = 0;
  auto flush = [&]() {
    gemm<T, Semiring::kSum>(L, ld, np, PA.data(), 1, ld, PW.data(), ld, part.gacc.data(), ld,
                            true);
    np = 0;
  };
  // A row takes part when its log Z is finite and its incoming gradient is
  // nonzero; otherwise its gradients are zero (a row with no allowed labeling
  // has no marginals).
  auto live = [&](int64_t b) {
    return p.log_z[b] > -kInf<T> && p.grad_log_z[b] != T(0);
  };
  // Replaces log beta_t (in `row`) by g * P(y_t = j); returns log Z_t.
  auto unary = [&](const T* la, T* row, T g) {
    for (int64_t j = 0; j < L; ++j) tmp[j] = la[j] + row[j];
    const T z = log_sum_exp(tmp.data(), L);
    scaled_exp_sum(la, row, z, g, L, row);
    return z;
  };
  for (int64_t r0 = 0; r0 < n_rows; r0 += kRowBlock) {
    const int64_t R = std::min(kRowBlock, n_rows - r0);
    const int64_t* rows = order.data() + r0;
    const int64_t t_max = e.lengths[rows[0]];
    // Relative log beta lives in grad_emissions until it becomes marginals.
    for (int64_t r = 0; r < R; ++r) {
      const int64_t b = rows[r], n = e.lengths[b];
      T* lb = p.grad_emissions + (b * T_ + n - 1) * L;
      std::copy(e.end, e.end + L, lb);
      subtract_max(lb, L);
    }
    for (int64_t t = t_max - 1; t >= 1; --t) {
      const int64_t na = active_prefix(e.lengths, rows, R, t);
      for (int64_t r = 0; r < na; ++r) {
        const int64_t off = (rows[r] * T_ + t) * L;
        const T* em = e.emissions + off;
        const T* lb = p.grad_emissions + off;
        T* v = V.data() + r * ld;
        for (int64_t j = 0; j < L; ++j) v[j] = em[j] + lb[j];
        vmax_[r] = row_max(v, L);
        exp_shifted(v, L, vmax_[r], A.data() + r * ld, ld);
      }
      gemm<T, Semiring::kSum>(na, ld, L, A.data(), ld, 1, pr.ert.data(), ld, S.data(), ld, false);
      for (int64_t r = 0; r < na; ++r) {
        const int64_t b = rows[r];
        const int64_t off = (b * T_ + t) * L;
        const T* v = V.data() + r * ld;
        T* lbp = p.grad_emissions + off - L;
        if (vmax_[r] == -kInf<T>) {
          std::fill(lbp, lbp + L, -kInf<T>);
        } else {
          const T* s = S.data() + r * ld;
          log_combine(s, pr.rmax.data(), vmax_[r], static_cast<const T*>(nullptr), L, lbp);
          if (any_below(s, L, floor))
            for (int64_t i = 0; i < L; ++i) {
              if (s[i] >= floor) continue;
              const T* row = pr.wm.data() + i * L;
              for (int64_t j = 0; j < L; ++j) tmp[j] = row[j] + v[j];
              lbp[i] = log_sum_exp(tmp.data(), L);
            }
          subtract_max(lbp, L);
        }
        T* gt = p.grad_emissions + off;
        if (!live(b)) {
          std::fill(gt, gt + L, T(0));
          continue;
        }
        const T g = p.grad_log_z[b];
        const T* la_prev = p.log_alpha + off - L;
        const T* la_cur = p.log_alpha + off;
        const T z_t = unary(la_cur, gt, g);
        // Pairwise marginals of (t-1, t): xi(i, j) = a(i) * ec(i, j) * w(j),
        // a(i) = exp(la_prev(i) - m1), w(j) = g exp(m1 + c_j + v_j + K_t).
        const T k_t = -(p.log_alpha_shift[b * T_ + t] + z_t);
        const T m1 = row_max(la_prev, L);
        exp_shifted(la_prev, L, m1, PA.data() + np * ld, ld);
        T* w = PW.data() + np * ld;
        scaled_exp_sum(pr.cmax.data(), v, -(m1 + k_t), g, L, w);
        std::fill(w + L, w + ld, T(0));
        // Where the forward step's S_j = exp(la_cur + shift - m1 - c - e) fell
        // below the floor, the forward pass took the exact route: so do we.
        const T* em = e.emissions + off;
        const T lshift = p.log_alpha_shift[b * T_ + t] - m1;
        for (int64_t j = 0; j < L; ++j) logs[j] = la_cur[j] + lshift - pr.cmax[j] - em[j];
        for (int64_t j = L; j < ld; ++j) logs[j] = T(0);
        if (any_below(logs.data(), L, log_floor))
          for (int64_t j = 0; j < L; ++j) {
            if (!(logs[j] < log_floor) || pr.cmax[j] == -kInf<T>) continue;
            w[j] = T(0);
            const T base = v[j] + k_t;
            for (int64_t i = 0; i < L; ++i)
              part.gexact[i * L + j] += g * sexp(la_prev[i] + pr.wm[i * L + j] + base);
          }
        if (++np == kPairs) flush();
      }
    }
    if (np > 0) flush();
    // Position 0 (and padding), then the start / end sums.
    for (int64_t r = 0; r < R; ++r) {
      const int64_t b = rows[r], n = e.lengths[b];
      T* ge = p.grad_emissions + b * T_ * L;
      std::fill(ge + n * L, ge + T_ * L, T(0));
      if (!live(b)) {
        std::fill(ge, ge + L, T(0));
        continue;
      }
      unary(p.log_alpha + b * T_ * L, ge, p.grad_log_z[b]);
      for (int64_t j = 0; j < L; ++j) {
        part.gstart[j] += ge[j];
        part.gend[j] += ge[(n - 1) * L + j];
      }
    }
  }
}

template <typename T>
Status crf_backward_impl(const CrfBackwardParams<T>& p, const Exec& exec) {
  const EnergyView<T>& e = p.energy;
  const int64_t L = e.L;
  std::fill(p.grad_transitions, p.grad_transitions + L * L, T(0));
  std::fill(p.grad_start, p.grad_start + L, T(0));
  std::fill(p.grad_end, p.grad_end + L, T(0));
  if (e.B == 0 || e.T == 0) return Status::kOk;
  const Status s = check_scores(e, &bad_scores<T>);
  if (s != Status::kOk) return s;
  const CrfPrep<T> pr = crf_prepare(e, true);
  const int64_t ld = pr.ld;
  // Fixed chunks, one partial sum each, reduced in order: the result does not
  // depend on how the thread pool schedules them.
  const int64_t n_chunks = std::max<int64_t>(1, std::min<int64_t>(e.B, exec.num_threads));
  std::vector<CrfGradPartial<T>> parts(static_cast<size_t>(n_chunks));
  const int64_t grain = e.B * e.T * L * L < (1 << 16) ? n_chunks : 1;
  exec.parallel_for(n_chunks, grain, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      CrfGradPartial<T>& part = parts[static_cast<size_t>(c)];
      part.gacc.resize(L * ld);
      part.gacc.fill(T(0), L * ld);
      part.gexact.resize(L * L);
      part.gexact.fill(T(0), L * L);
      part.gstart.resize(L);
      part.gstart.fill(T(0), L);
      part.gend.resize(L);
      part.gend.fill(T(0), L);
      crf_backward_chunk(p, pr, c * e.B / n_chunks, (c + 1) * e.B / n_chunks, part);
    }
  });
  for (const CrfGradPartial<T>& part : parts) {
    for (int64_t i = 0; i < L; ++i)
      for (int64_t j = 0; j < L; ++j)
        p.grad_transitions[i * L + j] +=
            pr.ec[i * ld + j] * part.gacc[i * ld + j] + part.gexact[i * L + j];
    for (int64_t j = 0; j < L; ++j) {
      p.grad_start[j] += part.gstart[j];
      p.grad_end[j] += part.gend[j];
    }
  }
  return Status::kOk;
}

}  // namespace SI_ISA_NS
}  // namespace cpu
}  // namespace structinf
