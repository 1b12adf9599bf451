// Run-time choice of the instruction-set build, and the public entry points.
#include <atomic>
#include <cstdlib>
#include <string>
#include <vector>

#include "api.h"
#include "table.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SI_HAVE_AVX2_BUILD 1
#else
#define SI_HAVE_AVX2_BUILD 0
#endif

namespace structinf {
namespace cpu {

namespace base {
KernelTable<float> table_f32();
KernelTable<double> table_f64();
}  // namespace base
#if SI_HAVE_AVX2_BUILD
namespace avx2 {
KernelTable<float> table_f32();
KernelTable<double> table_f64();
}  // namespace avx2
#endif

namespace {

struct Isa {
  const char* name;
  bool (*supported)();
  KernelTable<float> (*f32)();
  KernelTable<double> (*f64)();
};

bool always() { return true; }
#if SI_HAVE_AVX2_BUILD
bool has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
#endif

const std::vector<Isa>& all_isas() {
  static const std::vector<Isa> isas = {
#if SI_HAVE_AVX2_BUILD
      {"avx2", &has_avx2, &avx2::table_f32, &avx2::table_f64},
#endif
      {"base", &always, &base::table_f32, &base::table_f64},
  };
  return isas;
}

int best_isa() {
  const auto& isas = all_isas();
  for (size_t i = 0; i < isas.size(); ++i)
    if (isas[i].supported()) return static_cast<int>(i);
  return static_cast<int>(isas.size()) - 1;
}

int find_isa(const std::string& name) {
  if (name == "auto") return best_isa();
  const auto& isas = all_isas();
  for (size_t i = 0; i < isas.size(); ++i)
    if (name == isas[i].name && isas[i].supported()) return static_cast<int>(i);
  return -1;
}

int initial_isa() {
  const char* env = std::getenv("STRUCTINF_CPU_ISA");
  if (env != nullptr) {
    const int i = find_isa(env);
    if (i >= 0) return i;
  }
  return best_isa();
}

std::atomic<int>& isa_index() {
  static std::atomic<int> index{initial_isa()};
  return index;
}

template <typename T>
KernelTable<T> table();
template <>
KernelTable<float> table<float>() {
  return all_isas()[isa_index().load()].f32();
}
template <>
KernelTable<double> table<double>() {
  return all_isas()[isa_index().load()].f64();
}

}  // namespace

Exec serial_exec() {
  Exec exec;
  exec.parallel_for = [](int64_t n, int64_t, const std::function<void(int64_t, int64_t)>& body) {
    if (n > 0) body(0, n);
  };
  exec.num_threads = 1;
  return exec;
}

template <typename T>
Status viterbi(const ViterbiParams<T>& p, const Exec& exec) {
  return table<T>().viterbi(p, exec);
}
template <typename T>
Status crf_forward(const CrfForwardParams<T>& p, const Exec& exec) {
  return table<T>().crf_forward(p, exec);
}
template <typename T>
Status crf_backward(const CrfBackwardParams<T>& p, const Exec& exec) {
  return table<T>().crf_backward(p, exec);
}
template <typename T>
Status relaxed_energy_step(const RelaxedStepParams<T>& p, const Exec& exec) {
  return table<T>().relaxed_energy_step(p, exec);
}
template <typename T>
Status relaxed_energy_forward(const RelaxedEnergyParams<T>& p, const Exec& exec) {
  return table<T>().relaxed_energy_forward(p, exec);
}
template <typename T>
Status relaxed_energy_backward(const RelaxedEnergyBackwardParams<T>& p, const Exec& exec) {
  return table<T>().relaxed_energy_backward(p, exec);
}

#define SI_INSTANTIATE(T)                                                   \
  template Status viterbi<T>(const ViterbiParams<T>&, const Exec&);         \
  template Status crf_forward<T>(const CrfForwardParams<T>&, const Exec&);  \
  template Status crf_backward<T>(const CrfBackwardParams<T>&, const Exec&); \
  template Status relaxed_energy_step<T>(const RelaxedStepParams<T>&, const Exec&);       \
  template Status relaxed_energy_forward<T>(const RelaxedEnergyParams<T>&, const Exec&); \
  template Status relaxed_energy_backward<T>(const RelaxedEnergyBackwardParams<T>&, const Exec&);
SI_INSTANTIATE(float)
SI_INSTANTIATE(double)
#undef SI_INSTANTIATE

std::vector<std::string> available_isas() {
  std::vector<std::string> out;
  for (const Isa& isa : all_isas())
    if (isa.supported()) out.emplace_back(isa.name);
  return out;
}

std::string current_isa() { return all_isas()[isa_index().load()].name; }

bool set_isa(const std::string& name) {
  const int i = find_isa(name);
  if (i < 0) return false;
  isa_index().store(i);
  return true;
}

}  // namespace cpu
}  // namespace structinf
