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

// Register blocks (rows x vectors), chosen by measurement on AVX2: 4 x 3 for
// sum-product (12 accumulators, 3 B vectors and a broadcast in 16 registers);
// 4 x 2 for max-plus, whose add + max pair needs a temporary per column.
template <Semiring S>
constexpr int kGemmMR = 4;
template <Semiring S>
constexpr int kGemmNV = S == Semiring::kSum ? 3 : 2;

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
  V one = vset1(T(1));
#if defined(SI_HAS_FMA)
  // An opaque 1: max-plus then adds with a * 1 + b, which is exactly a + b
  // (one rounding) but issues on the FMA pipes, leaving the add pipes to max.
  asm("" : "+x"(one));
#endif
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
          acc[m][v] = vmax(acc[m][v], av * one + bv[v]);
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
  static_assert(kGemmNV<S> <= 3, "pick_micro covers up to 3 vectors");
  return nv == 1 ? &gemm_micro<T, S, MR, 1>
                 : (nv == 2 ? &gemm_micro<T, S, MR, 2> : &gemm_micro<T, S, MR, kGemmNV<S>>);
}

template <typename T, Semiring S>
GemmMicroFn<T, S> micro_for(int mr, int nv) {
  static_assert(kGemmMR<S> == 4, "micro_for covers up to 4 rows");
  switch (mr) {
    case 1: return pick_micro<T, S, 1>(nv);
    case 2: return pick_micro<T, S, 2>(nv);
    case 3: return pick_micro<T, S, 3>(nv);
    default: return pick_micro<T, S, 4>(nv);
  }
}

// C (M x N) (op)= A (M x K) (x) B (K x N); N % kLanes<T> == 0.
// Panels of B (K x NV vectors) are the outer loop so each stays in L1 while
// every block of rows streams past it.
template <typename T, Semiring S>
void gemm(int64_t M, int64_t N, int64_t K, const T* a, int64_t sam, int64_t sak, const T* b,
          int64_t ldb, T* c, int64_t ldc, bool accumulate) {
  constexpr int W = kLanes<T>;
  constexpr int MR = kGemmMR<S>, NV = kGemmNV<S>;
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) c[m * ldc + n] = semiring_zero<T, S>();
    return;
  }
  // K is split so that one panel of B (KC x NV vectors) fits in L1.
  constexpr int64_t KC = (16 * 1024) / (NV * W * static_cast<int64_t>(sizeof(T)));
  for (int64_t k0 = 0; k0 < K; k0 += KC) {
    const int64_t kc = K - k0 < KC ? K - k0 : KC;
    const bool acc = accumulate || k0 > 0;
    for (int64_t n0 = 0; n0 < N; n0 += NV * W) {
      const int nv = static_cast<int>((N - n0) / W >= NV ? NV : (N - n0) / W);
      for (int64_t m0 = 0; m0 < M; m0 += MR) {
        const int mr = static_cast<int>(M - m0 >= MR ? MR : M - m0);
        micro_for<T, S>(mr, nv)(kc, a + m0 * sam + k0 * sak, sam, sak, b + k0 * ldb + n0, ldb,
                                c + m0 * ldc + n0, ldc, acc);
      }
    }
  }
}

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

}  // namespace SI_ISA_NS
}  // namespace cpu
}  // namespace structinf
