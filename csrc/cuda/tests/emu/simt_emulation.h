// A tiny SIMT emulator so g++ can run the CUDA kernels of connector_kernels.cu and tc_kernels.cuh
// on the CPU: every thread of a block is a fiber (ucontext) with its own stack, all of a block's
// fibers run on one OS thread, one after another, each until it reaches a barrier
// (__syncthreads(), __syncwarp()) or returns; a barrier releases when every live thread of the
// block (of the warp) has reached it. Blocks run one after another and share one dynamic
// shared-memory buffer. It exists only for emu_test.cpp (no GPU on the machines that develop this
// code): it checks indexing, tiling, shared-memory layout, barriers and masking of the real kernel
// source, not GPU-only behaviour (memory model, real shared-memory limits, performance).
//
// Deterministic and strict: threads always run in the same order, and a barrier some threads
// can never pass (threads of one warp waiting at different barriers, a __syncthreads() that
// part of the block skips) aborts with the threads' states instead of hanging. A 16-byte load or
// store through a misaligned uint4 faults, as on the GPU. The warp-level matrix operations
// (WMMA) are modelled in mma.h beside this file.
//
// The fake cuda_*.h headers beside this file include it; they shadow the toolkit's headers
// because emu_test.cpp is compiled with -I csrc/cuda/tests/emu.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
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
inline uint3 thread_idx{0, 0, 0};
inline uint3 block_idx{0, 0, 0};
inline dim3 block_dim;
inline dim3 grid_dim;

enum class State { kRun, kBlockBarrier, kWarpBarrier, kDone };

struct Fiber {
  ucontext_t ctx;
  State state;
};

struct Block {
  ucontext_t scheduler;
  std::vector<Fiber> fibers;
  std::function<void()> body;
  unsigned current = 0;
};
inline Block* block = nullptr;

// Asynchronous global->shared copies (cp.async, cuda_pipeline.h): per thread, the copies of the
// open group and the committed groups not yet waited for (tests/emu/cuda_pipeline.h).
struct PendingCopy {
  void* dst;
  unsigned char bytes[16];
  size_t n;
};
struct Pipeline {
  std::vector<PendingCopy> open;
  std::vector<std::vector<PendingCopy>> committed;  // oldest first
};
inline std::vector<Pipeline> pipelines;
constexpr size_t kStackBytes = size_t(256) << 10;
inline std::vector<std::unique_ptr<char[]>> stacks;  // one per thread, kept across launches

inline void fiber_main() {
  block->body();
  block->fibers[block->current].state = State::kDone;
  swapcontext(&block->fibers[block->current].ctx, &block->scheduler);
}

inline void wait_at(State s) {
  Fiber& f = block->fibers[block->current];
  f.state = s;
  swapcontext(&f.ctx, &block->scheduler);
}

[[noreturn]] inline void deadlock(unsigned threads) {
  std::fprintf(stderr, "SIMT emulation: barrier deadlock in block %u (threads that can never meet):", block_idx.x);
  for (unsigned t = 0; t < threads; ++t) {
    const State s = block->fibers[t].state;
    std::fprintf(stderr, " %u:%s", t,
                 s == State::kBlockBarrier ? "syncthreads" : s == State::kWarpBarrier ? "syncwarp" : "done");
  }
  std::fprintf(stderr, "\n");
  std::abort();
}

// Runs body() as a grid of `grid` blocks of `threads` threads (1-D blocks, 2-D grids). A thread
// that returns no longer counts at barriers, as exited threads on the GPU.
template <typename Body>
void launch(dim3 grid, unsigned threads, Body body) {
  grid_dim = grid;
  block_dim = dim3(threads);
  Block blk;
  blk.body = body;
  blk.fibers.resize(threads);
  while (stacks.size() < threads) stacks.emplace_back(new char[kStackBytes]);
  block = &blk;
  const unsigned warps = (threads + 31) / 32;
  for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      block_idx = uint3{bx, by, 0};
      pipelines.assign(threads, Pipeline{});
      for (unsigned t = 0; t < threads; ++t) {
        Fiber& f = blk.fibers[t];
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = stacks[t].get();
        f.ctx.uc_stack.ss_size = kStackBytes;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, fiber_main, 0);
        f.state = State::kRun;
      }
      for (;;) {
        for (unsigned t = 0; t < threads; ++t) {
          if (blk.fibers[t].state != State::kRun) continue;
          blk.current = t;
          thread_idx = uint3{t, 0, 0};
          swapcontext(&blk.scheduler, &blk.fibers[t].ctx);
        }
        // every thread is now waiting or done: release what can be released
        bool any_live = false, released = false, all_at_block = true;
        for (unsigned w = 0; w < warps; ++w) {
          bool warp_live = false, warp_all = true;
          for (unsigned t = 32 * w; t < std::min(threads, 32 * w + 32); ++t) {
            const State s = blk.fibers[t].state;
            if (s == State::kDone) continue;
            any_live = warp_live = true;
            if (s != State::kWarpBarrier) warp_all = false;
            if (s != State::kBlockBarrier) all_at_block = false;
          }
          if (warp_live && warp_all) {
            for (unsigned t = 32 * w; t < std::min(threads, 32 * w + 32); ++t)
              if (blk.fibers[t].state == State::kWarpBarrier) blk.fibers[t].state = State::kRun;
            released = true;
          }
        }
        if (!any_live) break;
        if (!released && all_at_block) {
          for (auto& f : blk.fibers)
            if (f.state == State::kBlockBarrier) f.state = State::kRun;
          released = true;
        }
        if (!released) deadlock(threads);
      }
    }
  block = nullptr;
}
}  // namespace lc_simt

#define threadIdx (::lc_simt::thread_idx)
#define blockIdx (::lc_simt::block_idx)
#define blockDim (::lc_simt::block_dim)
#define gridDim (::lc_simt::grid_dim)

inline void __syncthreads() { lc_simt::wait_at(lc_simt::State::kBlockBarrier); }
// __syncwarp(): a barrier of the calling thread's warp (the full-warp mask is the only one used)
inline void __syncwarp(unsigned = 0xffffffffu) { lc_simt::wait_at(lc_simt::State::kWarpBarrier); }

// atomicMin on a shared int (the tensor-core kernels' block-wide task reduction); the block's
// threads never run at the same time here
inline int atomicMin(int* p, int v) {
  const int old = *p;
  if (v < old) *p = v;
  return old;
}

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
