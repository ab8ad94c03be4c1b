// PYLRCORE_HD marks a function that the host compiler and nvcc both compile, so a CPU loop and a
// CUDA kernel run the very same arithmetic. Under a plain C++ compiler it expands to nothing: the
// core stays pure C++17 and never needs a CUDA header.
#pragma once

#if defined(__CUDACC__)
#define PYLRCORE_HD __host__ __device__
#else
#define PYLRCORE_HD
#endif
