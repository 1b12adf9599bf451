// The kernels of one instruction set, as a table of entry points.
#pragma once

#include "../params.h"
#include "api.h"

namespace structinf {
namespace cpu {

template <typename T>
struct KernelTable {
  Status (*viterbi)(const ViterbiParams<T>&, const Exec&);
  Status (*crf_forward)(const CrfForwardParams<T>&, const Exec&);
  Status (*crf_backward)(const CrfBackwardParams<T>&, const Exec&);
  Status (*relaxed_energy_step)(const RelaxedStepParams<T>&, const Exec&);
  Status (*relaxed_energy_forward)(const RelaxedEnergyParams<T>&, const Exec&);
  Status (*relaxed_energy_backward)(const RelaxedEnergyBackwardParams<T>&, const Exec&);
};

}  // namespace cpu
}  // namespace structinf
