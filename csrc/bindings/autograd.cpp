// Autograd for crf_forward_backward and relaxed_energy, in C++: the backward
// passes are dedicated kernels (crf_forward_backward_backward,
// relaxed_energy_backward), called through the dispatcher (so tracing and
// every device see them). Registering the formulas here rather than from
// Python keeps per-call overhead in microseconds, which matters for the
// small batches of training loops.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <string>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

namespace structinf {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = std::optional<at::Tensor>;

using ForwardSig = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, const OptTensor&);
using BackwardSig = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, const at::Tensor&, const OptTensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&);

const c10::TypedOperatorHandle<ForwardSig>& forward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("structinf::crf_forward_backward", "")
                             .typed<ForwardSig>();
  return op;
}

const c10::TypedOperatorHandle<BackwardSig>& backward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("structinf::crf_forward_backward_backward", "")
                             .typed<BackwardSig>();
  return op;
}

// Gives the freshly computed `outs` a grad_fn that raises `msg`, with edges to
// the graph of `inputs` (what they were computed from). Any derivative of
// them (backward(), or autograd.grad with respect to those inputs, even with
// allow_unused) is then an error, never a silent zero or None. Like
// once_differentiable, but connected to the real inputs.
// How this torch holds autograd nodes: c10::intrusive_ptr from torch 2.13,
// std::shared_ptr before. Read off Tensor::grad_fn() rather than a version
// number, so both build without a guard to keep up to date.
using NodeHolder = std::decay_t<decltype(std::declval<const at::Tensor&>().grad_fn())>;

template <typename N, typename... Args>
auto make_node(Args&&... args) {
  if constexpr (std::is_same_v<NodeHolder, std::shared_ptr<torch::autograd::Node>>)
    return std::make_shared<N>(std::forward<Args>(args)...);
  else
    return c10::make_intrusive<N>(std::forward<Args>(args)...);
}

variable_list raise_on_backward(const char* msg, variable_list outs,
                                const variable_list& inputs) {
  auto err = make_node<torch::autograd::Error>(
      msg, torch::autograd::collect_next_edges(at::ArrayRef<at::Tensor>(inputs)));
  for (const at::Tensor& t : outs)
    if (t.defined()) torch::autograd::set_history(t, err);
  return outs;
}

bool any_requires_grad(std::initializer_list<const at::Tensor*> ts) {
  for (const at::Tensor* t : ts)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

constexpr const char* kNoCrfDoubleBackward =
    "structinf.crf_forward_backward: the second derivative of log Z is not implemented "
    "(its first derivative, the marginals, comes from a kernel without a graph of its own); "
    "for Hessian-vector products use structinf.torch_ops.log_partition_vectorized";

class CrfLogPartition : public torch::autograd::Function<CrfLogPartition> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& emissions,
                               const at::Tensor& transitions, const at::Tensor& start,
                               const at::Tensor& end, const at::Tensor& lengths,
                               const OptTensor& allowed) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [log_z, log_alpha, shift] =
        forward_op().call(emissions, transitions, start, end, lengths, allowed);
    ctx->save_for_backward({emissions, transitions, start, end, lengths, log_z, log_alpha, shift});
    if (allowed.has_value()) ctx->saved_data["allowed"] = *allowed;
    ctx->mark_non_differentiable({log_alpha, shift});
    return {log_z, log_alpha, shift};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    OptTensor allowed;
    if (ctx->saved_data.count("allowed")) allowed = ctx->saved_data["allowed"].toTensor();
    at::Tensor g = grads[0].defined() ? grads[0].contiguous() : at::zeros_like(s[5]);
    variable_list out;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      auto [ge, gt, gs, gend] =
          backward_op().call(g, s[0], s[1], s[2], s[3], s[4], allowed, s[5], s[6], s[7]);
      out = {ge, gt, gs, gend};
    }
    // create_graph=True: the marginals are right, but have no derivative here.
    if (at::GradMode::is_enabled()) {
      variable_list from = {s[0], s[1], s[2], s[3], grads[0]};
      out = raise_on_backward(kNoCrfDoubleBackward, std::move(out), from);
    }
    out.emplace_back();  // lengths
    out.emplace_back();  // allowed
    return out;
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> crf_forward_backward_autograd(
    const at::Tensor& emissions, const at::Tensor& transitions, const at::Tensor& start,
    const at::Tensor& end, const at::Tensor& lengths, const OptTensor& allowed) {
  variable_list out =
      CrfLogPartition::apply(emissions, transitions, start, end, lengths, allowed);
  return {out[0], out[1], out[2]};
}

// ---------------------------------------------------------------- relaxed_energy

using EnergySig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                             const at::Tensor&, const at::Tensor&, const at::Tensor&, bool);
using EnergyAndGradSig = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, const at::Tensor&, bool);
using EnergyBackwardSig = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    std::array<bool, 5>);

const c10::TypedOperatorHandle<EnergySig>& energy_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("structinf::relaxed_energy", "")
                             .typed<EnergySig>();
  return op;
}

const c10::TypedOperatorHandle<EnergyAndGradSig>& energy_and_grad_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("structinf::relaxed_energy_and_grad", "")
                             .typed<EnergyAndGradSig>();
  return op;
}

const c10::TypedOperatorHandle<EnergyBackwardSig>& energy_backward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("structinf::relaxed_energy_backward", "")
                             .typed<EnergyBackwardSig>();
  return op;
}

constexpr const char* kNoDoubleBackward =
    "structinf.relaxed_energy: double backward is not implemented (its gradients are "
    "computed once, without a graph of their own)";

class RelaxedEnergy : public torch::autograd::Function<RelaxedEnergy> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input,
                               const at::Tensor& emissions, const at::Tensor& transitions,
                               const at::Tensor& start, const at::Tensor& end,
                               const at::Tensor& lengths, bool probs) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [energy, p, input_grad] =
        energy_and_grad_op().call(input, emissions, transitions, start, end, lengths, probs);
    // p and input_grad are this op's own: no version checks needed.
    ctx->saved_data["p"] = p;
    ctx->saved_data["input_grad"] = input_grad;
    ctx->saved_data["lengths"] = lengths;
    // Unpacked only under create_graph, to connect the error of a second
    // derivative to them (so an in-place change after the forward is no error).
    ctx->save_for_backward({input, emissions, transitions, start, end});
    return {energy};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor p = ctx->saved_data["p"].toTensor();
    const at::Tensor input_grad = ctx->saved_data["input_grad"].toTensor();
    const at::Tensor lengths = ctx->saved_data["lengths"].toTensor();
    at::Tensor g = grads[0].defined() ? grads[0] : at::zeros({p.size(0)}, p.options());
    const std::array<bool, 5> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                      ctx->needs_input_grad(2), ctx->needs_input_grad(3),
                                      ctx->needs_input_grad(4)};
    variable_list out(5);
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      auto [gi, ge, gt, gs, gn] = energy_backward_op().call(g, p, input_grad, lengths, mask);
      out = {gi, ge, gt, gs, gn};
    }
    for (size_t i = 0; i < 5; ++i)
      if (!mask[i]) out[i] = at::Tensor();
    // create_graph=True: the gradients are right, but have no derivative.
    if (at::GradMode::is_enabled()) {
      variable_list from = ctx->get_saved_variables();
      from.push_back(grads[0]);
      out = raise_on_backward(kNoDoubleBackward, std::move(out), from);
    }
    out.emplace_back();  // lengths
    out.emplace_back();  // probs
    return out;
  }
};

at::Tensor relaxed_energy_autograd(const at::Tensor& input, const at::Tensor& emissions,
                                   const at::Tensor& transitions, const at::Tensor& start,
                                   const at::Tensor& end, const at::Tensor& lengths, bool probs) {
  if (at::GradMode::is_enabled() &&
      any_requires_grad({&input, &emissions, &transitions, &start, &end}))
    return RelaxedEnergy::apply(input, emissions, transitions, start, end, lengths, probs)[0];
  // Nothing to differentiate: the energy alone (half the work).
  at::AutoDispatchBelowADInplaceOrView guard;
  return energy_op().call(input, emissions, transitions, start, end, lengths, probs);
}

// The helper ops have no derivatives of their own: differentiating through
// them raises instead of silently returning zeros.
std::tuple<at::Tensor, at::Tensor, at::Tensor> relaxed_energy_and_grad_autograd(
    const at::Tensor& input, const at::Tensor& emissions, const at::Tensor& transitions,
    const at::Tensor& start, const at::Tensor& end, const at::Tensor& lengths, bool probs) {
  variable_list out(3);
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [e, p, ig] =
        energy_and_grad_op().call(input, emissions, transitions, start, end, lengths, probs);
    out = {e, p, ig};
  }
  if (at::GradMode::is_enabled() &&
      any_requires_grad({&input, &emissions, &transitions, &start, &end}))
    out = raise_on_backward(
        "structinf.relaxed_energy_and_grad is not differentiable; differentiate "
        "structinf.relaxed_energy instead",
        std::move(out), {input, emissions, transitions, start, end});
  return {out[0], out[1], out[2]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
relaxed_energy_backward_autograd(const at::Tensor& grad_energy, const at::Tensor& p,
                                 const at::Tensor& input_grad, const at::Tensor& lengths,
                                 std::array<bool, 5> output_mask) {
  variable_list out(5);
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [gi, ge, gt, gs, gn] =
        energy_backward_op().call(grad_energy, p, input_grad, lengths, output_mask);
    out = {gi, ge, gt, gs, gn};
  }
  if (at::GradMode::is_enabled() && any_requires_grad({&grad_energy, &p, &input_grad}))
    out = raise_on_backward(kNoDoubleBackward, std::move(out), {grad_energy, p, input_grad});
  return {out[0], out[1], out[2], out[3], out[4]};
}

}  // namespace

// ------------------------------------------------------------ relaxed_energy_step_

using StepSig = at::Tensor(at::Tensor&, at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, double, int64_t);

const c10::TypedOperatorHandle<StepSig>& step_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("structinf::relaxed_energy_step_", "")
                             .typed<StepSig>();
  return op;
}

constexpr const char* kNoStepBackward =
    "structinf.relaxed_energy_step_: this in-place gradient-descent step is not "
    "differentiable; for a differentiable relaxed energy use structinf.ops.relaxed_energy";

// The fused step is inference, not a differentiable function: its energies raise
// on backward when an input requires grad, and the tensors it updates in place
// may not require grad at all.
at::Tensor relaxed_energy_step_autograd(at::Tensor& logits, at::Tensor& velocity,
                                        const at::Tensor& emissions, const at::Tensor& transitions,
                                        const at::Tensor& start, const at::Tensor& end,
                                        const at::Tensor& lengths, const at::Tensor& lr,
                                        double momentum, int64_t steps) {
  const bool grad = at::GradMode::is_enabled();
  TORCH_CHECK_VALUE(!grad || !(logits.requires_grad() || velocity.requires_grad()),
                    "structinf.relaxed_energy_step_: arguments 'logits' and 'velocity' are "
                    "updated in place and must not require grad (detach them)");
  at::Tensor energy;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    energy = step_op().call(logits, velocity, emissions, transitions, start, end, lengths, lr,
                            momentum, steps);
  }
  // Below ADInplaceOrView nothing records the mutation: bump the version counters
  // so that a graph which saved these tensors refuses to use the changed values.
  logits.unsafeGetTensorImpl()->bump_version();
  velocity.unsafeGetTensorImpl()->bump_version();
  if (grad && any_requires_grad({&emissions, &transitions, &start, &end, &lr}))
    energy = raise_on_backward(kNoStepBackward, {energy},
                               {emissions, transitions, start, end, lr})[0];
  return energy;
}

TORCH_LIBRARY_IMPL(structinf, Autograd, m) {
  m.impl("crf_forward_backward", &crf_forward_backward_autograd);
  m.impl("relaxed_energy_step_", &relaxed_energy_step_autograd);
  m.impl("relaxed_energy", &relaxed_energy_autograd);
  m.impl("relaxed_energy_and_grad", &relaxed_energy_and_grad_autograd);
  m.impl("relaxed_energy_backward", &relaxed_energy_backward_autograd);
}

}  // namespace structinf
