// A tiny SIMT emulator so g++ can run the CUDA kernels of connector_kernels.cu on the CPU:
// every thread of a block is a std::thread, __syncthreads() is a std::barrier, blocks run one
// after another and share one dynamic shared-memory buffer. It exists only for emu_test.cpp (no
// GPU on the machines that develop this code): it checks indexing, tiling, shared-memory layout,
// barriers and masking of the real kernel source, not GPU-only behaviour (memory model, real
// shared-memory limits, alignment faults, performance).
//
// The fake cuda_*.h headers beside this file include it; they shadow the toolkit's headers
// because emu_test.cpp is compiled with -I csrc/cuda/tests/emu.
#pragma once

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__
#define __align__(n) __attribute__((aligned(n)))

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
typedef int cudaError_t;
constexpr cudaError_t cudaSuccess = 0;
typedef struct CUstream_st* cudaStream_t;

namespace lc_simt {
inline thread_local uint3 thread_idx{0, 0, 0};
inline thread_local uint3 block_idx{0, 0, 0};
inline dim3 block_dim;
inline dim3 grid_dim;
inline std::barrier<>* block_barrier = nullptr;

// Runs body() as a grid of `grid` blocks of `threads` threads (1-D blocks, 2-D grids).
template <typename Body>
void launch(dim3 grid, unsigned threads, Body body) {
  grid_dim = grid;
  block_dim = dim3(threads);
  for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      std::barrier<> bar(threads);
      block_barrier = &bar;
      std::vector<std::thread> pool;
      pool.reserve(threads);
      for (unsigned t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
          thread_idx = uint3{t, 0, 0};
          block_idx = uint3{bx, by, 0};
          body();
        });
      for (auto& th : pool) th.join();
    }
}
}  // namespace lc_simt

#define threadIdx (::lc_simt::thread_idx)
#define blockIdx (::lc_simt::block_idx)
#define blockDim (::lc_simt::block_dim)
#define gridDim (::lc_simt::grid_dim)

inline void __syncthreads() { lc_simt::block_barrier->arrive_and_wait(); }

using std::max;
using std::min;

inline float __int_as_float(int v) {
  float f;
  std::memcpy(&f, &v, sizeof f);
  return f;
}
inline double __longlong_as_double(long long v) {
  double f;
  std::memcpy(&f, &v, sizeof f);
  return f;
}

// float16 / bfloat16 storage types with round-to-nearest-even conversions
struct __half {
  uint16_t bits;
};
struct __nv_bfloat16 {
  uint16_t bits;
};
inline float __half2float(__half h) {
  _Float16 v;
  std::memcpy(&v, &h.bits, 2);
  return float(v);
}
inline __half __float2half_rn(float f) {
  const _Float16 v = static_cast<_Float16>(f);
  __half h;
  std::memcpy(&h.bits, &v, 2);
  return h;
}
inline float __bfloat162float(__nv_bfloat16 b) {
  const uint32_t u = uint32_t(b.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  __nv_bfloat16 b;
  if (std::isnan(f)) {
    b.bits = 0x7fc0;
    return b;
  }
  u += 0x7fffu + ((u >> 16) & 1u);
  b.bits = uint16_t(u >> 16);
  return b;
}
