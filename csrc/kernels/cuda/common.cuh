// Pieces shared by the CUDA kernels: math overloads, warp reductions on
// (value, index) pairs and other small structs, the two thread groups a
// sequence can be mapped to (a warp, a block), and shared-memory / workspace
// carving that the host and the device compute identically.
#pragma once

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "../params.h"
#include "compat.cuh"

namespace structinf {
namespace cuda {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kMaxThreads = 256;  // per block, every kernel
// Blocks per SM the register allocation must allow (__launch_bounds__):
// 4 x 256 threads caps registers at 64 (float), 2 x 256 at 128 (double, two
// registers a value); the kernels fit that without spilling, where ptxas's
// own default target is tighter and spills.
template <typename T>
struct MinBlocks {
  static constexpr int value = sizeof(T) > 4 ? 2 : 4;
};
constexpr int kWarpsPerBlock = 4;  // sequences per block in the warp mapping

template <typename T>
__host__ __device__ __forceinline__ T inf() {
  return static_cast<T>(INFINITY);
}

__device__ __forceinline__ float dexp(float x) { return expf(x); }
__device__ __forceinline__ double dexp(double x) { return exp(x); }
__device__ __forceinline__ float dlog(float x) { return logf(x); }
__device__ __forceinline__ double dlog(double x) { return log(x); }
__device__ __forceinline__ float dfma(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double dfma(double a, double b, double c) { return fma(a, b, c); }

template <typename T>
__host__ __device__ __forceinline__ T dmax(T a, T b) {
  return b > a ? b : a;
}

// Butterfly exchange of any small trivially copyable value, 32 bits at a time
// on the device (the emulator moves the whole value in one exchange).
template <typename V>
__device__ __forceinline__ V shfl_xor(V v, int lane_mask) {
#if defined(STRUCTINF_CUDA_EMULATOR)
  return __shfl_xor_sync(kFullMask, v, lane_mask);
#else
  constexpr int kWords = static_cast<int>((sizeof(V) + 3) / 4);
  int w[kWords];
  memcpy(w, &v, sizeof(V));
#pragma unroll
  for (int i = 0; i < kWords; ++i) w[i] = __shfl_xor_sync(kFullMask, w[i], lane_mask);
  memcpy(&v, w, sizeof(V));
  return v;
#endif
}

// Reduces over the 32 lanes of a warp; every lane gets the result. `op` must
// be commutative bit for bit (op(a, b) == op(b, a)), which makes the result
// identical on every lane and the same on every run.
template <typename V, typename Op>
__device__ __forceinline__ V warp_reduce(V v, Op op) {
#pragma unroll
  for (int m = kWarpSize / 2; m >= 1; m /= 2) v = op(v, shfl_xor(v, m));
  return v;
}

struct MaxOp {
  template <typename V>
  __device__ __forceinline__ V operator()(V a, V b) const {
    return dmax(a, b);
  }
};
struct SumOp {
  template <typename V>
  __device__ __forceinline__ V operator()(V a, V b) const {
    return a + b;
  }
};

// The larger value wins; on equal values the lower index (the CPU's tie rule).
template <typename T>
struct ArgMax {
  T value;
  int index;
};
struct ArgMaxOp {
  template <typename T>
  __device__ __forceinline__ ArgMax<T> operator()(ArgMax<T> a, ArgMax<T> b) const {
    return (b.value > a.value || (b.value == a.value && b.index < a.index)) ? b : a;
  }
};

// A partial log-sum-exp: log(s) + m, s >= 0; (-inf, 0) is empty.
template <typename T>
struct Lse {
  T m, s;
};
template <typename T>
__device__ __forceinline__ Lse<T> lse_merge(Lse<T> a, Lse<T> b) {
  const T m = dmax(a.m, b.m);
  if (m == -inf<T>()) return {m, T(0)};
  return {m, a.s * dexp(a.m - m) + b.s * dexp(b.m - m)};
}
template <typename T>
__device__ __forceinline__ T lse_value(Lse<T> a) {
  return a.m == -inf<T>() ? a.m : a.m + dlog(a.s);
}

// Per-block scratch for block reductions: two sets of per-warp partials, used
// alternately so that one barrier per reduction suffices.
struct alignas(16) ReduceSlot {
  unsigned char bytes[32];
};
constexpr int kReduceSlots = 2 * kMaxThreads / kWarpSize;

// One warp per sequence: lane = label slot; warp barriers only. reduce() is
// a barrier in both groups (a shuffle alone orders no memory accesses).
struct WarpGroup {
  __device__ explicit WarpGroup(ReduceSlot*) {}
  __device__ __forceinline__ int rank() const { return static_cast<int>(threadIdx.x) & 31; }
  __device__ __forceinline__ int size() const { return kWarpSize; }
  __device__ static int index_in_block() { return static_cast<int>(threadIdx.x) >> 5; }
  __device__ static int per_block() { return static_cast<int>(blockDim.x) >> 5; }
  __device__ __forceinline__ void sync() { __syncwarp(); }
  template <typename V, typename Op>
  __device__ __forceinline__ V reduce(V v, Op op) {
    v = warp_reduce(v, op);
    __syncwarp();
    return v;
  }
};

// One block per sequence.
struct BlockGroup {
  ReduceSlot* slots;
  int parity = 0;
  __device__ explicit BlockGroup(ReduceSlot* s) : slots(s) {}
  __device__ __forceinline__ int rank() const { return static_cast<int>(threadIdx.x); }
  __device__ __forceinline__ int size() const { return static_cast<int>(blockDim.x); }
  __device__ static int index_in_block() { return 0; }
  __device__ static int per_block() { return 1; }
  __device__ __forceinline__ void sync() { __syncthreads(); }
  // Every thread gets the same result: the warps' partials are combined in
  // warp order by each thread.
  template <typename V, typename Op>
  __device__ __forceinline__ V reduce(V v, Op op) {
    static_assert(sizeof(V) <= sizeof(ReduceSlot), "reduction value too large");
    v = warp_reduce(v, op);
    ReduceSlot* buf = slots + parity * (kMaxThreads / kWarpSize);
    parity ^= 1;
    const int w = static_cast<int>(threadIdx.x) >> 5;
    if ((threadIdx.x & 31) == 0) *reinterpret_cast<V*>(buf[w].bytes) = v;
    __syncthreads();
    V r = *reinterpret_cast<const V*>(buf[0].bytes);
    const int nw = static_cast<int>(blockDim.x) >> 5;
    for (int i = 1; i < nw; ++i) r = op(r, *reinterpret_cast<const V*>(buf[i].bytes));
    return r;
  }
};

// Carves aligned arrays out of one region (shared memory or the workspace).
// With base 0 it only measures, so the host sizes a region with the same
// code the device uses to lay it out.
class Carver {
 public:
  __host__ __device__ explicit Carver(void* base, size_t align = 16)
      : base_(reinterpret_cast<uintptr_t>(base)), align_(align) {}
  template <typename U>
  __host__ __device__ U* take(int64_t count) {
    off_ = (off_ + align_ - 1) / align_ * align_;
    U* p = reinterpret_cast<U*>(base_ + off_);
    off_ += static_cast<size_t>(count) * sizeof(U);
    return p;
  }
  // Exactly the end of the last array (the emulator then catches a read past it).
  __host__ __device__ size_t bytes() const { return off_; }

 private:
  uintptr_t base_;
  size_t align_;
  size_t off_ = 0;
};

constexpr size_t kWorkspaceAlign = 256;

// Host side: the shared memory one block may use (the device's opt-in
// maximum, or less when a test sets a budget), less the static reduction slots.
inline std::atomic<size_t>& shared_budget_override() {
  static std::atomic<size_t> v{0};
  return v;
}
inline size_t shared_bytes_available() {
  int dev = 0, optin = 0;
  cudaGetDevice(&dev);
  if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
    optin = 48 * 1024;
  size_t bytes = static_cast<size_t>(optin);
  const size_t cap = shared_budget_override().load();
  if (cap != 0 && cap < bytes) bytes = cap;
  const size_t reserved = sizeof(ReduceSlot) * kReduceSlots + 1024;
  return bytes > reserved ? bytes - reserved : 0;
}
inline int multiprocessor_count() {
  int dev = 0, n = 0;
  cudaGetDevice(&dev);
  if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0)
    n = 1;
  return n;
}

// Opts a kernel into `smem` bytes of dynamic shared memory when above the
// default 48 KB; false if the runtime refused.
template <typename K>
inline bool allow_shared(K kernel, size_t smem) {
  if (smem <= 48 * 1024) return true;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(smem)) == cudaSuccess;
}

inline Status launch_status() {
  return cudaPeekAtLastError() == cudaSuccess ? Status::kOk : Status::kCudaLaunchError;
}

inline int threads_for(int64_t L) {
  const int64_t w = (L + kWarpSize - 1) / kWarpSize;
  const int64_t t = w * kWarpSize;
  return static_cast<int>(t < kWarpSize ? kWarpSize : (t > kMaxThreads ? kMaxThreads : t));
}

}  // namespace cuda
}  // namespace structinf
