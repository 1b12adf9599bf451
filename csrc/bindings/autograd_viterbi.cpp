// Autograd for viterbi's scores: the structured-perceptron / SSVM subgradient.
//
// For the best path (each of the k best, with k-best) of sequence b:
//   d score / d emissions[b, t, j] = 1 where the path has label j at t < lengths[b],
//   d score / d transitions[i, j] = the number of its steps i -> j,
//   d score / d start, end        = one-hots of its first and last labels.
// A path that does not exist (score -inf, labels -1) contributes nothing. The
// gradient is built from ATen ops on the saved paths, so it runs on every device;
// it is linear in the incoming gradient, so its own derivative is exact (zero
// with respect to the scores, almost everywhere, as for any max).
#include <ATen/ATen.h>
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

using ViterbiSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                       const at::Tensor&, const at::Tensor&,
                                                       const at::Tensor&, int64_t,
                                                       const OptTensor&);

const c10::TypedOperatorHandle<ViterbiSig>& viterbi_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("structinf::viterbi", "")
                             .typed<ViterbiSig>();
  return op;
}

// Sum of `values` (any shape, like `index`) into a zero (n,) vector at `index`.
at::Tensor scatter_sum(const at::Tensor& index, const at::Tensor& values, int64_t n) {
  return at::zeros({n}, values.options()).index_add(0, index.reshape(-1), values.reshape(-1));
}

class ViterbiScores : public torch::autograd::Function<ViterbiScores> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& emissions,
                               const at::Tensor& transitions, const at::Tensor& start,
                               const at::Tensor& end, const at::Tensor& lengths, int64_t k,
                               const OptTensor& allowed) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [paths, scores] =
        viterbi_op().call(emissions, transitions, start, end, lengths, k, allowed);
    ctx->save_for_backward({paths, lengths});
    ctx->saved_data["L"] = emissions.size(2);
    ctx->mark_non_differentiable({paths});
    return {paths, scores};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& paths = saved[0];  // (B, k, T), -1 at padding and for missing paths
    const at::Tensor lengths = saved[1].to(paths.device());
    const int64_t L = ctx->saved_data["L"].toInt();
    const int64_t B = paths.size(0), k = paths.size(1), T = paths.size(2);
    variable_list out(7);
    if (!grads[1].defined() || B == 0 || T == 0) {
      return out;  // undefined gradients: zero
    }
    const at::Tensor g = grads[1];                         // (B, k)
    const at::Tensor valid = paths.ge(0);                  // (B, k, T)
    const at::Tensor label = paths.clamp_min(0);
    const at::Tensor zero = at::zeros({}, g.options());
    // g[b, q] at every position where path (b, q) has a label, else 0 (not g * 0,
    // which would turn an infinite incoming gradient into NaN elsewhere).
    const at::Tensor per_pos = at::where(valid, g.unsqueeze(2).expand({B, k, T}), zero);
    if (ctx->needs_input_grad(0)) {
      const at::Tensor b = at::arange(B, paths.options()).view({B, 1, 1});
      const at::Tensor t = at::arange(T, paths.options()).view({1, 1, T});
      out[0] = scatter_sum((b * T + t) * L + label, per_pos, B * T * L).view({B, T, L});
    }
    if (ctx->needs_input_grad(1)) {
      if (T > 1) {
        using at::indexing::Slice;
        const at::Tensor prev = label.index({Slice(), Slice(), Slice(0, T - 1)});
        const at::Tensor next = label.index({Slice(), Slice(), Slice(1, T)});
        const at::Tensor step = at::where(valid.index({Slice(), Slice(), Slice(1, T)}),
                                          per_pos.index({Slice(), Slice(), Slice(1, T)}), zero);
        out[1] = scatter_sum(prev * L + next, step, L * L).view({L, L});
      } else {
        out[1] = at::zeros({L, L}, g.options());
      }
    }
    if (ctx->needs_input_grad(2)) {
      out[2] = scatter_sum(label.select(2, 0), per_pos.select(2, 0), L);
    }
    if (ctx->needs_input_grad(3)) {
      const at::Tensor last = (lengths - 1).clamp_min(0).view({B, 1, 1}).expand({B, k, 1});
      out[3] = scatter_sum(label.gather(2, last).squeeze(2), per_pos.gather(2, last).squeeze(2), L);
    }
    return out;
  }
};

std::tuple<at::Tensor, at::Tensor> viterbi_autograd(const at::Tensor& emissions,
                                                     const at::Tensor& transitions,
                                                     const at::Tensor& start,
                                                     const at::Tensor& end,
                                                     const at::Tensor& lengths, int64_t k,
                                                     const OptTensor& allowed) {
  const bool needs_grad = at::GradMode::is_enabled() &&
                          (emissions.requires_grad() || transitions.requires_grad() ||
                           start.requires_grad() || end.requires_grad());
  if (!needs_grad) {
    // Decoding: no graph, no autograd overhead.
    at::AutoDispatchBelowADInplaceOrView guard;
    return viterbi_op().call(emissions, transitions, start, end, lengths, k, allowed);
  }
  variable_list out =
      ViterbiScores::apply(emissions, transitions, start, end, lengths, k, allowed);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(structinf, Autograd, m) { m.impl("viterbi", &viterbi_autograd); }

}  // namespace structinf
