// CPU implementations of the structinf ops: check, fill a params struct, run
// the torch-free kernel with at::parallel_for as its thread pool.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <array>
#include <tuple>

#include "../kernels/cpu/api.h"
#include "checks.h"

namespace structinf {
namespace {

cpu::Exec torch_exec() {
  cpu::Exec exec;
  exec.parallel_for = [](int64_t n, int64_t grain,
                         const std::function<void(int64_t, int64_t)>& body) {
    at::parallel_for(0, n, grain, body);
  };
  exec.num_threads = at::get_num_threads();
  return exec;
}

std::tuple<at::Tensor, at::Tensor> viterbi_cpu(const at::Tensor& emissions,
                                               const at::Tensor& transitions,
                                               const at::Tensor& start, const at::Tensor& end,
                                               const at::Tensor& lengths, int64_t k,
                                               const std::optional<at::Tensor>& allowed) {
  const CheckedEnergy c =
      check_energy("viterbi", emissions, transitions, start, end, lengths, allowed);
  TORCH_CHECK_VALUE(k >= 1, "structinf.viterbi: argument 'k' must be >= 1, got ", num(k));
  at::Tensor paths = at::empty({c.B, k, c.T}, emissions.options().dtype(at::kLong));
  at::Tensor scores = at::empty({c.B, k}, emissions.options());
  AT_DISPATCH_FLOATING_TYPES(emissions.scalar_type(), "structinf_viterbi", [&] {
    ViterbiParams<scalar_t> p;
    p.energy = energy_view<scalar_t>(c);
    p.k = k;
    p.paths = paths.data_ptr<int64_t>();
    p.scores = scores.data_ptr<scalar_t>();
    raise_status("viterbi", cpu::viterbi(p, torch_exec()));
  });
  return {paths, scores};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> crf_forward_backward_cpu(
    const at::Tensor& emissions, const at::Tensor& transitions, const at::Tensor& start,
    const at::Tensor& end, const at::Tensor& lengths, const std::optional<at::Tensor>& allowed) {
  const char* op = "crf_forward_backward";
  const CheckedEnergy c = check_energy(op, emissions, transitions, start, end, lengths, allowed);
  at::Tensor log_z = at::empty({c.B}, emissions.options());
  at::Tensor log_alpha = at::empty({c.B, c.T, c.L}, emissions.options());
  at::Tensor log_alpha_shift = at::empty({c.B, c.T}, emissions.options());
  AT_DISPATCH_FLOATING_TYPES(emissions.scalar_type(), "structinf_crf_forward", [&] {
    CrfForwardParams<scalar_t> p;
    p.energy = energy_view<scalar_t>(c);
    p.log_z = log_z.data_ptr<scalar_t>();
    p.log_alpha = log_alpha.data_ptr<scalar_t>();
    p.log_alpha_shift = log_alpha_shift.data_ptr<scalar_t>();
    raise_status(op, cpu::crf_forward(p, torch_exec()));
  });
  return {log_z, log_alpha, log_alpha_shift};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> crf_forward_backward_backward_cpu(
    const at::Tensor& grad_log_z, const at::Tensor& emissions, const at::Tensor& transitions,
    const at::Tensor& start, const at::Tensor& end, const at::Tensor& lengths,
    const std::optional<at::Tensor>& allowed, const at::Tensor& log_z,
    const at::Tensor& log_alpha, const at::Tensor& log_alpha_shift) {
  const char* op = "crf_forward_backward_backward";
  const CheckedEnergy c = check_energy(op, emissions, transitions, start, end, lengths, allowed);
  check_like(op, "grad_log_z", grad_log_z, {c.B}, emissions);
  check_like(op, "log_z", log_z, {c.B}, emissions);
  check_like(op, "log_alpha", log_alpha, {c.B, c.T, c.L}, emissions);
  check_like(op, "log_alpha_shift", log_alpha_shift, {c.B, c.T}, emissions);
  const at::Tensor g = grad_log_z.contiguous(), lz = log_z.contiguous(),
                   la = log_alpha.contiguous(), shift = log_alpha_shift.contiguous();
  at::Tensor grad_emissions = at::empty({c.B, c.T, c.L}, emissions.options());
  at::Tensor grad_transitions = at::empty({c.L, c.L}, emissions.options());
  at::Tensor grad_start = at::empty({c.L}, emissions.options());
  at::Tensor grad_end = at::empty({c.L}, emissions.options());
  AT_DISPATCH_FLOATING_TYPES(emissions.scalar_type(), "structinf_crf_backward", [&] {
    CrfBackwardParams<scalar_t> p;
    p.energy = energy_view<scalar_t>(c);
    p.grad_log_z = g.data_ptr<scalar_t>();
    p.log_z = lz.data_ptr<scalar_t>();
    p.log_alpha = la.data_ptr<scalar_t>();
    p.log_alpha_shift = shift.data_ptr<scalar_t>();
    p.grad_emissions = grad_emissions.data_ptr<scalar_t>();
    p.grad_transitions = grad_transitions.data_ptr<scalar_t>();
    p.grad_start = grad_start.data_ptr<scalar_t>();
    p.grad_end = grad_end.data_ptr<scalar_t>();
    raise_status(op, cpu::crf_backward(p, torch_exec()));
  });
  return {grad_emissions, grad_transitions, grad_start, grad_end};
}

at::Tensor relaxed_energy_step_cpu(at::Tensor& logits, at::Tensor& velocity,
                                   const at::Tensor& emissions, const at::Tensor& transitions,
                                   const at::Tensor& start, const at::Tensor& end,
                                   const at::Tensor& lengths, const at::Tensor& lr,
                                   double momentum, int64_t steps) {
  const char* op = "relaxed_energy_step_";
  const CheckedEnergy c =
      check_energy(op, emissions, transitions, start, end, lengths, std::nullopt);
  check_like(op, "logits", logits, {c.B, c.T, c.L}, emissions);
  check_like(op, "velocity", velocity, {c.B, c.T, c.L}, emissions);
  TORCH_CHECK_VALUE(lr.dim() == 1 && lr.size(0) == c.B, "structinf.", op,
                    ": argument 'lr' must have shape (B,) = (", num(c.B), ",), got ", shape_str(lr.sizes()));
  TORCH_CHECK_TYPE(at::isFloatingType(lr.scalar_type()), "structinf.", op,
                   ": argument 'lr' must be a floating tensor, got ", lr.scalar_type());
  TORCH_CHECK_VALUE(lr.device() == emissions.device(), "structinf.", op, ": argument 'lr' is on ",
                    lr.device(), " but emissions is on ", emissions.device());
  TORCH_CHECK_VALUE(std::isfinite(momentum), "structinf.", op,
                    ": argument 'momentum' must be finite, got ", momentum);
  TORCH_CHECK_VALUE(steps >= 1, "structinf.", op, ": argument 'steps' must be >= 1, got ", num(steps));
  TORCH_CHECK_VALUE(!logits.is_same(velocity) && !logits.is_alias_of(velocity), "structinf.", op,
                    ": arguments 'logits' and 'velocity' must not share memory");
  // Work on contiguous tensors; copy back only if the caller's were not.
  at::Tensor z = logits.contiguous(), v = velocity.contiguous();
  const at::Tensor lr_c = lr.to(emissions.scalar_type()).contiguous();
  at::Tensor energy = at::empty({steps, c.B}, emissions.options());
  AT_DISPATCH_FLOATING_TYPES(emissions.scalar_type(), "structinf_relaxed_step", [&] {
    RelaxedStepParams<scalar_t> p;
    p.energy = energy_view<scalar_t>(c);
    p.logits = z.data_ptr<scalar_t>();
    p.velocity = v.data_ptr<scalar_t>();
    p.lr = lr_c.data_ptr<scalar_t>();
    p.momentum = static_cast<scalar_t>(momentum);
    p.steps = steps;
    p.energy_out = energy.data_ptr<scalar_t>();
    const Status s = cpu::relaxed_energy_step(p, torch_exec());
    if (!z.is_same(logits)) logits.copy_(z);
    if (!v.is_same(velocity)) velocity.copy_(v);
    raise_status(op, s);
  });
  return energy;
}

// relaxed_energy and relaxed_energy_and_grad (errors name the op the user
// called, relaxed_energy, and the input by its mode: 'logits' or 'probs').
std::tuple<at::Tensor, at::Tensor, at::Tensor> relaxed_energy_run(
    const at::Tensor& input, const at::Tensor& emissions, const at::Tensor& transitions,
    const at::Tensor& start, const at::Tensor& end, const at::Tensor& lengths, bool probs,
    bool with_grad) {
  const char* op = "relaxed_energy";
  const CheckedEnergy c =
      check_energy(op, emissions, transitions, start, end, lengths, std::nullopt);
  check_like(op, probs ? "probs" : "logits", input, {c.B, c.T, c.L}, emissions);
  const at::Tensor x = input.contiguous();
  at::Tensor energy = at::empty({c.B}, emissions.options());
  at::Tensor p_out, input_grad;
  if (with_grad) {
    p_out = at::empty({c.B, c.T, c.L}, emissions.options());
    input_grad = at::empty({c.B, c.T, c.L}, emissions.options());
  }
  AT_DISPATCH_FLOATING_TYPES(emissions.scalar_type(), "structinf_relaxed_energy", [&] {
    RelaxedEnergyParams<scalar_t> p;
    p.energy = energy_view<scalar_t>(c);
    p.input = x.data_ptr<scalar_t>();
    p.probs = probs;
    p.energy_out = energy.data_ptr<scalar_t>();
    if (with_grad) {
      p.p_out = p_out.data_ptr<scalar_t>();
      p.input_grad = input_grad.data_ptr<scalar_t>();
    }
    raise_status(op, cpu::relaxed_energy_forward(p, torch_exec()));
  });
  return {energy, p_out, input_grad};
}

at::Tensor relaxed_energy_cpu(const at::Tensor& input, const at::Tensor& emissions,
                              const at::Tensor& transitions, const at::Tensor& start,
                              const at::Tensor& end, const at::Tensor& lengths, bool probs) {
  return std::get<0>(
      relaxed_energy_run(input, emissions, transitions, start, end, lengths, probs, false));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> relaxed_energy_and_grad_cpu(
    const at::Tensor& input, const at::Tensor& emissions, const at::Tensor& transitions,
    const at::Tensor& start, const at::Tensor& end, const at::Tensor& lengths, bool probs) {
  return relaxed_energy_run(input, emissions, transitions, start, end, lengths, probs, true);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
relaxed_energy_backward_cpu(const at::Tensor& grad_energy, const at::Tensor& p,
                            const at::Tensor& input_grad, const at::Tensor& lengths,
                            std::array<bool, 5> output_mask) {
  const char* op = "relaxed_energy_backward";
  TORCH_CHECK_VALUE(p.defined() && p.dim() == 3, "structinf.", op,
                    ": argument 'p' must be 3-D (B, T, L), got shape ", shape_str(p.sizes()));
  TORCH_CHECK_TYPE(p.scalar_type() == at::kFloat || p.scalar_type() == at::kDouble,
                   "structinf.", op, ": argument 'p' must be float32 or float64 on the CPU, got ",
                   p.scalar_type());
  const int64_t B = p.size(0), T = p.size(1), L = p.size(2);
  check_like(op, "input_grad", input_grad, {B, T, L}, p, "p");
  check_like(op, "grad_energy", grad_energy, {B}, p, "p");
  TORCH_CHECK_VALUE(lengths.defined() && lengths.dim() == 1 && lengths.size(0) == B,
                    "structinf.", op, ": argument 'lengths' must have shape (B,) = (", num(B),
                    ",), got ", lengths.sizes());
  TORCH_CHECK_TYPE(at::isIntegralType(lengths.scalar_type(), /*includeBool=*/false),
                   "structinf.", op, ": argument 'lengths' must be an integer tensor, got ",
                   lengths.scalar_type());
  TORCH_CHECK_VALUE(lengths.device() == p.device(), "structinf.", op,
                    ": argument 'lengths' is on ", lengths.device(), " but p is on ", p.device());
  const at::Tensor lens = lengths.to(at::kLong).contiguous();
  check_lengths_range(op, lens, T);
  const at::Tensor g = grad_energy.contiguous(), pc = p.contiguous(), ig = input_grad.contiguous();
  // Masked gradients are zeros (autograd never asks for them).
  auto out = [&](bool wanted, at::IntArrayRef sizes) {
    return wanted ? at::empty(sizes, p.options()) : at::zeros(sizes, p.options());
  };
  at::Tensor grad_input = out(output_mask[0], {B, T, L});
  at::Tensor grad_emissions = out(output_mask[1], {B, T, L});
  at::Tensor grad_transitions = out(output_mask[2], {L, L});
  at::Tensor grad_start = out(output_mask[3], {L});
  at::Tensor grad_end = out(output_mask[4], {L});
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "structinf_relaxed_energy_backward", [&] {
    RelaxedEnergyBackwardParams<scalar_t> r;
    r.B = B;
    r.T = T;
    r.L = L;
    r.lengths = lens.data_ptr<int64_t>();
    r.grad_energy = g.data_ptr<scalar_t>();
    r.p = pc.data_ptr<scalar_t>();
    r.input_grad = ig.data_ptr<scalar_t>();
    auto ptr = [](bool wanted, at::Tensor& t) { return wanted ? t.data_ptr<scalar_t>() : nullptr; };
    r.grad_input = ptr(output_mask[0], grad_input);
    r.grad_emissions = ptr(output_mask[1], grad_emissions);
    r.grad_transitions = ptr(output_mask[2], grad_transitions);
    r.grad_start = ptr(output_mask[3], grad_start);
    r.grad_end = ptr(output_mask[4], grad_end);
    raise_status(op, cpu::relaxed_energy_backward(r, torch_exec()));
  });
  return {grad_input, grad_emissions, grad_transitions, grad_start, grad_end};
}

}  // namespace

TORCH_LIBRARY_IMPL(structinf, CPU, m) {
  m.impl("viterbi", &viterbi_cpu);
  m.impl("crf_forward_backward", &crf_forward_backward_cpu);
  m.impl("crf_forward_backward_backward", &crf_forward_backward_backward_cpu);
  m.impl("relaxed_energy_step_", &relaxed_energy_step_cpu);
  m.impl("relaxed_energy", &relaxed_energy_cpu);
  m.impl("relaxed_energy_and_grad", &relaxed_energy_and_grad_cpu);
  m.impl("relaxed_energy_backward", &relaxed_energy_backward_cpu);
}

}  // namespace structinf
