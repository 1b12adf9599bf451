// AVX2 + FMA build of the CPU kernels (32-byte vectors), chosen at run time on
// CPUs that support it. Compiled to nothing on other architectures.
#include "std_headers.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif

#define SI_ISA_NS avx2
#define SI_VEC_BYTES 32
#define SI_HAS_FMA 1
#include "kernels_impl.h"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
