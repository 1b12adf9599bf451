// Autograd for crf_forward_backward, in C++: the backward pass is the
// dedicated kernel crf_forward_backward_backward, called through the
// dispatcher (so tracing and every device see it). Registering the formula
// here rather than from Python keeps per-call overhead in microseconds,
// which matters for the small batches of training loops.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

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
    auto [ge, gt, gs, gend] =
        backward_op().call(g, s[0], s[1], s[2], s[3], s[4], allowed, s[5], s[6], s[7]);
    return {ge, gt, gs, gend, at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> crf_forward_backward_autograd(
    const at::Tensor& emissions, const at::Tensor& transitions, const at::Tensor& start,
    const at::Tensor& end, const at::Tensor& lengths, const OptTensor& allowed) {
  variable_list out =
      CrfLogPartition::apply(emissions, transitions, start, end, lengths, allowed);
  return {out[0], out[1], out[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(structinf, Autograd, m) {
  m.impl("crf_forward_backward", &crf_forward_backward_autograd);
}

}  // namespace structinf
