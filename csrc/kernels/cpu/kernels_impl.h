// Everything one instruction-set build of the CPU kernels contains. Included
// by kernels_<isa>.cpp with SI_ISA_NS and SI_VEC_BYTES defined; each build
// lives in its own namespace, so the builds never share a symbol.
#pragma once

#include "crf.h"
#include "relaxed.h"
#include "table.h"
#include "viterbi.h"

namespace structinf {
namespace cpu {
namespace SI_ISA_NS {

template <typename T>
KernelTable<T> make_table() {
  return {&viterbi_impl<T>, &crf_forward_impl<T>, &crf_backward_impl<T>,
          &relaxed_energy_step_impl<T>, &relaxed_energy_forward_impl<T>,
          &relaxed_energy_backward_impl<T>};
}

KernelTable<float> table_f32() { return make_table<float>(); }
KernelTable<double> table_f64() { return make_table<double>(); }

}  // namespace SI_ISA_NS
}  // namespace cpu
}  // namespace structinf
