// Portable SIMD layer for the CPU kernels: GCC/Clang vector extensions plus
// vectorised exp and log. No torch, no intrinsics: the same source is compiled
// once per instruction set (see kernels_*.cpp), and the vector width follows
// SI_VEC_BYTES, which each of those translation units defines.
//
// exp and log follow the classic Cephes / fdlibm range reductions. Accuracy
// (checked by cpp_tests/test_simd.cpp against libm): within 2 ulp over the
// normal range. Results below the smallest normal number flush to zero; the
// kernels that use them are written so that this never matters (see crf.h).
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>

#ifndef SI_VEC_BYTES
#error "SI_VEC_BYTES must be defined by the including translation unit"
#endif

namespace structinf {
namespace cpu {
namespace SI_ISA_NS {

template <typename T>
struct IntOf;
template <>
struct IntOf<float> {
  using type = int32_t;
};
template <>
struct IntOf<double> {
  using type = int64_t;
};

template <typename T, int W>
struct VecT {
  typedef T type __attribute__((vector_size(sizeof(T) * W)));
  typedef typename IntOf<T>::type itype __attribute__((vector_size(sizeof(T) * W)));
};

// Number of lanes of T in one vector register of this instruction set.
template <typename T>
constexpr int kLanes = SI_VEC_BYTES / sizeof(T);

template <typename T>
using Vec = typename VecT<T, kLanes<T>>::type;
template <typename T>
using IVec = typename VecT<T, kLanes<T>>::itype;

template <typename T>
inline Vec<T> vload(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T>
inline void vstore(T* p, Vec<T> v) {
  std::memcpy(p, &v, sizeof(v));
}
template <typename T>
inline Vec<T> vset1(T x) {
  // x - (+0) == x for every x (signed zeros and NaN included), so this folds
  // to a single broadcast; 0 + x would not (it maps -0 to +0).
  return x - Vec<T>{};
}
template <typename V>
inline V vmax(V a, V b) {
  return a > b ? a : b;  // maps to one maxps / maxpd
}
template <typename V>
inline V vmin(V a, V b) {
  return a < b ? a : b;
}
template <typename V>
inline auto hmax(V v) {
  auto m = v[0];
  for (size_t i = 1; i < sizeof(V) / sizeof(v[0]); ++i) m = v[i] > m ? v[i] : m;
  return m;
}
template <typename V>
inline auto hsum(V v) {
  auto s = v[0];
  for (size_t i = 1; i < sizeof(V) / sizeof(v[0]); ++i) s += v[i];
  return s;
}
template <typename T>
inline Vec<T> as_float(IVec<T> v) {
  return (Vec<T>)v;  // same-size vector cast: reinterprets the bits
}
template <typename T>
inline IVec<T> as_int(Vec<T> v) {
  return (IVec<T>)v;
}

// ---------------------------------------------------------------- exp
// exp(x) = 2^n * exp(r), x = n ln2 + r, |r| <= ln2 / 2.
inline Vec<float> vexp(Vec<float> x) {
  using V = Vec<float>;
  using I = IVec<float>;
  // hi keeps n <= 127 so 2^n stays a normal float (exp overflows a hair early).
  const V hi = vset1(88.37f), lo = vset1(-87.3365447504f);
  V xc = vmin(vmax(x, lo), hi);
  // Round-to-nearest by the 1.5 * 2^23 trick (exact for |v| < 2^22).
  const V magic = vset1(12582912.0f);
  V n = (xc * vset1(1.44269504088896341f) + magic) - magic;
  V r = xc - n * vset1(0.693359375f);
  r = r - n * vset1(-2.12194440e-4f);
  V r2 = r * r;
  V p = vset1(1.9875691500E-4f);
  p = p * r + vset1(1.3981999507E-3f);
  p = p * r + vset1(8.3334519073E-3f);
  p = p * r + vset1(4.1665795894E-2f);
  p = p * r + vset1(1.6666665459E-1f);
  p = p * r + vset1(5.0000001201E-1f);
  p = p * r2 + r + vset1(1.0f);
  I ni = __builtin_convertvector(n, I);
  V scale = as_float<float>((ni + 127) << 23);
  V y = p * scale;
  // Below the smallest normal result: flush to zero (covers -inf); above: inf.
  y = x < lo ? V{} : y;
  y = x > hi ? vset1(std::numeric_limits<float>::infinity()) : y;
  return x != x ? x : y;  // NaN stays NaN
}

inline Vec<double> vexp(Vec<double> x) {
  using V = Vec<double>;
  using I = IVec<double>;
  const V hi = vset1(709.43), lo = vset1(-708.39641853226408);
  V xc = vmin(vmax(x, lo), hi);
  const V magic = vset1(6755399441055744.0);  // 1.5 * 2^52
  V n = (xc * vset1(1.4426950408889634073599) + magic) - magic;
  V r = xc - n * vset1(6.93145751953125E-1);
  r = r - n * vset1(1.42860682030941723212E-6);
  V rr = r * r;
  V px = vset1(1.26177193074810590878E-4);
  px = px * rr + vset1(3.02994407707441961300E-2);
  px = px * rr + vset1(9.99999999999999999910E-1);
  px = px * r;
  V qx = vset1(3.00198505138664455042E-6);
  qx = qx * rr + vset1(2.52448340349684104192E-3);
  qx = qx * rr + vset1(2.27265548208155028766E-1);
  qx = qx * rr + vset1(2.00000000000000000009E0);
  V e = vset1(1.0) + vset1(2.0) * px / (qx - px);
  I ni = __builtin_convertvector(n, I);
  V scale = as_float<double>((ni + 1023) << 52);
  V y = e * scale;
  y = x < lo ? V{} : y;
  y = x > hi ? vset1(std::numeric_limits<double>::infinity()) : y;
  return x != x ? x : y;
}

// ---------------------------------------------------------------- log
// log(x) = k ln2 + log(1 + f), 1 + f in [sqrt(1/2), sqrt(2)), with the fdlibm
// polynomial in s = f / (2 + f). Denormal inputs are rescaled first.
inline Vec<float> vlog(Vec<float> x) {
  using V = Vec<float>;
  using I = IVec<float>;
  const V tiny = vset1(std::numeric_limits<float>::min());
  auto sub = x < tiny;
  V xs = sub ? x * vset1(8388608.0f) : x;  // 2^23
  I ix = as_int<float>(xs);
  ix = ix + (0x3f800000 - 0x3f3504f3);
  I k = (ix >> 23) - 0x7f;
  k = sub ? k - 23 : k;
  ix = (ix & 0x007fffff) + 0x3f3504f3;
  V f = as_float<float>(ix) - vset1(1.0f);
  V s = f / (vset1(2.0f) + f);
  V z = s * s;
  V w = z * z;
  V t1 = w * (vset1(0.40000972152f) + w * vset1(0.24279078841f));
  V t2 = z * (vset1(0.66666662693f) + w * vset1(0.28498786688f));
  V R = t2 + t1;
  V hfsq = vset1(0.5f) * f * f;
  V dk = __builtin_convertvector(k, V);
  V y = dk * vset1(6.9313812256e-01f) - ((hfsq - (s * (hfsq + R) + dk * vset1(9.0580006145e-06f))) - f);
  const V inf = vset1(std::numeric_limits<float>::infinity());
  y = x == V{} ? -inf : y;
  y = x == inf ? inf : y;
  y = x < V{} ? vset1(std::numeric_limits<float>::quiet_NaN()) : y;
  return x != x ? x : y;
}

inline Vec<double> vlog(Vec<double> x) {
  using V = Vec<double>;
  using I = IVec<double>;
  const V tiny = vset1(std::numeric_limits<double>::min());
  auto sub = x < tiny;
  V xs = sub ? x * vset1(18014398509481984.0) : x;  // 2^54
  I ix = as_int<double>(xs);
  ix = ix + ((int64_t)(0x3ff00000 - 0x3fe6a09e) << 32);
  I k = (ix >> 52) - 0x3ff;
  k = sub ? k - 54 : k;
  ix = (ix & 0x000fffffffffffffLL) + ((int64_t)0x3fe6a09e << 32);
  V f = as_float<double>(ix) - vset1(1.0);
  V s = f / (vset1(2.0) + f);
  V z = s * s;
  V w = z * z;
  V t1 = w * (vset1(3.999999999940941908e-01) +
              w * (vset1(2.222219843214978396e-01) + w * vset1(1.531383769920937332e-01)));
  V t2 = z * (vset1(6.666666666666735130e-01) +
              w * (vset1(2.857142874366239149e-01) +
                   w * (vset1(1.818357216161805012e-01) + w * vset1(1.479819860511658591e-01))));
  V R = t2 + t1;
  V hfsq = vset1(0.5) * f * f;
  V dk = __builtin_convertvector(k, V);
  V y = dk * vset1(6.93147180369123816490e-01) -
        ((hfsq - (s * (hfsq + R) + dk * vset1(1.90821492927058770002e-10))) - f);
  const V inf = vset1(std::numeric_limits<double>::infinity());
  y = x == V{} ? -inf : y;
  y = x == inf ? inf : y;
  y = x < V{} ? vset1(std::numeric_limits<double>::quiet_NaN()) : y;
  return x != x ? x : y;
}

// Scalar versions through the vector code, so scalar and vector paths of a
// kernel round identically.
template <typename T>
inline T sexp(T x) {
  return vexp(vset1(x))[0];
}
template <typename T>
inline T slog(T x) {
  return vlog(vset1(x))[0];
}

}  // namespace SI_ISA_NS
}  // namespace cpu
}  // namespace structinf
