// Input validation of the CUDA ops in sync or device mode (validation_cuda.h).
// Host code only (compiled by the host compiler); the kernels are in checks_cuda.cu.
#include "validation_cuda.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include <array>
#include <atomic>
#include <mutex>
#include <string>

#include "checks.h"
#include "cuda_mapping.h"

namespace structinf {
namespace {

using cuda_checks::CheckParams;

constexpr int kMaxDevices = 64;
constexpr size_t kMaxOrder = 8;
// The calls remembered for check()'s message (by id); an older one is reported
// without its op's name.
constexpr size_t kRing = size_t{1} << 14;

struct CallInfo {
  unsigned long long id = 0;
  const char* op = nullptr;
  int64_t T = 0;
  size_t n = 0;
  std::array<FlagStatus, kMaxOrder> order{};
};

std::mutex g_mutex;                                  // guards the two below
std::array<at::Tensor*, kMaxDevices> g_records{};    // leaked: outlive the CUDA context at exit
std::array<CallInfo, kRing> g_calls{};
std::atomic<unsigned long long> g_next_id{0};
std::atomic<int64_t> g_syncs{0};

bool capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
  return status != cudaStreamCaptureStatusNone;
}

// The device's error record, made (zeroed, and waited for once) by the first
// structinf call on the device. That call cannot be one being captured: the
// record must not be a graph's memory, nor its zeroing a graph's node.
unsigned long long* record_for(const char* op, const at::Tensor& like, cudaStream_t stream) {
  const int64_t index = like.get_device();
  TORCH_CHECK(index >= 0 && index < kMaxDevices, "structinf.", op, ": device index ",
              num(index), " out of range");
  std::lock_guard<std::mutex> lock(g_mutex);
  at::Tensor*& rec = g_records[static_cast<size_t>(index)];
  if (rec == nullptr) {
    TORCH_CHECK_VALUE(!capturing(stream), "structinf.", op, ": the first structinf call on ",
                      like.device(), " is being captured into a CUDA graph; call any structinf "
                      "op (or structinf.ops.check()) on that device once before capturing, as "
                      "torch.cuda.graph's warm-up does");
    rec = new at::Tensor(at::zeros({cuda_checks::kRecordWords}, like.options().dtype(at::kLong)));
    C10_CUDA_CHECK(cudaStreamSynchronize(stream));
    ++g_syncs;
  }
  return reinterpret_cast<unsigned long long*>(rec->data_ptr<int64_t>());
}

bool device_mode(cudaStream_t stream) { return validation_setting() == 1 || capturing(stream); }

void raise_for(const char* op, unsigned flags, int64_t T, int64_t lo, int64_t hi, bool lengths_known,
               const FlagStatus* order, size_t n, const at::Tensor* lengths) {
  if (flags == 0) return;
  if (flags & cuda_checks::kLengths) {
    if (lengths_known) raise_lengths(op, T, lo, hi);
    check_lengths_range(op, *lengths, T);
  }
  for (size_t i = 0; i < n; ++i)
    if (flags & order[i].flag) raise_status(op, order[i].status);
  TORCH_CHECK(false, "structinf.", op, ": input check failed (flags ", num(flags), ")");
}

// Raises for a flag word in sync mode's order (lengths first, with their range).
void raise_flags(const char* op, unsigned flags, const at::Tensor& lengths, int64_t T,
                 c10::ArrayRef<FlagStatus> order) {
  raise_for(op, flags, T, 0, 0, false, order.data(), order.size(), &lengths);
}

}  // namespace

template <typename T>
const int64_t* validate(const char* op, CheckParams<T> p, const at::Tensor& lengths, int64_t T_,
                        c10::ArrayRef<FlagStatus> order, const at::Tensor& like,
                        cudaStream_t stream, at::Tensor* keep) {
  TORCH_CHECK(order.size() <= kMaxOrder, "structinf.", op, ": too many checked arguments");
  unsigned long long* record = record_for(op, like, stream);
  const at::Tensor flags = at::empty({1}, like.options().dtype(at::kInt));
  p.flags = reinterpret_cast<unsigned*>(flags.data_ptr<int>());
  C10_CUDA_CHECK(cudaMemsetAsync(p.flags, 0, sizeof(unsigned), stream));
  if (!device_mode(stream)) {
    C10_CUDA_CHECK(cuda_checks::launch_check(p, stream));
    unsigned host = 0;
    ++g_syncs;
    // memcpy_and_sync honours torch.cuda.set_sync_debug_mode.
    c10::cuda::memcpy_and_sync(&host, p.flags, sizeof(unsigned), cudaMemcpyDeviceToHost, stream);
    raise_flags(op, host, lengths, T_, order);
    return p.lengths;
  }
  if (p.lengths != nullptr) {
    *keep = at::empty({p.B}, like.options().dtype(at::kLong));
    p.lengths_out = keep->data_ptr<int64_t>();
  }
  C10_CUDA_CHECK(cuda_checks::launch_check(p, stream));
  const unsigned long long id = ++g_next_id;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    CallInfo& call = g_calls[id % kRing];
    call.id = id;
    call.op = op;
    call.T = T_;
    call.n = order.size();
    size_t i = 0;
    for (const FlagStatus& fs : order) call.order[i++] = fs;
  }
  C10_CUDA_CHECK(cuda_checks::launch_commit(p.flags, record, id, p.lengths, p.B, stream));
  return p.lengths_out != nullptr ? p.lengths_out : p.lengths;
}

template const int64_t* validate<float>(const char*, CheckParams<float>, const at::Tensor&, int64_t,
                                        c10::ArrayRef<FlagStatus>, const at::Tensor&,
                                        cudaStream_t, at::Tensor*);
template const int64_t* validate<double>(const char*, CheckParams<double>, const at::Tensor&,
                                         int64_t, c10::ArrayRef<FlagStatus>, const at::Tensor&,
                                         cudaStream_t, at::Tensor*);

void check_device_record(int64_t index) {
  TORCH_CHECK_VALUE(index >= 0 && index < kMaxDevices, "structinf.check: argument 'device' has "
                    "index ", num(index), " out of range");
  at::Tensor* rec = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    rec = g_records[static_cast<size_t>(index)];
  }
  if (rec == nullptr) return;  // no structinf call on that device yet
  const c10::cuda::CUDAGuard guard(rec->device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  TORCH_CHECK_VALUE(!capturing(stream), "structinf.check: cannot read the error record while "
                    "the current stream is being captured; call it after the capture, or after "
                    "replaying the graph");
  std::array<unsigned long long, cuda_checks::kRecordWords> host{};
  ++g_syncs;
  c10::cuda::memcpy_and_sync(host.data(), rec->data_ptr(), sizeof(host), cudaMemcpyDeviceToHost,
                             stream);
  const unsigned long long failed = host[cuda_checks::kFailedCalls];
  if (failed == 0) return;
  C10_CUDA_CHECK(cudaMemsetAsync(rec->data_ptr(), 0, sizeof(host), stream));
  const unsigned long long id = host[cuda_checks::kFirstCall];
  const unsigned flags = static_cast<unsigned>(host[cuda_checks::kFirstFlags]);
  CallInfo call;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    call = g_calls[id % kRing];
  }
  const std::string where =
      std::string(" [found by structinf.ops.check() on ") + rec->device().str() + ": " +
      num(static_cast<int64_t>(failed)) + " call(s) in 'device' validation mode had bad input "
      "since the last check; this is the first]";
  TORCH_CHECK_VALUE(call.id == id && call.op != nullptr, "structinf: a call in 'device' validation "
                    "mode had bad input (flags ", num(flags), "), too long ago to name its op",
                    where);
  try {
    raise_for(call.op, flags, call.T, static_cast<int64_t>(host[cuda_checks::kFirstLo]),
              static_cast<int64_t>(host[cuda_checks::kFirstHi]), true, call.order.data(), call.n,
              nullptr);
  } catch (const c10::ValueError& e) {
    TORCH_CHECK_VALUE(false, e.what_without_backtrace(), where);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, e.what_without_backtrace(), where);
  }
}

int64_t validation_host_syncs() { return g_syncs.load(); }

}  // namespace structinf
