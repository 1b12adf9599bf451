// CUDA implementations of the structinf ops, mirroring ops_cpu.cpp: check
// (the same checker, so the same errors), fill a params struct, launch the
// torch-free kernels of csrc/kernels/cuda on the current stream of the
// tensors' device. Compiled only into a CUDA build (setup.py); the binding has
// no device code of its own, so it is plain C++; it includes only c10's CUDA
// headers (not ATen/cuda/CUDAContext.h, which needs the cuBLAS / cuSPARSE
// headers that a bare nvcc toolkit lacks).
//
// Validation (validation_cuda.h). Every op runs one device-side check pass
// over its inputs (checks_cuda.cu: lengths in [1, T] and the CPU kernels' NaN /
// infinity rules) before its kernels. In 'sync' mode, the default in eager
// code, the pass's flag word is read back (one host synchronisation per call;
// relaxed_energy_step_ has a second, after the launch, to learn whether some
// step's energy was not finite) and bad input raises at the call. In 'device'
// mode, and always while the current stream is being captured into a CUDA
// graph, nothing synchronises: the kernels read lengths clamped by the check
// pass, and a bad call is recorded for structinf.ops.check(). Empty batches
// (B = 0) launch nothing and never synchronise. Outputs stay on the device.
//
// Where the CPU kernels skip a sequence with bad values and update the others
// before raising, this binding (in sync mode) raises before launching: nothing
// is written (logits and velocity of relaxed_energy_step_ stay as they were).
//
// Half precision (the current path): float16 / bfloat16 inputs are converted to
// float32 here, the float32 kernels run, and the outputs are cast back to the
// input dtype (relaxed_energy_step_ writes its float32 logits and velocity back
// into the caller's half tensors). The kernels have no half instantiations, so
// accumulation is float32 throughout and half inputs cost one conversion pass.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <array>
#include <initializer_list>
#include <limits>
#include <string>
#include <tuple>

#include "../kernels/cuda/api.h"
#include "checks.h"
#include "checks_cuda.h"
#include "cuda_mapping.h"
#include "validation_cuda.h"

namespace structinf {
namespace {

using at::Tensor;
using cuda_checks::Bad;
using cuda_checks::CheckParams;

// Labels the kernels index with 16 bits (api.h: kCudaUnsupported above this).
constexpr int64_t kMaxLabels = 65535;

// Per-op checks beyond check_energy: the tensors are on a CUDA device (a CPU
// tensor mixed in was already named by check_energy), and L fits the kernels.
void check_cuda(const char* op, const CheckedEnergy& c) {
  TORCH_CHECK_VALUE(c.emissions.is_cuda(), "structinf.", op,
                    ": argument 'emissions' must be a CUDA tensor here, got one on ",
                    c.emissions.device());
  TORCH_CHECK_VALUE(c.L <= kMaxLabels, "structinf.", op, ": argument 'emissions' has L = ", num(c.L),
                    " labels; the CUDA kernels support at most ", num(kMaxLabels));
}

// The kernels' dtype for inputs of dtype `st` (half types run in float32).
at::ScalarType compute_type(at::ScalarType st) {
  return (st == at::kHalf || st == at::kBFloat16) ? at::kFloat : st;
}

// `t` (contiguous) in dtype `ct`, contiguous.
Tensor as_type(const Tensor& t, at::ScalarType ct) {
  return t.scalar_type() == ct ? t : t.to(ct).contiguous();
}

CheckedEnergy in_compute_type(const CheckedEnergy& c, at::ScalarType ct) {
  CheckedEnergy e = c;
  e.emissions = as_type(c.emissions, ct);
  e.transitions = as_type(c.transitions, ct);
  e.start = as_type(c.start, ct);
  e.end = as_type(c.end, ct);
  return e;
}

template <typename T>
CheckParams<T> energy_checks(const CheckedEnergy& e, Bad emissions_bad, Bad scores_bad) {
  CheckParams<T> p;
  p.B = e.B;
  p.T = e.T;
  p.L = e.L;
  p.lengths = e.lengths.data_ptr<int64_t>();
  p.emissions = e.emissions.data_ptr<T>();
  p.emissions_bad = emissions_bad;
  p.transitions = e.transitions.data_ptr<T>();
  p.start = e.start.data_ptr<T>();
  p.end = e.end.data_ptr<T>();
  p.scores_bad = scores_bad;
  return p;
}

// Turns a launcher's status into an exception, then catches any launch error
// the launcher did not report.
void raise_launch(const char* op, Status status, const CheckedEnergy& c) {
  if (status == Status::kCudaLaunchError) {
    const cudaError_t err = cudaGetLastError();
    TORCH_CHECK(false, "structinf.", op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
  }
  static constexpr const char* kMappingNames[] = {"auto", "warp", "block", "global"};
  const int forced = forced_cuda_mapping();
  TORCH_CHECK_VALUE(status != Status::kCudaUnsupported, "structinf.", op,
                    ": the CUDA kernels cannot run this problem (argument 'emissions' has shape (",
                    num(c.B), ", ", num(c.T), ", ", num(c.L), ")",
                    forced == 0 ? std::string()
                                : std::string(" with the thread mapping forced to '") +
                                      kMappingNames[forced & 3] + "' by structinf.ops.cuda_mapping",
                    ")");
  raise_status(op, status);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Scratch from torch's caching allocator, on the current stream. Freed when
// the tensor goes out of scope: the allocator reuses it only for work queued
// later on the same stream, so the kernels using it have finished by then.
Tensor workspace(size_t bytes, const Tensor& like) {
  return at::empty({static_cast<int64_t>(bytes)}, like.options().dtype(at::kByte));
}

void* data_or_null(const Tensor& t) { return t.numel() > 0 ? t.data_ptr() : nullptr; }

// The energy checks of Viterbi and the CRF forward, in the CPU kernels' order.
constexpr std::array<FlagStatus, 4> kNanScoresAndEmissions = {{
    {cuda_checks::kTransitions, Status::kNanTransitions},
    {cuda_checks::kStart, Status::kNanStart},
    {cuda_checks::kEnd, Status::kNanEnd},
    {cuda_checks::kEmissions, Status::kNanEmissions}}};

// The mapping structinf.ops.cuda_mapping() asks for (auto unless a test forces one).
cuda::Variant mapping() { return static_cast<cuda::Variant>(forced_cuda_mapping()); }

std::tuple<Tensor, Tensor> viterbi_cuda(const Tensor& emissions, const Tensor& transitions,
                                        const Tensor& start, const Tensor& end,
                                        const Tensor& lengths, int64_t k,
                                        const std::optional<Tensor>& allowed) {
  const char* op = "viterbi";
  const CheckedEnergy c = check_energy(op, emissions, transitions, start, end, lengths, allowed,
                                       LengthsValues::kCallerChecks);
  check_cuda(op, c);
  TORCH_CHECK_VALUE(k >= 1, "structinf.viterbi: argument 'k' must be >= 1, got ", num(k));
  const c10::cuda::CUDAGuard guard(emissions.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::ScalarType ct = compute_type(emissions.scalar_type());
  const CheckedEnergy e = in_compute_type(c, ct);
  Tensor paths = at::empty({c.B, k, c.T}, emissions.options().dtype(at::kLong));
  Tensor scores = at::empty({c.B, k}, emissions.options().dtype(ct));
  if (c.B > 0) {
    AT_DISPATCH_FLOATING_TYPES(ct, "structinf_viterbi_cuda", [&] {
      Tensor clamped;
      const int64_t* lens = validate(op, energy_checks<scalar_t>(e, Bad::kNan, Bad::kNan),
                                     c.lengths, c.T, kNanScoresAndEmissions, emissions, stream,
                                     &clamped);
      ViterbiParams<scalar_t> p;
      p.energy = energy_view<scalar_t>(e);
      p.energy.lengths = lens;
      p.k = k;
      p.paths = paths.data_ptr<int64_t>();
      p.scores = scores.data_ptr<scalar_t>();
      const Tensor ws = workspace(cuda::viterbi_workspace_bytes(p), emissions);
      raise_launch(op, cuda::launch_viterbi(p, data_or_null(ws), stream, mapping()), c);
    });
  }
  return {paths, scores.to(emissions.scalar_type())};
}

std::tuple<Tensor, Tensor, Tensor> crf_forward_backward_cuda(
    const Tensor& emissions, const Tensor& transitions, const Tensor& start, const Tensor& end,
    const Tensor& lengths, const std::optional<Tensor>& allowed) {
  const char* op = "crf_forward_backward";
  const CheckedEnergy c = check_energy(op, emissions, transitions, start, end, lengths, allowed,
                                       LengthsValues::kCallerChecks);
  check_cuda(op, c);
  const c10::cuda::CUDAGuard guard(emissions.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::ScalarType ct = compute_type(emissions.scalar_type());
  const CheckedEnergy e = in_compute_type(c, ct);
  const auto opts = emissions.options().dtype(ct);
  Tensor log_z = at::empty({c.B}, opts);
  Tensor log_alpha = at::empty({c.B, c.T, c.L}, opts);
  Tensor log_alpha_shift = at::empty({c.B, c.T}, opts);
  if (c.B > 0) {
    AT_DISPATCH_FLOATING_TYPES(ct, "structinf_crf_forward_cuda", [&] {
      Tensor clamped;
      const int64_t* lens =
          validate(op, energy_checks<scalar_t>(e, Bad::kNanOrPosInf, Bad::kNanOrPosInf),
                   c.lengths, c.T, kNanScoresAndEmissions, emissions, stream, &clamped);
      CrfForwardParams<scalar_t> p;
      p.energy = energy_view<scalar_t>(e);
      p.energy.lengths = lens;
      p.log_z = log_z.data_ptr<scalar_t>();
      p.log_alpha = log_alpha.data_ptr<scalar_t>();
      p.log_alpha_shift = log_alpha_shift.data_ptr<scalar_t>();
      const Tensor ws = workspace(cuda::crf_forward_workspace_bytes(p), emissions);
      raise_launch(op, cuda::launch_crf_forward(p, data_or_null(ws), stream, mapping()), c);
    });
  }
  // log_alpha and its shift stay in the compute type (float32 for half inputs):
  // they are the backward's saved state, log-space values that half precision
  // would round by whole units (bfloat16 keeps 8 bits), wrecking the marginals.
  return {log_z.to(emissions.scalar_type()), log_alpha, log_alpha_shift};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> crf_forward_backward_backward_cuda(
    const Tensor& grad_log_z, const Tensor& emissions, const Tensor& transitions,
    const Tensor& start, const Tensor& end, const Tensor& lengths,
    const std::optional<Tensor>& allowed, const Tensor& log_z, const Tensor& log_alpha,
    const Tensor& log_alpha_shift) {
  const char* op = "crf_forward_backward_backward";
  const CheckedEnergy c = check_energy(op, emissions, transitions, start, end, lengths, allowed,
                                       LengthsValues::kCallerChecks);
  check_cuda(op, c);
  check_like(op, "grad_log_z", grad_log_z, {c.B}, emissions);
  check_like(op, "log_z", log_z, {c.B}, emissions);
  // The forward's saved state comes in the compute type (float32 for half inputs).
  const Tensor like_state = c.emissions.scalar_type() == compute_type(c.emissions.scalar_type())
                                ? c.emissions
                                : at::empty({0}, c.emissions.options().dtype(at::kFloat));
  check_like(op, "log_alpha", log_alpha, {c.B, c.T, c.L}, like_state);
  check_like(op, "log_alpha_shift", log_alpha_shift, {c.B, c.T}, like_state);
  const c10::cuda::CUDAGuard guard(emissions.device());
  if (c.B == 0) {
    // As on the CPU: no sequences, zero parameter gradients.
    const auto o = emissions.options();
    return {at::empty({0, c.T, c.L}, o), at::zeros({c.L, c.L}, o), at::zeros({c.L}, o),
            at::zeros({c.L}, o)};
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::ScalarType ct = compute_type(emissions.scalar_type());
  const at::ScalarType out = emissions.scalar_type();
  const auto opts = emissions.options().dtype(ct);
  const CheckedEnergy e = in_compute_type(c, ct);
  const Tensor g = as_type(grad_log_z.contiguous(), ct), lz = as_type(log_z.contiguous(), ct),
               la = as_type(log_alpha.contiguous(), ct),
               shift = as_type(log_alpha_shift.contiguous(), ct);
  Tensor grad_emissions = at::empty({c.B, c.T, c.L}, opts);
  Tensor grad_transitions = at::empty({c.L, c.L}, opts);
  Tensor grad_start = at::empty({c.L}, opts);
  Tensor grad_end = at::empty({c.L}, opts);
  AT_DISPATCH_FLOATING_TYPES(ct, "structinf_crf_backward_cuda", [&] {
    // As on the CPU, a NaN incoming gradient is not an input error: it
    // propagates into NaN gradients, as anywhere in autograd.
    Tensor clamped;
    const int64_t* lens =
        validate(op, energy_checks<scalar_t>(e, Bad::kNotChecked, Bad::kNanOrPosInf), c.lengths,
                 c.T,
                 {{cuda_checks::kTransitions, Status::kNanTransitions},
                  {cuda_checks::kStart, Status::kNanStart},
                  {cuda_checks::kEnd, Status::kNanEnd}},
                 emissions, stream, &clamped);
    CrfBackwardParams<scalar_t> p;
    p.energy = energy_view<scalar_t>(e);
    p.energy.lengths = lens;
    p.grad_log_z = g.data_ptr<scalar_t>();
    p.log_z = lz.data_ptr<scalar_t>();
    p.log_alpha = la.data_ptr<scalar_t>();
    p.log_alpha_shift = shift.data_ptr<scalar_t>();
    p.grad_emissions = grad_emissions.data_ptr<scalar_t>();
    p.grad_transitions = grad_transitions.data_ptr<scalar_t>();
    p.grad_start = grad_start.data_ptr<scalar_t>();
    p.grad_end = grad_end.data_ptr<scalar_t>();
    const Tensor ws = workspace(cuda::crf_backward_workspace_bytes(p), emissions);
    raise_launch(op, cuda::launch_crf_backward(p, data_or_null(ws), stream, mapping()), c);
  });
  return {grad_emissions.to(out), grad_transitions.to(out), grad_start.to(out), grad_end.to(out)};
}

Tensor relaxed_energy_step_cuda(Tensor& logits, Tensor& velocity, const Tensor& emissions,
                                const Tensor& transitions, const Tensor& start, const Tensor& end,
                                const Tensor& lengths, const Tensor& lr, double momentum,
                                int64_t steps) {
  const char* op = "relaxed_energy_step_";
  const CheckedEnergy c = check_energy(op, emissions, transitions, start, end, lengths,
                                       std::nullopt, LengthsValues::kCallerChecks);
  check_cuda(op, c);
  check_relaxed_args(op, c, logits, velocity, lr, momentum, steps);
  const c10::cuda::CUDAGuard guard(emissions.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::ScalarType ct = compute_type(emissions.scalar_type());
  // NaN where the kernel writes nothing: the rows after a step whose energy was
  // not finite (the kernel stops that sequence there), so the check below never
  // reads memory nothing wrote (compute-sanitizer's initcheck found it did).
  Tensor energy = at::full({steps, c.B}, std::numeric_limits<double>::quiet_NaN(),
                           emissions.options().dtype(ct));
  if (c.B == 0) return energy.to(emissions.scalar_type());
  const CheckedEnergy e = in_compute_type(c, ct);
  // Work on contiguous tensors of the compute dtype; copy back only if the
  // caller's were not those already.
  Tensor z = as_type(logits.contiguous(), ct), v = as_type(velocity.contiguous(), ct);
  const Tensor lr_c = lr.to(ct).contiguous();
  AT_DISPATCH_FLOATING_TYPES(ct, "structinf_relaxed_step_cuda", [&] {
    CheckParams<scalar_t> chk = energy_checks<scalar_t>(e, Bad::kNan, Bad::kNonFinite);
    chk.logits = z.data_ptr<scalar_t>();
    chk.velocity = v.data_ptr<scalar_t>();
    chk.lr = lr_c.data_ptr<scalar_t>();
    Tensor clamped;
    const int64_t* lens = validate(op, chk, c.lengths, c.T,
                                   {{cuda_checks::kTransitions, Status::kNonFiniteTransitions},
                                    {cuda_checks::kStart, Status::kNonFiniteStart},
                                    {cuda_checks::kEnd, Status::kNonFiniteEnd},
                                    {cuda_checks::kLogits, Status::kNanLogits},
                                    {cuda_checks::kVelocity, Status::kNanVelocity},
                                    {cuda_checks::kEmissions, Status::kNanEmissions},
                                    {cuda_checks::kLr, Status::kNanLr}},
                                   emissions, stream, &clamped);
    RelaxedStepParams<scalar_t> p;
    p.energy = energy_view<scalar_t>(e);
    p.energy.lengths = lens;
    p.logits = z.data_ptr<scalar_t>();
    p.velocity = v.data_ptr<scalar_t>();
    p.lr = lr_c.data_ptr<scalar_t>();
    p.momentum = static_cast<scalar_t>(momentum);
    p.steps = steps;
    p.energy_out = energy.data_ptr<scalar_t>();
    {
      const Tensor ws = workspace(cuda::relaxed_energy_step_workspace_bytes(p), emissions);
      raise_launch(op, cuda::launch_relaxed_energy_step(p, data_or_null(ws), stream, mapping()), c);
    }
    if (!z.is_same(logits)) logits.copy_(z);
    if (!v.is_same(velocity)) velocity.copy_(v);
    // A sequence whose energy stopped being finite was stopped there by the
    // kernel (its later rows of `energy` stay NaN): report it as the CPU does
    // (in device mode, through the error record: the NaN rows say which).
    CheckParams<scalar_t> after;
    after.energies = energy.data_ptr<scalar_t>();
    after.n_energies = energy.numel();
    Tensor unused;
    validate(op, after, Tensor(), c.T, {{cuda_checks::kEnergies, Status::kNanLogits}}, emissions,
             stream, &unused);
  });
  return energy.to(emissions.scalar_type());
}

// relaxed_energy and relaxed_energy_and_grad (errors name the op the user
// called, relaxed_energy, and the input by its mode: 'logits' or 'probs').
std::tuple<Tensor, Tensor, Tensor> relaxed_energy_run_cuda(
    const Tensor& input, const Tensor& emissions, const Tensor& transitions, const Tensor& start,
    const Tensor& end, const Tensor& lengths, bool probs, bool with_grad) {
  const char* op = "relaxed_energy";
  const CheckedEnergy c = check_energy(op, emissions, transitions, start, end, lengths,
                                       std::nullopt, LengthsValues::kCallerChecks);
  check_cuda(op, c);
  check_like(op, probs ? "probs" : "logits", input, {c.B, c.T, c.L}, emissions);
  const c10::cuda::CUDAGuard guard(emissions.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::ScalarType ct = compute_type(emissions.scalar_type());
  const at::ScalarType out = emissions.scalar_type();
  const auto opts = emissions.options().dtype(ct);
  Tensor energy = at::empty({c.B}, opts);
  Tensor p_out, input_grad;
  if (with_grad) {
    p_out = at::empty({c.B, c.T, c.L}, opts);
    input_grad = at::empty({c.B, c.T, c.L}, opts);
  }
  if (c.B > 0) {
    const CheckedEnergy e = in_compute_type(c, ct);
    const Tensor x = as_type(input.contiguous(), ct);
    AT_DISPATCH_FLOATING_TYPES(ct, "structinf_relaxed_energy_cuda", [&] {
      // The CPU kernel's rules: finite scores and emissions; probabilities
      // finite; logits without NaN or +inf and with some label above -inf per row.
      CheckParams<scalar_t> chk = energy_checks<scalar_t>(e, Bad::kNonFinite, Bad::kNonFinite);
      chk.input = x.data_ptr<scalar_t>();
      chk.input_bad = probs ? Bad::kNonFinite : Bad::kNanOrPosInf;
      Tensor clamped;
      const int64_t* lens =
          validate(op, chk, c.lengths, c.T,
                   {{cuda_checks::kTransitions, Status::kNonFiniteTransitions},
                    {cuda_checks::kStart, Status::kNonFiniteStart},
                    {cuda_checks::kEnd, Status::kNonFiniteEnd},
                    {cuda_checks::kInput, probs ? Status::kNonFiniteProbs : Status::kNonFiniteLogits},
                    {cuda_checks::kEmissions, Status::kNonFiniteEmissions}},
                   emissions, stream, &clamped);
      RelaxedEnergyParams<scalar_t> p;
      p.energy = energy_view<scalar_t>(e);
      p.energy.lengths = lens;
      p.input = x.data_ptr<scalar_t>();
      p.probs = probs;
      p.energy_out = energy.data_ptr<scalar_t>();
      if (with_grad) {
        p.p_out = p_out.data_ptr<scalar_t>();
        p.input_grad = input_grad.data_ptr<scalar_t>();
      }
      const Tensor ws = workspace(cuda::relaxed_energy_forward_workspace_bytes(p), emissions);
      raise_launch(op, cuda::launch_relaxed_energy_forward(p, data_or_null(ws), stream, mapping()), c);
    });
  }
  if (!with_grad) return {energy.to(out), p_out, input_grad};
  return {energy.to(out), p_out.to(out), input_grad.to(out)};
}

Tensor relaxed_energy_cuda(const Tensor& input, const Tensor& emissions,
                           const Tensor& transitions, const Tensor& start, const Tensor& end,
                           const Tensor& lengths, bool probs) {
  return std::get<0>(
      relaxed_energy_run_cuda(input, emissions, transitions, start, end, lengths, probs, false));
}

std::tuple<Tensor, Tensor, Tensor> relaxed_energy_and_grad_cuda(
    const Tensor& input, const Tensor& emissions, const Tensor& transitions, const Tensor& start,
    const Tensor& end, const Tensor& lengths, bool probs) {
  return relaxed_energy_run_cuda(input, emissions, transitions, start, end, lengths, probs, true);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> relaxed_energy_backward_cuda(
    const Tensor& grad_energy, const Tensor& p, const Tensor& input_grad, const Tensor& lengths,
    std::array<bool, 5> output_mask) {
  const char* op = "relaxed_energy_backward";
  TORCH_CHECK_VALUE(p.defined() && p.dim() == 3, "structinf.", op,
                    ": argument 'p' must be 3-D (B, T, L), got shape ", shape_str(p.sizes()));
  const at::ScalarType st = p.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
                   "structinf.", op,
                   ": argument 'p' must be float32, float64, float16 or bfloat16 on CUDA, got ",
                   st);
  TORCH_CHECK_VALUE(p.is_cuda(), "structinf.", op,
                    ": argument 'p' must be a CUDA tensor here, got one on ", p.device());
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
  TORCH_CHECK_VALUE(L <= kMaxLabels, "structinf.", op, ": argument 'p' has L = ", num(L),
                    " labels; the CUDA kernels support at most ", num(kMaxLabels));
  const c10::cuda::CUDAGuard guard(p.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::ScalarType ct = compute_type(st);
  const auto opts = p.options().dtype(ct);
  // Masked gradients are zeros (autograd never asks for them), as on the CPU.
  auto alloc = [&](bool wanted, at::IntArrayRef sizes) {
    return wanted && B > 0 ? at::empty(sizes, opts) : at::zeros(sizes, opts);
  };
  Tensor grad_input = alloc(output_mask[0], {B, T, L});
  Tensor grad_emissions = alloc(output_mask[1], {B, T, L});
  Tensor grad_transitions = alloc(output_mask[2], {L, L});
  Tensor grad_start = alloc(output_mask[3], {L});
  Tensor grad_end = alloc(output_mask[4], {L});
  // B = 0: no sequences, zero parameter gradients; nothing launched.
  if (B > 0) {
    const Tensor lens = lengths.scalar_type() == at::kLong ? lengths.contiguous()
                                                           : lengths.to(at::kLong).contiguous();
    const Tensor g = as_type(grad_energy.contiguous(), ct), pc = as_type(p.contiguous(), ct),
                 ig = as_type(input_grad.contiguous(), ct);
    AT_DISPATCH_FLOATING_TYPES(ct, "structinf_relaxed_energy_backward_cuda", [&] {
      // The kernels read p and input_grad up to lengths[b]: check the lengths first.
      CheckParams<scalar_t> chk;
      chk.B = B;
      chk.T = T;
      chk.L = L;
      chk.lengths = lens.data_ptr<int64_t>();
      Tensor clamped;
      const int64_t* checked = validate(op, chk, lens, T, {}, p, stream, &clamped);
      RelaxedEnergyBackwardParams<scalar_t> r;
      r.B = B;
      r.T = T;
      r.L = L;
      r.lengths = checked;
      r.grad_energy = g.data_ptr<scalar_t>();
      r.p = pc.data_ptr<scalar_t>();
      r.input_grad = ig.data_ptr<scalar_t>();
      auto ptr = [](bool wanted, Tensor& t) { return wanted ? t.data_ptr<scalar_t>() : nullptr; };
      r.grad_input = ptr(output_mask[0], grad_input);
      r.grad_emissions = ptr(output_mask[1], grad_emissions);
      r.grad_transitions = ptr(output_mask[2], grad_transitions);
      r.grad_start = ptr(output_mask[3], grad_start);
      r.grad_end = ptr(output_mask[4], grad_end);
      const Tensor ws = workspace(cuda::relaxed_energy_backward_workspace_bytes(r), p);
      const Status s = cuda::launch_relaxed_energy_backward(r, data_or_null(ws), stream);
      if (s == Status::kCudaLaunchError) {
        const cudaError_t err = cudaGetLastError();
        TORCH_CHECK(false, "structinf.", op, ": CUDA kernel launch failed: ",
                    cudaGetErrorString(err));
      }
      raise_status(op, s);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {grad_input.to(st), grad_emissions.to(st), grad_transitions.to(st), grad_start.to(st),
          grad_end.to(st)};
}

}  // namespace

TORCH_LIBRARY_IMPL(structinf, CUDA, m) {
  m.impl("viterbi", &viterbi_cuda);
  m.impl("crf_forward_backward", &crf_forward_backward_cuda);
  m.impl("crf_forward_backward_backward", &crf_forward_backward_backward_cuda);
  m.impl("relaxed_energy_step_", &relaxed_energy_step_cuda);
  m.impl("relaxed_energy", &relaxed_energy_cuda);
  m.impl("relaxed_energy_and_grad", &relaxed_energy_and_grad_cuda);
  m.impl("relaxed_energy_backward", &relaxed_energy_backward_cuda);
}

}  // namespace structinf
