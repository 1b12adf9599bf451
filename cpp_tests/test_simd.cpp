// Accuracy of the vectorised exp / log against the C library, for every
// instruction-set build usable on this CPU.
#include "kernels/cpu/std_headers.h"

#include <cmath>
#include <cstdio>

#define SI_ISA_NS base
#define SI_VEC_BYTES 16
#include "kernels/cpu/simd.h"

#include "simd_avx2.h"

namespace {

int failures = 0;

template <typename T>
double ulps(T got, T want) {
  if (std::isnan(want)) return std::isnan(got) ? 0 : 1e30;
  if (std::isinf(want)) return got == want ? 0 : 1e30;
  const T spacing = std::nextafter(std::fabs(want), std::numeric_limits<T>::infinity()) - std::fabs(want);
  return std::fabs(static_cast<double>(got) - static_cast<double>(want)) / spacing;
}

template <typename T, typename F, typename G>
void sweep(const char* what, F vec_fn, G ref_fn, T lo, T hi, double max_ulps, T min_result) {
  double worst = 0;
  T worst_x = 0;
  const int n = 200000;
  for (int i = 0; i <= n; ++i) {
    const T x = lo + (hi - lo) * static_cast<T>(i) / n;
    const T want = ref_fn(x);
    if (want != 0 && std::fabs(want) < min_result) continue;  // flushed range
    const double u = ulps<T>(vec_fn(x), want);
    if (u > worst) {
      worst = u;
      worst_x = x;
    }
  }
  const bool ok = worst <= max_ulps;
  std::printf("%-28s worst %.2f ulp at %.9g  %s\n", what, worst, static_cast<double>(worst_x),
              ok ? "ok" : "FAIL");
  failures += !ok;
}

template <typename T, typename Exp, typename Log>
void check_specials(const char* isa, Exp vexp1, Log vlog1) {
  const T inf = std::numeric_limits<T>::infinity(), nan = std::numeric_limits<T>::quiet_NaN();
  bool ok = vexp1(-inf) == 0 && vexp1(inf) == inf && std::isnan(vexp1(nan)) &&
            vexp1(T(-1000)) == 0 && vlog1(T(0)) == -inf && vlog1(inf) == inf &&
            std::isnan(vlog1(T(-1))) && std::isnan(vlog1(nan)) && vlog1(T(1)) == 0;
  // Denormal inputs to log are rescaled, not flushed.
  const T denorm = std::numeric_limits<T>::denorm_min() * 8;
  ok = ok && ulps<T>(vlog1(denorm), std::log(denorm)) <= 2;
  std::printf("%-28s %s\n", (std::string(isa) + " specials").c_str(), ok ? "ok" : "FAIL");
  failures += !ok;
}

template <typename T, typename Exp, typename Log>
void check_isa(const char* isa, Exp vexp1, Log vlog1) {
  const std::string p = std::string(isa) + (sizeof(T) == 4 ? " f32 " : " f64 ");
  const T min_normal = std::numeric_limits<T>::min();
  const T exp_hi = sizeof(T) == 4 ? T(88.3) : T(709.0);
  const T exp_lo = sizeof(T) == 4 ? T(-87.3) : T(-708.0);
  sweep<T>((p + "exp").c_str(), vexp1, [](T x) { return std::exp(x); }, exp_lo, exp_hi, 2.0,
           min_normal);
  sweep<T>((p + "exp near 0").c_str(), vexp1, [](T x) { return std::exp(x); }, T(-2), T(2), 2.0,
           min_normal);
  sweep<T>((p + "log").c_str(), vlog1, [](T x) { return std::log(x); }, T(1e-30), T(1e4), 2.0,
           T(0));
  sweep<T>((p + "log near 1").c_str(), vlog1, [](T x) { return std::log(x); }, T(0.5), T(2),
           2.0, T(0));
  check_specials<T>(p.c_str(), vexp1, vlog1);
}

}  // namespace

int main() {
  using namespace structinf::cpu;
  check_isa<float>("base", [](float x) { return base::sexp(x); },
                   [](float x) { return base::slog(x); });
  check_isa<double>("base", [](double x) { return base::sexp(x); },
                    [](double x) { return base::slog(x); });
#if SI_TEST_AVX2
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    check_isa<float>("avx2", &avx2_exp_f32, &avx2_log_f32);
    check_isa<double>("avx2", &avx2_exp_f64, &avx2_log_f64);
  }
#endif
  std::printf("%s\n", failures ? "FAILED" : "all passed");
  return failures ? 1 : 0;
}
