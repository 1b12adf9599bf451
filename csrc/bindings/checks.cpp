#include "checks.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace structinf {
namespace {

bool supported_float(const at::Tensor& t) {
  const auto st = t.scalar_type();
  if (st == at::kFloat || st == at::kDouble) return true;
  return t.is_cuda() && (st == at::kHalf || st == at::kBFloat16);
}

void check_device(const char* op, const char* name, const at::Tensor& t, const at::Tensor& like,
                  const char* like_name = "emissions") {
  TORCH_CHECK_VALUE(t.device() == like.device(), "structinf.", op, ": argument '", name,
                    "' is on ", t.device(), " but ", like_name, " is on ", like.device(),
                    "; move every tensor to one device");
}

}  // namespace

std::string num(int64_t v) { return std::to_string(v); }

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.9g", v);
  return buf;
}

std::string shape_str(at::IntArrayRef sizes) {
  std::string s = "(";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + num(sizes[i]);
  return s + (sizes.size() == 1 ? ",)" : ")");
}

void check_like(const char* op, const char* name, const at::Tensor& t, at::IntArrayRef sizes,
                const at::Tensor& like, const char* like_name) {
  TORCH_CHECK_VALUE(t.defined(), "structinf.", op, ": argument '", name, "' is undefined");
  TORCH_CHECK_VALUE(t.sizes() == sizes, "structinf.", op, ": argument '", name,
                    "' must have shape ", shape_str(sizes), ", got ", shape_str(t.sizes()));
  TORCH_CHECK_TYPE(t.scalar_type() == like.scalar_type(), "structinf.", op, ": argument '", name,
                   "' must have the dtype of ", like_name, " (", like.scalar_type(), "), got ",
                   t.scalar_type());
  check_device(op, name, t, like, like_name);
}

CheckedEnergy check_energy(const char* op, const at::Tensor& emissions,
                           const at::Tensor& transitions, const at::Tensor& start,
                           const at::Tensor& end, const at::Tensor& lengths,
                           const std::optional<at::Tensor>& allowed,
                           LengthsValues lengths_values) {
  TORCH_CHECK_VALUE(emissions.defined(), "structinf.", op, ": argument 'emissions' is undefined");
  TORCH_CHECK_VALUE(emissions.dim() == 3, "structinf.", op,
                    ": argument 'emissions' must be 3-D (B, T, L), got shape ",
                    shape_str(emissions.sizes()));
  TORCH_CHECK_TYPE(supported_float(emissions), "structinf.", op,
                   ": argument 'emissions' must be float32 or float64",
                   " (float16 / bfloat16 on CUDA), got ", emissions.scalar_type(), " on ",
                   emissions.device());
  CheckedEnergy c;
  c.B = emissions.size(0);
  c.T = emissions.size(1);
  c.L = emissions.size(2);
  TORCH_CHECK_VALUE(c.L >= 1, "structinf.", op,
                    ": argument 'emissions' must have at least one label (L >= 1), got shape ",
                    shape_str(emissions.sizes()));
  check_like(op, "transitions", transitions, {c.L, c.L}, emissions);
  check_like(op, "start", start, {c.L}, emissions);
  check_like(op, "end", end, {c.L}, emissions);

  TORCH_CHECK_VALUE(lengths.defined(), "structinf.", op, ": argument 'lengths' is undefined");
  TORCH_CHECK_VALUE(lengths.dim() == 1 && lengths.size(0) == c.B, "structinf.", op,
                    ": argument 'lengths' must have shape (B,) = (", num(c.B), ",), got ",
                    shape_str(lengths.sizes()));
  TORCH_CHECK_TYPE(at::isIntegralType(lengths.scalar_type(), /*includeBool=*/false), "structinf.",
                   op, ": argument 'lengths' must be an integer tensor (int64), got ",
                   lengths.scalar_type());
  check_device(op, "lengths", lengths, emissions);
  if (allowed.has_value()) {
    const at::Tensor& a = *allowed;
    TORCH_CHECK_VALUE(a.sizes() == at::IntArrayRef({c.L, c.L}), "structinf.", op,
                      ": argument 'allowed' must have shape (L, L) = (", num(c.L), ", ", num(c.L),
                      "), got ", shape_str(a.sizes()));
    TORCH_CHECK_TYPE(a.scalar_type() == at::kBool, "structinf.", op,
                     ": argument 'allowed' must be a bool tensor, got ", a.scalar_type());
    check_device(op, "allowed", a, emissions);
    c.allowed = a.contiguous();
  }

  c.emissions = emissions.contiguous();
  c.transitions = transitions.contiguous();
  c.start = start.contiguous();
  c.end = end.contiguous();
  c.lengths = lengths.scalar_type() == at::kLong ? lengths.contiguous()
                                                 : lengths.to(at::kLong).contiguous();
  if (lengths_values == LengthsValues::kCheckHere) check_lengths_range(op, c.lengths, c.T);
  return c;
}

void check_lengths_range(const char* op, const at::Tensor& lengths, int64_t T) {
  const int64_t B = lengths.numel();
  if (B == 0) return;
  int64_t lo = 0, hi = 0;
  if (lengths.is_cpu()) {
    const int64_t* len = lengths.data_ptr<int64_t>();
    lo = hi = len[0];
    for (int64_t b = 1; b < B; ++b) {
      lo = std::min(lo, len[b]);
      hi = std::max(hi, len[b]);
    }
  } else {
    const auto mm = at::aminmax(lengths);
    lo = std::get<0>(mm).item<int64_t>();
    hi = std::get<1>(mm).item<int64_t>();
  }
  if (lo < 1 || hi > T) raise_lengths(op, T, lo, hi);
}

void raise_lengths(const char* op, int64_t T, int64_t lo, int64_t hi) {
  TORCH_CHECK_VALUE(false, "structinf.", op,
                    ": argument 'lengths' must satisfy 1 <= lengths[b] <= T = ", num(T),
                    ", got values in [", num(lo), ", ", num(hi), "]");
}

void check_relaxed_args(const char* op, const CheckedEnergy& c, const at::Tensor& logits,
                        const at::Tensor& velocity, const at::Tensor& lr, double momentum,
                        int64_t steps) {
  check_like(op, "logits", logits, {c.B, c.T, c.L}, c.emissions);
  check_like(op, "velocity", velocity, {c.B, c.T, c.L}, c.emissions);
  TORCH_CHECK_VALUE(lr.dim() == 1 && lr.size(0) == c.B, "structinf.", op,
                    ": argument 'lr' must have shape (B,) = (", num(c.B), ",), got ", shape_str(lr.sizes()));
  TORCH_CHECK_TYPE(at::isFloatingType(lr.scalar_type()), "structinf.", op,
                   ": argument 'lr' must be a floating tensor, got ", lr.scalar_type());
  TORCH_CHECK_VALUE(lr.device() == c.emissions.device(), "structinf.", op,
                    ": argument 'lr' is on ", lr.device(), " but emissions is on ",
                    c.emissions.device());
  TORCH_CHECK_VALUE(std::isfinite(momentum), "structinf.", op,
                    ": argument 'momentum' must be finite, got ", num(momentum));
  TORCH_CHECK_VALUE(steps >= 1, "structinf.", op, ": argument 'steps' must be >= 1, got ", num(steps));
  TORCH_CHECK_VALUE(!logits.is_same(velocity) && !logits.is_alias_of(velocity), "structinf.", op,
                    ": arguments 'logits' and 'velocity' must not share memory");
}

void raise_status(const char* op, Status status) {
  switch (status) {
    case Status::kOk:
      return;
    case Status::kNanEmissions:
      TORCH_CHECK_VALUE(false, "structinf.", op,
                        ": argument 'emissions' contains NaN (or +inf, which no score may be) "
                        "at a non-padding position");
    case Status::kNanTransitions:
      TORCH_CHECK_VALUE(false, "structinf.", op,
                        ": argument 'transitions' contains NaN or +inf (use the 'allowed' mask "
                        "or -inf to forbid a transition)");
    case Status::kNanStart:
      TORCH_CHECK_VALUE(false, "structinf.", op, ": argument 'start' contains NaN or +inf");
    case Status::kNanEnd:
      TORCH_CHECK_VALUE(false, "structinf.", op, ": argument 'end' contains NaN or +inf");
    case Status::kNonFiniteTransitions:
      TORCH_CHECK_VALUE(false, "structinf.", op,
                        ": argument 'transitions' must be finite for the relaxed energy "
                        "(a forbidden transition has no relaxed meaning; use a large "
                        "negative score)");
    case Status::kNonFiniteStart:
      TORCH_CHECK_VALUE(false, "structinf.", op, ": argument 'start' must be finite");
    case Status::kNonFiniteEnd:
      TORCH_CHECK_VALUE(false, "structinf.", op, ": argument 'end' must be finite");
    case Status::kNanLogits:
      TORCH_CHECK_VALUE(false, "structinf.", op,
                        ": argument 'logits' contains NaN or inf at a non-padding position, or "
                        "overflowed during the steps (learning rate too large); those "
                        "sequences stopped there");
    case Status::kNanVelocity:
      TORCH_CHECK_VALUE(false, "structinf.", op,
                        ": argument 'velocity' contains NaN or inf at a non-padding position "
                        "(those sequences were not updated from then on)");
    case Status::kNanLr:
      TORCH_CHECK_VALUE(false, "structinf.", op,
                        ": argument 'lr' contains NaN or inf (those sequences were left "
                        "unchanged)");
    case Status::kNanGradLogZ:
      TORCH_CHECK_VALUE(false, "structinf.", op, ": the incoming gradient contains NaN");
    case Status::kCudaLaunchError:
      TORCH_CHECK(false, "structinf.", op, ": a CUDA kernel launch failed");
    case Status::kCudaUnsupported:
      TORCH_CHECK_VALUE(false, "structinf.", op, ": the CUDA kernels cannot run this problem");
    case Status::kNonFiniteEmissions:
      TORCH_CHECK_VALUE(false, "structinf.", op,
                        ": argument 'emissions' must be finite at non-padding positions for the "
                        "relaxed energy");
    case Status::kNonFiniteLogits:
      TORCH_CHECK_VALUE(false, "structinf.", op,
                        ": argument 'logits' contains NaN or +inf, or a row of only -inf, at a "
                        "non-padding position");
    case Status::kNonFiniteProbs:
      TORCH_CHECK_VALUE(false, "structinf.", op,
                        ": argument 'probs' must be finite at non-padding positions");
  }
  TORCH_CHECK(false, "structinf.", op, ": unknown kernel status ", num(static_cast<int64_t>(status)));
}

}  // namespace structinf
