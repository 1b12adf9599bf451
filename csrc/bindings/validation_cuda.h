// How the CUDA binding validates an op's inputs, and reports what it found.
//
// Two modes (structinf.ops.validation()):
// - sync (the default in eager code): one device-side check pass, its flag word
//   read back (one host synchronisation), and the ValueError raised at the call,
//   before any kernel runs; nothing is written on bad input.
// - device (chosen automatically while the current stream is being captured
//   into a CUDA graph): the same check pass, no host synchronisation. The
//   kernels read lengths clamped to [1, T] by the check pass, so out-of-range
//   data is never read; a call with bad input still runs (its outputs for the
//   bad sequences are meaningless) and is recorded in a per-device error record
//   that structinf.ops.check() turns into the same ValueError, naming the op
//   and the argument of the first such call.
// No torch kernels run here besides allocations; the check and commit kernels
// are in checks_cuda.cu.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/ArrayRef.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "../kernels/params.h"
#include "checks_cuda.h"

namespace structinf {

struct FlagStatus {
  unsigned flag;
  Status status;
};

// Checks the inputs described by `p` (its flags / lengths_out are filled here)
// for op `op`, whose lengths tensor (int64, contiguous, on the device) is
// `lengths` (undefined if the op has none) with T positions. Raises at once in
// sync mode (lengths first, then `order`, the CPU kernels' order); in device
// mode records instead. Returns the lengths the op's kernels must read: the
// caller's in sync mode, a clamped copy kept alive by `*keep` in device mode.
template <typename T>
const int64_t* validate(const char* op, cuda_checks::CheckParams<T> p, const at::Tensor& lengths,
                        int64_t T_, c10::ArrayRef<FlagStatus> order,
                        const at::Tensor& like, cudaStream_t stream, at::Tensor* keep);

// structinf.ops.check() for one device: reads and clears its error record (one
// host synchronisation); raises ValueError for the first recorded call.
void check_device_record(int64_t device_index);

// Host synchronisations the binding made for validation since the process
// started (tests count them).
int64_t validation_host_syncs();

}  // namespace structinf
