// SIMT emulation stand-in for the CUDA toolkit header of this name: asynchronous global->shared
// copies (cp.async) as the tensor-core params kernel uses them. A copy reads its source when it is
// issued and lands in shared memory at the latest moment the program may rely on it: when a
// __pipeline_wait_prior() covers its group. Shared memory read before that still holds the old
// bytes, so a missing wait (or a barrier missing after it) shows up as wrong results, never as
// luck. Alignment of both pointers to the copy size is checked as the hardware requires.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "simt_emulation.h"

inline void __pipeline_memcpy_async(void* dst, const void* src, size_t size, size_t zfill = 0) {
  if ((size != 4 && size != 8 && size != 16) || zfill > size ||
      reinterpret_cast<uintptr_t>(dst) % size != 0 || reinterpret_cast<uintptr_t>(src) % size != 0) {
    std::fprintf(stderr, "cp.async emulation: bad copy (size %zu, zfill %zu, dst %p, src %p)\n", size, zfill, dst, src);
    std::abort();
  }
  lc_simt::PendingCopy c;
  c.dst = dst;
  c.n = size;
  std::memcpy(c.bytes, src, size - zfill);
  std::memset(c.bytes + (size - zfill), 0, zfill);
  lc_simt::pipelines[lc_simt::thread_idx.x].open.push_back(c);
}

inline void __pipeline_commit() {
  lc_simt::Pipeline& p = lc_simt::pipelines[lc_simt::thread_idx.x];
  p.committed.push_back(std::move(p.open));
  p.open.clear();
}

inline void __pipeline_wait_prior(size_t prior) {
  lc_simt::Pipeline& p = lc_simt::pipelines[lc_simt::thread_idx.x];
  while (p.committed.size() > prior) {
    for (const lc_simt::PendingCopy& c : p.committed.front()) std::memcpy(c.dst, c.bytes, c.n);
    p.committed.erase(p.committed.begin());
  }
}
