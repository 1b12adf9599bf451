// Public interface of the torch-free CPU kernels.
//
// Each entry point runs one op over a whole batch. Parallelism is injected by
// the caller through Exec (the torch binding passes at::parallel_for, the C++
// tests a serial loop), so nothing here depends on torch. The kernels are
// compiled once per instruction set and the best one the CPU supports is
// chosen at run time (set_isa overrides that, for tests).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "../params.h"

namespace structinf {
namespace cpu {

// Runs body(begin, end) over sub-ranges of [0, n); each sub-range has at least
// `grain` items unless n is smaller. Sub-ranges may run concurrently.
using ParallelFor = std::function<void(int64_t n, int64_t grain,
                                       const std::function<void(int64_t, int64_t)>& body)>;

struct Exec {
  ParallelFor parallel_for;
  int num_threads = 1;
};

// A serial Exec, for callers without a thread pool.
Exec serial_exec();

template <typename T>
Status viterbi(const ViterbiParams<T>& p, const Exec& exec);

template <typename T>
Status crf_forward(const CrfForwardParams<T>& p, const Exec& exec);

template <typename T>
Status crf_backward(const CrfBackwardParams<T>& p, const Exec& exec);

template <typename T>
Status relaxed_energy_step(const RelaxedStepParams<T>& p, const Exec& exec);

// The relaxed energy (and, when p.input_grad is set, what its backward needs).
template <typename T>
Status relaxed_energy_forward(const RelaxedEnergyParams<T>& p, const Exec& exec);

template <typename T>
Status relaxed_energy_backward(const RelaxedEnergyBackwardParams<T>& p, const Exec& exec);

// Instruction sets compiled in and usable on this CPU, best first.
std::vector<std::string> available_isas();
// The one in use.
std::string current_isa();
// Selects an instruction set by name ("auto" picks the best); false if unknown
// or unsupported on this CPU.
bool set_isa(const std::string& name);

}  // namespace cpu
}  // namespace structinf
