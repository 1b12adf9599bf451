// Argument checking shared by every device's binding: one helper, so every op
// reports bad input the same way, naming the argument and what was expected.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <optional>
#include <string>

#include "../kernels/params.h"

namespace structinf {

// How check_energy treats the values of lengths (1 <= lengths[b] <= T).
enum class LengthsValues {
  kCheckHere,     // read and check them here (for a CUDA tensor that is a host sync)
  kCallerChecks,  // the caller checks them before any kernel reads them (the CUDA
                  // binding does, in its one device-side validation pass)
};

// Numbers and shapes in error messages. Formatted with the C library, not
// with a stream's num_put facet: a message never depends on the global C++
// locale (one with digit grouping would print T = 1,000), and the one message
// path that formats numbers does not go through libstdc++'s locale machinery.
std::string num(int64_t v);
inline std::string num(int v) { return num(static_cast<int64_t>(v)); }
inline std::string num(unsigned v) { return num(static_cast<int64_t>(v)); }
std::string num(double v);
std::string shape_str(at::IntArrayRef sizes);

// The energy tuple of one call, made contiguous and validated.
struct CheckedEnergy {
  at::Tensor emissions, transitions, start, end, lengths;
  std::optional<at::Tensor> allowed;
  int64_t B = 0, T = 0, L = 0;
};

// Validates (emissions (B,T,L), transitions (L,L), start (L,), end (L,),
// lengths (B,) integer, allowed (L,L) bool or none) for op `op`:
// ranks, sizes, dtypes (float32 / float64 on the CPU, plus float16 /
// bfloat16 on CUDA), one device for all, 1 <= lengths[b] <= T (unless
// `lengths_values` leaves that to the caller).
// Raises ValueError / TypeError naming the argument.
CheckedEnergy check_energy(const char* op, const at::Tensor& emissions,
                           const at::Tensor& transitions, const at::Tensor& start,
                           const at::Tensor& end, const at::Tensor& lengths,
                           const std::optional<at::Tensor>& allowed,
                           LengthsValues lengths_values = LengthsValues::kCheckHere);

// Raises ValueError unless 1 <= lengths[b] <= T for every b; `lengths` is
// (B,) int64 contiguous on any device (read back to the host if not the CPU).
void check_lengths_range(const char* op, const at::Tensor& lengths, int64_t T);

// Raises the lengths ValueError for lengths found in [lo, hi] (not all in [1, T]).
void raise_lengths(const char* op, int64_t T, int64_t lo, int64_t hi);

// The arguments of relaxed_energy_step_ beyond the energy tuple: logits and
// velocity (B, T, L) like emissions and not sharing memory, lr (B,) floating on
// the same device, finite momentum, steps >= 1.
void check_relaxed_args(const char* op, const CheckedEnergy& c, const at::Tensor& logits,
                        const at::Tensor& velocity, const at::Tensor& lr, double momentum,
                        int64_t steps);

// Checks that `t` has exactly `sizes`, the dtype and the device of `like`.
// `like_name` names `like` in the message (emissions unless said).
void check_like(const char* op, const char* name, const at::Tensor& t, at::IntArrayRef sizes,
                const at::Tensor& like, const char* like_name = "emissions");

// Turns a kernel status into an exception naming the argument.
void raise_status(const char* op, Status status);

template <typename T>
EnergyView<T> energy_view(const CheckedEnergy& c) {
  EnergyView<T> v;
  v.B = c.B;
  v.T = c.T;
  v.L = c.L;
  v.emissions = c.emissions.data_ptr<T>();
  v.transitions = c.transitions.data_ptr<T>();
  v.start = c.start.data_ptr<T>();
  v.end = c.end.data_ptr<T>();
  v.lengths = c.lengths.data_ptr<int64_t>();
  v.allowed = c.allowed.has_value() ? c.allowed->data_ptr<bool>() : nullptr;
  return v;
}

}  // namespace structinf
