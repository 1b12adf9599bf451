// Register-blocked matrix products in two semirings, for the dynamic programs:
//   sum-product: C[m, n] (+)= sum_k A[m, k] * B[k, n]    (forward-backward, relaxed step)
//   max-plus:    C[m, n] (max)= max_k A[m, k] + B[k, n]  (Viterbi)
// A is addressed by strides (A[m, k] = a[m * sam + k * sak]) so both A and its
// transpose can be used without copies. B and C rows are padded to whole
// vectors (N a multiple of kLanes<T>); padded B columns must hold the
// semiring's zero (0 or -inf) when their results are read.
#pragma once

#include <cstdint>
#include <limits>

#include "simd.h"

namespace structinf {
namespace cpu {
namespace SI_ISA_NS {

enum class Semiring { kSum, kMax };

// 6 rows x 2 vectors: 12 accumulators, 2 B vectors and a broadcast (plus one
// temporary for max-plus) fit the 16 vector registers of AVX2.
constexpr int kGemmMR = 6;
constexpr int kGemmNV = 2;

template <typename T, Semiring S>
constexpr T semiring_zero() {
  return S == Semiring::kSum ? T(0) : -std::numeric_limits<T>::infinity();
}

template <typename T, Semiring S, int MR, int NV>
void gemm_micro(int64_t K, const T* __restrict a, int64_t sam, int64_t sak, const T* __restrict b,
                int64_t ldb, T* __restrict c, int64_t ldc, bool accumulate) {
  using V = Vec<T>;
  constexpr int W = kLanes<T>;
  V acc[MR][NV];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      acc[m][v] = accumulate ? vload(c + m * ldc + v * W) : vset1(semiring_zero<T, S>());
  for (int64_t k = 0; k < K; ++k) {
    V bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = vload(b + k * ldb + v * W);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const V av = vset1(a[m * sam + k * sak]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        if constexpr (S == Semiring::kSum)
          acc[m][v] += av * bv[v];
        else
          acc[m][v] = vmax(acc[m][v], av + bv[v]);
      }
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) vstore(c + m * ldc + v * W, acc[m][v]);
}

template <typename T, Semiring S>
using GemmMicroFn = void (*)(int64_t, const T*, int64_t, int64_t, const T*, int64_t, T*, int64_t,
                             bool);

template <typename T, Semiring S, int MR>
constexpr GemmMicroFn<T, S> pick_micro(int nv) {
  return nv == 1 ? &gemm_micro<T, S, MR, 1> : &gemm_micro<T, S, MR, 2>;
}

template <typename T, Semiring S>
GemmMicroFn<T, S> micro_for(int mr, int nv) {
  switch (mr) {
    case 1: return pick_micro<T, S, 1>(nv);
    case 2: return pick_micro<T, S, 2>(nv);
    case 3: return pick_micro<T, S, 3>(nv);
    case 4: return pick_micro<T, S, 4>(nv);
    case 5: return pick_micro<T, S, 5>(nv);
    default: return pick_micro<T, S, 6>(nv);
  }
}

// C (M x N) (op)= A (M x K) (x) B (K x N); N % kLanes<T> == 0.
// Panels of B (K x 2 vectors) are the outer loop so each stays in L1 while
// every block of rows streams past it.
template <typename T, Semiring S>
void gemm(int64_t M, int64_t N, int64_t K, const T* a, int64_t sam, int64_t sak, const T* b,
          int64_t ldb, T* c, int64_t ldc, bool accumulate) {
  constexpr int W = kLanes<T>;
  static_assert(kGemmNV == 2, "micro_for covers nv in {1, 2}");
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) c[m * ldc + n] = semiring_zero<T, S>();
    return;
  }
  for (int64_t n0 = 0; n0 < N; n0 += kGemmNV * W) {
    const int nv = static_cast<int>((N - n0) / W >= kGemmNV ? kGemmNV : (N - n0) / W);
    for (int64_t m0 = 0; m0 < M; m0 += kGemmMR) {
      const int mr = static_cast<int>(M - m0 >= kGemmMR ? kGemmMR : M - m0);
      micro_for<T, S>(mr, nv)(K, a + m0 * sam, sam, sak, b + n0, ldb, c + m0 * ldc + n0, ldc,
                              accumulate);
    }
  }
}

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

}  // namespace SI_ISA_NS
}  // namespace cpu
}  // namespace structinf
