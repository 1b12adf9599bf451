// CUDA on the CPU, for testing kernels with g++ under ThreadSanitizer and
// AddressSanitizer.
//
// Every CUDA thread of a block is a std::thread (from a pool kept across
// launches) and the blocks of a grid run one after another. Barriers
// (__syncthreads, __syncwarp) are mutexes and condition variables, so the
// sanitizers see the ordering they create; a warp shuffle writes the lane's
// value to a per-warp slot array, passes a warp barrier and reads the source
// lane's slot (two slot sets alternate, so the next shuffle cannot overwrite
// a slot still to be read). Dynamic shared memory is new[]'d per block at
// exactly the launch size and filled with 0xFF (NaN as float or double), so
// a read past it or of an unwritten entry shows up; static __shared__ arrays
// (SI_SHARED in compat.cuh) likewise. The emulator aborts with a message on a
// barrier reached after another thread of its block (or warp) exited, on a
// thread exiting while others wait for it, on threads of a block waiting at
// different __syncthreads, on a barrier that does not complete within
// SI_EMU_TIMEOUT_S seconds (deadlock; default 60) and on a shuffle whose mask
// is not the warp's lanes. A launch over the shared memory limits (48 KB
// without cudaFuncSetAttribute, 227 KB with it) fails as on the device.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;

enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
};
struct CUstream_st;
using cudaStream_t = CUstream_st*;
enum cudaFuncAttribute : int { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaDeviceAttr : int {
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};

constexpr int warpSize = 32;

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace si_emu {

// An H100/H200-like device: 48 KB of dynamic shared memory without opt-in,
// 227 KB with it; two "SMs" keep grids that scale with the device small here.
constexpr size_t kDefaultSharedBytes = 48 * 1024;
constexpr size_t kOptinSharedBytes = 227 * 1024;
constexpr int kMultiProcessors = 2;

[[noreturn]] inline void die(const std::string& msg) {
  std::fprintf(stderr, "cuda_emu: %s\n", msg.c_str());
  std::fflush(stderr);
  std::abort();
}

inline std::chrono::seconds timeout() {
  static const std::chrono::seconds t([] {
    const char* env = std::getenv("SI_EMU_TIMEOUT_S");
    return env ? std::atoi(env) : 60;
  }());
  return t;
}

inline std::string hex(unsigned x) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", x);
  return buf;
}

inline std::string where(const char* file, int line) {
  return std::string(file) + ":" + std::to_string(line);
}

// Where a thread sleeps at a barrier: its own mutex and condition variable,
// so that releasing a barrier hands each waiter off once instead of waking
// them all onto one mutex.
struct Parker {
  std::mutex m;
  std::condition_variable cv;
  bool go = false;
  int result = 0;  // __syncthreads_or
};

struct Warp {
  std::mutex m;
  unsigned lanes = 0;    // lanes that exist (the last warp of a block may be partial)
  unsigned exited = 0;   // lanes whose thread has returned
  unsigned arrived = 0;  // lanes waiting at the current barrier
  unsigned mask = 0;     // the current barrier's mask
  const char* file = "";
  int line = 0;
  // Shuffle values, one per lane, in two sets used by alternate shuffles: a
  // set is rewritten two shuffles later, after every lane has passed the
  // barrier in between (so one barrier per shuffle suffices).
  alignas(16) unsigned char slots[2][32][64];
  unsigned shuffles[32] = {};  // per lane: shuffles done, picks the set
};

struct Block {
  dim3 index;
  int threads = 0;
  std::mutex m;
  int arrived = 0, exited = 0, first_exited = -1;
  int or_acc = 0;  // __syncthreads_or
  std::vector<int> waiting;
  const char* file = "";
  int line = 0;
  std::unique_ptr<Parker[]> parkers;
  std::unique_ptr<unsigned char[]> dynamic;
  size_t dynamic_bytes = 0, static_bytes = 0;
  std::map<const void*, std::pair<size_t, std::unique_ptr<unsigned char[]>>> statics;
  std::vector<std::unique_ptr<Warp>> warps;

  std::string name() const {
    return "block (" + std::to_string(index.x) + "," + std::to_string(index.y) + "," +
           std::to_string(index.z) + ")";
  }
};

inline thread_local Block* tl_block = nullptr;
inline thread_local int tl_thread = 0;  // linear thread index within the block

inline std::atomic<int>& last_error() {
  static std::atomic<int> e{cudaSuccess};
  return e;
}

inline std::mutex& attr_mutex() {
  static std::mutex m;
  return m;
}
inline std::map<const void*, int>& optin_bytes() {
  static std::map<const void*, int> m;
  return m;
}

inline void unpark(Parker& p, int result) {
  {
    std::lock_guard<std::mutex> lk(p.m);
    p.go = true;
    p.result = result;
  }
  p.cv.notify_one();
}

template <typename What>
int park(Parker& p, What what) {
  std::unique_lock<std::mutex> lk(p.m);
  if (!p.cv.wait_for(lk, timeout(), [&] { return p.go; }))
    die("deadlock: " + what() + " did not complete within " + std::to_string(timeout().count()) +
        " s");
  p.go = false;
  return p.result;
}

// A block barrier; returns the OR of every thread's `pred` (__syncthreads_or).
inline int syncthreads(const char* file, int line, int pred = 0) {
  Block& b = *tl_block;
  std::unique_lock<std::mutex> lk(b.m);
  auto at = [&] { return "__syncthreads at " + where(file, line) + " in " + b.name(); };
  if (b.exited > 0)
    die("divergence: " + at() + " reached after thread " + std::to_string(b.first_exited) +
        " exited");
  if (b.arrived == 0) {
    b.file = file;
    b.line = line;
  } else if (b.line != line || std::strcmp(b.file, file) != 0) {
    die("divergence: threads of " + b.name() + " wait at different barriers, " +
        where(b.file, b.line) + " and " + where(file, line));
  }
  b.or_acc |= pred != 0;
  if (++b.arrived == b.threads) {
    const int result = b.or_acc;
    static thread_local std::vector<int> wake;
    wake.assign(b.waiting.begin(), b.waiting.end());
    b.waiting.clear();
    b.arrived = 0;
    b.or_acc = 0;
    lk.unlock();
    for (int t : wake) unpark(b.parkers[t], result);
    return result;
  }
  b.waiting.push_back(tl_thread);
  lk.unlock();
  return park(b.parkers[tl_thread], [&] {
    std::lock_guard<std::mutex> g(b.m);
    return at() + " (" + std::to_string(b.arrived) + " of " + std::to_string(b.threads) +
           " threads arrived)";
  });
}

inline Warp& my_warp() { return *tl_block->warps[static_cast<size_t>(tl_thread / 32)]; }

inline void syncwarp_at(const char* file, int line, unsigned mask = 0xffffffffu) {
  Warp& w = my_warp();
  const int lane = tl_thread % 32;
  const unsigned bit = 1u << lane;
  std::unique_lock<std::mutex> lk(w.m);
  auto at = [&] {
    return "__syncwarp(" + hex(mask) + ") at " + where(file, line) + ", thread " +
           std::to_string(tl_thread) + " of " + tl_block->name();
  };
  if (!(mask & bit)) die("bad mask: " + at() + " does not name the calling lane");
  if (mask & ~w.lanes) die("bad mask: " + at() + " names lanes that do not exist");
  if (w.exited & mask) die("divergence: " + at() + " names a lane that exited");
  if (w.arrived == 0) {
    w.mask = mask;
    w.file = file;
    w.line = line;
  } else if (w.mask != mask) {
    die("divergence: lanes of one warp wait with different masks, at " + where(w.file, w.line) +
        " and " + at());
  }
  w.arrived |= bit;
  if (w.arrived == w.mask) {
    const unsigned wake = w.arrived & ~bit;
    w.arrived = 0;
    lk.unlock();
    const int base = tl_thread - lane;
    for (int l = 0; l < 32; ++l)
      if (wake & (1u << l)) unpark(tl_block->parkers[base + l], 0);
    return;
  }
  lk.unlock();
  park(tl_block->parkers[tl_thread], [&] {
    std::lock_guard<std::mutex> g(w.m);
    return at() + " (lanes " + hex(w.arrived) + " arrived)";
  });
}

// __syncwarp() and __syncwarp(mask), with the call site.
struct SyncwarpAt {
  const char* file;
  int line;
  void operator()(unsigned mask = 0xffffffffu) const { syncwarp_at(file, line, mask); }
};

// Lanes that take part in a shuffle must be exactly the warp's lanes.
inline void check_shuffle_mask(unsigned mask, const char* what) {
  const Warp& w = my_warp();
  if (mask != w.lanes)
    die(std::string("bad mask: ") + what + " with mask " + hex(mask) +
        " in a warp whose lanes are " + hex(w.lanes) + " (thread " +
        std::to_string(tl_thread) + " of " + tl_block->name() + ")");
}

// The shuffle core: every lane publishes `var`, then reads lane src(lane)'s
// value (or keeps its own when src returns -1).
template <typename T, typename Src>
T exchange(unsigned mask, T var, Src src, const char* what) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 64, "shuffle type");
  check_shuffle_mask(mask, what);
  Warp& w = my_warp();
  const int lane = tl_thread % 32;
  unsigned char(*slots)[64] = w.slots[w.shuffles[lane]++ & 1];
  std::memcpy(slots[lane], &var, sizeof(T));
  syncwarp_at(what, 0, mask);
  const int from = src(lane);
  T out = var;
  if (from >= 0) {
    if (!(mask & (1u << from)))
      die(std::string(what) + " reads lane " + std::to_string(from) + " outside the mask");
    std::memcpy(&out, slots[from], sizeof(T));
  }
  return out;
}

inline void* dynamic_shared() { return tl_block->dynamic.get(); }

template <typename T>
T* static_shared(const void* key, size_t count) {
  Block& b = *tl_block;
  std::lock_guard<std::mutex> lk(b.m);
  const size_t bytes = count * sizeof(T);
  auto it = b.statics.find(key);
  if (it == b.statics.end()) {
    if (b.dynamic_bytes + b.static_bytes + bytes > kOptinSharedBytes)
      die("shared memory of " + b.name() + " exceeds the device's " +
          std::to_string(kOptinSharedBytes) + " bytes");
    std::unique_ptr<unsigned char[]> mem(new unsigned char[bytes]);
    std::memset(mem.get(), 0xFF, bytes);
    b.static_bytes += bytes;
    it = b.statics.emplace(key, std::make_pair(bytes, std::move(mem))).first;
  } else if (it->second.first != bytes) {
    die("one static __shared__ array declared with two sizes");
  }
  return reinterpret_cast<T*>(it->second.second.get());
}

// A thread returning while others of its block (or warp) wait at a barrier
// it would have to reach is divergence.
inline void thread_exit() {
  Block& b = *tl_block;
  {
    std::lock_guard<std::mutex> lk(b.m);
    if (b.arrived > 0)
      die("divergence: thread " + std::to_string(tl_thread) + " of " + b.name() +
          " exited while " + std::to_string(b.arrived) + " threads wait at __syncthreads at " +
          where(b.file, b.line));
    if (b.exited++ == 0) b.first_exited = tl_thread;
  }
  Warp& w = my_warp();
  const unsigned bit = 1u << (tl_thread % 32);
  std::lock_guard<std::mutex> lk(w.m);
  if (w.arrived != 0 && (w.mask & bit))
    die("divergence: thread " + std::to_string(tl_thread) + " of " + b.name() +
        " exited while lanes " + hex(w.arrived) + " of its warp wait at __syncwarp at " +
        where(w.file, w.line));
  w.exited |= bit;
}

// Worker threads kept across blocks and launches (creating a thread per CUDA
// thread per block would dominate the run time). run(n, body) runs body(i)
// for i < n, each on its own thread, and returns when all have finished.
class Pool {
 public:
  ~Pool() {
    for (auto& w : workers_) {
      {
        std::lock_guard<std::mutex> lk(w->m);
        w->quit = true;
      }
      w->cv.notify_one();
      w->th.join();
    }
  }
  template <typename Body>
  void run(int n, const Body& body) {
    while (static_cast<int>(workers_.size()) < n) {
      workers_.emplace_back(new Worker);
      Worker* w = workers_.back().get();
      w->th = std::thread([this, w] { loop(*w); });
    }
    {
      std::lock_guard<std::mutex> lk(done_m_);
      pending_ = n;
    }
    for (int i = 0; i < n; ++i) {
      Worker& w = *workers_[static_cast<size_t>(i)];
      {
        std::lock_guard<std::mutex> lk(w.m);
        w.task = [&body, i] { body(i); };
      }
      w.cv.notify_one();
    }
    std::unique_lock<std::mutex> lk(done_m_);
    done_cv_.wait(lk, [&] { return pending_ == 0; });
  }

 private:
  struct Worker {
    std::thread th;
    std::mutex m;
    std::condition_variable cv;
    std::function<void()> task;
    bool quit = false;
  };
  void loop(Worker& w) {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lk(w.m);
        w.cv.wait(lk, [&] { return w.quit || static_cast<bool>(w.task); });
        if (!w.task) return;
        task.swap(w.task);
      }
      task();
      std::lock_guard<std::mutex> lk(done_m_);
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }
  std::vector<std::unique_ptr<Worker>> workers_;
  std::mutex done_m_;
  std::condition_variable done_cv_;
  int pending_ = 0;
};

inline Pool& pool() {
  static Pool p;
  return p;
}

template <typename... P, typename... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t, A&&... args) {
  const unsigned long threads = 1ul * block.x * block.y * block.z;
  size_t allowed = kDefaultSharedBytes;
  {
    std::lock_guard<std::mutex> lk(attr_mutex());
    auto it = optin_bytes().find(reinterpret_cast<const void*>(kernel));
    if (it != optin_bytes().end()) allowed = std::max<size_t>(allowed, it->second);
  }
  if (threads == 0 || threads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0) {
    last_error() = cudaErrorInvalidConfiguration;
    return;
  }
  if (smem > allowed) {  // the real launch fails without the opt-in attribute
    last_error() = cudaErrorInvalidValue;
    return;
  }
  std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        Block b;
        b.index = dim3(bx, by, bz);
        b.threads = static_cast<int>(threads);
        b.dynamic_bytes = smem;
        b.parkers.reset(new Parker[threads]);
        b.waiting.reserve(threads);
        b.dynamic.reset(new unsigned char[smem]);
        std::memset(b.dynamic.get(), 0xFF, smem);
        for (unsigned w = 0; w < (threads + 31) / 32; ++w) {
          b.warps.emplace_back(new Warp);
          const unsigned n = std::min<unsigned long>(32, threads - 32ul * w);
          b.warps.back()->lanes = n == 32 ? 0xffffffffu : (1u << n) - 1;
        }
        pool().run(static_cast<int>(threads), [&](int t) {
          tl_block = &b;
          tl_thread = t;
          threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
          blockIdx = b.index;
          blockDim = block;
          gridDim = grid;
          std::apply(kernel, params);
          thread_exit();
        });
      }
}

}  // namespace si_emu

#define __syncthreads() ::si_emu::syncthreads(__FILE__, __LINE__)
#define __syncthreads_or(pred) ::si_emu::syncthreads(__FILE__, __LINE__, (pred))
#define __syncwarp(...) ::si_emu::SyncwarpAt{__FILE__, __LINE__}(__VA_ARGS__)

template <typename T>
T __shfl_sync(unsigned mask, T var, int src, int width = 32) {
  return si_emu::exchange(
      mask, var, [=](int lane) { return (lane & ~(width - 1)) + (src & (width - 1)); },
      "__shfl_sync");
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
  return si_emu::exchange(
      mask, var,
      [=](int lane) {
        const int to = lane ^ lane_mask;
        return (to & ~(width - 1)) == (lane & ~(width - 1)) ? to : -1;
      },
      "__shfl_xor_sync");
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  return si_emu::exchange(
      mask, var,
      [=](int lane) {
        return (lane & (width - 1)) + static_cast<int>(delta) < width
                   ? lane + static_cast<int>(delta)
                   : -1;
      },
      "__shfl_down_sync");
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  unsigned out = 0;
  for (int l = 0; l < 32; ++l) {
    const int v = __shfl_sync(mask, pred, l);
    if ((mask >> l) & 1u) out |= (v != 0 ? 1u : 0u) << l;
  }
  return out;
}

inline cudaError_t cudaGetLastError() {
  return static_cast<cudaError_t>(si_emu::last_error().exchange(cudaSuccess));
}
inline cudaError_t cudaPeekAtLastError() {
  return static_cast<cudaError_t>(si_emu::last_error().load());
}
inline const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "no error" : "emulated launch error";
}
inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  switch (attr) {
    case cudaDevAttrMaxSharedMemoryPerBlock:
      *value = static_cast<int>(si_emu::kDefaultSharedBytes);
      return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = static_cast<int>(si_emu::kOptinSharedBytes);
      return cudaSuccess;
    case cudaDevAttrMultiProcessorCount:
      *value = si_emu::kMultiProcessors;
      return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}
template <typename... P>
cudaError_t cudaFuncSetAttribute(void (*kernel)(P...), cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
      static_cast<size_t>(value) > si_emu::kOptinSharedBytes)
    return cudaErrorInvalidValue;
  std::lock_guard<std::mutex> lk(si_emu::attr_mutex());
  si_emu::optin_bytes()[reinterpret_cast<const void*>(kernel)] = value;
  return cudaSuccess;
}
