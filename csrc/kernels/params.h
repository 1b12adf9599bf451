// Plain parameter structs shared by the CPU and CUDA kernels. No torch here:
// the binding layer checks tensors, fills these and launches.
//
// Letters: B batch, T time (padded length), L labels. Every array is
// contiguous and row-major; the binding makes inputs contiguous first.
#pragma once

#include <cstdint>

namespace structinf {

// One batch of linear-chain energies.
template <typename scalar_t>
struct EnergyView {
  int64_t B = 0, T = 0, L = 0;
  const scalar_t* emissions = nullptr;      // (B, T, L)
  const scalar_t* transitions = nullptr;    // (L, L): [i * L + j] scores label i at t-1 -> j at t
  const scalar_t* start = nullptr;          // (L,)
  const scalar_t* end = nullptr;            // (L,)
  const int64_t* lengths = nullptr;  // (B,), 1 <= lengths[b] <= T (checked by the caller)
  const bool* allowed = nullptr;     // (L, L) or nullptr; false forbids i -> j
};

template <typename scalar_t>
struct ViterbiParams {
  EnergyView<scalar_t> energy;
  int64_t k = 1;            // number of best paths
  int64_t* paths = nullptr;  // (B, k, T) out; -1 at padding and for missing paths
  scalar_t* scores = nullptr;       // (B, k) out; -inf for missing paths
};

template <typename scalar_t>
struct CrfForwardParams {
  EnergyView<scalar_t> energy;
  scalar_t* log_z = nullptr;      // (B,) out
  // Log forward scores, stored per position relative to their maximum so that
  // float32 keeps full precision at any length and score scale:
  // log alpha_t(j) = log_alpha[b, t, j] + sum_{s <= t} log_alpha_shift[b, s].
  scalar_t* log_alpha = nullptr;        // (B, T, L) out (0 at padding)
  scalar_t* log_alpha_shift = nullptr;  // (B, T) out (0 at padding)
};

template <typename scalar_t>
struct CrfBackwardParams {
  EnergyView<scalar_t> energy;
  const scalar_t* grad_log_z = nullptr;  // (B,)
  const scalar_t* log_z = nullptr;       // (B,)   from the forward
  const scalar_t* log_alpha = nullptr;        // (B, T, L) from the forward
  const scalar_t* log_alpha_shift = nullptr;  // (B, T) from the forward
  scalar_t* grad_emissions = nullptr;    // (B, T, L) out (zero at padding)
  scalar_t* grad_transitions = nullptr;  // (L, L) out
  scalar_t* grad_start = nullptr;        // (L,) out
  scalar_t* grad_end = nullptr;          // (L,) out
};

template <typename scalar_t>
struct RelaxedStepParams {
  EnergyView<scalar_t> energy;     // allowed must be nullptr
  scalar_t* logits = nullptr;      // (B, T, L) in/out, updated in place at t < lengths[b]
  scalar_t* velocity = nullptr;    // (B, T, L) in/out, updated in place at t < lengths[b]
  const scalar_t* lr = nullptr;    // (B,) learning rate per sequence
  scalar_t momentum = scalar_t(0.9);
  int64_t steps = 1;               // steps to take (each sequence on its own)
  scalar_t* energy_out = nullptr;  // (steps, B) out: relaxed energy before each step
};

// The relaxed energy E(p) = -score(p) (the differentiable op), with
// p[b, t] = softmax(input[b, t]) or, when probs is set, p = input.
template <typename scalar_t>
struct RelaxedEnergyParams {
  EnergyView<scalar_t> energy;      // allowed must be nullptr
  const scalar_t* input = nullptr;  // (B, T, L) logits, or probabilities when probs
  bool probs = false;
  scalar_t* energy_out = nullptr;   // (B,) out
  // What the backward needs, at a unit incoming gradient: both or neither.
  scalar_t* p_out = nullptr;       // (B, T, L) out: p (0 at padding)
  scalar_t* input_grad = nullptr;  // (B, T, L) out: dE[b] / d input[b] (0 at padding)
};

// Gradients of sum_b grad_energy[b] * E[b] from the forward's p and input_grad.
// A null output pointer skips that gradient.
template <typename scalar_t>
struct RelaxedEnergyBackwardParams {
  int64_t B = 0, T = 0, L = 0;
  const int64_t* lengths = nullptr;       // (B,), 1 <= lengths[b] <= T (checked by the caller)
  const scalar_t* grad_energy = nullptr;  // (B,)
  const scalar_t* p = nullptr;            // (B, T, L) from the forward (padding not read)
  const scalar_t* input_grad = nullptr;   // (B, T, L) from the forward (padding not read)
  // With g = grad_energy:
  scalar_t* grad_input = nullptr;        // (B, T, L) out: g[b] * input_grad (0 at padding)
  scalar_t* grad_emissions = nullptr;    // (B, T, L) out: -g[b] * p (0 at padding)
  scalar_t* grad_transitions = nullptr;  // (L, L) out: -sum_b g[b] sum_{t>=1} p_{t-1} p_t^T
  scalar_t* grad_start = nullptr;        // (L,) out: -sum_b g[b] p_0
  scalar_t* grad_end = nullptr;          // (L,) out: -sum_b g[b] p_{n-1}
};

// What a kernel reports back; the binding turns anything but kOk into an
// exception that names the argument.
enum class Status : int {
  kOk = 0,
  kNanEmissions,
  kNanTransitions,
  kNanStart,
  kNanEnd,
  kNonFiniteTransitions,
  kNonFiniteStart,
  kNonFiniteEnd,
  kNanLogits,
  kNanVelocity,
  kNanLr,
  kNanGradLogZ,
  kCudaLaunchError,  // a CUDA launch or attribute call failed (see cudaGetLastError)
  kCudaUnsupported,  // the forced CUDA variant cannot run this problem, or L > 65535
  kNonFiniteEmissions,  // relaxed energy: emissions must be finite (not just non-NaN)
  kNonFiniteLogits,
  kNonFiniteProbs,
};

}  // namespace structinf
