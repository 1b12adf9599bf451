// Small helpers shared by the CPU kernels of one instruction set.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <numeric>
#include <vector>

#include "../params.h"
#include "api.h"
#include "simd.h"

namespace structinf {
namespace cpu {
namespace SI_ISA_NS {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// A 64-byte aligned scratch array (uninitialised unless fill is called).
template <typename T>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(int64_t n) { resize(n); }
  void resize(int64_t n) {
    if (n <= capacity_) return;
    const size_t bytes = (static_cast<size_t>(n) * sizeof(T) + 63) / 64 * 64;
    void* raw = std::aligned_alloc(64, bytes);
    if (raw == nullptr) throw std::bad_alloc();
    ptr_.reset(raw);
    capacity_ = n;
  }
  void fill(T value, int64_t n) { std::fill(data(), data() + n, value); }
  T* data() { return static_cast<T*>(ptr_.get()); }
  const T* data() const { return static_cast<const T*>(ptr_.get()); }
  T& operator[](int64_t i) { return data()[i]; }
  const T& operator[](int64_t i) const { return data()[i]; }

 private:
  std::unique_ptr<void, FreeDeleter> ptr_;
  int64_t capacity_ = 0;
};

template <typename T>
constexpr T kInf = std::numeric_limits<T>::infinity();

// The checks below accumulate over whole vectors (no early exit), so they run
// at memory speed: they sit on every op's hot path.

// Some x[i] is NaN.
template <typename T>
inline bool any_nan(const T* x, int64_t n) {
  constexpr int W = kLanes<T>;
  IVec<T> bad = {};
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    const Vec<T> v = vload(x + i);
    bad |= (v != v);
  }
  bool out = false;
  for (int k = 0; k < W; ++k) out |= bad[k] != 0;
  for (; i < n; ++i) out |= (x[i] != x[i]);
  return out;
}

// Every x[i] is finite (x - x is 0 for finite x and NaN otherwise).
template <typename T>
inline bool all_finite(const T* x, int64_t n) {
  constexpr int W = kLanes<T>;
  Vec<T> acc = {};
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    const Vec<T> v = vload(x + i);
    acc += v - v;
  }
  T s = hsum(acc);
  for (; i < n; ++i) s += x[i] - x[i];
  return s == T(0);
}

// max over x[0:n]; -inf for n == 0. NaN entries are ignored (callers check NaN
// separately).
template <typename T>
inline T row_max(const T* x, int64_t n) {
  constexpr int W = kLanes<T>;
  Vec<T> m = vset1(-kInf<T>);
  int64_t j = 0;
  for (; j + W <= n; j += W) m = vmax(m, vload(x + j));
  T r = hmax(m);
  for (; j < n; ++j) r = x[j] > r ? x[j] : r;
  return r;
}

// log(sum_i exp(x[i])) over x[0:n], exact in the usual max-shift sense.
template <typename T>
inline T log_sum_exp(const T* x, int64_t n) {
  const T m = row_max(x, n);
  if (m == -kInf<T>) return m;
  if (m == kInf<T>) return m;
  constexpr int W = kLanes<T>;
  Vec<T> acc = vset1(T(0));
  int64_t j = 0;
  for (; j + W <= n; j += W) acc += vexp(vload(x + j) - m);
  T s = hsum(acc);
  for (; j < n; ++j) s += sexp(x[j] - m);
  return m + slog(s);
}

// NaN or +inf (a score of +inf makes log Z meaningless; -inf is "forbidden").
template <typename T>
inline bool bad_scores(const T* x, int64_t n) {
  constexpr int W = kLanes<T>;
  const Vec<T> inf = vset1(kInf<T>);
  IVec<T> ok = ~IVec<T>{};
  int64_t i = 0;
  for (; i + W <= n; i += W) ok &= (vload(x + i) < inf);
  bool bad = false;
  for (int k = 0; k < W; ++k) bad |= ok[k] == 0;
  for (; i < n; ++i) bad |= !(x[i] < kInf<T>);
  return bad;
}

// out[0:ld] = exp(x[0:n] - m), zero beyond n (and everywhere when m = -inf).
template <typename T>
inline void exp_shifted(const T* x, int64_t n, T m, T* out, int64_t ld) {
  constexpr int W = kLanes<T>;
  if (m == -kInf<T>) {
    std::fill(out, out + ld, T(0));
    return;
  }
  const Vec<T> mv = vset1(m);
  int64_t j = 0;
  for (; j + W <= n; j += W) vstore(out + j, vexp(vload(x + j) - mv));
  for (; j < n; ++j) out[j] = sexp(x[j] - m);
  for (; j < ld; ++j) out[j] = T(0);
}

// out[j] = shift + off[j] + log(s[j]) (+ add[j] unless add is null), j < n.
template <typename T>
inline void log_combine(const T* s, const T* off, T shift, const T* add, int64_t n, T* out) {
  constexpr int W = kLanes<T>;
  const Vec<T> sh = vset1(shift);
  int64_t j = 0;
  if (add != nullptr) {
    for (; j + W <= n; j += W)
      vstore(out + j, sh + vload(off + j) + vlog(vload(s + j)) + vload(add + j));
    for (; j < n; ++j) out[j] = shift + off[j] + slog(s[j]) + add[j];
  } else {
    for (; j + W <= n; j += W) vstore(out + j, sh + vload(off + j) + vlog(vload(s + j)));
    for (; j < n; ++j) out[j] = shift + off[j] + slog(s[j]);
  }
}

// out[j] = g * exp(x[j] + y[j] - z) for j < n.
template <typename T>
inline void scaled_exp_sum(const T* x, const T* y, T z, T g, int64_t n, T* out) {
  constexpr int W = kLanes<T>;
  const Vec<T> zv = vset1(z), gv = vset1(g);
  int64_t j = 0;
  for (; j + W <= n; j += W) vstore(out + j, gv * vexp(vload(x + j) + vload(y + j) - zv));
  for (; j < n; ++j) out[j] = g * sexp(x[j] + y[j] - z);
}

// True when some s[j] < floor, j < n (s padded to whole vectors).
template <typename T>
inline bool any_below(const T* s, int64_t n, T floor) {
  constexpr int W = kLanes<T>;
  const Vec<T> f = vset1(floor);
  for (int64_t j = 0; j < n; j += W) {
    const auto m = vload(s + j) < f;
    for (int i = 0; i < W; ++i)
      if (m[i] && j + i < n) return true;
  }
  return false;
}

// Sequence indices of [b0, b1) ordered by length, longest first (stable), so
// that at every time step the still-active sequences form a prefix.
inline std::vector<int64_t> order_by_length(const int64_t* lengths, int64_t b0, int64_t b1) {
  std::vector<int64_t> idx(static_cast<size_t>(b1 - b0));
  std::iota(idx.begin(), idx.end(), b0);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int64_t x, int64_t y) { return lengths[x] > lengths[y]; });
  return idx;
}

// Number of leading entries of `order` whose sequence is longer than t.
inline int64_t active_prefix(const int64_t* lengths, const int64_t* order, int64_t n, int64_t t) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (lengths[order[mid]] > t)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

// Scores with forbidden transitions set to -inf: (L, L) row-major.
template <typename T>
void masked_transitions(const EnergyView<T>& e, T* out) {
  const int64_t L = e.L;
  for (int64_t i = 0; i < L * L; ++i)
    out[i] = (e.allowed != nullptr && !e.allowed[i]) ? -kInf<T> : e.transitions[i];
}

// Checks the transition, start and end scores with `bad` (any_nan for
// Viterbi; bad_scores for the CRF, where -inf means forbidden but +inf is an error).
// The kNan* statuses stand for "NaN, or +inf where bad_scores is the test": their
// messages in csrc/bindings/checks.cpp say "NaN or +inf".
template <typename T>
Status check_scores(const EnergyView<T>& e, bool (*bad)(const T*, int64_t)) {
  if (bad(e.transitions, e.L * e.L)) return Status::kNanTransitions;
  if (bad(e.start, e.L)) return Status::kNanStart;
  if (bad(e.end, e.L)) return Status::kNanEnd;
  return Status::kOk;
}

// Grain (sequences per task) so that a task has at least ~min_work elementary
// operations: tiny batches stay on one thread.
inline int64_t grain_for(int64_t work_per_item, int64_t min_work = 1 << 16) {
  if (work_per_item <= 0) return 1 << 30;
  return std::max<int64_t>(1, min_work / work_per_item);
}

}  // namespace SI_ISA_NS
}  // namespace cpu
}  // namespace structinf
