// Host side of the CUDA kernels, the public entry points: each op's workspace
// size and launch (the mapping chosen by launch_<op>.cuh, or forced).
// Included by one .cu per dtype, which instantiates it (and by the emulator
// tests, through those .cu files).
#pragma once

#include "launch_crf.cuh"
#include "launch_relaxed.cuh"
#include "launch_viterbi.cuh"

namespace structinf {
namespace cuda {

template <typename T>
size_t viterbi_workspace_bytes(const ViterbiParams<T>& p) {
  if (p.energy.B == 0 || p.energy.T == 0) return 0;
  size_t bytes = 0;
  detail::viterbi_workspace(p, nullptr, &bytes);
  return bytes;
}
template <typename T>
Status launch_viterbi(const ViterbiParams<T>& p, void* workspace, cudaStream_t stream, Variant v) {
  return detail::launch_viterbi(p, workspace, stream, v);
}
template <typename T>
Status launch_viterbi(const ViterbiParams<T>& p, void* workspace, cudaStream_t stream) {
  return detail::launch_viterbi(p, workspace, stream, Variant::kAuto);
}

template <typename T>
size_t crf_forward_workspace_bytes(const CrfForwardParams<T>& p) {
  if (p.energy.B == 0 || p.energy.T == 0) return 0;
  size_t bytes = 0;
  detail::crf_workspace(p.energy, false, nullptr, &bytes);
  return bytes;
}
template <typename T>
Status launch_crf_forward(const CrfForwardParams<T>& p, void* workspace, cudaStream_t stream,
                          Variant v) {
  return detail::launch_crf_forward(p, workspace, stream, v);
}
template <typename T>
Status launch_crf_forward(const CrfForwardParams<T>& p, void* workspace, cudaStream_t stream) {
  return detail::launch_crf_forward(p, workspace, stream, Variant::kAuto);
}

template <typename T>
size_t crf_backward_workspace_bytes(const CrfBackwardParams<T>& p) {
  if (p.energy.L == 0) return 0;
  size_t bytes = 0;
  detail::crf_workspace(p.energy, true, nullptr, &bytes);
  return bytes;
}
template <typename T>
Status launch_crf_backward(const CrfBackwardParams<T>& p, void* workspace, cudaStream_t stream,
                           Variant v) {
  return detail::launch_crf_backward(p, workspace, stream, v);
}
template <typename T>
Status launch_crf_backward(const CrfBackwardParams<T>& p, void* workspace, cudaStream_t stream) {
  return detail::launch_crf_backward(p, workspace, stream, Variant::kAuto);
}

template <typename T>
size_t relaxed_energy_step_workspace_bytes(const RelaxedStepParams<T>& p) {
  if (p.energy.B == 0 || p.energy.T == 0 || p.steps <= 0) return 0;
  size_t bytes = 0;
  detail::relaxed_workspace(p.energy, nullptr, &bytes);
  return bytes;
}
template <typename T>
Status launch_relaxed_energy_step(const RelaxedStepParams<T>& p, void* workspace,
                                  cudaStream_t stream, Variant v) {
  return detail::launch_relaxed_energy_step(p, workspace, stream, v);
}
template <typename T>
Status launch_relaxed_energy_step(const RelaxedStepParams<T>& p, void* workspace,
                                  cudaStream_t stream) {
  return detail::launch_relaxed_energy_step(p, workspace, stream, Variant::kAuto);
}

template <typename T>
size_t relaxed_energy_forward_workspace_bytes(const RelaxedEnergyParams<T>& p) {
  if (p.energy.B == 0 || p.energy.T == 0) return 0;
  size_t bytes = 0;
  detail::relaxed_energy_workspace(p, nullptr, &bytes);
  return bytes;
}
template <typename T>
Status launch_relaxed_energy_forward(const RelaxedEnergyParams<T>& p, void* workspace,
                                     cudaStream_t stream, Variant v) {
  return detail::launch_relaxed_energy_forward(p, workspace, stream, v);
}
template <typename T>
Status launch_relaxed_energy_forward(const RelaxedEnergyParams<T>& p, void* workspace,
                                     cudaStream_t stream) {
  return detail::launch_relaxed_energy_forward(p, workspace, stream, Variant::kAuto);
}

template <typename T>
size_t relaxed_energy_backward_workspace_bytes(const RelaxedEnergyBackwardParams<T>& p) {
  size_t bytes = 0;
  detail::relaxed_energy_backward_workspace(p, nullptr, &bytes);
  return bytes;
}
template <typename T>
Status launch_relaxed_energy_backward(const RelaxedEnergyBackwardParams<T>& p, void* workspace,
                                      cudaStream_t stream) {
  return detail::launch_relaxed_energy_backward(p, workspace, stream);
}

#define SI_CUDA_INSTANTIATE(T)                                                                   \
  template size_t viterbi_workspace_bytes<T>(const ViterbiParams<T>&);                           \
  template Status launch_viterbi<T>(const ViterbiParams<T>&, void*, cudaStream_t);               \
  template Status launch_viterbi<T>(const ViterbiParams<T>&, void*, cudaStream_t, Variant);      \
  template size_t crf_forward_workspace_bytes<T>(const CrfForwardParams<T>&);                    \
  template Status launch_crf_forward<T>(const CrfForwardParams<T>&, void*, cudaStream_t);        \
  template Status launch_crf_forward<T>(const CrfForwardParams<T>&, void*, cudaStream_t,         \
                                        Variant);                                                \
  template size_t crf_backward_workspace_bytes<T>(const CrfBackwardParams<T>&);                  \
  template Status launch_crf_backward<T>(const CrfBackwardParams<T>&, void*, cudaStream_t);      \
  template Status launch_crf_backward<T>(const CrfBackwardParams<T>&, void*, cudaStream_t,       \
                                         Variant);                                               \
  template size_t relaxed_energy_step_workspace_bytes<T>(const RelaxedStepParams<T>&);           \
  template Status launch_relaxed_energy_step<T>(const RelaxedStepParams<T>&, void*,              \
                                                cudaStream_t);                                   \
  template Status launch_relaxed_energy_step<T>(const RelaxedStepParams<T>&, void*,              \
                                                cudaStream_t, Variant);                          \
  template size_t relaxed_energy_forward_workspace_bytes<T>(const RelaxedEnergyParams<T>&);      \
  template Status launch_relaxed_energy_forward<T>(const RelaxedEnergyParams<T>&, void*,         \
                                                   cudaStream_t);                                \
  template Status launch_relaxed_energy_forward<T>(const RelaxedEnergyParams<T>&, void*,         \
                                                   cudaStream_t, Variant);                       \
  template size_t relaxed_energy_backward_workspace_bytes<T>(                                    \
      const RelaxedEnergyBackwardParams<T>&);                                                    \
  template Status launch_relaxed_energy_backward<T>(const RelaxedEnergyBackwardParams<T>&,       \
                                                    void*, cudaStream_t);

}  // namespace cuda
}  // namespace structinf
