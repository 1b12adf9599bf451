// The device half of the argument checker, for the CUDA binding: one kernel
// that looks at every input an op must reject (lengths out of range, NaN or
// infinite values where the CPU kernels reject them) and sets one bit per bad
// argument in a single flag word. The binding copies that word back once, so
// an op validates its inputs with one host synchronisation instead of one per
// argument. No torch here (only the CUDA runtime), like csrc/kernels/cuda.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace structinf {
namespace cuda_checks {

// What makes a value bad, per argument (the CPU kernels' rules).
enum class Bad : int {
  kNotChecked = 0,
  kNan,          // NaN
  kNanOrPosInf,  // NaN or +inf (-inf is a forbidden score)
  kNonFinite,    // NaN, +inf or -inf
};

// Bits of the flag word, one per argument.
enum Flag : unsigned {
  kLengths = 1u << 0,  // some lengths[b] outside [1, T]
  kEmissions = 1u << 1,
  kTransitions = 1u << 2,
  kStart = 1u << 3,
  kEnd = 1u << 4,
  kLogits = 1u << 5,
  kVelocity = 1u << 6,
  kLr = 1u << 7,
  kEnergies = 1u << 9,  // some relaxed energy (an output) is not finite
  kInput = 1u << 10,    // relaxed_energy's logits or probabilities
};

// Every pointer is a device pointer to a contiguous row-major array; a null
// pointer (or kNotChecked) skips that argument. (B, T, L) arrays are checked
// at t < lengths[b] only, where 1 <= lengths[b] <= T holds; elsewhere they
// are checked whole.
template <typename scalar_t>
struct CheckParams {
  int64_t B = 0, T = 0, L = 0;
  const int64_t* lengths = nullptr;     // (B,): sets kLengths outside [1, T]
  const scalar_t* emissions = nullptr;  // (B, T, L)
  Bad emissions_bad = Bad::kNotChecked;
  const scalar_t* transitions = nullptr;  // (L, L)
  const scalar_t* start = nullptr;        // (L,)
  const scalar_t* end = nullptr;          // (L,)
  Bad scores_bad = Bad::kNotChecked;      // the rule for transitions, start and end
  const scalar_t* logits = nullptr;       // (B, T, L), kNonFinite
  const scalar_t* velocity = nullptr;     // (B, T, L), kNonFinite
  // (B, T, L) relaxed_energy's input, by input_bad; with kNanOrPosInf (logits)
  // a row of only -inf is bad too (it is no distribution).
  const scalar_t* input = nullptr;
  Bad input_bad = Bad::kNotChecked;
  const scalar_t* lr = nullptr;           // (B,), kNonFinite
  const scalar_t* energies = nullptr;     // (n_energies,), kNonFinite
  int64_t n_energies = 0;
  unsigned* flags = nullptr;  // one word, zeroed by the caller; bits are OR-ed in
  // (B,), where set: min(max(lengths[b], 1), T), the lengths the op's kernels
  // read in 'device' validation mode, so that a bad length never makes them
  // read or write outside the (B, T, L) arrays (the call is reported instead).
  int64_t* lengths_out = nullptr;
};

// The error record of 'device' validation mode: int64 words on the device,
// zeroed when made and by each structinf.ops.check().
enum RecordWord : int {
  kFailedCalls = 0,  // calls whose check found something
  kFirstCall,        // the id of the first of them in stream order (0: none)
  kFirstFlags,       // its flag word
  kFirstLo,          // its lowest and highest length (for the lengths message)
  kFirstHi,
  kAllFlags,         // the OR of every failing call's flags
  kRecordWords = 8,
};

// Enqueues, after a check on the same stream, the commit of its flag word to
// `record` under `call_id` (> 0): nothing if the word is 0.
cudaError_t launch_commit(const unsigned* call_flags, unsigned long long* record,
                          unsigned long long call_id, const int64_t* lengths, int64_t B,
                          cudaStream_t stream);

// Enqueues the check on `stream`; returns the launch's error (cudaSuccess if
// there was nothing to check and no kernel was launched).
template <typename T>
cudaError_t launch_check(const CheckParams<T>& p, cudaStream_t stream);

}  // namespace cuda_checks
}  // namespace structinf
