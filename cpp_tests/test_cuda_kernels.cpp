// The CUDA kernels (csrc/kernels/cuda), run on the CUDA-on-CPU emulator,
// against the CPU kernels and float64 references: Viterbi (k = 1 and k-best,
// paths identical to the CPU's, ties included), log Z, log alpha and every
// marginal, the relaxed steps, and the differentiable relaxed energy's
// forward and backward. Every thread-mapping variant, float and double,
// random and tie-heavy integer scores, masks, variable lengths.
//
// Built three times by CMake: plain, ThreadSanitizer, AddressSanitizer+UBSan.
// "Device" buffers are host vectors of exactly the size a kernel may touch,
// the workspace is new[]'d at exactly the size the API asks for and filled
// with 0xFF (NaN), so an overflow or a read of unwritten scratch shows.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/api.h"
#include "kernels/cuda/api.h"
#include "test_util.h"

using namespace structinf;
using cuda::Variant;
using test::failures;

namespace {

int checks = 0;

// test::expect, counting every check (the run reports how many it made).
void expect(bool ok, const std::string& what) {
  ++checks;
  test::expect(ok, what);
}

const char* variant_name(Variant v) {
  switch (v) {
    case Variant::kAuto:
      return "auto";
    case Variant::kWarp:
      return "warp";
    case Variant::kBlock:
      return "block";
    case Variant::kGlobal:
      return "global";
  }
  return "?";
}

template <typename T>
const char* dtype_name() {
  return sizeof(T) == 4 ? "float" : "double";
}

constexpr double kInfD = std::numeric_limits<double>::infinity();

// |got - want| <= atol + rtol |want|; infinities must match exactly.
bool near(double got, double want, double rtol, double atol) {
  if (std::isinf(want) || std::isinf(got)) return got == want;
  if (std::isnan(got) || std::isnan(want)) return false;
  return std::fabs(got - want) <= atol + rtol * std::fabs(want);
}

template <typename T>
struct Tol {
  double rtol, atol;
};
template <typename T>
Tol<T> tol() {
  return sizeof(T) == 4 ? Tol<T>{2e-4, 2e-5} : Tol<T>{1e-10, 1e-12};
}

// Scratch for the device: exactly `bytes`, poisoned.
struct Workspace {
  std::unique_ptr<unsigned char[]> mem;
  explicit Workspace(size_t bytes) : mem(new unsigned char[bytes]) {
    std::memset(mem.get(), 0xFF, bytes);
  }
  void* get() { return mem.get(); }
};

enum class Kind { kRandom, kTies };

template <typename T>
struct Problem {
  int64_t B = 0, T_ = 0, L = 0;
  std::vector<T> em, tr, st, en;
  std::vector<int64_t> len;
  std::vector<char> allowed;  // empty: no mask

  EnergyView<T> view() const { return test::energy_view(B, T_, L, em, tr, st, en, len, allowed); }
  bool ok(int64_t i, int64_t j) const { return allowed.empty() || allowed[i * L + j]; }
  std::string tag() const {
    return std::string(dtype_name<T>()) + " B=" + std::to_string(B) + " T=" + std::to_string(T_) +
           " L=" + std::to_string(L) + (allowed.empty() ? "" : " masked");
  }
};

// Random normal scores, or small integers (many exact ties). Lengths cover 1
// and T; a mask forbids ~30% of the transitions (`forbid_all`: every one).
template <typename T>
Problem<T> make_problem(std::mt19937& rng, int64_t B, int64_t T_, int64_t L, Kind kind,
                        bool masked, bool forbid_all = false, double scale = 1.0) {
  Problem<T> p;
  p.B = B;
  p.T_ = T_;
  p.L = L;
  std::normal_distribution<double> normal;
  std::uniform_int_distribution<int> small(-2, 2);
  auto draw = [&]() {
    return static_cast<T>(kind == Kind::kTies ? small(rng) : scale * normal(rng));
  };
  for (int64_t i = 0; i < B * T_ * L; ++i) p.em.push_back(draw());
  for (int64_t i = 0; i < L * L; ++i) p.tr.push_back(draw());
  for (int64_t i = 0; i < L; ++i) p.st.push_back(draw());
  for (int64_t i = 0; i < L; ++i) p.en.push_back(draw());
  std::uniform_int_distribution<int64_t> length(1, T_);
  for (int64_t b = 0; b < B; ++b) p.len.push_back(b == 0 ? T_ : b == 1 ? 1 : length(rng));
  if (masked) {
    std::bernoulli_distribution keep(0.7);
    for (int64_t i = 0; i < L * L; ++i) p.allowed.push_back(forbid_all ? 0 : keep(rng));
  }
  return p;
}

// ------------------------------------------------------------ references

// log-space forward-backward in double: log Z, unary and pairwise marginals.
template <typename T>
struct RefCrf {
  std::vector<double> log_z, unary, pair, start, end;
};

double lse(const std::vector<double>& x) {
  double m = -kInfD;
  for (double v : x) m = std::max(m, v);
  if (m == -kInfD) return m;
  double s = 0;
  for (double v : x) s += std::exp(v - m);
  return m + std::log(s);
}

template <typename T>
RefCrf<T> ref_crf(const Problem<T>& p, const std::vector<double>& g) {
  const int64_t B = p.B, T_ = p.T_, L = p.L;
  RefCrf<T> r;
  r.log_z.assign(B, 0);
  r.unary.assign(B * T_ * L, 0);
  r.pair.assign(L * L, 0);
  r.start.assign(L, 0);
  r.end.assign(L, 0);
  auto w = [&](int64_t i, int64_t j) { return p.ok(i, j) ? double(p.tr[i * L + j]) : -kInfD; };
  std::vector<double> tmp(L);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = p.len[b];
    auto e = [&](int64_t t, int64_t j) { return double(p.em[(b * T_ + t) * L + j]); };
    std::vector<double> a(n * L), be(n * L);
    for (int64_t j = 0; j < L; ++j) a[j] = p.st[j] + e(0, j);
    for (int64_t t = 1; t < n; ++t)
      for (int64_t j = 0; j < L; ++j) {
        for (int64_t i = 0; i < L; ++i) tmp[i] = a[(t - 1) * L + i] + w(i, j);
        a[t * L + j] = lse(tmp) + e(t, j);
      }
    for (int64_t j = 0; j < L; ++j) be[(n - 1) * L + j] = p.en[j];
    for (int64_t t = n - 1; t >= 1; --t)
      for (int64_t i = 0; i < L; ++i) {
        for (int64_t j = 0; j < L; ++j) tmp[j] = w(i, j) + e(t, j) + be[t * L + j];
        be[(t - 1) * L + i] = lse(tmp);
      }
    for (int64_t j = 0; j < L; ++j) tmp[j] = a[(n - 1) * L + j] + p.en[j];
    const double z = lse(tmp);
    r.log_z[b] = z;
    if (z == -kInfD || g[b] == 0) continue;
    for (int64_t t = 0; t < n; ++t)
      for (int64_t j = 0; j < L; ++j)
        r.unary[(b * T_ + t) * L + j] = g[b] * std::exp(a[t * L + j] + be[t * L + j] - z);
    for (int64_t j = 0; j < L; ++j) {
      r.start[j] += r.unary[b * T_ * L + j];
      r.end[j] += r.unary[(b * T_ + n - 1) * L + j];
    }
    for (int64_t t = 1; t < n; ++t)
      for (int64_t i = 0; i < L; ++i)
        for (int64_t j = 0; j < L; ++j)
          if (p.ok(i, j))
            r.pair[i * L + j] += g[b] * std::exp(a[(t - 1) * L + i] + w(i, j) + e(t, j) +
                                                 be[t * L + j] - z);
  }
  return r;
}

// Best score per sequence by a double max-plus loop.
template <typename T>
std::vector<double> ref_viterbi_scores(const Problem<T>& p) {
  const int64_t L = p.L, T_ = p.T_;
  std::vector<double> out(p.B);
  for (int64_t b = 0; b < p.B; ++b) {
    std::vector<double> d(L), nd(L);
    for (int64_t j = 0; j < L; ++j) d[j] = p.st[j] + double(p.em[b * T_ * L + j]);
    for (int64_t t = 1; t < p.len[b]; ++t) {
      for (int64_t j = 0; j < L; ++j) {
        double m = -kInfD;
        for (int64_t i = 0; i < L; ++i)
          if (p.ok(i, j)) m = std::max(m, d[i] + double(p.tr[i * L + j]));
        nd[j] = m + double(p.em[(b * T_ + t) * L + j]);
      }
      std::swap(d, nd);
    }
    double m = -kInfD;
    for (int64_t j = 0; j < L; ++j) m = std::max(m, d[j] + double(p.en[j]));
    out[b] = m;
  }
  return out;
}

// All labelings of sequence b with their scores, best first (tiny sizes).
template <typename T>
std::vector<double> brute_scores(const Problem<T>& p, int64_t b) {
  const int64_t n = p.len[b], L = p.L;
  int64_t count = 1;
  for (int64_t t = 0; t < n; ++t) count *= L;
  std::vector<double> out;
  for (int64_t c = 0; c < count; ++c) {
    std::vector<int64_t> y;
    int64_t x = c;
    for (int64_t t = 0; t < n; ++t, x /= L) y.push_back(x % L);
    double s = double(p.st[y[0]]) + double(p.en[y[n - 1]]);
    for (int64_t t = 0; t < n; ++t) s += p.em[(b * p.T_ + t) * L + y[t]];
    for (int64_t t = 1; t < n; ++t) s = p.ok(y[t - 1], y[t]) ? s + p.tr[y[t - 1] * L + y[t]] : -kInfD;
    out.push_back(s);
  }
  std::sort(out.begin(), out.end(), std::greater<double>());
  return out;
}

// Relaxed steps in double, straight from the definition.
template <typename T>
void ref_relaxed(const Problem<T>& p, std::vector<double>& z, std::vector<double>& v,
                 const std::vector<double>& lr, double mu, int64_t steps, std::vector<double>& energy) {
  const int64_t L = p.L, T_ = p.T_;
  energy.assign(steps * p.B, std::nan(""));
  for (int64_t b = 0; b < p.B; ++b) {
    const int64_t n = p.len[b];
    for (int64_t s = 0; s < steps; ++s) {
      std::vector<double> P(n * L), d(L);
      for (int64_t t = 0; t < n; ++t) {
        double m = -kInfD, sum = 0;
        for (int64_t j = 0; j < L; ++j) m = std::max(m, z[(b * T_ + t) * L + j]);
        for (int64_t j = 0; j < L; ++j) sum += P[t * L + j] = std::exp(z[(b * T_ + t) * L + j] - m);
        for (int64_t j = 0; j < L; ++j) P[t * L + j] /= sum;
      }
      double score = 0;
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t j = 0; j < L; ++j) {
          double x = p.em[(b * T_ + t) * L + j];
          score += P[t * L + j] * x;
          if (t == 0) {
            x += p.st[j];
            score += P[j] * p.st[j];
          }
          if (t == n - 1) {
            x += p.en[j];
            score += P[t * L + j] * p.en[j];
          }
          for (int64_t k = 0; k < L; ++k) {
            if (t + 1 < n) x += p.tr[j * L + k] * P[(t + 1) * L + k];
            if (t > 0) {
              x += p.tr[k * L + j] * P[(t - 1) * L + k];
              score += P[t * L + j] * p.tr[k * L + j] * P[(t - 1) * L + k];
            }
          }
          d[j] = x;
        }
        double pd = 0;
        for (int64_t j = 0; j < L; ++j) pd += P[t * L + j] * d[j];
        for (int64_t j = 0; j < L; ++j) {
          const int64_t i = (b * T_ + t) * L + j;
          v[i] = mu * v[i] + P[t * L + j] * (pd - d[j]);
          z[i] -= lr[b] * v[i];
        }
      }
      energy[s * p.B + b] = -score;
    }
  }
}

// --------------------------------------------------------------- tests

// The mappings that can run L labels: the warp one for L <= 32, the block
// one while L x L transitions fit in shared memory, the global one always.
bool block_fits(int64_t L, size_t elem) { return L * L * elem + 8 * L * elem < 220 * 1024; }

template <typename T>
std::vector<Variant> variants_for(int64_t L) {
  std::vector<Variant> out;
  if (L <= 32) out.push_back(Variant::kWarp);
  if (block_fits(L, sizeof(T))) out.push_back(Variant::kBlock);
  out.push_back(Variant::kGlobal);
  return out;
}

template <typename T>
void test_viterbi(const Problem<T>& p, int64_t k, Variant v) {
  const std::string tag = p.tag() + " k=" + std::to_string(k) + " " + variant_name(v);
  const int64_t B = p.B, T_ = p.T_;
  ViterbiParams<T> cp;
  cp.energy = p.view();
  cp.k = k;
  std::vector<int64_t> cpaths(B * k * T_);
  std::vector<T> cscores(B * k);
  cp.paths = cpaths.data();
  cp.scores = cscores.data();
  expect(cpu::viterbi(cp, cpu::serial_exec()) == Status::kOk, tag + " cpu status");
  ViterbiParams<T> gp = cp;
  std::vector<int64_t> gpaths(B * k * T_, 12345);
  std::vector<T> gscores(B * k, T(77));
  gp.paths = gpaths.data();
  gp.scores = gscores.data();
  Workspace ws(cuda::viterbi_workspace_bytes(gp));
  const Status s = cuda::launch_viterbi(gp, ws.get(), nullptr, v);
  expect(s == Status::kOk, tag + " status " + std::to_string(static_cast<int>(s)));
  expect(cudaGetLastError() == cudaSuccess, tag + " launch error");
  // The same additions in the same order: identical scores and paths.
  bool same_scores = true, same_paths = true;
  for (int64_t i = 0; i < B * k; ++i)
    same_scores &= (gscores[i] == cscores[i]) || (std::isnan(gscores[i]) && std::isnan(cscores[i]));
  for (int64_t i = 0; i < B * k * T_; ++i) same_paths &= gpaths[i] == cpaths[i];
  expect(same_scores, tag + " scores == cpu");
  expect(same_paths, tag + " paths == cpu");
  const std::vector<double> ref = ref_viterbi_scores(p);
  for (int64_t b = 0; b < B; ++b)
    expect(near(gscores[b * k], ref[b], 1e-5, 1e-5), tag + " best score vs float64 loop");
  if (p.L <= 5 && T_ <= 4)
    for (int64_t b = 0; b < B; ++b) {
      const std::vector<double> all = brute_scores(p, b);
      for (int64_t q = 0; q < k; ++q) {
        const double want = q < static_cast<int64_t>(all.size()) ? all[q] : -kInfD;
        expect(near(gscores[b * k + q], want, 1e-5, 1e-5), tag + " k-best vs brute force");
      }
    }
}

template <typename T>
struct ForwardOut {
  std::vector<T> log_z, la, shift;
};

template <typename T>
ForwardOut<T> run_forward(const Problem<T>& p, bool gpu, Variant v, const std::string& tag) {
  ForwardOut<T> o;
  o.log_z.assign(p.B, T(55));
  o.la.assign(p.B * p.T_ * p.L, T(55));
  o.shift.assign(p.B * p.T_, T(55));
  CrfForwardParams<T> fp;
  fp.energy = p.view();
  fp.log_z = o.log_z.data();
  fp.log_alpha = o.la.data();
  fp.log_alpha_shift = o.shift.data();
  if (gpu) {
    Workspace ws(cuda::crf_forward_workspace_bytes(fp));
    expect(cuda::launch_crf_forward(fp, ws.get(), nullptr, v) == Status::kOk, tag + " gpu forward");
    expect(cudaGetLastError() == cudaSuccess, tag + " forward launch error");
  } else {
    expect(cpu::crf_forward(fp, cpu::serial_exec()) == Status::kOk, tag + " cpu forward");
  }
  return o;
}

template <typename T>
struct BackwardOut {
  std::vector<T> ge, gt, gs, gend;
};

template <typename T>
BackwardOut<T> run_backward(const Problem<T>& p, const ForwardOut<T>& f, const std::vector<T>& g,
                            bool gpu, Variant v, const std::string& tag) {
  BackwardOut<T> o;
  o.ge.assign(p.B * p.T_ * p.L, T(55));
  o.gt.assign(p.L * p.L, T(55));
  o.gs.assign(p.L, T(55));
  o.gend.assign(p.L, T(55));
  CrfBackwardParams<T> bp;
  bp.energy = p.view();
  bp.grad_log_z = g.data();
  bp.log_z = f.log_z.data();
  bp.log_alpha = f.la.data();
  bp.log_alpha_shift = f.shift.data();
  bp.grad_emissions = o.ge.data();
  bp.grad_transitions = o.gt.data();
  bp.grad_start = o.gs.data();
  bp.grad_end = o.gend.data();
  if (gpu) {
    Workspace ws(cuda::crf_backward_workspace_bytes(bp));
    expect(cuda::launch_crf_backward(bp, ws.get(), nullptr, v) == Status::kOk,
           tag + " gpu backward");
    expect(cudaGetLastError() == cudaSuccess, tag + " backward launch error");
  } else {
    expect(cpu::crf_backward(bp, cpu::serial_exec()) == Status::kOk, tag + " cpu backward");
  }
  return o;
}

template <typename T>
void expect_all_near(const std::vector<T>& got, const std::vector<double>& want, double rtol,
                     double atol, const std::string& what) {
  int bad = 0;
  size_t first = 0;
  for (size_t i = 0; i < want.size(); ++i)
    if (!near(got[i], want[i], rtol, atol)) {
      if (bad++ == 0) first = i;
    }
  expect(bad == 0, what + " (" + std::to_string(bad) + " of " + std::to_string(want.size()) +
                       " off; first at " + std::to_string(first) + ": got " +
                       (want.empty() ? std::string() : std::to_string(double(got[first])) +
                                                           " want " + std::to_string(want[first])) +
                       ")");
}

template <typename T>
std::vector<double> as_double(const std::vector<T>& x) {
  return std::vector<double>(x.begin(), x.end());
}

// Absolute log alpha: the stored value plus the running sum of the shifts.
template <typename T>
std::vector<double> absolute_log_alpha(const Problem<T>& p, const ForwardOut<T>& f) {
  std::vector<double> out(p.B * p.T_ * p.L, 0.0);
  for (int64_t b = 0; b < p.B; ++b) {
    double acc = 0;
    for (int64_t t = 0; t < p.len[b]; ++t) {
      acc += f.shift[b * p.T_ + t];
      for (int64_t j = 0; j < p.L; ++j) {
        const int64_t i = (b * p.T_ + t) * p.L + j;
        out[i] = std::isinf(acc) ? acc : f.la[i] + acc;
      }
    }
  }
  return out;
}

// cross: also run the GPU backward on the CPU forward's outputs.
template <typename T>
void test_crf(const Problem<T>& p, std::mt19937& rng, Variant v, bool cross = false) {
  const std::string tag = p.tag() + " crf " + variant_name(v);
  const Tol<T> tl = tol<T>();
  // Scale the tolerances with the work: sums over T positions of L terms.
  const double rt = tl.rtol * std::max<double>(1, std::sqrt(double(p.T_))), at = tl.atol;
  std::vector<T> g(p.B);
  std::normal_distribution<double> normal;
  for (int64_t b = 0; b < p.B; ++b) g[b] = static_cast<T>(b == 2 ? 0.0 : 1.0 + 0.5 * normal(rng));
  const std::vector<double> gd(g.begin(), g.end());
  const RefCrf<T> ref = ref_crf(p, gd);
  const ForwardOut<T> cf = run_forward(p, false, v, tag);
  const ForwardOut<T> gf = run_forward(p, true, v, tag);
  expect_all_near(gf.log_z, ref.log_z, rt, at, tag + " log Z vs float64 loop");
  expect_all_near(gf.log_z, as_double(cf.log_z), rt, at, tag + " log Z vs cpu");
  const std::vector<double> ga = absolute_log_alpha(p, gf);
  expect_all_near(std::vector<T>(ga.begin(), ga.end()), absolute_log_alpha(p, cf), rt, at,
                  tag + " log alpha vs cpu");
  bool pad = true;
  for (int64_t b = 0; b < p.B; ++b) {
    for (int64_t t = p.len[b]; t < p.T_; ++t) {
      pad &= gf.shift[b * p.T_ + t] == T(0);
      for (int64_t j = 0; j < p.L; ++j) pad &= gf.la[(b * p.T_ + t) * p.L + j] == T(0);
    }
    T m = -std::numeric_limits<T>::infinity();
    for (int64_t t = 0; t < p.len[b]; ++t) {
      m = -std::numeric_limits<T>::infinity();
      for (int64_t j = 0; j < p.L; ++j) m = std::max(m, gf.la[(b * p.T_ + t) * p.L + j]);
      pad &= (m == T(0) || m == -std::numeric_limits<T>::infinity());
    }
  }
  expect(pad, tag + " log alpha relative to its maximum, zero at padding");
  const BackwardOut<T> gb = run_backward(p, gf, g, true, v, tag);
  const double gat = at * std::max<double>(1, double(p.B * p.T_));
  expect_all_near(gb.ge, ref.unary, rt, at, tag + " unary marginals vs float64 loop");
  expect_all_near(gb.gt, ref.pair, rt, gat, tag + " pairwise marginals vs float64 loop");
  expect_all_near(gb.gs, ref.start, rt, gat, tag + " start marginals vs float64 loop");
  expect_all_near(gb.gend, ref.end, rt, gat, tag + " end marginals vs float64 loop");
  const BackwardOut<T> cb = run_backward(p, cf, g, false, v, tag);
  expect_all_near(gb.gt, as_double(cb.gt), rt, gat, tag + " pairwise marginals vs cpu");
  expect_all_near(gb.ge, as_double(cb.ge), rt, at, tag + " unary marginals vs cpu");
  if (!cross) return;
  // The backward consumes either device's forward outputs.
  const BackwardOut<T> xb = run_backward(p, cf, g, true, v, tag);
  expect_all_near(xb.ge, ref.unary, rt, at, tag + " unary marginals from the cpu forward");
  expect_all_near(xb.gt, ref.pair, rt, gat, tag + " pairwise marginals from the cpu forward");
}

template <typename T>
void test_relaxed(const Problem<T>& p0, std::mt19937& rng, Variant v, int64_t steps,
                  bool overflow = false) {
  Problem<T> p = p0;
  p.allowed.clear();
  const std::string tag = p.tag() + " relaxed steps=" + std::to_string(steps) + " " +
                          variant_name(v) + (overflow ? " overflow" : "");
  const int64_t n_all = p.B * p.T_ * p.L;
  std::normal_distribution<double> normal;
  std::vector<T> z(n_all), vel(n_all), lr(p.B);
  for (auto& x : z) x = static_cast<T>(normal(rng));
  for (auto& x : vel) x = static_cast<T>(0.1 * normal(rng));
  for (int64_t b = 0; b < p.B; ++b) lr[b] = static_cast<T>(0.05 * (1 + b % 3));
  if (overflow) lr[0] = std::numeric_limits<T>::max() / 4;
  const T mu = T(0.9);
  auto run = [&](bool gpu, std::vector<T>& zz, std::vector<T>& vv, std::vector<T>& en) {
    zz = z;
    vv = vel;
    en.assign(steps * p.B, T(-12345));
    RelaxedStepParams<T> rp;
    rp.energy = p.view();
    rp.logits = zz.data();
    rp.velocity = vv.data();
    rp.lr = lr.data();
    rp.momentum = mu;
    rp.steps = steps;
    rp.energy_out = en.data();
    if (gpu) {
      Workspace ws(cuda::relaxed_energy_step_workspace_bytes(rp));
      expect(cuda::launch_relaxed_energy_step(rp, ws.get(), nullptr, v) == Status::kOk,
             tag + " gpu status");
      expect(cudaGetLastError() == cudaSuccess, tag + " launch error");
    } else {
      const Status s = cpu::relaxed_energy_step(rp, cpu::serial_exec());
      expect(s == Status::kOk || (overflow && s == Status::kNanLogits), tag + " cpu status");
    }
  };
  std::vector<T> zc, vc, ec, zg, vg, eg;
  run(false, zc, vc, ec);
  run(true, zg, vg, eg);
  const double rt = sizeof(T) == 4 ? 1e-3 : 1e-9, at = sizeof(T) == 4 ? 1e-4 : 1e-11;
  if (overflow) {
    // Sequence 0 blows up: both stop it at the same step; the rest agree.
    for (int64_t s = 0; s < steps; ++s) {
      const bool cf = std::isfinite(double(ec[s * p.B])), gf = std::isfinite(double(eg[s * p.B]));
      expect(cf == gf, tag + " same step stops");
      expect((ec[s * p.B] == T(-12345)) == (eg[s * p.B] == T(-12345)), tag + " rows after stop");
      for (int64_t b = 1; b < p.B; ++b)
        expect(near(eg[s * p.B + b], ec[s * p.B + b], rt, at * p.T_), tag + " energy");
    }
    return;
  }
  std::vector<double> zr(z.begin(), z.end()), vr(vel.begin(), vel.end()), er;
  std::vector<double> lrd(lr.begin(), lr.end());
  ref_relaxed(p, zr, vr, lrd, double(mu), steps, er);
  const double eat = at * double(p.T_ * p.L);
  expect_all_near(eg, er, rt, eat, tag + " energies vs float64 loop");
  expect_all_near(eg, as_double(ec), rt, eat, tag + " energies vs cpu");
  expect_all_near(zg, zr, rt, at, tag + " logits vs float64 loop");
  expect_all_near(vg, vr, rt, at, tag + " velocity vs float64 loop");
  expect_all_near(zg, as_double(zc), rt, at, tag + " logits vs cpu");
  bool pad = true;
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t i = p.len[b] * p.L; i < p.T_ * p.L; ++i) {
      pad &= zg[b * p.T_ * p.L + i] == z[b * p.T_ * p.L + i];
      pad &= vg[b * p.T_ * p.L + i] == vel[b * p.T_ * p.L + i];
    }
  expect(pad, tag + " padding untouched");
}

// The differentiable relaxed energy in double, from the definition: E[b], p
// and dE[b]/dinput at a unit incoming gradient, and for weights g the
// gradients of sum_b g[b] E[b]. Zero at padding.
struct RefRelaxedEnergy {
  std::vector<double> energy, p, input_grad, g_input, g_em, g_tr, g_st, g_en;
};

template <typename T>
RefRelaxedEnergy ref_relaxed_energy(const Problem<T>& p, const std::vector<T>& x, bool probs,
                                    const std::vector<double>& g) {
  const int64_t B = p.B, T_ = p.T_, L = p.L;
  RefRelaxedEnergy r;
  r.energy.assign(B, 0);
  r.p.assign(B * T_ * L, 0);
  r.input_grad.assign(B * T_ * L, 0);
  r.g_input.assign(B * T_ * L, 0);
  r.g_em.assign(B * T_ * L, 0);
  r.g_tr.assign(L * L, 0);
  r.g_st.assign(L, 0);
  r.g_en.assign(L, 0);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = p.len[b], off = b * T_ * L;
    std::vector<double> P(n * L), d(L);
    for (int64_t t = 0; t < n; ++t) {
      const T* xt = x.data() + off + t * L;
      if (probs) {
        for (int64_t j = 0; j < L; ++j) P[t * L + j] = xt[j];
        continue;
      }
      double m = -kInfD, sum = 0;
      for (int64_t j = 0; j < L; ++j) m = std::max(m, double(xt[j]));
      for (int64_t j = 0; j < L; ++j) sum += P[t * L + j] = std::exp(double(xt[j]) - m);
      for (int64_t j = 0; j < L; ++j) P[t * L + j] /= sum;
    }
    double score = 0;
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t j = 0; j < L; ++j) {
        const double pj = P[t * L + j];
        double dj = p.em[off + t * L + j];
        score += pj * dj;
        if (t == 0) {
          dj += p.st[j];
          score += pj * p.st[j];
        }
        if (t == n - 1) {
          dj += p.en[j];
          score += pj * p.en[j];
        }
        for (int64_t k = 0; k < L; ++k) {
          if (t + 1 < n) dj += double(p.tr[j * L + k]) * P[(t + 1) * L + k];
          if (t > 0) {
            const double q = double(p.tr[k * L + j]) * P[(t - 1) * L + k];
            dj += q;
            score += pj * q;
          }
        }
        d[j] = dj;
      }
      double pd = 0;
      for (int64_t j = 0; j < L; ++j) pd += P[t * L + j] * d[j];
      for (int64_t j = 0; j < L; ++j) {
        const int64_t i = off + t * L + j;
        const double pj = P[t * L + j];
        r.p[i] = pj;
        r.input_grad[i] = probs ? -d[j] : pj * (pd - d[j]);
        r.g_input[i] = g[b] * r.input_grad[i];
        r.g_em[i] = -g[b] * pj;
        if (t > 0)
          for (int64_t k = 0; k < L; ++k) r.g_tr[k * L + j] -= g[b] * P[(t - 1) * L + k] * pj;
      }
    }
    for (int64_t j = 0; j < L; ++j) {
      r.g_st[j] -= g[b] * P[j];
      r.g_en[j] -= g[b] * P[(n - 1) * L + j];
    }
    r.energy[b] = -score;
  }
  return r;
}

template <typename T>
struct RelaxedGradOut {
  std::vector<T> gi, ge, gt, gs, gn;
};

// The relaxed energy's forward and backward kernels against the CPU kernels
// and the float64 definition. Inputs and emissions are NaN at padding (never
// read); logits have an impossible label (-inf) in some rows.
template <typename T>
void test_relaxed_energy(const Problem<T>& p0, std::mt19937& rng, Variant v, bool probs) {
  Problem<T> p = p0;
  p.allowed.clear();
  const std::string tag = p.tag() + " relaxed_energy " + (probs ? "probs " : "logits ") +
                          variant_name(v);
  const int64_t B = p.B, T_ = p.T_, L = p.L, n_all = B * T_ * L;
  const T nan = std::numeric_limits<T>::quiet_NaN();
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> unif(0.05, 1.0);
  std::vector<T> x(n_all);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T_; ++t) {
      T* xt = x.data() + (b * T_ + t) * L;
      T* et = p.em.data() + (b * T_ + t) * L;
      if (t >= p.len[b]) {
        for (int64_t j = 0; j < L; ++j) xt[j] = et[j] = nan;
        continue;
      }
      double sum = 0;
      for (int64_t j = 0; j < L; ++j) sum += xt[j] = static_cast<T>(probs ? unif(rng) : 2 * normal(rng));
      if (probs)
        for (int64_t j = 0; j < L; ++j) xt[j] = static_cast<T>(xt[j] / sum);
      else if (L > 1 && (b + t) % 3 == 0)
        xt[t % L] = -std::numeric_limits<T>::infinity();
    }
  std::vector<double> g(B);
  for (int64_t b = 0; b < B; ++b) g[b] = b == 2 ? 0.0 : 1.0 + 0.5 * normal(rng);
  const std::vector<T> gt_(g.begin(), g.end());
  const RefRelaxedEnergy ref = ref_relaxed_energy(p, x, probs, g);

  auto forward = [&](bool gpu, bool grad, std::vector<T>& en, std::vector<T>& pp,
                     std::vector<T>& ig) {
    en.assign(B, T(55));
    pp.assign(grad ? n_all : 0, T(55));
    ig.assign(grad ? n_all : 0, T(55));
    RelaxedEnergyParams<T> rp;
    rp.energy = p.view();
    rp.input = x.data();
    rp.probs = probs;
    rp.energy_out = en.data();
    if (grad) {
      rp.p_out = pp.data();
      rp.input_grad = ig.data();
    }
    if (gpu) {
      Workspace ws(cuda::relaxed_energy_forward_workspace_bytes(rp));
      expect(cuda::launch_relaxed_energy_forward(rp, ws.get(), nullptr, v) == Status::kOk,
             tag + " gpu forward status");
      expect(cudaGetLastError() == cudaSuccess, tag + " forward launch error");
    } else {
      expect(cpu::relaxed_energy_forward(rp, cpu::serial_exec()) == Status::kOk,
             tag + " cpu forward status");
    }
  };
  std::vector<T> eg, pg, igg, eg0, pg0, igg0, ec, pc, igc;
  forward(true, true, eg, pg, igg);
  forward(true, false, eg0, pg0, igg0);
  forward(false, true, ec, pc, igc);
  const bool f32 = sizeof(T) == 4;
  const double rt = f32 ? 2e-4 : 1e-10, at = f32 ? 2e-5 : 1e-12;
  const double eat = at * double(T_ * L), gat = at * double(L), pat = at * double(B * T_);
  expect_all_near(eg, ref.energy, rt, eat, tag + " energy vs float64 loop");
  expect_all_near(eg, as_double(ec), rt, eat, tag + " energy vs cpu");
  bool same = true;
  for (int64_t b = 0; b < B; ++b) same &= eg[b] == eg0[b];
  expect(same, tag + " energy the same with and without gradients");
  expect_all_near(pg, ref.p, rt, at, tag + " p vs float64 loop");
  expect_all_near(igg, ref.input_grad, rt, gat, tag + " dE/dinput vs float64 loop");
  expect_all_near(igg, as_double(igc), rt, gat, tag + " dE/dinput vs cpu");
  bool pad = true;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = p.len[b] * L; i < T_ * L; ++i)
      pad &= pg[b * T_ * L + i] == T(0) && igg[b * T_ * L + i] == T(0);
  expect(pad, tag + " p and dE/dinput zero at padding");

  // Backward from the GPU forward's outputs, their padding poisoned.
  std::vector<T> pb = pg, ib = igg;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = p.len[b] * L; i < T_ * L; ++i) pb[b * T_ * L + i] = ib[b * T_ * L + i] = nan;
  // mask: grad_input, grad_emissions, grad_transitions, grad_start, grad_end.
  auto backward = [&](bool gpu, unsigned mask, RelaxedGradOut<T>& o) {
    o.gi.assign(n_all, T(55));
    o.ge.assign(n_all, T(55));
    o.gt.assign(L * L, T(55));
    o.gs.assign(L, T(55));
    o.gn.assign(L, T(55));
    RelaxedEnergyBackwardParams<T> bp;
    bp.B = B;
    bp.T = T_;
    bp.L = L;
    bp.lengths = p.len.data();
    bp.grad_energy = gt_.data();
    bp.p = pb.data();
    bp.input_grad = ib.data();
    bp.grad_input = mask & 1 ? o.gi.data() : nullptr;
    bp.grad_emissions = mask & 2 ? o.ge.data() : nullptr;
    bp.grad_transitions = mask & 4 ? o.gt.data() : nullptr;
    bp.grad_start = mask & 8 ? o.gs.data() : nullptr;
    bp.grad_end = mask & 16 ? o.gn.data() : nullptr;
    if (gpu) {
      Workspace ws(cuda::relaxed_energy_backward_workspace_bytes(bp));
      expect(cuda::launch_relaxed_energy_backward(bp, ws.get(), nullptr) == Status::kOk,
             tag + " gpu backward status");
      expect(cudaGetLastError() == cudaSuccess, tag + " backward launch error");
    } else {
      expect(cpu::relaxed_energy_backward(bp, cpu::serial_exec()) == Status::kOk,
             tag + " cpu backward status");
    }
  };
  RelaxedGradOut<T> gb, cb, again, part1, part2;
  backward(true, 31, gb);
  backward(false, 31, cb);
  expect_all_near(gb.gi, ref.g_input, rt, gat, tag + " grad_input vs float64 loop");
  expect_all_near(gb.ge, ref.g_em, rt, at, tag + " grad_emissions vs float64 loop");
  expect_all_near(gb.gt, ref.g_tr, rt, pat, tag + " grad_transitions vs float64 loop");
  expect_all_near(gb.gs, ref.g_st, rt, pat, tag + " grad_start vs float64 loop");
  expect_all_near(gb.gn, ref.g_en, rt, pat, tag + " grad_end vs float64 loop");
  expect(gb.gi == cb.gi && gb.ge == cb.ge, tag + " grad_input, grad_emissions == cpu");
  expect_all_near(gb.gt, as_double(cb.gt), rt, pat, tag + " grad_transitions vs cpu");
  expect_all_near(gb.gs, as_double(cb.gs), rt, pat, tag + " grad_start vs cpu");
  expect_all_near(gb.gn, as_double(cb.gn), rt, pat, tag + " grad_end vs cpu");
  backward(true, 31, again);
  expect(again.gt == gb.gt && again.gs == gb.gs && again.gn == gb.gn,
         tag + " parameter gradients identical run to run");
  // Null outputs are skipped; the others come out the same.
  backward(true, 1 | 4, part1);
  backward(true, 2 | 8 | 16, part2);
  expect(part1.gi == gb.gi && part1.gt == gb.gt, tag + " grad_input, grad_transitions alone");
  expect(part2.ge == gb.ge && part2.gs == gb.gs && part2.gn == gb.gn,
         tag + " grad_emissions, grad_start, grad_end alone");
  bool untouched = true;
  for (T y : part1.ge) untouched &= y == T(55);
  for (T y : part1.gs) untouched &= y == T(55);
  for (T y : part2.gi) untouched &= y == T(55);
  for (T y : part2.gt) untouched &= y == T(55);
  expect(untouched, tag + " skipped gradients not written");
}

// B = 0 launches nothing but still zeroes the parameter gradients.
template <typename T>
void test_empty() {
  Problem<T> p;
  p.L = 3;
  p.tr.assign(9, T(1));
  p.st.assign(3, T(1));
  p.en.assign(3, T(1));
  ViterbiParams<T> vp;
  vp.energy = p.view();
  expect(cuda::viterbi_workspace_bytes(vp) == 0, "B=0 viterbi workspace");
  expect(cuda::launch_viterbi(vp, nullptr, nullptr) == Status::kOk, "B=0 viterbi");
  CrfForwardParams<T> fp;
  fp.energy = p.view();
  expect(cuda::launch_crf_forward(fp, nullptr, nullptr) == Status::kOk, "B=0 forward");
  std::vector<T> gt(9, T(5)), gs(3, T(5)), ge(3, T(5));
  CrfBackwardParams<T> bp;
  bp.energy = p.view();
  bp.grad_transitions = gt.data();
  bp.grad_start = gs.data();
  bp.grad_end = ge.data();
  Workspace ws(cuda::crf_backward_workspace_bytes(bp));
  expect(cuda::launch_crf_backward(bp, ws.get(), nullptr) == Status::kOk, "B=0 backward");
  bool zero = true;
  for (T x : gt) zero &= x == T(0);
  for (T x : gs) zero &= x == T(0);
  for (T x : ge) zero &= x == T(0);
  expect(zero, "B=0 backward zeroes the parameter gradients");
  RelaxedStepParams<T> rp;
  rp.energy = p.view();
  expect(cuda::launch_relaxed_energy_step(rp, nullptr, nullptr) == Status::kOk, "B=0 relaxed");
  RelaxedEnergyParams<T> ep;
  ep.energy = p.view();
  expect(cuda::relaxed_energy_forward_workspace_bytes(ep) == 0, "B=0 relaxed energy workspace");
  expect(cuda::launch_relaxed_energy_forward(ep, nullptr, nullptr) == Status::kOk,
         "B=0 relaxed energy forward");
  std::fill(gt.begin(), gt.end(), T(5));
  std::fill(gs.begin(), gs.end(), T(5));
  std::fill(ge.begin(), ge.end(), T(5));
  RelaxedEnergyBackwardParams<T> ebp;
  ebp.L = 3;
  ebp.grad_transitions = gt.data();
  ebp.grad_start = gs.data();
  ebp.grad_end = ge.data();
  Workspace ews(cuda::relaxed_energy_backward_workspace_bytes(ebp));
  expect(cuda::launch_relaxed_energy_backward(ebp, ews.get(), nullptr) == Status::kOk,
         "B=0 relaxed energy backward");
  zero = true;
  for (T x : gt) zero &= x == T(0);
  for (T x : gs) zero &= x == T(0);
  for (T x : ge) zero &= x == T(0);
  expect(zero, "B=0 relaxed energy backward zeroes the parameter gradients");
}

template <typename T>
void test_unsupported(std::mt19937& rng) {
  const Problem<T> p = make_problem<T>(rng, 1, 2, 40, Kind::kRandom, false);
  ViterbiParams<T> vp;
  vp.energy = p.view();
  std::vector<int64_t> paths(2);
  std::vector<T> scores(1);
  vp.paths = paths.data();
  vp.scores = scores.data();
  Workspace ws(cuda::viterbi_workspace_bytes(vp));
  expect(cuda::launch_viterbi(vp, ws.get(), nullptr, Variant::kWarp) == Status::kCudaUnsupported,
         "kWarp with L > 32 is unsupported");
}

struct Shape {
  int64_t B, T, L;
};

// quick: the suite the sanitizer builds run, every kernel and path at
// smaller sizes (the plain build runs the full one).
template <typename T>
void run_all(std::mt19937& rng, bool quick) {
  std::printf("%s\n", dtype_name<T>());
  auto done = [](const char* what, int before) {
    std::printf("  %s: %s\n", what, failures == before ? "ok" : "FAILED");
  };
  // Small shapes: every op, every mapping, random and tie-heavy scores, masks.
  const std::vector<Shape> small = {{3, 4, 1}, {5, 6, 5}, {6, 9, 17}, {3, 12, 33}, {2, 10, 64}};
  for (const Shape& s : small) {
    const int before = failures;
    for (int variant = quick ? 1 : 0; variant < 4; variant += quick ? 2 : 1) {
      const bool masked = variant % 2 == 1;
      const Kind kind = variant >= 2 ? Kind::kTies : Kind::kRandom;
      const Problem<T> p = make_problem<T>(rng, s.B, s.T, s.L, kind, masked);
      for (Variant v : variants_for<T>(s.L)) {
        test_viterbi(p, 1, v);
        if (kind == Kind::kRandom) test_crf(p, rng, v, s.L <= 17);
        if (kind == Kind::kRandom ? !masked : quick) test_relaxed(p, rng, v, 3);
        if (variant == 1)
          for (bool probs : {false, true}) test_relaxed_energy(p, rng, v, probs);
      }
      test_viterbi(p, 4, Variant::kAuto);
    }
    const std::string what = "B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) +
                             " L=" + std::to_string(s.L);
    done(what.c_str(), before);
  }
  // Long sequences.
  {
    const int before = failures;
    const int64_t T_ = quick ? 50 : 200;
    const Problem<T> p = make_problem<T>(rng, 2, T_, 25, Kind::kRandom, false);
    const Problem<T> q = make_problem<T>(rng, 2, T_, 25, Kind::kTies, true);
    for (Variant v : variants_for<T>(25)) {
      test_viterbi(p, 1, v);
      test_viterbi(q, 1, v);
      test_crf(p, rng, v);
      if (v != Variant::kGlobal) test_relaxed(p, rng, v, v == Variant::kWarp ? 3 : 1);
    }
    done(quick ? "B=2 T=50 L=25" : "B=2 T=200 L=25", before);
  }
  // Many labels: uint16 backpointers, transitions in global memory.
  for (int64_t L : {257, 401}) {
    if (quick && L == 257) continue;
    const int before = failures;
    const int64_t T_ = quick ? 3 : 5;
    const Problem<T> p = make_problem<T>(rng, 2, T_, L, Kind::kRandom, false);
    const Problem<T> q = make_problem<T>(rng, 2, T_, L, Kind::kTies, true);
    test_viterbi(p, 1, Variant::kGlobal);
    test_viterbi(q, 1, Variant::kGlobal);
    test_viterbi(q, 2, Variant::kAuto);
    test_crf(p, rng, Variant::kGlobal);
    test_relaxed(p, rng, Variant::kGlobal, 2);
    for (bool probs : {false, true}) test_relaxed_energy(p, rng, Variant::kGlobal, probs);
    if (L == 401) test_relaxed_energy(make_problem<T>(rng, 3, 2, L, Kind::kRandom, false), rng,
                                      Variant::kAuto, false);
    const std::string what = "B=2 T=" + std::to_string(T_) + " L=" + std::to_string(L);
    done(what.c_str(), before);
  }
  {
    const int before = failures;
    // The automatic choice, on each side of the thresholds.
    for (int64_t L : {5, 33}) {
      const Problem<T> p = make_problem<T>(rng, 3, 7, L, Kind::kRandom, true);
      test_viterbi(p, 1, Variant::kAuto);
      test_crf(p, rng, Variant::kAuto);
      test_relaxed(p, rng, Variant::kAuto, 2);
    }
    // Ties and masks with k-best on tiny sizes, checked by brute force too.
    for (int rep = 0; rep < 6; ++rep) {
      const Problem<T> p = make_problem<T>(rng, 3, 1 + rep % 4, 2 + rep % 3,
                                           rep % 2 ? Kind::kTies : Kind::kRandom, rep >= 3);
      test_viterbi(p, 5, Variant::kAuto);
      test_viterbi(p, 1, Variant::kWarp);
    }
    // No allowed labeling at all (every transition forbidden).
    {
      const Problem<T> p = make_problem<T>(rng, 3, 4, 5, Kind::kRandom, true, true);
      for (Variant v : variants_for<T>(p.L)) {
        test_viterbi(p, 1, v);
        test_crf(p, rng, v);
      }
      test_viterbi(p, 3, Variant::kAuto);
    }
    // A likely label reachable only from a very unlikely one: its scaled sum
    // underflows to 0 (in float and double), so the forward pass and the
    // pairwise marginals must take the exact route.
    {
      Problem<T> p = make_problem<T>(rng, 2, 6, 3, Kind::kRandom, true);
      for (int64_t i = 0; i < 9; ++i) p.allowed[i] = !(i == 0 * 3 + 2 || i == 2 * 3 + 2);
      for (int64_t b = 0; b < p.B; ++b)
        for (int64_t t = 0; t < p.T_; ++t) p.em[(b * p.T_ + t) * 3 + (t % 2 ? 2 : 1)] += T(t % 2 ? 500 : -500);
      for (Variant v : variants_for<T>(p.L)) test_crf(p, rng, v, true);
    }
    // Large scores: the scaled exponentials underflow and take the exact route.
    {
      const Problem<T> p = make_problem<T>(rng, 3, 7, 6, Kind::kRandom, true, false, 40.0);
      for (Variant v : variants_for<T>(p.L)) test_crf(p, rng, v);
      const Problem<T> q = make_problem<T>(rng, 2, 5, 40, Kind::kRandom, true, false, 40.0);
      for (Variant v : variants_for<T>(q.L)) test_crf(q, rng, v);
    }
    // Relaxed: sequences that do not fit on chip are streamed; a step whose
    // energy overflows stops its sequence.
    {
      cuda::set_shared_memory_budget(8 * 1024);
      const Problem<T> p = make_problem<T>(rng, 3, 40, 17, Kind::kRandom, false);
      for (Variant v : {Variant::kWarp, Variant::kBlock, Variant::kGlobal}) test_relaxed(p, rng, v, 2);
      const Problem<T> q = make_problem<T>(rng, 2, 5, 40, Kind::kRandom, false);
      test_viterbi(q, 1, Variant::kAuto);  // auto falls back to global memory
      test_crf(q, rng, Variant::kAuto);
      cuda::set_shared_memory_budget(0);
      const Problem<T> r = make_problem<T>(rng, 3, 6, 5, Kind::kRandom, false);
      for (Variant v : {Variant::kWarp, Variant::kBlock}) test_relaxed(r, rng, v, 6, true);
    }
    // Relaxed energy: probabilities not on chip (a small shared-memory
    // budget), the transition gradient split over several blocks (B T >= 256
    // pairs), every length 1, L = 2, the automatic choice.
    {
      cuda::set_shared_memory_budget(8 * 1024);
      const Problem<T> p = make_problem<T>(rng, 3, 100, 17, Kind::kRandom, false);
      for (Variant v : {Variant::kWarp, Variant::kBlock, Variant::kGlobal})
        for (bool probs : {false, true}) test_relaxed_energy(p, rng, v, probs);
      cuda::set_shared_memory_budget(0);
      const Problem<T> q = make_problem<T>(rng, 8, 40, 5, Kind::kRandom, false);
      for (bool probs : {false, true}) test_relaxed_energy(q, rng, Variant::kAuto, probs);
      if (!quick) {
        const Problem<T> q2 = make_problem<T>(rng, 20, 30, 33, Kind::kRandom, false);
        test_relaxed_energy(q2, rng, Variant::kAuto, false);
      }
      const Problem<T> r = make_problem<T>(rng, 4, 1, 6, Kind::kRandom, false);
      for (Variant v : variants_for<T>(r.L)) test_relaxed_energy(r, rng, v, false);
      const Problem<T> s2 = make_problem<T>(rng, 5, 7, 2, Kind::kRandom, false);
      for (Variant v : variants_for<T>(s2.L))
        for (bool probs : {false, true}) test_relaxed_energy(s2, rng, v, probs);
      for (int64_t L : {5, 33}) {
        const Problem<T> a = make_problem<T>(rng, 3, 7, L, Kind::kRandom, false);
        test_relaxed_energy(a, rng, Variant::kAuto, true);
      }
    }
    test_empty<T>();
    test_unsupported<T>(rng);
    done("auto, k-best, no labeling, exact route, streaming, overflow, relaxed energy, B=0", before);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::mt19937 rng(2024);
  run_all<float>(rng, quick);
  run_all<double>(rng, quick);
  std::printf("%d checks, %s\n", checks, failures ? "FAILED" : "all passed");
  return failures ? 1 : 0;
}
