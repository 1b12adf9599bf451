// The op schemas (declared once for every device), the CPU instruction-set
// controls, and the Python module entry point of structinf._C.
#include <Python.h>
#include <torch/library.h>

#include <string>

#include "../kernels/cpu/api.h"

namespace structinf {
namespace {

std::string cpu_isa() { return cpu::current_isa(); }

// Comma-separated, best first.
std::string cpu_isas() {
  std::string out;
  for (const std::string& name : cpu::available_isas()) out += (out.empty() ? "" : ",") + name;
  return out;
}

bool set_cpu_isa(const std::string& name) { return cpu::set_isa(name); }

}  // namespace

TORCH_LIBRARY(structinf, m) {
  m.def(
      "viterbi(Tensor emissions, Tensor transitions, Tensor start, Tensor end, Tensor lengths, "
      "int k=1, Tensor? allowed=None) -> (Tensor paths, Tensor scores)");
  m.def(
      "crf_forward_backward(Tensor emissions, Tensor transitions, Tensor start, Tensor end, "
      "Tensor lengths, Tensor? allowed=None) -> (Tensor log_z, Tensor log_alpha, "
      "Tensor log_alpha_shift)");
  m.def(
      "crf_forward_backward_backward(Tensor grad_log_z, Tensor emissions, Tensor transitions, "
      "Tensor start, Tensor end, Tensor lengths, Tensor? allowed, Tensor log_z, "
      "Tensor log_alpha, Tensor log_alpha_shift) -> (Tensor grad_emissions, Tensor grad_transitions, "
      "Tensor grad_start, Tensor grad_end)");
  m.def(
      "relaxed_energy_step_(Tensor(a!) logits, Tensor(b!) velocity, Tensor emissions, "
      "Tensor transitions, Tensor start, Tensor end, Tensor lengths, Tensor lr, "
      "float momentum=0.9, int steps=1) -> Tensor energy");
  // The differentiable relaxed energy E(p) of p = softmax(input) per position
  // (or of p = input when probs). Its autograd forward runs
  // relaxed_energy_and_grad, which also returns p and dE/dinput at a unit
  // incoming gradient, so relaxed_energy_backward only scales them (and forms
  // the transition gradient where output_mask asks for it; masked gradients
  // are returned as zeros).
  m.def(
      "relaxed_energy(Tensor input, Tensor emissions, Tensor transitions, Tensor start, "
      "Tensor end, Tensor lengths, bool probs=False) -> Tensor energy");
  m.def(
      "relaxed_energy_and_grad(Tensor input, Tensor emissions, Tensor transitions, Tensor start, "
      "Tensor end, Tensor lengths, bool probs=False) -> (Tensor energy, Tensor p, "
      "Tensor input_grad)");
  m.def(
      "relaxed_energy_backward(Tensor grad_energy, Tensor p, Tensor input_grad, Tensor lengths, "
      "bool[5] output_mask) -> (Tensor grad_input, Tensor grad_emissions, "
      "Tensor grad_transitions, Tensor grad_start, Tensor grad_end)");
  // Instruction-set controls of the CPU kernels (used by tests and benchmarks).
  m.def("_cpu_isa", &cpu_isa);
  m.def("_cpu_isas", &cpu_isas);
  m.def("_set_cpu_isa", &set_cpu_isa);
}

}  // namespace structinf

// structinf._C is imported for its side effect (registering the ops above);
// it defines no Python functions of its own.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr,
                                          nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&module_def);
}
