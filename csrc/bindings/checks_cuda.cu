#include "checks_cuda.h"

#include <cuda_runtime.h>

#include <algorithm>

namespace structinf {
namespace cuda_checks {
namespace {

constexpr int kNumThreads = 256;
constexpr int kWarpsPerBlock = kNumThreads / 32;
// Enough blocks to keep every multiprocessor of a large GPU streaming; each
// warp then walks several rows, so the grid never scales with the input.
constexpr int64_t kMaxBlocks = 1024;

template <typename T>
__device__ __forceinline__ bool is_bad(T x, Bad rule) {
  switch (rule) {
    case Bad::kNan:
      return isnan(x);
    case Bad::kNanOrPosInf:
      return !(x < static_cast<T>(INFINITY));
    case Bad::kNonFinite:
      return !isfinite(x);
    default:
      return false;
  }
}

// One warp per (b, t) row of the (B, T, L) arrays, its lanes striding over
// the labels: loads are coalesced along the row, and the row's length test is
// one division per row rather than per element. The small arrays are spread
// over all threads. Each thread ORs what it saw into the flag word once, and
// only if it saw something: good inputs cost no atomics.
template <typename T>
__global__ void __launch_bounds__(kNumThreads) check_inputs_kernel(const CheckParams<T> p) {
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n_threads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int lane = threadIdx.x & 31;
  const int64_t warp = tid >> 5;
  const int64_t n_warps = n_threads >> 5;
  unsigned bad = 0;

  const bool input = p.input != nullptr && p.input_bad != Bad::kNotChecked;
  const bool rows = p.emissions_bad != Bad::kNotChecked || p.logits != nullptr ||
                    p.velocity != nullptr || input;
  if (rows && p.lengths != nullptr) {
    const int64_t n_rows = p.B * p.T;
    for (int64_t row = warp; row < n_rows; row += n_warps) {
      const int64_t b = row / p.T;
      const int64_t t = row - b * p.T;
      if (t >= p.lengths[b]) continue;  // padding (uniform across the warp)
      const int64_t base = row * p.L;
      bool some_label = false;  // input above -inf somewhere in the row
      for (int64_t j = lane; j < p.L; j += 32) {
        if (p.emissions != nullptr && is_bad(p.emissions[base + j], p.emissions_bad))
          bad |= kEmissions;
        if (p.logits != nullptr && !isfinite(p.logits[base + j])) bad |= kLogits;
        if (p.velocity != nullptr && !isfinite(p.velocity[base + j])) bad |= kVelocity;
        if (input) {
          const T x = p.input[base + j];
          if (is_bad(x, p.input_bad)) bad |= kInput;
          some_label |= x > -static_cast<T>(INFINITY);
        }
      }
      // Every lane of the warp is here (the row loop is uniform across it).
      if (input && p.input_bad == Bad::kNanOrPosInf && !__any_sync(0xffffffffu, some_label))
        bad |= kInput;
    }
  }
  if (p.scores_bad != Bad::kNotChecked) {
    for (int64_t i = tid; i < p.L * p.L; i += n_threads)
      if (p.transitions != nullptr && is_bad(p.transitions[i], p.scores_bad)) bad |= kTransitions;
    for (int64_t i = tid; i < p.L; i += n_threads) {
      if (p.start != nullptr && is_bad(p.start[i], p.scores_bad)) bad |= kStart;
      if (p.end != nullptr && is_bad(p.end[i], p.scores_bad)) bad |= kEnd;
    }
  }
  for (int64_t b = tid; b < p.B; b += n_threads) {
    if (p.lengths != nullptr) {
      const int64_t n = p.lengths[b];
      if (n < 1 || n > p.T) bad |= kLengths;
      if (p.lengths_out != nullptr) p.lengths_out[b] = n > p.T ? p.T : (n < 1 ? 1 : n);
    }
    if (p.lr != nullptr && !isfinite(p.lr[b])) bad |= kLr;
  }
  for (int64_t i = tid; i < p.n_energies; i += n_threads)
    if (p.energies != nullptr && !isfinite(p.energies[i])) bad |= kEnergies;

  if (bad != 0) atomicOr(p.flags, bad);
}

// One thread: the commit of one call's flag word to the error record. Calls on
// several streams may commit at once, hence the atomics; only the winner of
// the first-call slot writes that call's details.
__global__ void commit_kernel(const unsigned* call_flags, unsigned long long* rec,
                              unsigned long long call_id, const int64_t* lengths, int64_t B) {
  const unsigned f = *call_flags;
  if (f == 0) return;
  atomicAdd(&rec[kFailedCalls], 1ull);
  atomicOr(&rec[kAllFlags], static_cast<unsigned long long>(f));
  if (atomicCAS(&rec[kFirstCall], 0ull, call_id) != 0ull) return;
  rec[kFirstFlags] = f;
  long long lo = 0, hi = 0;
  if (lengths != nullptr && B > 0) {
    lo = hi = lengths[0];
    for (int64_t b = 1; b < B; ++b) {
      lo = lengths[b] < lo ? lengths[b] : lo;
      hi = lengths[b] > hi ? lengths[b] : hi;
    }
  }
  rec[kFirstLo] = static_cast<unsigned long long>(lo);
  rec[kFirstHi] = static_cast<unsigned long long>(hi);
}

}  // namespace

cudaError_t launch_commit(const unsigned* call_flags, unsigned long long* record,
                          unsigned long long call_id, const int64_t* lengths, int64_t B,
                          cudaStream_t stream) {
  commit_kernel<<<1, 1, 0, stream>>>(call_flags, record, call_id, lengths, B);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_check(const CheckParams<T>& p, cudaStream_t stream) {
  const int64_t rows = p.B * p.T;
  const int64_t smalls = std::max({p.L * p.L, p.B, p.n_energies});
  const int64_t blocks_for_rows = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  const int64_t blocks_for_smalls = (smalls + kNumThreads - 1) / kNumThreads;
  const int64_t blocks = std::min(kMaxBlocks, std::max(blocks_for_rows, blocks_for_smalls));
  if (blocks == 0) return cudaSuccess;
  check_inputs_kernel<T><<<static_cast<unsigned>(blocks), kNumThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

template cudaError_t launch_check<float>(const CheckParams<float>&, cudaStream_t);
template cudaError_t launch_check<double>(const CheckParams<double>&, cudaStream_t);

}  // namespace cuda_checks
}  // namespace structinf
