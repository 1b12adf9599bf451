// Baseline build of the CPU kernels: 16-byte vectors (SSE2 on x86-64, NEON on
// AArch64), which every CPU of those architectures has.
#include "std_headers.h"

#define SI_ISA_NS base
#define SI_VEC_BYTES 16
#include "kernels_impl.h"
