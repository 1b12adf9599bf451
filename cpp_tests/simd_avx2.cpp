#include "kernels/cpu/std_headers.h"
#include "simd_avx2.h"

#if SI_TEST_AVX2
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif
#define SI_ISA_NS avx2
#define SI_VEC_BYTES 32
#include "kernels/cpu/simd.h"

float avx2_exp_f32(float x) { return structinf::cpu::avx2::sexp(x); }
float avx2_log_f32(float x) { return structinf::cpu::avx2::slog(x); }
double avx2_exp_f64(double x) { return structinf::cpu::avx2::sexp(x); }
double avx2_log_f64(double x) { return structinf::cpu::avx2::slog(x); }
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
