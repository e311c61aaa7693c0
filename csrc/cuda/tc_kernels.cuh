// Tensor-core kernels of the connector for float16 / bfloat16 storage (SPEC.md §5, issue 14):
// persistent launches that build W (a panel of it) once per CTA in shared memory, then stream
// 16-row tiles of tokens through WMMA m16n16k16 (16-bit operands, fp32 accumulation; HMMA.16816
// on sm_80 / sm_90). Layouts and planning: connector_kernels.cuh (TcLayout, plan_tc_rows,
// plan_tc_params); launchers: connector_kernels.cu. Torch-free; the SIMT emulation test runs this
// source on the CPU (tests/emu/mma.h models the warp-level matrix operations).
//
// ---- forward: y = x + alpha (z W + b), one launch --------------------------------------------
// CTA = (panel of W columns [j0, j1), contiguous range of 16-row tiles). For every task present in
// its rows (ascending; one pass without task ids): build W_tau[:, j0:j1] from Theta into shared
// memory (R = A S row by row in the warp's region, then the 2-tap column map; rounded once to T),
// then each warp takes tiles round-robin: pool its 16 rows (16-byte loads of x, one per group
// when g = 8) to z (16 x r_pad, T) in its region; per 64 output columns, load those columns of
// x into registers (the L2 re-read overlaps the MMA), acc = z W[:, cols] (r_pad / 16 MMA steps
// into 4 fp32 tiles), stage acc in shared memory, write y = x + alpha (acc + b) with 16-byte
// stores for the rows of the task. DRAM: x once, y once (the epilogue's re-read of the tile's
// x hits L2; with several panels every panel re-reads the rows from L2). Rows with an invalid
// task id get NaN.
//
// ---- backward dx: dx = dy + alpha U(dy W^T), one launch --------------------------------------
// The same persistent structure with a panel of W rows [i0, i1): per tile, h = dy W[i0:i1]^T
// (K = d in chunks of 128 columns of dy staged in the warp's region, the next chunk's loads in
// flight during the current chunk's MMAs; up to 8 accumulator tiles), then dx over the channels
// [i0 g, i1 g) = dy + alpha h[j / g - i0] / g. DRAM: dy once, dx once (re-reads from L2).
//
// ---- backward params: dW = alpha z^T dy, db = alpha sum dy -> dTheta, db; two launches ------
// 1. partial kernel, one CTA per token chunk: for every task present in the chunk, pool the
//    chunk's rows of that task (other rows zero) into u = [z | 1 | 0] (tokens x m_pad) in shared
//    memory and accumulate u^T dy over the tokens on tensor cores into a fixed fp32 slot
//    (task, chunk): rows 0..r-1 are dW, row r is db (the ones column). dy streams through a
//    4-stage cp.async pipeline (16 tokens x 128 columns per stage). x and dy are read once.
// 2. reduce kernel: every dTheta[tau, k, c] sums, over the slots in chunk order, the dW entries
//    that interpolate from seed (k, c) with their bilinear weights (the adjoint gathers), scales
//    by alpha and the hat weights; db sums row r. No atomics: bitwise identical run to run.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_pipeline.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>

#include "connector_api.h"
#include "connector_kernels.cuh"
#include "device_utils.cuh"

namespace lc {
namespace cuda {
namespace tc {

namespace wmma = nvcuda::wmma;

template <typename T>
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major>;
template <typename T>
using FragAcolmajor = wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::col_major>;
template <typename T>
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major>;
template <typename T>
using FragBcolmajor = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

constexpr int kPoolUnroll = 8;  // independent 16-byte loads in flight per lane while pooling

__device__ __forceinline__ uint4 ld16(const void* p) { return *reinterpret_cast<const uint4*>(p); }
__device__ __forceinline__ void st16(void* p, const uint4& v) { *reinterpret_cast<uint4*>(p) = v; }
__device__ __forceinline__ uint4 zero16() {
  uint4 z;
  z.x = z.y = z.z = z.w = 0u;
  return z;
}

// Smallest valid task id greater than `after` among the rows [row_begin, row_end) (T when there
// is none). Block-wide: every thread calls it and gets the same answer. Without ids every row is
// task 0.
__device__ __forceinline__ int next_task(const int64_t* __restrict__ ids, int64_t row_begin, int64_t row_end,
                                         int after, int T, int* slot) {
  if (ids == nullptr) return (after < 0 && row_begin < row_end) ? 0 : T;
  int best = T;
  for (int64_t row = row_begin + threadIdx.x; row < row_end; row += blockDim.x) {
    const int64_t id = ids[row];
    if (id > after && id < T && id < best) best = int(id);
  }
  if (threadIdx.x == 0) *slot = T;
  __syncthreads();
  atomicMin(slot, best);  // min is order-independent: the result is deterministic
  __syncthreads();
  const int res = *slot;
  __syncthreads();  // the slot is reused by the next call
  return res;
}

// Bit m set when row row0 + m exists and belongs to task tau (all lanes compute the same mask).
__device__ __forceinline__ unsigned tile_task_mask(const int64_t* __restrict__ ids, int64_t row0, int64_t n, int tau) {
  unsigned mask = 0;
#pragma unroll
  for (int m = 0; m < kMmaTile; ++m) {
    const int64_t row = row0 + m;
    if (row < n && (ids == nullptr || ids[row] == tau)) mask |= 1u << m;
  }
  return mask;
}

// Pooled rows z[m][i] = mean of x[row0 + m, i g : (i + 1) g] (rounded to T) for m < nrows and
// i < r, for rows that exist and (task_masked) belong to task tau, else 0; column r is 1 for those
// rows when `ones` (the db column of the params kernel); columns up to `width` are 0. Threads
// start, start + stride, ... share the work (a warp's lanes or the whole block).
template <typename T>
__device__ __forceinline__ void pool_rows(const T* __restrict__ x, const int64_t* __restrict__ ids, int64_t row0,
                                          int64_t row_end, int nrows, bool task_masked, int tau, bool ones,
                                          const Geometry& g, bool packed, T* z, int zpitch, int width, int start,
                                          int stride) {
  const int r = g.r, gs = g.d / g.r;
  const int total = nrows * r;
  auto row_ok = [&](int m) {
    const int64_t row = row0 + m;
    return row < row_end && (!task_masked || ids == nullptr || ids[row] == tau);
  };
  if (packed && gs == Pack<T>::kWidth) {
    // SPEC's default g = d / r = 8: one 16-byte load per group, kPoolUnroll of them in flight
    int m = start / r, i = start - (start / r) * r;  // element e = m r + i, advanced by `stride`
    for (int e0 = start; e0 < total; e0 += stride * kPoolUnroll) {
      uint4 raw[kPoolUnroll];
      int mm[kPoolUnroll], ii[kPoolUnroll];
#pragma unroll
      for (int u = 0; u < kPoolUnroll; ++u) {
        mm[u] = m;
        ii[u] = i;
        const bool live = e0 + u * stride < total && row_ok(m);
        raw[u] = live ? ld16(x + (row0 + m) * g.d + int64_t(i) * gs) : zero16();
        i += stride;
        while (i >= r) {
          i -= r;
          ++m;
        }
      }
#pragma unroll
      for (int u = 0; u < kPoolUnroll; ++u) {
        if (e0 + u * stride >= total) break;
        const T* v = reinterpret_cast<const T*>(&raw[u]);
        float s = 0.f;
#pragma unroll
        for (int k = 0; k < Pack<T>::kWidth; ++k) s += to_acc(v[k]);
        z[mm[u] * zpitch + ii[u]] = Conv<T>::from(div_rn(s, float(gs)));
      }
    }
  } else {
    const bool packed_groups = packed && gs % Pack<T>::kWidth == 0;
    for (int e = start; e < total; e += stride) {
      const int m = e / r, i = e - m * r;
      float s = 0.f;
      if (row_ok(m)) s = group_sum<T, float>(x + (row0 + m) * g.d + int64_t(i) * gs, gs, packed_groups);
      z[m * zpitch + i] = Conv<T>::from(div_rn(s, float(gs)));
    }
  }
  const int pad = width - r;
  for (int e = start; e < nrows * pad; e += stride) {
    const int m = e / pad, c = e - m * pad;
    const float v = (ones && c == 0 && row_ok(m)) ? 1.f : 0.f;
    z[m * zpitch + r + c] = Conv<T>::from(v);
  }
}

// One row of R = A S_tau (S = w0 Theta[a0] + w1 Theta[a1]) over seed columns [c_lo, c_lo + count)
// into rrow, by the lanes of one warp.
__device__ __forceinline__ void seed_row(float* rrow, const float* __restrict__ theta_task, const Geometry& g,
                                         const HatPair& hat, int i, int c_lo, int count, int lane) {
  const float w0 = float(hat.w0), w1 = float(hat.w1);
  for (int c = lane; c < count; c += 32)
    rrow[c] = row_interp_seed<float>(theta_task, g.p, g.q, g.r, hat, w0, w1, i, c_lo + c);
}

// W[i, j] from a row of R: the 2-tap column interpolation (align corners).
__device__ __forceinline__ float w_from_seed_row(const float* rrow, int c_lo, const Geometry& g, int j) {
  const Interp it = interp_at(j, g.d, g.q);
  const float f = interp_frac<float>(it);
  return (1.f - f) * rrow[it.lo - c_lo] + f * rrow[it.hi - c_lo];
}

// Forward panel: W_tau[:, j0:j1] (r_pad x panel, zero outside r x [j0, j1)). Warps take rows
// round-robin; the row of R lives in the warp's region meanwhile. The caller syncs the block.
template <typename T>
__device__ __forceinline__ void build_forward_panel(T* panel, const TcLayout& L, float* rrow,
                                                    const float* __restrict__ theta_task, const Geometry& g,
                                                    const HatPair& hat, int j0, int j1) {
  const int warps = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int c_lo = interp_at(j0, g.d, g.q).lo;
  const int count = interp_at(j1 - 1, g.d, g.q).hi - c_lo + 1;
  for (int i = warp; i < L.panel_rows; i += warps) {
    if (i < g.r) seed_row(rrow, theta_task, g, hat, i, c_lo, count, lane);
    __syncwarp();
    for (int jj = lane; jj < L.panel; jj += 32) {
      const int j = j0 + jj;
      const float v = (i < g.r && j < j1) ? w_from_seed_row(rrow, c_lo, g, j) : 0.f;
      panel[size_t(i) * L.wpitch + jj] = Conv<T>::from(v);
    }
    __syncwarp();
  }
}

// dx panel: W_tau[i0 : i0 + panel, :] (panel x d_pad, zero outside r x d).
template <typename T>
__device__ __forceinline__ void build_dx_panel(T* panel, const TcLayout& L, float* rrow,
                                               const float* __restrict__ theta_task, const Geometry& g,
                                               const HatPair& hat, int i0) {
  const int warps = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int ii = warp; ii < L.panel; ii += warps) {
    const int i = i0 + ii;
    if (i < g.r) seed_row(rrow, theta_task, g, hat, i, 0, g.q, lane);
    __syncwarp();
    for (int j = lane; j < L.d_pad; j += 32) {
      const float v = (i < g.r && j < g.d) ? w_from_seed_row(rrow, 0, g, j) : 0.f;
      panel[size_t(ii) * L.wpitch + j] = Conv<T>::from(v);
    }
    __syncwarp();
  }
}

// Rows of [row_begin, row_end) with an invalid task id get NaN in columns [c0, c1).
template <typename T>
__device__ __forceinline__ void poison_invalid(const int64_t* __restrict__ ids, T* out, int64_t row_begin,
                                               int64_t row_end, const Geometry& g, int c0, int c1) {
  if (ids == nullptr) return;
  const int warps = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const T nan = Conv<T>::from(quiet_nan<float>());
  for (int64_t row = row_begin + warp; row < row_end; row += warps) {
    const int64_t id = ids[row];
    if (id >= 0 && id < g.T) continue;
    for (int j = c0 + lane; j < c1; j += 32) out[row * g.d + j] = nan;
  }
}

// ------------------------------------------------------------------------------------------
// forward
// ------------------------------------------------------------------------------------------
template <typename T>
__global__ void __launch_bounds__(kTcThreads, 1)
    tc_forward_kernel(const T* __restrict__ x, const float* __restrict__ theta, const float* __restrict__ bias,
                      const int64_t* __restrict__ ids, T* __restrict__ y, Geometry g, TcRowPlan pl, HatPair hat,
                      float alpha, bool packed) {
  extern __shared__ __align__(128) unsigned char tc_smem[];
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800  // bfloat16 WMMA needs sm_80; the launchers refuse older GPUs
  __trap();
#else
  const TcLayout& L = pl.L;
  constexpr int V = Pack<T>::kWidth;  // 8
  constexpr int kFrags = kFwdChunkCols / kMmaTile;
  const int warps = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int slice = int(blockIdx.x) % L.slices;
  const int64_t t_begin = int64_t(blockIdx.x / L.slices) * pl.tiles_per_group;
  const int64_t t_end = min(pl.tiles, t_begin + pl.tiles_per_group);
  const int j0 = slice * L.panel, j1 = min(g.d, j0 + L.panel);
  T* panel = reinterpret_cast<T*>(tc_smem);
  unsigned char* region = tc_smem + L.panel_bytes + size_t(warp) * L.warp_bytes;
  T* zt = reinterpret_cast<T*>(region);
  float* stage = reinterpret_cast<float*>(region + L.z_bytes);
  int* slot = reinterpret_cast<int*>(tc_smem + L.panel_bytes + size_t(warps) * L.warp_bytes);
  const int64_t row_begin = t_begin * kMmaTile, row_end = min(g.n, t_end * kMmaTile);
  const int nchunks = (L.panel + kFwdChunkCols - 1) / kFwdChunkCols;
  const int ksteps = L.r_pad / kMmaTile;

  int tau = -1;
  for (;;) {
    tau = next_task(ids, row_begin, row_end, tau, g.T, slot);
    if (tau >= g.T) break;
    build_forward_panel<T>(panel, L, reinterpret_cast<float*>(region), theta + int64_t(tau) * g.K * g.p * g.q, g,
                           hat, j0, j1);
    __syncthreads();
    const float* __restrict__ b = bias + int64_t(tau) * g.d;
    for (int64_t t = t_begin + warp; t < t_end; t += warps) {
      const int64_t row0 = t * kMmaTile;
      const unsigned mask = tile_task_mask(ids, row0, g.n, tau);
      if (mask == 0) continue;  // warp-uniform
      pool_rows<T>(x, ids, row0, g.n, kMmaTile, false, tau, false, g, packed, zt, L.zpitch, L.r_pad, lane, 32);
      __syncwarp();
      for (int cb = 0; cb < nchunks; ++cb) {
        const int cc0 = cb * kFwdChunkCols;  // first panel column of this pass
        const int nf = min(kFrags, (L.panel - cc0) / kMmaTile);
        // this pass's x, 16 rows x 64 columns = 4 packs per lane, requested before the MMAs
        uint4 xr[4];
        bool live[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int e = lane + 32 * u, m = e / 8, jj = cc0 + (e % 8) * V;
          live[u] = packed && ((mask >> m) & 1u) && jj < L.panel && j0 + jj < j1;
          xr[u] = live[u] ? ld16(x + (row0 + m) * g.d + j0 + jj) : zero16();
        }
        FragC acc[kFrags];
#pragma unroll
        for (int f = 0; f < kFrags; ++f) wmma::fill_fragment(acc[f], 0.f);
        for (int ks = 0; ks < ksteps; ++ks) {
          FragA<T> a;
          wmma::load_matrix_sync(a, zt + ks * kMmaTile, L.zpitch);
#pragma unroll
          for (int f = 0; f < kFrags; ++f) {
            if (f < nf) {
              FragB<T> w;
              wmma::load_matrix_sync(w, panel + size_t(ks * kMmaTile) * L.wpitch + cc0 + f * kMmaTile, L.wpitch);
              wmma::mma_sync(acc[f], a, w, acc[f]);
            }
          }
        }
#pragma unroll
        for (int f = 0; f < kFrags; ++f)
          if (f < nf) wmma::store_matrix_sync(stage + f * kMmaTile, acc[f], L.spitch, wmma::mem_row_major);
        __syncwarp();
        if (packed) {
#pragma unroll
          for (int u = 0; u < 4; ++u) {
            if (!live[u]) continue;
            const int e = lane + 32 * u, m = e / 8, cp = (e % 8) * V, j = j0 + cc0 + cp;
            const uint4 b0 = ld16(b + j), b1 = ld16(b + j + 4);
            const float* bb0 = reinterpret_cast<const float*>(&b0);
            const float* bb1 = reinterpret_cast<const float*>(&b1);
            const T* xe = reinterpret_cast<const T*>(&xr[u]);
            const float* st = stage + m * L.spitch + cp;
            uint4 out;
            T* oe = reinterpret_cast<T*>(&out);
#pragma unroll
            for (int k = 0; k < V; ++k)
              oe[k] = Conv<T>::from(to_acc(xe[k]) + alpha * (st[k] + (k < 4 ? bb0[k] : bb1[k - 4])));
            st16(y + (row0 + m) * g.d + j, out);
          }
        } else {
          for (int e = lane; e < kMmaTile * kFwdChunkCols; e += 32) {
            const int m = e / kFwdChunkCols, cc = e % kFwdChunkCols, j = j0 + cc0 + cc;
            if (!((mask >> m) & 1u) || cc0 + cc >= L.panel || j >= j1) continue;
            const int64_t off = (row0 + m) * g.d + j;
            y[off] = Conv<T>::from(to_acc(x[off]) + alpha * (stage[m * L.spitch + cc] + b[j]));
          }
        }
        __syncwarp();  // the staging tile is rewritten by the next pass
      }
    }
    __syncthreads();  // the panel is rebuilt for the next task
  }
  poison_invalid<T>(ids, y, row_begin, row_end, g, j0, j1);
#endif
}

// ------------------------------------------------------------------------------------------
// backward dx
// ------------------------------------------------------------------------------------------
// Loads (packed) or stages (scalar) columns [kc, kc + L.kc) of the 16 rows of a tile of dy.
template <typename T>
__device__ __forceinline__ void load_dy_chunk(uint4 (&pf)[8], const T* __restrict__ dy, int64_t row0,
                                              const Geometry& g, const TcLayout& L, int kc, int lane) {
  constexpr int V = Pack<T>::kWidth;
  const int ppr = L.kc / V;  // packs per row
#pragma unroll
  for (int u = 0; u < 8; ++u) {
    const int e = lane + 32 * u, m = e / ppr, col = kc + (e - m * ppr) * V;
    const bool live = m < kMmaTile && row0 + m < g.n && col < g.d;
    pf[u] = live ? ld16(dy + (row0 + m) * g.d + col) : zero16();
  }
}

template <typename T>
__device__ __forceinline__ void store_dy_chunk(const uint4 (&pf)[8], T* stage, const TcLayout& L, int lane) {
  constexpr int V = Pack<T>::kWidth;
  const int ppr = L.kc / V;
#pragma unroll
  for (int u = 0; u < 8; ++u) {
    const int e = lane + 32 * u, m = e / ppr;
    if (m < kMmaTile) st16(stage + m * L.zpitch + (e - m * ppr) * V, pf[u]);
  }
}

template <typename T>
__global__ void __launch_bounds__(kTcThreads, 1)
    tc_backward_dx_kernel(const T* __restrict__ dy, const float* __restrict__ theta, const int64_t* __restrict__ ids,
                          T* __restrict__ dx, Geometry g, TcRowPlan pl, HatPair hat, float alpha, bool packed) {
  extern __shared__ __align__(128) unsigned char tc_smem[];
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800  // bfloat16 WMMA needs sm_80; the launchers refuse older GPUs
  __trap();
#else
  const TcLayout& L = pl.L;
  constexpr int V = Pack<T>::kWidth;
  constexpr int kFrags = kDxMaxSliceRows / kMmaTile;
  const int warps = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int slice = int(blockIdx.x) % L.slices;
  const int64_t t_begin = int64_t(blockIdx.x / L.slices) * pl.tiles_per_group;
  const int64_t t_end = min(pl.tiles, t_begin + pl.tiles_per_group);
  const int gs = g.d / g.r;
  const int i0 = slice * L.panel, i1 = min(g.r, i0 + L.panel);
  const int c0 = i0 * gs, c1 = i1 * gs;  // channels [c0, c1) of dx this panel produces
  T* panel = reinterpret_cast<T*>(tc_smem);
  unsigned char* region = tc_smem + L.panel_bytes + size_t(warp) * L.warp_bytes;
  T* stage = reinterpret_cast<T*>(region);
  float* hst = reinterpret_cast<float*>(region);  // h replaces the last dy chunk
  int* slot = reinterpret_cast<int*>(tc_smem + L.panel_bytes + size_t(warps) * L.warp_bytes);
  const int64_t row_begin = t_begin * kMmaTile, row_end = min(g.n, t_end * kMmaTile);
  const int nf = L.panel / kMmaTile;
  const float gdiv = float(gs);

  int tau = -1;
  for (;;) {
    tau = next_task(ids, row_begin, row_end, tau, g.T, slot);
    if (tau >= g.T) break;
    build_dx_panel<T>(panel, L, reinterpret_cast<float*>(region), theta + int64_t(tau) * g.K * g.p * g.q, g, hat,
                      i0);
    __syncthreads();
    for (int64_t t = t_begin + warp; t < t_end; t += warps) {
      const int64_t row0 = t * kMmaTile;
      const unsigned mask = tile_task_mask(ids, row0, g.n, tau);
      if (mask == 0) continue;  // warp-uniform
      FragC acc[kFrags];
#pragma unroll
      for (int f = 0; f < kFrags; ++f) wmma::fill_fragment(acc[f], 0.f);
      uint4 pf[8];
      if (packed) load_dy_chunk<T>(pf, dy, row0, g, L, 0, lane);
      for (int kc = 0; kc < L.d_pad; kc += L.kc) {
        const int kw = min(L.kc, L.d_pad - kc);
        if (packed) {
          store_dy_chunk<T>(pf, stage, L, lane);
        } else {
          for (int e = lane; e < kMmaTile * L.kc; e += 32) {
            const int m = e / L.kc, cc = e - m * L.kc, col = kc + cc;
            const bool live = row0 + m < g.n && col < g.d;
            stage[m * L.zpitch + cc] = live ? dy[(row0 + m) * g.d + col] : Conv<T>::from(0.f);
          }
        }
        __syncwarp();
        if (packed && kc + L.kc < L.d_pad) load_dy_chunk<T>(pf, dy, row0, g, L, kc + L.kc, lane);  // in flight
        for (int ks = 0; ks < kw / kMmaTile; ++ks) {
          FragA<T> a;
          wmma::load_matrix_sync(a, stage + ks * kMmaTile, L.zpitch);
#pragma unroll
          for (int f = 0; f < kFrags; ++f) {
            if (f < nf) {
              FragBcolmajor<T> wt;  // W^T: element (k, n) = panel[n][k]
              wmma::load_matrix_sync(wt, panel + size_t(f * kMmaTile) * L.wpitch + kc + ks * kMmaTile, L.wpitch);
              wmma::mma_sync(acc[f], a, wt, acc[f]);
            }
          }
        }
        __syncwarp();  // the stage is rewritten by the next chunk (or by h)
      }
#pragma unroll
      for (int f = 0; f < kFrags; ++f)
        if (f < nf) wmma::store_matrix_sync(hst + f * kMmaTile, acc[f], L.spitch, wmma::mem_row_major);
      __syncwarp();
      // dx = dy + alpha h[j / g - i0] / g over channels [c0, min(c1, d)) of the task's rows
      if (packed) {
        const int ppr = (c1 - c0) / V;  // c0, c1 and d are multiples of V on this path
        for (int e0 = lane; e0 < kMmaTile * ppr; e0 += 32 * 4) {
          uint4 dv[4];
#pragma unroll
          for (int u = 0; u < 4; ++u) {
            const int e = e0 + 32 * u, m = e / ppr, j = c0 + (e - m * ppr) * V;
            const bool live = e < kMmaTile * ppr && ((mask >> m) & 1u);
            dv[u] = live ? ld16(dy + (row0 + m) * g.d + j) : zero16();
          }
#pragma unroll
          for (int u = 0; u < 4; ++u) {
            const int e = e0 + 32 * u, m = e / ppr, j = c0 + (e - m * ppr) * V;
            if (e >= kMmaTile * ppr || !((mask >> m) & 1u)) continue;
            const T* de = reinterpret_cast<const T*>(&dv[u]);
            const float* h = hst + m * L.spitch;
            uint4 out;
            T* oe = reinterpret_cast<T*>(&out);
#pragma unroll
            for (int k = 0; k < V; ++k)
              oe[k] = Conv<T>::from(to_acc(de[k]) + alpha * div_rn(h[(j + k) / gs - i0], gdiv));
            st16(dx + (row0 + m) * g.d + j, out);
          }
        }
      } else {
        const int width = c1 - c0;
        for (int e = lane; e < kMmaTile * width; e += 32) {
          const int m = e / width, j = c0 + (e - m * width);
          if (!((mask >> m) & 1u)) continue;
          const int64_t off = (row0 + m) * g.d + j;
          dx[off] = Conv<T>::from(to_acc(dy[off]) + alpha * div_rn(hst[m * L.spitch + j / gs - i0], gdiv));
        }
      }
      __syncwarp();
    }
    __syncthreads();
  }
  poison_invalid<T>(ids, dx, row_begin, row_end, g, c0, c1);
#endif
}

// ------------------------------------------------------------------------------------------
// backward params: partial kernel (tensor cores) and reduction
// ------------------------------------------------------------------------------------------
// Stages dy rows [row0, row0 + 16) x columns [col0, col0 + 16 x warps) of task tau into `stage`
// (zero for other rows, rows past row_end and columns past d). Each thread moves one 16-byte pack:
// on the packed path with cp.async (it lands by the __pipeline_wait_prior covering this group),
// zeros and the scalar path with plain shared-memory stores.
template <typename T>
__device__ __forceinline__ void stage_dy_step(const T* __restrict__ dy, const int64_t* __restrict__ ids, int64_t row0,
                                              int64_t row_end, int tau, int col0, const Geometry& g, bool packed,
                                              T* stage, int spitch) {
  constexpr int V = Pack<T>::kWidth;
  const int ppr = 2 * (blockDim.x / 32);  // packs per staged row: 16 x warps columns / 8
  const int m = threadIdx.x / ppr, cp = (threadIdx.x - m * ppr) * V;
  const int64_t row = row0 + m;
  const bool row_live = row < row_end && (ids == nullptr || ids[row] == tau);
  const int col = col0 + cp;
  T* dst = stage + m * spitch + cp;
  if (packed) {
    if (row_live && col < g.d)
      __pipeline_memcpy_async(dst, dy + row * g.d + col, 16);
    else
      st16(dst, zero16());
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k)
      dst[k] = (row_live && col + k < g.d) ? dy[row * g.d + col + k] : Conv<T>::from(0.f);
  }
}

template <typename T>
__global__ void __launch_bounds__(kTcThreads, 1)
    tc_params_partial_kernel(const T* __restrict__ x, const T* __restrict__ dy, const int64_t* __restrict__ ids,
                             float* __restrict__ part, int* __restrict__ flags, Geometry g, TcParamsPlan pl,
                             bool packed) {
  extern __shared__ __align__(128) unsigned char tc_smem[];
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800  // bfloat16 WMMA needs sm_80; the launchers refuse older GPUs
  __trap();
#else
  const int warps = blockDim.x / 32, warp = threadIdx.x / 32;
  const int chunk = int(blockIdx.x);
  const int64_t rb = int64_t(chunk) * pl.rows_per_chunk, re = min(g.n, rb + pl.rows_per_chunk);
  T* zc = reinterpret_cast<T*>(tc_smem);
  T* const stage0 = reinterpret_cast<T*>(tc_smem + pl.z_bytes);
  const int stage_elems = int(pl.stage_bytes / sizeof(T));  // kParamsStages buffers back to back
  int* slot = reinterpret_cast<int*>(tc_smem + pl.z_bytes + kParamsStages * pl.stage_bytes);
  const int pass_cols = kMmaTile * warps;

  int tau = -1;
  for (;;) {
    const int next = next_task(ids, rb, re, tau, g.T, slot);
    for (int k = tau + 1 + int(threadIdx.x); k < next; k += blockDim.x) flags[int64_t(k) * pl.chunks + chunk] = 0;
    if (next >= g.T) break;
    if (threadIdx.x == 0) flags[int64_t(next) * pl.chunks + chunk] = 1;
    tau = next;
    float* __restrict__ out = part + (int64_t(tau) * pl.chunks + chunk) * pl.slot_floats;
    for (int64_t sb = rb; sb < re; sb += pl.chunk_rows) {
      const int rows = int(min(int64_t(pl.chunk_rows), re - sb));
      const int ksteps = (rows + kMmaTile - 1) / kMmaTile;
      __syncthreads();  // the pooled chunk is rewritten
      pool_rows<T>(x, ids, sb, re, ksteps * kMmaTile, true, tau, true, g, packed, zc, pl.zpitch, pl.m_pad,
                   int(threadIdx.x), int(blockDim.x));
      __syncthreads();
      for (int m0 = 0; m0 < pl.m_pad; m0 += kMmaTile * kParamsMaxMTiles) {
        const int mf = min(kParamsMaxMTiles, (pl.m_pad - m0) / kMmaTile);
        for (int col0 = 0; col0 < pl.d_pad; col0 += pass_cols) {
          const int col = col0 + warp * kMmaTile;  // this warp's 16 columns of the slot
          const bool mine = col < pl.d_pad;        // warp-uniform
          FragC acc[kParamsMaxMTiles];
#pragma unroll
          for (int f = 0; f < kParamsMaxMTiles; ++f) {
            if (sb == rb || !mine || f >= mf)
              wmma::fill_fragment(acc[f], 0.f);
            else  // a further sub-chunk adds to what this warp stored for the previous one
              wmma::load_matrix_sync(acc[f], out + size_t(m0 + f * kMmaTile) * pl.d_pad + col, pl.d_pad,
                                     wmma::mem_row_major);
          }
          // dy of 16 tokens per step through kParamsStages buffers: the copies of the next
          // kParamsStages - 1 steps are in flight while a step's MMAs run (one group per step)
          for (int s = 0; s < kParamsStages - 1; ++s) {
            if (s < ksteps)
              stage_dy_step<T>(dy, ids, sb + s * kMmaTile, re, tau, col0, g, packed, stage0 + s * stage_elems,
                               pl.spitch);
            __pipeline_commit();
          }
          for (int ks = 0; ks < ksteps; ++ks) {
            __pipeline_wait_prior(kParamsStages - 2);  // this thread's copies of step ks have landed,
            __syncthreads();                           // everyone's too; buffer (ks - 1) % S is free
            const int ahead = ks + kParamsStages - 1;
            if (ahead < ksteps)
              stage_dy_step<T>(dy, ids, sb + int64_t(ahead) * kMmaTile, re, tau, col0, g, packed,
                               stage0 + (ahead % kParamsStages) * stage_elems, pl.spitch);
            __pipeline_commit();
            if (mine) {
              const T* cur = stage0 + (ks % kParamsStages) * stage_elems;
              FragB<T> b;
              wmma::load_matrix_sync(b, cur + warp * kMmaTile, pl.spitch);
#pragma unroll
              for (int f = 0; f < kParamsMaxMTiles; ++f) {
                if (f < mf) {
                  FragAcolmajor<T> a;  // u^T: element (m, k) = zc[k][m]
                  wmma::load_matrix_sync(a, zc + size_t(ks * kMmaTile) * pl.zpitch + m0 + f * kMmaTile, pl.zpitch);
                  wmma::mma_sync(acc[f], a, b, acc[f]);
                }
              }
            }
          }
          __syncthreads();  // the next pass refills the stage buffers
          if (mine) {
#pragma unroll
            for (int f = 0; f < kParamsMaxMTiles; ++f)
              if (f < mf)
                wmma::store_matrix_sync(out + size_t(m0 + f * kMmaTile) * pl.d_pad + col, acc[f], pl.d_pad,
                                        wmma::mem_row_major);
          }
        }
      }
    }
  }
#endif
}

// Sum over the chunks' slots (fixed order, four interleaved accumulators) of one slot element;
// slots whose flag is 0 were not written and are skipped.
__device__ __forceinline__ float chunk_sum(const float* __restrict__ p, int64_t stride, const int* __restrict__ fl,
                                           int chunks) {
  float s[4] = {0.f, 0.f, 0.f, 0.f};
  for (int ch = 0; ch < chunks; ch += 4) {
#pragma unroll
    for (int u = 0; u < 4; ++u)
      if (ch + u < chunks && fl[ch + u]) s[u] += p[int64_t(ch + u) * stride];
  }
  return (s[0] + s[1]) + (s[2] + s[3]);
}

// Calls fn(o, weight) for every output o of a 2-tap interpolation (n_in -> n_out, align corners)
// that reads input index c, with the weight it gives c: (1 - f_o) where lo_o == c, f_o where
// lo_o == c - 1 (so hi_o == c). The same walk as adjoint_gather, in the same order.
template <typename Fn>
__device__ __forceinline__ void for_each_tap(int64_t c, int64_t n_out, int64_t n_in, Fn fn) {
  const int64_t b0 = first_out_with_lo(c, n_out, n_in), b1 = first_out_with_lo(c + 1, n_out, n_in);
  for (int64_t o = b0; o < b1; ++o) fn(o, 1.f - interp_frac<float>(interp_at(o, n_out, n_in)));
  if (c > 0)
    for (int64_t o = first_out_with_lo(c - 1, n_out, n_in); o < b0; ++o)
      fn(o, interp_frac<float>(interp_at(o, n_out, n_in)));
}

__global__ void __launch_bounds__(256, 1)
    tc_params_reduce_kernel(const float* __restrict__ part, const int* __restrict__ flags, float* __restrict__ dtheta,
                            float* __restrict__ dbias, Geometry g, TcParamsPlan pl, HatPair hat, float alpha) {
  const int64_t pq = int64_t(g.p) * g.q;
  const int64_t n_theta = int64_t(g.T) * pq;
  const int64_t total = n_theta + int64_t(g.T) * g.d;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    if (idx < n_theta) {
      const int64_t tau = floor_div_nonneg(idx, pq), e = idx - tau * pq;  // no 64-bit division (spills)
      const int k = int(floor_div_nonneg(e, g.q)), c = int(e - int64_t(k) * g.q);
      const float* base = part + tau * pl.chunks * pl.slot_floats;
      const int* fl = flags + tau * pl.chunks;
      float ds = 0.f;
      for_each_tap(k, g.r, g.p, [&](int64_t i, float wa) {
        for_each_tap(c, g.d, g.q, [&](int64_t j, float wb) {
          ds += (wa * wb) * chunk_sum(base + i * pl.d_pad + j, pl.slot_floats, fl, pl.chunks);
        });
      });
      ds *= alpha;
      for (int a = 0; a < g.K; ++a) dtheta[(tau * g.K + a) * pq + e] = float(hat_weight_of(hat, a)) * ds;
    } else {
      const int64_t i2 = idx - n_theta;
      const int64_t tau = floor_div_nonneg(i2, g.d), j = i2 - tau * g.d;
      const float* base = part + tau * pl.chunks * pl.slot_floats + int64_t(g.r) * pl.d_pad + j;
      dbias[tau * g.d + j] = alpha * chunk_sum(base, pl.slot_floats, flags + tau * pl.chunks, pl.chunks);
    }
  }
}

}  // namespace tc
}  // namespace cuda
}  // namespace lc
