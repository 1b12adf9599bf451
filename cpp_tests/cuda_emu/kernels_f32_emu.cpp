// The float32 CUDA kernels compiled by g++ for the emulator (a .cu file
// cannot be both a CUDA source of the library and a C++ source here).
#include "kernels/cuda/kernels_f32.cu"
