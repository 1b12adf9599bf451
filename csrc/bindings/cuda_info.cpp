// Whether this build of structinf._C has the CUDA kernels, and the controls of
// their thread mapping. setup.py compiles this file into every build and
// defines STRUCTINF_WITH_CUDA=1 only where it compiles the CUDA sources in.
// structinf.ops reports it as cuda_built(); torch.ops.structinf._cuda_built()
// answers even with no GPU or driver.
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

#include "cuda_mapping.h"

#ifndef STRUCTINF_WITH_CUDA
#define STRUCTINF_WITH_CUDA 0
#endif

#if STRUCTINF_WITH_CUDA
#include "../kernels/cuda/api.h"
#include "validation_cuda.h"
#endif

namespace structinf {
namespace {

constexpr std::array<const char*, 4> kMappings = {"auto", "warp", "block", "global"};

std::atomic<int>& mapping_state() {
  static std::atomic<int> v{0};
  return v;
}

constexpr std::array<const char*, 2> kValidations = {"sync", "device"};

std::atomic<int>& validation_state() {
  static std::atomic<int> v{0};
  return v;
}

std::atomic<size_t>& budget_state() {
  static std::atomic<size_t> v{0};
  return v;
}

bool cuda_built() { return STRUCTINF_WITH_CUDA != 0; }

// Sets `state` to the index of `name` in `names`; returns the previous index,
// or -1 (state unchanged) if `names` has no such name.
template <size_t N>
int exchange_by_name(const std::array<const char*, N>& names, std::atomic<int>& state,
                     const std::string& name) {
  for (size_t i = 0; i < N; ++i)
    if (name == names[i]) return state.exchange(static_cast<int>(i));
  return -1;
}

std::string cuda_mapping() { return kMappings[static_cast<size_t>(mapping_state().load())]; }

// Sets the mapping; returns the previous one.
std::string set_cuda_mapping(const std::string& name) {
  const int before = exchange_by_name(kMappings, mapping_state(), name);
  TORCH_CHECK_VALUE(before >= 0, "structinf.cuda_mapping: argument 'name' must be one of auto, "
                    "warp, block, global; got '", name, "'");
  return kMappings[static_cast<size_t>(before)];
}

// Sets the shared-memory budget in bytes (0: the device's maximum); returns the previous one.
int64_t set_cuda_shared_memory_budget(int64_t bytes) {
  TORCH_CHECK_VALUE(bytes >= 0, "structinf.cuda_mapping: argument 'shared_memory_budget' must be "
                    ">= 0 bytes (0: the device's maximum)");
  const size_t before = budget_state().exchange(static_cast<size_t>(bytes));
#if STRUCTINF_WITH_CUDA
  cuda::set_shared_memory_budget(static_cast<size_t>(bytes));
#endif
  return static_cast<int64_t>(before);
}

std::string validation() { return kValidations[static_cast<size_t>(validation_state().load())]; }

// Sets how CUDA ops validate their inputs; returns the previous setting.
std::string set_validation(const std::string& name) {
  const int before = exchange_by_name(kValidations, validation_state(), name);
  TORCH_CHECK_VALUE(before >= 0, "structinf.validation: argument 'mode' must be 'sync' or "
                    "'device', got '", name, "'");
  return kValidations[static_cast<size_t>(before)];
}

// structinf.ops.check() on one CUDA device (nothing to do in a CPU build).
void cuda_check(int64_t device_index) {
#if STRUCTINF_WITH_CUDA
  check_device_record(device_index);
#else
  (void)device_index;
#endif
}

int64_t cuda_host_syncs() {
#if STRUCTINF_WITH_CUDA
  return validation_host_syncs();
#else
  return 0;
#endif
}

}  // namespace

int validation_setting() { return validation_state().load(); }

int forced_cuda_mapping() { return mapping_state().load(); }
size_t cuda_shared_memory_budget() { return budget_state().load(); }

TORCH_LIBRARY_FRAGMENT(structinf, m) {
  m.def("_cuda_built", &cuda_built);
  m.def("_cuda_mapping", &cuda_mapping);
  m.def("_set_cuda_mapping", &set_cuda_mapping);
  m.def("_set_cuda_shared_memory_budget", &set_cuda_shared_memory_budget);
  m.def("_validation", &validation);
  m.def("_set_validation", &set_validation);
  m.def("_cuda_check", &cuda_check);
  m.def("_cuda_host_syncs", &cuda_host_syncs);
}

}  // namespace structinf
