// The relaxed energy on the CPU: the fused gradient-descent steps (paper
// section 3) and the differentiable energy with its backward (below).
//
// Steps: sequences are independent, so each one runs all its steps while its
// rows stay in cache; a training loop of N steps is one call. Per step and
// sequence: p_t = softmax(z_t); E = -score(p); d_t = dE/dp_t needs W p_{t+1}
// and W^T p_{t-1}, which come from one matrix product P [W^T | W] over the
// whole sequence (its rows stay in cache); then the softmax Jacobian,
// the momentum update v = mu v + g and z -= lr_b v, written in place. Logits,
// velocity and emissions are each read once and the first two written once.
#pragma once

#include <atomic>

#include "common.h"
#include "gemm.h"

namespace structinf {
namespace cpu {
namespace SI_ISA_NS {

template <typename T>
struct RelaxedPrep {
  int64_t L = 0, ld = 0;
  Buffer<T> bm;  // (L, 2 ld): row k = [W^T row k | W row k], zero padded
};

template <typename T>
RelaxedPrep<T> relaxed_prepare(const EnergyView<T>& e) {
  RelaxedPrep<T> pr;
  const int64_t L = e.L, ld = round_up(L, kLanes<T>);
  pr.L = L;
  pr.ld = ld;
  pr.bm.resize(L * 2 * ld);
  pr.bm.fill(T(0), L * 2 * ld);
  for (int64_t k = 0; k < L; ++k)
    for (int64_t j = 0; j < L; ++j) {
      pr.bm[k * 2 * ld + j] = e.transitions[j * L + k];
      pr.bm[k * 2 * ld + ld + j] = e.transitions[k * L + j];
    }
  return pr;
}

template <typename T>
inline T dot(const T* a, const T* b, int64_t n) {
  constexpr int W = kLanes<T>;
  Vec<T> acc = {};
  int64_t j = 0;
  for (; j + W <= n; j += W) acc += vload(a + j) * vload(b + j);
  T s = hsum(acc);
  for (; j < n; ++j) s += a[j] * b[j];
  return s;
}

template <typename T>
inline T sum(const T* a, int64_t n) {
  constexpr int W = kLanes<T>;
  Vec<T> acc = {};
  int64_t j = 0;
  for (; j + W <= n; j += W) acc += vload(a + j);
  T s = hsum(acc);
  for (; j < n; ++j) s += a[j];
  return s;
}

enum RelaxedBad : int { kBadLogits = 1, kBadVelocity = 2, kBadEmissions = 4, kBadLr = 8 };

// P[t, :] = softmax(z[t, :]) for t < n, in rows of ld (zero beyond L). False
// when some row has no finite maximum (all -inf): it has no distribution.
template <typename T>
inline bool softmax_rows(const T* z, int64_t n, int64_t L, T* P, int64_t ld) {
  bool ok = true;
  for (int64_t t = 0; t < n; ++t) {
    const T* zt = z + t * L;
    T* pt = P + t * ld;
    const T m = row_max(zt, L);
    ok &= m > -kInf<T>;
    exp_shifted(zt, L, m, pt, ld);
    const T inv = T(1) / sum(pt, L);
    for (int64_t j = 0; j < L; ++j) pt[j] *= inv;
  }
  return ok;
}

// Position t of a sequence: adds its share of the score,
//   p_t . (e_t + W^T p_{t-1} [t > 0] + start [t = 0] + end [t = n-1]),
// to `score` and, when d is not null, writes the score's gradient there,
//   d = dscore/dp_t = e_t + W p_{t+1} [t+1 < n] + W^T p_{t-1} [t > 0]
//                     + start [t = 0] + end [t = n-1].
// wtp_prev = W^T p_{t-1}, wp_next = W p_{t+1}, start and end are null where
// their term does not apply (wp_next is read only for d).
template <typename T>
inline void relaxed_position(const T* pt, const T* et, const T* wtp_prev, const T* wp_next,
                             const T* start, const T* end, int64_t L, T* d, double& score) {
  if (d != nullptr) {
    for (int64_t j = 0; j < L; ++j) d[j] = et[j];
    if (wp_next != nullptr)
      for (int64_t j = 0; j < L; ++j) d[j] += wp_next[j];
  }
  score += static_cast<double>(dot(pt, et, L));
  if (wtp_prev != nullptr) {
    if (d != nullptr)
      for (int64_t j = 0; j < L; ++j) d[j] += wtp_prev[j];
    score += static_cast<double>(dot(pt, wtp_prev, L));
  }
  if (start != nullptr) {
    if (d != nullptr)
      for (int64_t j = 0; j < L; ++j) d[j] += start[j];
    score += static_cast<double>(dot(pt, start, L));
  }
  if (end != nullptr) {
    if (d != nullptr)
      for (int64_t j = 0; j < L; ++j) d[j] += end[j];
    score += static_cast<double>(dot(pt, end, L));
  }
}

template <typename T>
void relaxed_chunk(const RelaxedStepParams<T>& p, const RelaxedPrep<T>& pr, int64_t b0, int64_t b1,
                   std::atomic<int>& bad_seen) {
  const EnergyView<T>& e = p.energy;
  const int64_t L = e.L, T_ = e.T, ld = pr.ld, ld2 = 2 * ld;
  const T mu = p.momentum;
  Buffer<T> P, Q, d(ld);
  int bad = 0;
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t n = e.lengths[b];
    T* z = p.logits + b * T_ * L;
    T* vel = p.velocity + b * T_ * L;
    const T* em = e.emissions + b * T_ * L;
    const T lr = p.lr[b];
    if (!(lr - lr == T(0))) {
      bad |= kBadLr;
      continue;
    }
    if (any_nan(em, n * L)) {
      bad |= kBadEmissions;
      continue;
    }
    if (!all_finite(z, n * L)) {
      bad |= kBadLogits;
      continue;
    }
    if (!all_finite(vel, n * L)) {
      bad |= kBadVelocity;
      continue;
    }
    P.resize(n * ld);
    Q.resize(n * ld2);
    for (int64_t step = 0; step < p.steps; ++step) {
      softmax_rows(z, n, L, P.data(), ld);  // logits are finite (checked above)
      gemm<T, Semiring::kSum>(n, ld2, L, P.data(), ld, 1, pr.bm.data(), ld2, Q.data(), ld2, false);
      double score = 0.0;
      for (int64_t t = 0; t < n; ++t) {
        const T* pt = P.data() + t * ld;
        relaxed_position(pt, em + t * L, t > 0 ? Q.data() + (t - 1) * ld2 + ld : nullptr,
                         t + 1 < n ? Q.data() + (t + 1) * ld2 : nullptr,
                         t == 0 ? e.start : nullptr, t == n - 1 ? e.end : nullptr, L, d.data(),
                         score);
        // dE/dz = p * (dE/dp - <p, dE/dp>) with dE/dp = -d.
        const T pd = dot(pt, d.data(), L);
        T* zt = z + t * L;
        T* vt = vel + t * L;
        for (int64_t j = 0; j < L; ++j) {
          const T g = pt[j] * (pd - d[j]);
          vt[j] = mu * vt[j] + g;
          zt[j] -= lr * vt[j];
        }
      }
      p.energy_out[step * e.B + b] = static_cast<T>(-score);
      // Logits that overflowed (a learning rate far too large) give a NaN or
      // infinite energy: stop this sequence and report it.
      if (!(score - score == 0.0)) {
        bad |= kBadLogits;
        break;
      }
    }
  }
  if (bad) bad_seen.fetch_or(bad, std::memory_order_relaxed);
}

template <typename T>
Status relaxed_energy_step_impl(const RelaxedStepParams<T>& p, const Exec& exec) {
  const EnergyView<T>& e = p.energy;
  if (e.B == 0 || e.T == 0) return Status::kOk;
  if (!all_finite(e.transitions, e.L * e.L)) return Status::kNonFiniteTransitions;
  if (!all_finite(e.start, e.L)) return Status::kNonFiniteStart;
  if (!all_finite(e.end, e.L)) return Status::kNonFiniteEnd;
  const RelaxedPrep<T> pr = relaxed_prepare(e);
  std::atomic<int> bad{0};
  exec.parallel_for(e.B, grain_for(p.steps * e.T * e.L * (e.L + 8)), [&](int64_t b0, int64_t b1) {
    relaxed_chunk(p, pr, b0, b1, bad);
  });
  const int flags = bad.load();
  if (flags & kBadLogits) return Status::kNanLogits;
  if (flags & kBadVelocity) return Status::kNanVelocity;
  if (flags & kBadEmissions) return Status::kNanEmissions;
  if (flags & kBadLr) return Status::kNanLr;
  return Status::kOk;
}

// The differentiable relaxed energy E(p) = -score(p). The forward pass of a
// call that needs gradients also does the backward's work per sequence while
// its rows are in cache: with one matrix product P [W^T | W] (as in the step
// above) it returns p and dE[b]/d input[b] at a unit incoming gradient, so the
// backward only scales them (and forms the transition gradient, if wanted).
// Without gradients only W^T p is needed: half the product.
template <typename T>
void relaxed_energy_chunk(const RelaxedEnergyParams<T>& p, const RelaxedPrep<T>& pr, int64_t b0,
                          int64_t b1, std::atomic<int>& bad_seen) {
  const EnergyView<T>& e = p.energy;
  const int64_t L = e.L, T_ = e.T, ld = pr.ld, ld2 = 2 * ld;
  const bool grad = p.input_grad != nullptr;
  // Q rows: [W p_t | W^T p_t] with gradients, W^T p_t alone without (the
  // same products, column for column, so both give the same energy).
  const int64_t qs = grad ? ld2 : ld, wt_off = grad ? ld : 0;
  const T* bq = grad ? pr.bm.data() : pr.bm.data() + ld;
  Buffer<T> P, Q, d(ld);
  int bad = 0;
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t n = e.lengths[b];
    const T* x = p.input + b * T_ * L;
    const T* em = e.emissions + b * T_ * L;
    p.energy_out[b] = std::numeric_limits<T>::quiet_NaN();
    if (!all_finite(em, n * L)) {
      bad |= kBadEmissions;
      continue;
    }
    // The strided matrix product reads p rows of any stride: probabilities
    // are used in place, and softmax rows go straight to p_out when it is
    // wanted (else to scratch).
    T* p_keep = grad ? p.p_out + b * T_ * L : nullptr;
    const T* P_ = x;
    int64_t ps = L;
    if (p.probs) {
      if (!all_finite(x, n * L)) {
        bad |= kBadLogits;
        continue;
      }
      if (grad) std::copy(x, x + n * L, p_keep);
    } else {
      T* dst = p_keep;
      if (!grad) {
        P.resize(n * ld);
        dst = P.data();
        ps = ld;
      }
      if (bad_scores(x, n * L) || !softmax_rows(x, n, L, dst, ps)) {
        bad |= kBadLogits;
        continue;
      }
      P_ = dst;
    }
    const int64_t rows = grad ? n : n - 1;
    Q.resize(std::max<int64_t>(rows, 1) * qs);
    gemm<T, Semiring::kSum>(rows, qs, L, P_, ps, 1, bq, ld2, Q.data(), qs, false);
    double score = 0.0;
    for (int64_t t = 0; t < n; ++t) {
      const T* pt = P_ + t * ps;
      relaxed_position(pt, em + t * L, t > 0 ? Q.data() + (t - 1) * qs + wt_off : nullptr,
                       grad && t + 1 < n ? Q.data() + (t + 1) * qs : nullptr,
                       t == 0 ? e.start : nullptr, t == n - 1 ? e.end : nullptr, L,
                       grad ? d.data() : nullptr, score);
      if (!grad) continue;
      T* gt = p.input_grad + (b * T_ + t) * L;
      if (p.probs) {
        for (int64_t j = 0; j < L; ++j) gt[j] = -d[j];
      } else {
        // dE/dz = p * (dE/dp - <p, dE/dp>) with dE/dp = -d.
        const T pd = dot(pt, d.data(), L);
        for (int64_t j = 0; j < L; ++j) gt[j] = pt[j] * (pd - d[j]);
      }
    }
    p.energy_out[b] = static_cast<T>(-score);
    if (grad) {
      std::fill(p.input_grad + (b * T_ + n) * L, p.input_grad + (b + 1) * T_ * L, T(0));
      std::fill(p.p_out + (b * T_ + n) * L, p.p_out + (b + 1) * T_ * L, T(0));
    }
  }
  if (bad) bad_seen.fetch_or(bad, std::memory_order_relaxed);
}

template <typename T>
Status relaxed_energy_forward_impl(const RelaxedEnergyParams<T>& p, const Exec& exec) {
  const EnergyView<T>& e = p.energy;
  if (e.B == 0 || e.T == 0) return Status::kOk;
  if (!all_finite(e.transitions, e.L * e.L)) return Status::kNonFiniteTransitions;
  if (!all_finite(e.start, e.L)) return Status::kNonFiniteStart;
  if (!all_finite(e.end, e.L)) return Status::kNonFiniteEnd;
  const RelaxedPrep<T> pr = relaxed_prepare(e);
  std::atomic<int> bad{0};
  exec.parallel_for(e.B, grain_for(e.T * e.L * (e.L + 8)), [&](int64_t b0, int64_t b1) {
    relaxed_energy_chunk(p, pr, b0, b1, bad);
  });
  const int flags = bad.load();
  if (flags & kBadLogits) return p.probs ? Status::kNonFiniteProbs : Status::kNonFiniteLogits;
  if (flags & kBadEmissions) return Status::kNonFiniteEmissions;
  return Status::kOk;
}

// Per-task partial sums of the parameter gradients, reduced at the end.
template <typename T>
struct RelaxedGradPartial {
  Buffer<T> gtrans;  // (L, ld) sum over pairs of p_{t-1} (-g p_t)^T
  Buffer<T> gstart;  // (L,)
  Buffer<T> gend;    // (L,)
};

template <typename T>
void relaxed_energy_backward_chunk(const RelaxedEnergyBackwardParams<T>& p, int64_t ld,
                                   int64_t b0, int64_t b1, RelaxedGradPartial<T>& part) {
  // Pairs (p_{t-1}, -g p_t) are gathered over sequences and summed as one
  // matrix product every kPairs pairs, whatever the lengths.
  constexpr int64_t kPairs = 256;
  const int64_t L = p.L, T_ = p.T;
  Buffer<T> PA, PW;
  int64_t np = 0;
  if (p.grad_transitions != nullptr) {
    PA.resize(kPairs * ld);
    PW.resize(kPairs * ld);
  }
  auto flush = [&]() {
    gemm<T, Semiring::kSum>(L, ld, np, PA.data(), 1, ld, PW.data(), ld, part.gtrans.data(), ld,
                            true);
    np = 0;
  };
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t n = p.lengths[b], off = b * T_ * L, live = n * L, all = T_ * L;
    const T g = p.grad_energy[b];
    const T* pb = p.p + off;
    if (p.grad_input != nullptr) {
      const T* ib = p.input_grad + off;
      T* out = p.grad_input + off;
      for (int64_t i = 0; i < live; ++i) out[i] = g * ib[i];
      std::fill(out + live, out + all, T(0));
    }
    if (p.grad_emissions != nullptr) {
      T* out = p.grad_emissions + off;
      for (int64_t i = 0; i < live; ++i) out[i] = -g * pb[i];
      std::fill(out + live, out + all, T(0));
    }
    if (p.grad_start != nullptr)
      for (int64_t j = 0; j < L; ++j) part.gstart[j] -= g * pb[j];
    if (p.grad_end != nullptr)
      for (int64_t j = 0; j < L; ++j) part.gend[j] -= g * pb[(n - 1) * L + j];
    if (p.grad_transitions == nullptr) continue;
    for (int64_t t = 1; t < n; ++t) {
      std::copy(pb + (t - 1) * L, pb + t * L, PA.data() + np * ld);
      T* w = PW.data() + np * ld;
      const T* pt = pb + t * L;
      for (int64_t j = 0; j < L; ++j) w[j] = -g * pt[j];
      std::fill(w + L, w + ld, T(0));
      if (++np == kPairs) flush();
    }
  }
  if (np > 0) flush();
}

template <typename T>
Status relaxed_energy_backward_impl(const RelaxedEnergyBackwardParams<T>& p, const Exec& exec) {
  const int64_t L = p.L, ld = round_up(L, kLanes<T>);
  if (p.grad_transitions != nullptr)
    std::fill(p.grad_transitions, p.grad_transitions + L * L, T(0));
  if (p.grad_start != nullptr) std::fill(p.grad_start, p.grad_start + L, T(0));
  if (p.grad_end != nullptr) std::fill(p.grad_end, p.grad_end + L, T(0));
  if (p.B == 0 || p.T == 0) return Status::kOk;
  // Fixed chunks, one partial sum each, reduced in order: the result does not
  // depend on how the thread pool schedules them.
  const int64_t n_chunks = std::max<int64_t>(1, std::min<int64_t>(p.B, exec.num_threads));
  std::vector<RelaxedGradPartial<T>> parts(static_cast<size_t>(n_chunks));
  const int64_t work = p.B * p.T * L * (p.grad_transitions != nullptr ? L : 4);
  const int64_t grain = work < (1 << 16) ? n_chunks : 1;
  exec.parallel_for(n_chunks, grain, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      RelaxedGradPartial<T>& part = parts[static_cast<size_t>(c)];
      if (p.grad_transitions != nullptr) {
        part.gtrans.resize(L * ld);
        part.gtrans.fill(T(0), L * ld);
      }
      part.gstart.resize(L);
      part.gstart.fill(T(0), L);
      part.gend.resize(L);
      part.gend.fill(T(0), L);
      relaxed_energy_backward_chunk(p, ld, c * p.B / n_chunks, (c + 1) * p.B / n_chunks, part);
    }
  });
  for (const RelaxedGradPartial<T>& part : parts) {
    if (p.grad_transitions != nullptr)
      for (int64_t i = 0; i < L; ++i)
        for (int64_t j = 0; j < L; ++j) p.grad_transitions[i * L + j] += part.gtrans[i * ld + j];
    for (int64_t j = 0; j < L; ++j) {
      if (p.grad_start != nullptr) p.grad_start[j] += part.gstart[j];
      if (p.grad_end != nullptr) p.grad_end[j] += part.gend[j];
    }
  }
  return Status::kOk;
}

}  // namespace SI_ISA_NS
}  // namespace cpu
}  // namespace structinf
