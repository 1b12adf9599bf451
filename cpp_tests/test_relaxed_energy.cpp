// The differentiable relaxed-energy kernels without Python: the energy against
// a direct loop, every gradient (input in both modes, emissions, transitions,
// start, end) against central finite differences in double, float against
// double, zero at padding, a reduction that does not depend on the order the
// tasks run in, and the statuses for non-finite input. Every usable
// instruction set.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/api.h"
#include "test_util.h"

using namespace structinf;
using test::expect;
using test::failures;

namespace {


bool close(double a, double b, double tol) { return std::fabs(a - b) <= tol * (1 + std::fabs(b)); }

template <typename T>
struct Problem {
  int64_t B, T_, L;
  bool probs;
  std::vector<T> x, em, tr, st, en;
  std::vector<int64_t> len;

  EnergyView<T> view() const { return test::energy_view(B, T_, L, em, tr, st, en, len); }

  template <typename U>
  Problem<U> cast() const {
    auto c = [](const std::vector<T>& v) { return std::vector<U>(v.begin(), v.end()); };
    return {B, T_, L, probs, c(x), c(em), c(tr), c(st), c(en), len};
  }
};

Problem<double> random_problem(std::mt19937& rng, int64_t B, int64_t T, int64_t L, bool probs) {
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> unif(0.05, 1.0);
  std::uniform_int_distribution<int64_t> length(1, T);
  Problem<double> p{B, T, L, probs, {}, {}, {}, {}, {}, {}};
  for (int64_t i = 0; i < B * T * L; ++i) p.x.push_back(probs ? unif(rng) : 2 * normal(rng));
  for (int64_t i = 0; i < B * T * L; ++i) p.em.push_back(normal(rng));
  for (int64_t i = 0; i < L * L; ++i) p.tr.push_back(normal(rng));
  for (int64_t i = 0; i < L; ++i) p.st.push_back(normal(rng));
  for (int64_t i = 0; i < L; ++i) p.en.push_back(normal(rng));
  for (int64_t b = 0; b < B; ++b) p.len.push_back(length(rng));
  // Padding holds values that would show if it were read.
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = p.len[b] * L; i < T * L; ++i) {
      p.x[b * T * L + i] = 1e6;
      p.em[b * T * L + i] = -1e6;
    }
  return p;
}

// E(p) = -score(p) of sequence b, by the definition.
double direct_energy(const Problem<double>& p, int64_t b) {
  const int64_t L = p.L, n = p.len[b];
  std::vector<double> q(n * L);
  for (int64_t t = 0; t < n; ++t) {
    const double* x = p.x.data() + (b * p.T_ + t) * L;
    if (p.probs) {
      std::copy(x, x + L, q.data() + t * L);
      continue;
    }
    const double m = *std::max_element(x, x + L);
    double s = 0;
    for (int64_t j = 0; j < L; ++j) s += std::exp(x[j] - m);
    for (int64_t j = 0; j < L; ++j) q[t * L + j] = std::exp(x[j] - m) / s;
  }
  double score = 0;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < L; ++j) {
      score += q[t * L + j] * p.em[(b * p.T_ + t) * L + j];
      if (t == 0) score += q[j] * p.st[j];
      if (t == n - 1) score += q[t * L + j] * p.en[j];
      if (t > 0)
        for (int64_t i = 0; i < L; ++i)
          score += q[(t - 1) * L + i] * p.tr[i * L + j] * q[t * L + j];
    }
  return -score;
}

template <typename T>
struct Grads {
  std::vector<T> energy, input, em, tr, st, en;
};

template <typename T>
Grads<T> run(const Problem<T>& p, const std::vector<T>& g, const cpu::Exec& exec, Status* fwd,
             Status* bwd) {
  const int64_t BTL = p.B * p.T_ * p.L;
  Grads<T> out;
  out.energy.assign(p.B, T(0));
  std::vector<T> saved_p(BTL, T(-7)), saved_grad(BTL, T(-7));
  RelaxedEnergyParams<T> f;
  f.energy = p.view();
  f.input = p.x.data();
  f.probs = p.probs;
  f.energy_out = out.energy.data();
  f.p_out = saved_p.data();
  f.input_grad = saved_grad.data();
  *fwd = cpu::relaxed_energy_forward(f, exec);
  out.input.assign(BTL, T(-7));
  out.em.assign(BTL, T(-7));
  out.tr.assign(p.L * p.L, T(-7));
  out.st.assign(p.L, T(-7));
  out.en.assign(p.L, T(-7));
  RelaxedEnergyBackwardParams<T> r;
  r.B = p.B;
  r.T = p.T_;
  r.L = p.L;
  r.lengths = p.len.data();
  r.grad_energy = g.data();
  r.p = saved_p.data();
  r.input_grad = saved_grad.data();
  r.grad_input = out.input.data();
  r.grad_emissions = out.em.data();
  r.grad_transitions = out.tr.data();
  r.grad_start = out.st.data();
  r.grad_end = out.en.data();
  *bwd = cpu::relaxed_energy_backward(r, exec);
  return out;
}

template <typename T>
std::vector<T> energy_only(const Problem<T>& p) {
  std::vector<T> e(p.B, T(0));
  RelaxedEnergyParams<T> f;
  f.energy = p.view();
  f.input = p.x.data();
  f.probs = p.probs;
  f.energy_out = e.data();
  expect(cpu::relaxed_energy_forward(f, cpu::serial_exec()) == Status::kOk, "energy-only status");
  return e;
}

// Runs parallel_for one item at a time, last first (finer than any grain): a
// reduction that depended on the schedule would change.
cpu::Exec reversed_exec(int threads) {
  cpu::Exec exec;
  exec.parallel_for = [](int64_t n, int64_t, const std::function<void(int64_t, int64_t)>& body) {
    for (int64_t i = n - 1; i >= 0; --i) body(i, i + 1);
  };
  exec.num_threads = threads;
  return exec;
}

void test_gradients(Problem<double> p, std::mt19937& rng, const std::string& tag) {
  std::normal_distribution<double> normal;
  std::vector<double> g(p.B);
  for (double& v : g) v = normal(rng);
  Status fs, bs;
  const Grads<double> got = run(p, g, cpu::serial_exec(), &fs, &bs);
  expect(fs == Status::kOk && bs == Status::kOk, tag + " status");
  const std::vector<double> e0 = energy_only(p);
  for (int64_t b = 0; b < p.B; ++b) {
    expect(close(got.energy[b], direct_energy(p, b), 1e-12), tag + " energy");
    expect(got.energy[b] == e0[b], tag + " energy without gradients is the same number");
  }
  // f = sum_b g_b E_b, differentiated numerically in one coordinate.
  auto objective = [&](const Problem<double>& q) {
    const std::vector<double> e = energy_only(q);
    double s = 0;
    for (int64_t b = 0; b < q.B; ++b) s += g[b] * e[b];
    return s;
  };
  const double h = 1e-6;
  auto fd = [&](std::vector<double> Problem<double>::*field, size_t i) {
    Problem<double> a = p, c = p;
    (a.*field)[i] += h;
    (c.*field)[i] -= h;
    return (objective(a) - objective(c)) / (2 * h);
  };
  const int64_t L = p.L;
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t t = 0; t < p.T_; ++t)
      for (int64_t j = 0; j < L; ++j) {
        const size_t i = static_cast<size_t>((b * p.T_ + t) * L + j);
        const bool pad = t >= p.len[b];
        expect(close(got.input[i], pad ? 0.0 : fd(&Problem<double>::x, i), 1e-6),
               tag + (p.probs ? " grad probs" : " grad logits"));
        expect(close(got.em[i], pad ? 0.0 : fd(&Problem<double>::em, i), 1e-6),
               tag + " grad emissions");
      }
  for (size_t i = 0; i < p.tr.size(); ++i)
    expect(close(got.tr[i], fd(&Problem<double>::tr, i), 1e-6), tag + " grad transitions");
  for (size_t i = 0; i < p.st.size(); ++i) {
    expect(close(got.st[i], fd(&Problem<double>::st, i), 1e-6), tag + " grad start");
    expect(close(got.en[i], fd(&Problem<double>::en, i), 1e-6), tag + " grad end");
  }

  // float against double: same formulas, float rounding.
  const Problem<float> pf = p.cast<float>();
  const std::vector<float> gf(g.begin(), g.end());
  const Grads<float> gotf = run(pf, gf, cpu::serial_exec(), &fs, &bs);
  expect(fs == Status::kOk && bs == Status::kOk, tag + " float status");
  const Grads<double> ref = run(pf.cast<double>(), g, cpu::serial_exec(), &fs, &bs);
  auto agree = [&](const std::vector<float>& a, const std::vector<double>& r, double scale,
                   const std::string& what) {
    for (size_t i = 0; i < a.size(); ++i)
      expect(std::fabs(a[i] - r[i]) <= 2e-4 * (scale + std::fabs(r[i])), tag + " float " + what);
  };
  const double gmax = std::fabs(*std::max_element(g.begin(), g.end(), [](double a, double b) {
    return std::fabs(a) < std::fabs(b);
  }));
  agree(gotf.energy, ref.energy, 1.0, "energy");
  agree(gotf.input, ref.input, gmax, "grad input");
  agree(gotf.em, ref.em, gmax, "grad emissions");
  agree(gotf.tr, ref.tr, gmax * p.B, "grad transitions");
  agree(gotf.st, ref.st, gmax * p.B, "grad start");
  agree(gotf.en, ref.en, gmax * p.B, "grad end");
}

void test_schedule_independent(std::mt19937& rng) {
  // Enough sequences for several chunks and pair flushes.
  Problem<double> p = random_problem(rng, 23, 40, 7, false);
  std::vector<double> g(p.B);
  std::normal_distribution<double> normal;
  for (double& v : g) v = normal(rng);
  cpu::Exec serial_threads = cpu::serial_exec();
  serial_threads.num_threads = 3;
  Status fs, bs;
  const Grads<double> a = run(p, g, serial_threads, &fs, &bs);
  const Grads<double> b = run(p, g, reversed_exec(3), &fs, &bs);
  expect(a.tr == b.tr && a.st == b.st && a.en == b.en && a.input == b.input,
         "gradients do not depend on the task schedule");
}

void test_non_finite_reported(std::mt19937& rng) {
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto status = [](const Problem<double>& p) {
    std::vector<double> e(p.B);
    RelaxedEnergyParams<double> f;
    f.energy = p.view();
    f.input = p.x.data();
    f.probs = p.probs;
    f.energy_out = e.data();
    return cpu::relaxed_energy_forward(f, cpu::serial_exec());
  };
  for (const bool probs : {false, true}) {
    const Problem<double> base = random_problem(rng, 2, 3, 4, probs);
    Problem<double> q = base;
    q.x[0] = nan;
    expect(status(q) == (probs ? Status::kNonFiniteProbs : Status::kNonFiniteLogits), "NaN input");
    q = base;
    q.x[1] = inf;
    expect(status(q) == (probs ? Status::kNonFiniteProbs : Status::kNonFiniteLogits), "+inf input");
    q = base;
    q.em[2] = -inf;
    expect(status(q) == Status::kNonFiniteEmissions, "-inf emission");
    q = base;
    q.tr[3] = nan;
    expect(status(q) == Status::kNonFiniteTransitions, "NaN transition");
    q = base;
    q.st[0] = inf;
    expect(status(q) == Status::kNonFiniteStart, "inf start");
    q = base;
    q.en[0] = -inf;
    expect(status(q) == Status::kNonFiniteEnd, "inf end");
    // Padding is never read.
    q = base;
    q.len = {1, 1};
    q.x[q.L] = nan;
    q.em[q.L] = nan;
    expect(status(q) == Status::kOk, "NaN in padding ignored");
  }
  // A logit row of -inf has no softmax; -inf entries in a row are fine.
  Problem<double> q = random_problem(rng, 1, 2, 3, false);
  q.len = {2};
  q.x[0] = -inf;
  expect(status(q) == Status::kOk, "one -inf logit");
  q.x[1] = q.x[2] = -inf;
  expect(status(q) == Status::kNonFiniteLogits, "a row of -inf logits");
}

}  // namespace

int main() {
  for (const std::string& isa : cpu::available_isas()) {
    cpu::set_isa(isa);
    std::printf("instruction set %s\n", isa.c_str());
    std::mt19937 rng(4321);
    for (int rep = 0; rep < 24; ++rep) {
      const int64_t B = 1 + rep % 3, T = 1 + rep % 4, L = 1 + (rep / 4) % 3 * 4;
      const bool probs = rep % 2 == 1;
      const std::string tag = isa + " B=" + std::to_string(B) + " T=" + std::to_string(T) +
                              " L=" + std::to_string(L) + (probs ? " probs" : " logits");
      test_gradients(random_problem(rng, B, T, L, probs), rng, tag);
    }
    // Longer than one batch of pairs (256) in the transition gradient.
    test_gradients(random_problem(rng, 3, 120, 2, false), rng, isa + " long");
    test_schedule_independent(rng);
    test_non_finite_reported(rng);
  }
  std::printf("%s\n", failures ? "FAILED" : "all passed");
  return failures ? 1 : 0;
}
