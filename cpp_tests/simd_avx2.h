// Scalar entry points into the AVX2 build of simd.h (compiled separately in
// simd_avx2.cpp, since one translation unit holds one instruction set).
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SI_TEST_AVX2 1
float avx2_exp_f32(float x);
float avx2_log_f32(float x);
double avx2_exp_f64(double x);
double avx2_log_f64(double x);
#else
#define SI_TEST_AVX2 0
#endif
