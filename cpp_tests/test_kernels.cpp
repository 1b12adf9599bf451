// The torch-free CPU kernels against brute-force enumeration, without Python:
// Viterbi (k = 1 and k-best), log Z and every marginal, and the relaxed step's
// gradient against central finite differences. Every usable instruction set,
// float64 and float32 (the float32 kernels run on the problem rounded to float,
// and are held to the float64 enumeration of that same problem).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/api.h"
#include "test_util.h"

using namespace structinf;
using test::expect;
using test::failures;

namespace {


// Relative tolerance of a kernel result in S against a float64 oracle.
template <typename S>
double tol() {
  return sizeof(S) == sizeof(double) ? 1e-9 : 2e-5;
}

bool close(double a, double b, double tol = 1e-9) {
  if (std::isinf(a) || std::isinf(b)) return a == b;
  return std::fabs(a - b) <= tol * (1 + std::fabs(b));
}

struct Problem {
  int64_t B, T, L;
  std::vector<double> em, tr, st, en;
  std::vector<int64_t> len;
  std::vector<char> allowed;  // empty: no mask

  EnergyView<double> view() const { return test::energy_view(B, T, L, em, tr, st, en, len, allowed); }
};

// A problem's scores in S (the kernels' input), and their view.
template <typename S>
struct Cast {
  std::vector<S> em, tr, st, en;
  EnergyView<S> view(const Problem& p) const {
    return test::energy_view(p.B, p.T, p.L, em, tr, st, en, p.len, p.allowed);
  }
};

template <typename S>
Cast<S> cast(const Problem& p) {
  auto conv = [](const std::vector<double>& x) { return std::vector<S>(x.begin(), x.end()); };
  return Cast<S>{conv(p.em), conv(p.tr), conv(p.st), conv(p.en)};
}

// The problem with every score rounded to float (what the float32 kernels see).
Problem rounded_to_float(Problem p) {
  for (auto* v : {&p.em, &p.tr, &p.st, &p.en})
    for (double& x : *v) x = static_cast<double>(static_cast<float>(x));
  return p;
}

Problem random_problem(std::mt19937& rng, int64_t B, int64_t T, int64_t L, bool masked) {
  std::normal_distribution<double> normal;
  std::uniform_int_distribution<int64_t> length(1, T);
  Problem p{B, T, L, {}, {}, {}, {}, {}, {}};
  for (int64_t i = 0; i < B * T * L; ++i) p.em.push_back(normal(rng));
  for (int64_t i = 0; i < L * L; ++i) p.tr.push_back(normal(rng));
  for (int64_t i = 0; i < L; ++i) p.st.push_back(normal(rng));
  for (int64_t i = 0; i < L; ++i) p.en.push_back(normal(rng));
  for (int64_t b = 0; b < B; ++b) p.len.push_back(length(rng));
  if (masked) {
    std::bernoulli_distribution keep(0.7);
    for (int64_t i = 0; i < L * L; ++i) p.allowed.push_back(keep(rng));
  }
  return p;
}

// Every labeling of sequence b with its score (-inf when forbidden).
struct Labeling {
  std::vector<int64_t> y;
  double score;
};

std::vector<Labeling> enumerate(const Problem& p, int64_t b) {
  const int64_t n = p.len[b], L = p.L;
  int64_t count = 1;
  for (int64_t t = 0; t < n; ++t) count *= L;
  std::vector<Labeling> out;
  for (int64_t c = 0; c < count; ++c) {
    Labeling lab;
    int64_t x = c;
    for (int64_t t = 0; t < n; ++t, x /= L) lab.y.push_back(x % L);
    double s = p.st[lab.y[0]] + p.en[lab.y[n - 1]];
    for (int64_t t = 0; t < n; ++t) s += p.em[(b * p.T + t) * L + lab.y[t]];
    for (int64_t t = 1; t < n; ++t) {
      const int64_t i = lab.y[t - 1], j = lab.y[t];
      if (!p.allowed.empty() && !p.allowed[i * L + j]) s = -INFINITY;
      if (std::isfinite(s)) s += p.tr[i * L + j];
    }
    lab.score = s;
    out.push_back(lab);
  }
  return out;
}

template <typename S>
void test_viterbi(const Problem& p, int64_t k, const std::string& tag) {
  const Cast<S> c = cast<S>(p);
  std::vector<int64_t> paths(p.B * k * p.T);
  std::vector<S> scores(p.B * k);
  ViterbiParams<S> vp;
  vp.energy = c.view(p);
  vp.k = k;
  vp.paths = paths.data();
  vp.scores = scores.data();
  expect(cpu::viterbi(vp, cpu::serial_exec()) == Status::kOk, tag + " viterbi status");
  for (int64_t b = 0; b < p.B; ++b) {
    std::vector<Labeling> all = enumerate(p, b);
    std::stable_sort(all.begin(), all.end(),
                     [](const Labeling& x, const Labeling& y) { return x.score > y.score; });
    for (int64_t q = 0; q < k; ++q) {
      const double want = q < static_cast<int64_t>(all.size()) ? all[q].score : -INFINITY;
      const double got = scores[b * k + q];
      expect(close(got, want, tol<S>()),
             tag + " score b=" + std::to_string(b) + " q=" + std::to_string(q));
      const int64_t* path = paths.data() + (b * k + q) * p.T;
      // Random scores have no ties: the path must be the enumerated one, unless (in
      // float32) the neighbouring scores lie within rounding of each other.
      auto gap = [&](int64_t r) {
        return r < 0 || r >= static_cast<int64_t>(all.size()) ? INFINITY
                                                               : std::fabs(all[r].score - want);
      };
      const bool separated = std::min(gap(q - 1), gap(q + 1)) > 1e3 * tol<S>() * (1 + std::fabs(want));
      if (std::isfinite(want) && separated) {
        for (int64_t t = 0; t < p.len[b]; ++t)
          expect(path[t] == all[q].y[t], tag + " path b=" + std::to_string(b));
      } else if (std::isfinite(want)) {
        for (int64_t t = 0; t < p.len[b]; ++t) expect(path[t] >= 0, tag + " path is a labeling");
      } else {
        for (int64_t t = 0; t < p.T; ++t) expect(path[t] == -1, tag + " missing path is -1");
      }
      for (int64_t t = p.len[b]; t < p.T; ++t) expect(path[t] == -1, tag + " padding is -1");
    }
  }
}

template <typename S>
void test_forward_backward(const Problem& p, const std::string& tag) {
  const int64_t B = p.B, T = p.T, L = p.L;
  const Cast<S> c = cast<S>(p);
  std::vector<S> log_z(B), log_alpha(B * T * L), shift(B * T);
  CrfForwardParams<S> fp;
  fp.energy = c.view(p);
  fp.log_z = log_z.data();
  fp.log_alpha = log_alpha.data();
  fp.log_alpha_shift = shift.data();
  expect(cpu::crf_forward(fp, cpu::serial_exec()) == Status::kOk, tag + " forward status");
  std::vector<S> grad(B, S(1)), ge(B * T * L), gt(L * L), gs(L), gend(L);
  CrfBackwardParams<S> bp;
  bp.energy = c.view(p);
  bp.grad_log_z = grad.data();
  bp.log_z = log_z.data();
  bp.log_alpha = log_alpha.data();
  bp.log_alpha_shift = shift.data();
  bp.grad_emissions = ge.data();
  bp.grad_transitions = gt.data();
  bp.grad_start = gs.data();
  bp.grad_end = gend.data();
  expect(cpu::crf_backward(bp, cpu::serial_exec()) == Status::kOk, tag + " backward status");
  std::vector<double> want_ge(B * T * L, 0.0), want_gt(L * L, 0.0), want_gs(L, 0.0),
      want_gend(L, 0.0);
  for (int64_t b = 0; b < B; ++b) {
    const std::vector<Labeling> all = enumerate(p, b);
    double m = -INFINITY;
    for (const auto& lab : all) m = std::max(m, lab.score);
    double z = 0;
    for (const auto& lab : all) z += std::exp(lab.score - m);
    const double want = std::isfinite(m) ? m + std::log(z) : -INFINITY;
    expect(close(log_z[b], want, tol<S>()), tag + " log Z b=" + std::to_string(b));
    if (!std::isfinite(want)) continue;
    const int64_t n = p.len[b];
    for (const auto& lab : all) {
      const double pr = std::exp(lab.score - want);
      for (int64_t t = 0; t < n; ++t) want_ge[(b * T + t) * L + lab.y[t]] += pr;
      for (int64_t t = 1; t < n; ++t) want_gt[lab.y[t - 1] * L + lab.y[t]] += pr;
      want_gs[lab.y[0]] += pr;
      want_gend[lab.y[n - 1]] += pr;
    }
  }
  // Marginals are probabilities (sums of them): an absolute tolerance.
  auto near = [](double a, double b) { return std::fabs(a - b) <= 1e3 * tol<S>(); };
  for (int64_t i = 0; i < B * T * L; ++i) expect(near(ge[i], want_ge[i]), tag + " unary marginal");
  for (int64_t i = 0; i < L * L; ++i) expect(near(gt[i], want_gt[i]), tag + " pairwise marginal");
  for (int64_t i = 0; i < L; ++i) {
    expect(near(gs[i], want_gs[i]), tag + " start marginal");
    expect(near(gend[i], want_gend[i]), tag + " end marginal");
  }
}

// Relaxed energy (lr = 0 leaves the logits as they are).
double relaxed_energy(const Problem& p, std::vector<double> z, int64_t b) {
  std::vector<double> v(z.size(), 0.0), lr(p.B, 0.0), energy(p.B);
  RelaxedStepParams<double> rp;
  rp.energy = p.view();
  rp.logits = z.data();
  rp.velocity = v.data();
  rp.lr = lr.data();
  rp.momentum = 0.0;
  rp.energy_out = energy.data();
  cpu::relaxed_energy_step(rp, cpu::serial_exec());
  return energy[b];
}

void test_relaxed_gradient(Problem p, std::mt19937& rng, const std::string& tag) {
  p.allowed.clear();
  std::normal_distribution<double> normal;
  std::vector<double> z(p.B * p.T * p.L);
  for (double& x : z) x = normal(rng);
  std::vector<double> z1 = z, v(z.size(), 0.0), lr(p.B, 1.0), energy(p.B);
  RelaxedStepParams<double> rp;
  rp.energy = p.view();
  rp.logits = z1.data();
  rp.velocity = v.data();
  rp.lr = lr.data();
  rp.momentum = 0.5;
  rp.energy_out = energy.data();
  expect(cpu::relaxed_energy_step(rp, cpu::serial_exec()) == Status::kOk, tag + " relaxed status");
  const double h = 1e-6;
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t t = 0; t < p.T; ++t)
      for (int64_t j = 0; j < p.L; ++j) {
        const int64_t i = (b * p.T + t) * p.L + j;
        std::vector<double> zp = z, zm = z;
        zp[i] += h;
        zm[i] -= h;
        const double fd = (relaxed_energy(p, zp, b) - relaxed_energy(p, zm, b)) / (2 * h);
        const bool pad = t >= p.len[b];
        // Velocity started at 0: v = g; z = z - lr v.
        expect(close(v[i], pad ? 0.0 : fd, 1e-6), tag + " relaxed gradient");
        expect(close(z1[i], pad ? z[i] : z[i] - v[i], 1e-12), tag + " relaxed update");
      }
}

// The float32 relaxed step against the float64 one on the same rounded inputs.
void test_relaxed_float32(Problem p, std::mt19937& rng, const std::string& tag) {
  p.allowed.clear();
  p = rounded_to_float(p);
  std::normal_distribution<double> normal;
  const size_t n = static_cast<size_t>(p.B * p.T * p.L);
  std::vector<double> z(n), v(n, 0.0), lr(p.B, 0.7), energy(p.B);
  for (double& x : z) x = static_cast<float>(normal(rng));
  std::vector<float> zf(z.begin(), z.end()), vf(n, 0.0f), lrf(p.B, 0.7f), energyf(p.B);
  RelaxedStepParams<double> rp;
  rp.energy = p.view();
  rp.logits = z.data();
  rp.velocity = v.data();
  rp.lr = lr.data();
  rp.momentum = 0.5;
  rp.energy_out = energy.data();
  const Cast<float> c = cast<float>(p);
  RelaxedStepParams<float> rf;
  rf.energy = c.view(p);
  rf.logits = zf.data();
  rf.velocity = vf.data();
  rf.lr = lrf.data();
  rf.momentum = 0.5f;
  rf.energy_out = energyf.data();
  expect(cpu::relaxed_energy_step(rp, cpu::serial_exec()) == Status::kOk, tag + " f64 status");
  expect(cpu::relaxed_energy_step(rf, cpu::serial_exec()) == Status::kOk, tag + " f32 status");
  for (int64_t b = 0; b < p.B; ++b)
    expect(close(energyf[b], energy[b], tol<float>()), tag + " f32 relaxed energy");
  for (size_t i = 0; i < n; ++i) {
    expect(std::fabs(vf[i] - v[i]) <= 1e-4 * (1 + std::fabs(v[i])), tag + " f32 velocity");
    expect(std::fabs(zf[i] - z[i]) <= 1e-4 * (1 + std::fabs(z[i])), tag + " f32 logits");
  }
}

void test_nan_reported(std::mt19937& rng) {
  Problem p = random_problem(rng, 2, 3, 3, false);
  p.len = {3, 2};
  p.em[(1 * 3 + 2) * 3] = NAN;  // padding: ignored
  std::vector<int64_t> paths(6);
  std::vector<double> scores(2);
  ViterbiParams<double> vp;
  vp.energy = p.view();
  vp.paths = paths.data();
  vp.scores = scores.data();
  expect(cpu::viterbi(vp, cpu::serial_exec()) == Status::kOk, "NaN in padding ignored");
  p.em[0] = NAN;
  vp.energy = p.view();
  expect(cpu::viterbi(vp, cpu::serial_exec()) == Status::kNanEmissions, "NaN emissions reported");
  p.em[0] = 0;
  p.tr[4] = NAN;
  vp.energy = p.view();
  expect(cpu::viterbi(vp, cpu::serial_exec()) == Status::kNanTransitions,
         "NaN transitions reported");
}

}  // namespace

int main() {
  for (const std::string& isa : cpu::available_isas()) {
    cpu::set_isa(isa);
    std::printf("instruction set %s\n", isa.c_str());
    std::mt19937 rng(1234);
    for (int rep = 0; rep < 40; ++rep) {
      const int64_t B = 1 + rep % 3, T = 1 + rep % 4, L = 1 + (rep / 4) % 3;
      const bool masked = rep % 2 == 1;
      const std::string tag = isa + " B=" + std::to_string(B) + " T=" + std::to_string(T) +
                              " L=" + std::to_string(L) + (masked ? " masked" : "");
      const Problem p = random_problem(rng, B, T, L, masked);
      test_viterbi<double>(p, 1, tag);
      test_viterbi<double>(p, 4, tag + " k=4");
      test_forward_backward<double>(p, tag);
      test_relaxed_gradient(p, rng, tag);
      const Problem pf = rounded_to_float(p);
      test_viterbi<float>(pf, 1, tag + " f32");
      test_viterbi<float>(pf, 4, tag + " f32 k=4");
      test_forward_backward<float>(pf, tag + " f32");
      test_relaxed_float32(p, rng, tag + " f32");
    }
    test_nan_reported(rng);
  }
  std::printf("%s\n", failures ? "FAILED" : "all passed");
  return failures ? 1 : 0;
}
