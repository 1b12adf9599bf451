// Fused gradient-descent steps on the relaxed energy (paper section 3).
//
// Sequences are independent, so each one runs all its steps while its rows
// stay in cache; a training loop of N steps is one call. Per step and sequence: p_t = softmax(z_t); E = -score(p); d_t = dE/dp_t needs W p_{t+1}
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
      for (int64_t t = 0; t < n; ++t) {
        const T* zt = z + t * L;
        T* pt = P.data() + t * ld;
        exp_shifted(zt, L, row_max(zt, L), pt, ld);
        const T inv = T(1) / sum(pt, L);
        for (int64_t j = 0; j < L; ++j) pt[j] *= inv;
      }
      gemm<T, Semiring::kSum>(n, ld2, L, P.data(), ld, 1, pr.bm.data(), ld2, Q.data(), ld2, false);
      double score = 0.0;
      for (int64_t t = 0; t < n; ++t) {
        const T* pt = P.data() + t * ld;
        const T* et = em + t * L;
        // d = -(e_t + W p_{t+1} + W^T p_{t-1} + start [t = 0] + end [t = n-1])
        for (int64_t j = 0; j < L; ++j) d[j] = et[j];
        if (t + 1 < n) {
          const T* wp_next = Q.data() + (t + 1) * ld2;
          for (int64_t j = 0; j < L; ++j) d[j] += wp_next[j];
        }
        score += static_cast<double>(dot(pt, et, L));
        if (t > 0) {
          const T* wtp_prev = Q.data() + (t - 1) * ld2 + ld;
          for (int64_t j = 0; j < L; ++j) d[j] += wtp_prev[j];
          score += static_cast<double>(dot(pt, wtp_prev, L));
        }
        if (t == 0) {
          for (int64_t j = 0; j < L; ++j) d[j] += e.start[j];
          score += static_cast<double>(dot(pt, e.start, L));
        }
        if (t == n - 1) {
          for (int64_t j = 0; j < L; ++j) d[j] += e.end[j];
          score += static_cast<double>(dot(pt, e.end, L));
        }
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

}  // namespace SI_ISA_NS
}  // namespace cpu
}  // namespace structinf
