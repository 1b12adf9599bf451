// Public interface of the torch-free CUDA kernels.
//
// Every pointer in the params structs is a device pointer (the lengths and the
// allowed mask included). Each launch_* enqueues its kernels on `stream` and
// returns without synchronising the host. The caller allocates `workspace`
// (device memory of at least *_workspace_bytes(p) bytes, e.g. from torch's
// caching allocator; it may be nullptr when that is 0) and keeps it alive
// until the kernels on `stream` have finished. The workspace size does not
// depend on the variant.
//
// Semantics are the CPU kernels' (cpu/api.h): paths (B, k, T) with -1 at
// padding and for missing paths, scores -inf where no allowed labeling exists,
// ties to the lowest label index; log_alpha / log_alpha_shift mean what they
// mean on the CPU, so the backward takes either device's forward outputs.
//
// NaN checks: the CPU kernels return kNan* / kNonFinite* statuses, but on the
// GPU a status that depends on the data needs a host synchronisation, so these
// kernels do not look for NaN at all. The binding checks its inputs (emissions,
// transitions, start, end, logits, velocity, lr, the relaxed
// energy's logits or probabilities) before launching, with the CPU kernels'
// rules, and raises with the status the CPU kernel would have returned.
// The one data-dependent rule kept on the device: relaxed_energy_step stops a
// sequence after a step whose energy is not finite (as on the CPU); the later
// rows of energy_out for that sequence are then left unwritten.
//
// Statuses returned here: kOk; kCudaLaunchError when a launch or an attribute
// call failed (the CUDA error is left in place, read it with cudaGetLastError);
// kCudaUnsupported when the requested variant cannot run this problem (e.g.
// kWarp with L > 32), L exceeds 65535 or B exceeds 2^31 - 1 (blocks).
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(STRUCTINF_CUDA_EMULATOR)
#include "cuda_emu.h"
#else
#include <cuda_runtime_api.h>
#endif

#include "../params.h"

namespace structinf {
namespace cuda {

// How threads map onto sequences and labels. kAuto picks by L and by the
// device's shared memory; the others force one mapping (tests run them all).
enum class Variant : int {
  kAuto = 0,
  kWarp,    // L <= 32: one warp per sequence, several per block, transitions in shared memory
  kBlock,   // one block per sequence, transitions in shared memory (opt-in above 48 KB)
  kGlobal,  // one block per sequence, transitions read from global memory / L2
};

// Bytes of device scratch the op needs (the caller allocates it, e.g. with torch's caching allocator); 0 if none.
template <typename T> size_t viterbi_workspace_bytes(const ViterbiParams<T>& p);
template <typename T> Status launch_viterbi(const ViterbiParams<T>& p, void* workspace, cudaStream_t stream);
template <typename T> size_t crf_forward_workspace_bytes(const CrfForwardParams<T>& p);
template <typename T> Status launch_crf_forward(const CrfForwardParams<T>& p, void* workspace, cudaStream_t stream);
template <typename T> size_t crf_backward_workspace_bytes(const CrfBackwardParams<T>& p);
template <typename T> Status launch_crf_backward(const CrfBackwardParams<T>& p, void* workspace, cudaStream_t stream);
template <typename T> size_t relaxed_energy_step_workspace_bytes(const RelaxedStepParams<T>& p);
template <typename T> Status launch_relaxed_energy_step(const RelaxedStepParams<T>& p, void* workspace, cudaStream_t stream);
// The differentiable relaxed energy: forward (energy, and p / dE/dinput when
// input_grad is set) and backward (a null output pointer skips that gradient;
// one variant only).
template <typename T> size_t relaxed_energy_forward_workspace_bytes(const RelaxedEnergyParams<T>& p);
template <typename T> Status launch_relaxed_energy_forward(const RelaxedEnergyParams<T>& p, void* workspace, cudaStream_t stream);
template <typename T> size_t relaxed_energy_backward_workspace_bytes(const RelaxedEnergyBackwardParams<T>& p);
template <typename T> Status launch_relaxed_energy_backward(const RelaxedEnergyBackwardParams<T>& p, void* workspace, cudaStream_t stream);

// The same launches with the thread mapping forced (k-best Viterbi, k > 1,
// has one mapping and ignores the variant).
template <typename T> Status launch_viterbi(const ViterbiParams<T>& p, void* workspace, cudaStream_t stream, Variant v);
template <typename T> Status launch_crf_forward(const CrfForwardParams<T>& p, void* workspace, cudaStream_t stream, Variant v);
template <typename T> Status launch_crf_backward(const CrfBackwardParams<T>& p, void* workspace, cudaStream_t stream, Variant v);
template <typename T> Status launch_relaxed_energy_step(const RelaxedStepParams<T>& p, void* workspace, cudaStream_t stream, Variant v);
template <typename T> Status launch_relaxed_energy_forward(const RelaxedEnergyParams<T>& p, void* workspace, cudaStream_t stream, Variant v);

// Caps the shared memory per block that the launchers plan with (0: the
// device's opt-in maximum). For tests, to reach the streaming and global
// paths at small sizes; not thread safe against concurrent launches.
void set_shared_memory_budget(size_t bytes);

}  // namespace cuda
}  // namespace structinf
