// CUDA kernels of the LayerConnect connector (SPEC.md §5) and their launchers. Torch-free: the
// plain C++ API is in connector_api.h, the shared index arithmetic and launch planning in
// connector_kernels.cuh.
//
// float16 / bfloat16 run on tensor cores: the persistent kernels of tc_kernels.cuh (W built once
// per CTA in shared memory, WMMA), launched by launch_tc_* below. float32 / float64 run on the
// CUDA-core kernels of this file, described here: storage type T float or double, accumulation
// type A the same. Seeds, biases and gradients of the parameters are in A. All row offsets are
// int64.
//
// ---- forward: y = x + alpha ((z R) B^T + b), one launch --------------------------------------
// Grid: one block of 256 threads per BM = 16*TM rows (BM in {64, 32, 16}, chosen by shared
// memory and SM count). Per block:
//   1. z = D(x) for its BM rows into shared memory (BM x r). x is read with 16-byte loads when
//      g = d/r and d are multiples of the pack width and the pointers are 16-byte aligned.
//   2. v = z R (BM x q), a shared-memory-tiled CUDA-core GEMM (16 x 64 tiles of R, 4 x TM outputs
//      per thread, fp32/fp64 accumulation). R = A S_tau is generated tile by tile from the tiny
//      seed bank (2-4 L2-resident reads of Theta per element, never written to device memory).
//   3. y = x + alpha ((1-f_j) v[lo_j] + f_j v[hi_j] + b_j) over the full rows, 16-byte packs.
//   Rows of different tasks in one block: steps 2-3 run once per distinct task (usually one).
// DRAM traffic: x read once from DRAM (the second read in step 3 is the block's own rows, an L2
// hit), y written once. L2 traffic per block: Theta tiles, r*q*(2..4) elements, amortised over
// BM rows. FLOPs per row: 2 r q (vs 2 r d unfactorised).
//
// ---- backward dx: dx = dy + alpha U((dy B) R^T), one launch ---------------------------------
// Same grid and tiling: e = dy B (BM x q) by a deterministic 2-tap adjoint gather, h = e R^T
// (BM x r, the same GEMM with the tile transposed), then dx = dy + alpha h[j/g] / g in packs.
//
// ---- backward params: dS = sum_n (z_n A)^T (dy_n B), db = sum_n dy_n, two launches -----------
// 1. partial kernel, grid (token chunks x p-tiles x q-tiles, T): each block owns a 64 x 128 tile
//    of dS for one task and one chunk of <= rows_per_chunk tokens; per 16-token step it builds
//    u = z A (16 x 64) from x and e = dy B (16 x 128) from dy by adjoint gathers in shared memory
//    and accumulates u^T e in registers (4 x 8 per thread). Blocks of the first p-tile also sum
//    their columns of dy into the db partials. Partials go to the workspace (no atomics).
//    Traffic: x is read once per q-tile, dy once per p-tile (q/128 and p/64 passes; L2 for
//    moderate N), the workspace written once.
// 2. reduce kernel: each output element sums the chunk partials in a fixed order, applies alpha
//    and writes every anchor k: dTheta_k = h_k(t) alpha dS, db = alpha sum. Deterministic.
//
// Without a GPU all kernels are exercised by tests/emu_test.cpp, which compiles this file with
// g++ under a small SIMT emulator (LC_SIMT_EMULATION hides the launchers) and compares every
// output with a float64 connector.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "connector_api.h"
#include "connector_kernels.cuh"
#include "device_utils.cuh"
#include "tc_kernels.cuh"

namespace lc {
namespace cuda {
namespace {

// ------------------------------------------------------------------------------------------
// shared pieces of the row-wise kernels
// ------------------------------------------------------------------------------------------
template <typename A>
struct RowwiseSmem {
  A* small_r;  // BM x odd_ld(r): z (forward) or h (backward dx)
  A* small_q;  // BM x odd_ld(q): v (forward) or e (backward dx)
  A* tile;     // kTileK x (kTileN + 1): generated R tile
  A* col_f;    // d: column fractions (d -> q)
  int* col_lo;    // d: column lower neighbours
  int* first;     // q + 2: first column j with lo_j >= c
  int* row_task;  // BM: task of each row, -1 past the end, -2 invalid id
  int* tasks;     // BM: distinct valid tasks of the block
  int* ntasks;    // 1
};

template <typename A>
__device__ __forceinline__ RowwiseSmem<A> carve_rowwise(unsigned char* base, int bm, const Geometry& g) {
  RowwiseSmem<A> s;
  s.small_r = reinterpret_cast<A*>(base);
  s.small_q = s.small_r + size_t(bm) * odd_ld(g.r);
  s.tile = s.small_q + size_t(bm) * odd_ld(g.q);
  s.col_f = s.tile + kTileK * (kTileN + 1);
  s.col_lo = reinterpret_cast<int*>(s.col_f + g.d);
  s.first = s.col_lo + g.d;
  s.row_task = s.first + g.q + 2;
  s.tasks = s.row_task + bm;
  s.ntasks = s.tasks + bm;
  return s;
}

// Fills row_task / tasks / ntasks for rows [row0, row0 + bm). Ends with a barrier.
template <typename A>
__device__ __forceinline__ void load_row_tasks(const RowwiseSmem<A>& s, const int64_t* ids, int64_t row0, int bm,
                               const Geometry& g) {
  for (int m = threadIdx.x; m < bm; m += blockDim.x) {
    const int64_t row = row0 + m;
    int tk;
    if (row >= g.n) {
      tk = -1;
    } else if (ids == nullptr) {
      tk = 0;
    } else {
      const int64_t id = ids[row];
      tk = (id >= 0 && id < g.T) ? int(id) : -2;
    }
    s.row_task[m] = tk;
  }
  __syncthreads();
  if (threadIdx.x == 0) {  // bm <= 64 entries: a serial scan is cheaper than a parallel one
    int cnt = 0;
    for (int m = 0; m < bm; ++m) {
      const int tk = s.row_task[m];
      if (tk < 0) continue;
      bool seen = false;
      for (int k = 0; k < cnt; ++k) seen = seen || (s.tasks[k] == tk);
      if (!seen) s.tasks[cnt++] = tk;
    }
    *s.ntasks = cnt;
  }
  __syncthreads();
}

// out (BM x ndim) = a (BM x kdim) * M, where M is R (kForward: kdim = r, ndim = q) or R^T
// (!kForward: kdim = q, ndim = r) of task `theta_task`, generated 16 x 64 tiles at a time.
// Thread (ty, tx) of the 16 x 16 layout owns rows ty + 16 mm and columns tx + 16 nn: shared
// reads of `a` are broadcasts, reads of the tile hit 16 consecutive banks. Ends with a barrier.
template <typename A, int TM, bool kForward>
__device__ __forceinline__ void gemm_rows_by_seed(const A* a_s, int a_ld, A* out_s, int out_ld, int kdim, int ndim,
                                  A* tile_s, const A* theta_task, const Geometry& g,
                                  const HatPair& hat, A w0, A w1) {
  constexpr int TN = kTileN / 16;
  const int tid = threadIdx.x;
  const int tx = tid % 16;
  const int ty = tid / 16;
  for (int n0 = 0; n0 < ndim; n0 += kTileN) {
    A acc[TM][TN];
#pragma unroll
    for (int mm = 0; mm < TM; ++mm)
#pragma unroll
      for (int nn = 0; nn < TN; ++nn) acc[mm][nn] = A(0);
    for (int k0 = 0; k0 < kdim; k0 += kTileK) {
      // stage the tile; consecutive threads take consecutive seed columns c (coalesced Theta)
      for (int e = tid; e < kTileK * kTileN; e += kThreads) {
        const int kk = kForward ? e / kTileN : e % kTileK;
        const int nn = kForward ? e % kTileN : e / kTileK;
        const int kidx = k0 + kk;
        const int nidx = n0 + nn;
        A val = A(0);
        if (kidx < kdim && nidx < ndim) {
          const int64_t i = kForward ? kidx : nidx;
          const int64_t c = kForward ? nidx : kidx;
          val = row_interp_seed<A>(theta_task, g.p, g.q, g.r, hat, w0, w1, i, c);
        }
        tile_s[kk * (kTileN + 1) + nn] = val;
      }
      __syncthreads();
      const int kmax = min(kTileK, kdim - k0);
      for (int kk = 0; kk < kmax; ++kk) {
        A b[TN];
#pragma unroll
        for (int nn = 0; nn < TN; ++nn) b[nn] = tile_s[kk * (kTileN + 1) + tx + 16 * nn];
#pragma unroll
        for (int mm = 0; mm < TM; ++mm) {
          const A a = a_s[(ty + 16 * mm) * a_ld + k0 + kk];
#pragma unroll
          for (int nn = 0; nn < TN; ++nn) acc[mm][nn] += a * b[nn];
        }
      }
      __syncthreads();
    }
#pragma unroll
    for (int mm = 0; mm < TM; ++mm)
#pragma unroll
      for (int nn = 0; nn < TN; ++nn) {
        const int col = n0 + tx + 16 * nn;
        if (col < ndim) out_s[(ty + 16 * mm) * out_ld + col] = acc[mm][nn];
      }
  }
  __syncthreads();
}

// Rows with an invalid task id get NaN, so a bad id can never pass silently.
template <typename T, typename A>
__device__ __forceinline__ void poison_invalid_rows(const RowwiseSmem<A>& s, T* out, int64_t row0, int bm, int d) {
  for (int e = threadIdx.x; e < bm * d; e += kThreads) {  // bm * d < 2^31: d <= 2^24, bm <= 64
    const int m = e / d;
    if (s.row_task[m] != -2) continue;
    out[(row0 + m) * d + (e - m * d)] = Conv<T>::from(quiet_nan<A>());
  }
}

// ------------------------------------------------------------------------------------------
// forward
// ------------------------------------------------------------------------------------------
template <typename T, typename A, int TM>
__global__ void __launch_bounds__(kThreads, 2)
    connector_forward_kernel(const T* __restrict__ x, const A* __restrict__ theta,
                             const A* __restrict__ bias, const int64_t* __restrict__ ids,
                             T* __restrict__ y, Geometry g, HatPair hat, A alpha, bool packed) {
  constexpr int BM = 16 * TM;
  constexpr int V = Pack<T>::kWidth;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const RowwiseSmem<A> s = carve_rowwise<A>(smem_raw, BM, g);
  const int tid = threadIdx.x;
  const int d = g.d, r = g.r, q = g.q;
  const int r_ld = odd_ld(r), q_ld = odd_ld(q);
  const int gsz = d / r;
  const int64_t row0 = int64_t(blockIdx.x) * BM;
  const A w0 = A(hat.w0), w1 = A(hat.w1);

  for (int j = tid; j < d; j += kThreads) {
    const Interp it = interp_at(j, d, q);
    s.col_lo[j] = it.lo;
    s.col_f[j] = interp_frac<A>(it);
  }
  load_row_tasks(s, ids, row0, BM, g);

  // 1. z = D(x) for the block's rows
  const bool packed_groups = packed && (gsz % V == 0);
  for (int e = tid; e < BM * r; e += kThreads) {
    const int m = e / r;
    const int i = e - m * r;
    A z = A(0);
    if (s.row_task[m] != -1) z = group_mean<T, A>(x + (row0 + m) * d + int64_t(i) * gsz, gsz, packed_groups);
    s.small_r[m * r_ld + i] = z;
  }
  __syncthreads();

  const int ntasks = *s.ntasks;
  for (int ti = 0; ti < ntasks; ++ti) {
    const int tau = s.tasks[ti];
    const A* theta_task = theta + int64_t(tau) * g.K * g.p * g.q;
    // 2. v = z R_tau
    gemm_rows_by_seed<A, TM, true>(s.small_r, r_ld, s.small_q, q_ld, r, q, s.tile, theta_task, g,
                                   hat, w0, w1);
    // 3. y = x + alpha (v B^T + b) for the rows of task tau
    const A* b = bias + int64_t(tau) * d;
    if (packed) {
      const int dv = d / V;
      for (int e = tid; e < BM * dv; e += kThreads) {
        const int m = e / dv;
        if (s.row_task[m] != tau) continue;
        const int j0 = (e - m * dv) * V;
        const int64_t off = (row0 + m) * d + j0;
        A buf[V];
        load_pack<T, A>(x + off, buf);
        const A* v = s.small_q + m * q_ld;
#pragma unroll
        for (int k = 0; k < V; ++k) {
          const int j = j0 + k;
          const int lo = s.col_lo[j];
          const int hi = min(lo + 1, q - 1);
          const A f = s.col_f[j];
          const A o = (A(1) - f) * v[lo] + f * v[hi] + b[j];
          buf[k] = buf[k] + alpha * o;
        }
        store_pack<T, A>(y + off, buf);
      }
    } else {
      for (int e = tid; e < BM * d; e += kThreads) {
        const int m = e / d;
        if (s.row_task[m] != tau) continue;
        const int j = e - m * d;
        const int64_t off = (row0 + m) * d + j;
        const A* v = s.small_q + m * q_ld;
        const int lo = s.col_lo[j];
        const int hi = min(lo + 1, q - 1);
        const A f = s.col_f[j];
        const A o = (A(1) - f) * v[lo] + f * v[hi] + b[j];
        y[off] = Conv<T>::from(to_acc(x[off]) + alpha * o);
      }
    }
    __syncthreads();  // small_q is rewritten by the next task
  }
  poison_invalid_rows<T, A>(s, y, row0, BM, d);
}

// ------------------------------------------------------------------------------------------
// backward dx
// ------------------------------------------------------------------------------------------
template <typename T, typename A, int TM>
__global__ void __launch_bounds__(kThreads, 2)
    connector_backward_dx_kernel(const T* __restrict__ dy, const A* __restrict__ theta,
                                 const int64_t* __restrict__ ids, T* __restrict__ dx, Geometry g,
                                 HatPair hat, A alpha, bool packed) {
  constexpr int BM = 16 * TM;
  constexpr int V = Pack<T>::kWidth;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const RowwiseSmem<A> s = carve_rowwise<A>(smem_raw, BM, g);
  const int tid = threadIdx.x;
  const int d = g.d, r = g.r, q = g.q;
  const int r_ld = odd_ld(r), q_ld = odd_ld(q);
  const int gsz = d / r;
  const int64_t row0 = int64_t(blockIdx.x) * BM;
  const A w0 = A(hat.w0), w1 = A(hat.w1);

  for (int j = tid; j < d; j += kThreads) s.col_f[j] = interp_frac<A>(interp_at(j, d, q));
  for (int c = tid; c < q + 2; c += kThreads) s.first[c] = int(first_out_with_lo(c, d, q));
  load_row_tasks(s, ids, row0, BM, g);

  // 1. e = dy B: each seed column gathers the (few) output columns that interpolate from it
  for (int e = tid; e < BM * q; e += kThreads) {
    const int m = e / q;
    const int c = e - m * q;
    A val = A(0);
    if (s.row_task[m] != -1) {
      const T* row = dy + (row0 + m) * d;
      const int* first = s.first;
      const A* col_f = s.col_f;
      val = adjoint_gather<A>(
          c, [first](int64_t k) { return int64_t(first[k]); },
          [col_f](int64_t o) { return col_f[o]; }, [row](int64_t o) { return to_acc(row[o]); });
    }
    s.small_q[m * q_ld + c] = val;
  }
  __syncthreads();

  const int ntasks = *s.ntasks;
  for (int ti = 0; ti < ntasks; ++ti) {
    const int tau = s.tasks[ti];
    const A* theta_task = theta + int64_t(tau) * g.K * g.p * g.q;
    // 2. h = e R_tau^T
    gemm_rows_by_seed<A, TM, false>(s.small_q, q_ld, s.small_r, r_ld, q, r, s.tile, theta_task, g,
                                    hat, w0, w1);
    // 3. dx = dy + alpha U(h)
    const A gdiv = A(gsz);
    if (packed) {
      const int dv = d / V;
      for (int e = tid; e < BM * dv; e += kThreads) {
        const int m = e / dv;
        if (s.row_task[m] != tau) continue;
        const int j0 = (e - m * dv) * V;
        const int64_t off = (row0 + m) * d + j0;
        A buf[V];
        load_pack<T, A>(dy + off, buf);
        const A* h = s.small_r + m * r_ld;
#pragma unroll
        for (int k = 0; k < V; ++k) buf[k] = buf[k] + alpha * div_rn(h[(j0 + k) / gsz], gdiv);
        store_pack<T, A>(dx + off, buf);
      }
    } else {
      for (int e = tid; e < BM * d; e += kThreads) {
        const int m = e / d;
        if (s.row_task[m] != tau) continue;
        const int j = e - m * d;
        const int64_t off = (row0 + m) * d + j;
        const A hv = s.small_r[m * r_ld + j / gsz];
        dx[off] = Conv<T>::from(to_acc(dy[off]) + alpha * div_rn(hv, gdiv));
      }
    }
    __syncthreads();
  }
  poison_invalid_rows<T, A>(s, dx, row0, BM, d);
}

// ------------------------------------------------------------------------------------------
// backward params: partial sums per (task, token chunk, 64 x 128 tile of dS), then reduction
// ------------------------------------------------------------------------------------------
template <typename T, typename A>
__global__ void __launch_bounds__(kThreads, 1)
    connector_params_partial_kernel(const T* __restrict__ x, const T* __restrict__ dy,
                                    const int64_t* __restrict__ ids, A* __restrict__ part,
                                    A* __restrict__ dbpart, Geometry g, ParamsPlan pl,
                                    bool packed) {
  constexpr int TP = kParamsTileP, TQ = kParamsTileQ, RS = kParamsRowStep;
  constexpr int TM = TP / 16, TN = TQ / 16;
  constexpr int V = Pack<T>::kWidth;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  A* u_s = reinterpret_cast<A*>(smem_raw);  // RS x TP
  A* e_s = u_s + RS * TP;                   // RS x TQ
  A* if_s = e_s + RS * TQ;                  // max_i_span: fractions of r -> p
  A* jf_s = if_s + pl.max_i_span;           // max_j_span: fractions of d -> q
  int* kfirst_s = reinterpret_cast<int*>(jf_s + pl.max_j_span);  // TP + 3
  int* cfirst_s = kfirst_s + TP + 3;                              // TQ + 3
  int* rowok_s = cfirst_s + TQ + 3;                               // RS
  int* flag_s = rowok_s + RS;                                     // 1

  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int d = g.d, r = g.r, p = g.p, q = g.q;
  const int gsz = d / r;
  const int tau = blockIdx.y;
  unsigned bx = blockIdx.x;  // 32-bit index arithmetic (a 64-bit division is a spilling call)
  const int qt = int(bx % unsigned(pl.q_tiles));
  bx /= unsigned(pl.q_tiles);
  const int pt = int(bx % unsigned(pl.p_tiles));
  const int chunk = int(bx / unsigned(pl.p_tiles));
  const int k0 = pt * TP, c0 = qt * TQ;
  const int64_t rbeg = int64_t(chunk) * pl.rows_per_chunk;
  const int64_t rend = min(g.n, rbeg + pl.rows_per_chunk);
  A* part_tile = part + (int64_t(tau) * pl.num_chunks + chunk) * p * q;
  A* db_chunk = dbpart + (int64_t(tau) * pl.num_chunks + chunk) * d;
  // db columns owned by this q-tile: the j whose lower neighbour lies in [c0, c0 + TQ)
  const int64_t jown0 = first_out_with_lo(c0, d, q);
  const int64_t jown1 = first_out_with_lo(min(c0 + TQ, q), d, q);

  // Does this chunk hold any row of task tau? (Multi-task: most (chunk, task) pairs do not.)
  if (tid == 0) *flag_s = 0;
  __syncthreads();
  for (int64_t row = rbeg + tid; row < rend; row += kThreads)
    if (ids == nullptr || ids[row] == tau) *flag_s = 1;
  __syncthreads();
  if (*flag_s == 0) {
    for (int e = tid; e < TP * TQ; e += kThreads) {
      const int k = k0 + e / TQ, c = c0 + e % TQ;
      if (k < p && c < q) part_tile[int64_t(k) * q + c] = A(0);
    }
    if (pt == 0)
      for (int64_t j = jown0 + tid; j < jown1; j += kThreads) db_chunk[j] = A(0);
    return;
  }

  // gather ranges and their tables
  const int64_t ia = first_out_with_lo(max(k0 - 1, 0), r, p);
  const int64_t ib = first_out_with_lo(min(k0 + TP, p), r, p);
  const int64_t ja = first_out_with_lo(max(c0 - 1, 0), d, q);
  const int64_t jb = first_out_with_lo(min(c0 + TQ, q), d, q);
  for (int64_t i = ia + tid; i < ib; i += kThreads) if_s[i - ia] = interp_frac<A>(interp_at(i, r, p));
  for (int64_t j = ja + tid; j < jb; j += kThreads) jf_s[j - ja] = interp_frac<A>(interp_at(j, d, q));
  for (int k = tid; k < TP + 3; k += kThreads) kfirst_s[k] = int(first_out_with_lo(k0 - 1 + k, r, p));
  for (int c = tid; c < TQ + 3; c += kThreads) cfirst_s[c] = int(first_out_with_lo(c0 - 1 + c, d, q));
  __syncthreads();

  const bool packed_groups = packed && (gsz % V == 0);
  A acc[TM][TN];
#pragma unroll
  for (int mm = 0; mm < TM; ++mm)
#pragma unroll
    for (int nn = 0; nn < TN; ++nn) acc[mm][nn] = A(0);

  for (int64_t rs = rbeg; rs < rend; rs += RS) {
    for (int m = tid; m < RS; m += kThreads) {
      const int64_t row = rs + m;
      rowok_s[m] = (row < rend) && (ids == nullptr || ids[row] == tau);
    }
    __syncthreads();
    // u = z A over the tile's seed rows: gathers the z_i (pooled x) that interpolate from them
    for (int e = tid; e < RS * TP; e += kThreads) {
      const int m = e / TP, kk = e % TP;
      const int k = k0 + kk;
      A val = A(0);
      if (rowok_s[m] && k < p) {
        const T* xrow = x + (rs + m) * d;
        val = adjoint_gather<A>(
            k, [kfirst_s, k0](int64_t kq) { return int64_t(kfirst_s[kq - (k0 - 1)]); },
            [if_s, ia](int64_t i) { return if_s[i - ia]; },
            [xrow, gsz, packed_groups](int64_t i) {
              return group_mean<T, A>(xrow + i * gsz, gsz, packed_groups);
            });
      }
      u_s[m * TP + kk] = val;
    }
    // e = dy B over the tile's seed columns
    for (int e = tid; e < RS * TQ; e += kThreads) {
      const int m = e / TQ, cc = e % TQ;
      const int c = c0 + cc;
      A val = A(0);
      if (rowok_s[m] && c < q) {
        const T* drow = dy + (rs + m) * d;
        val = adjoint_gather<A>(
            c, [cfirst_s, c0](int64_t cq) { return int64_t(cfirst_s[cq - (c0 - 1)]); },
            [jf_s, ja](int64_t j) { return jf_s[j - ja]; },
            [drow](int64_t j) { return to_acc(drow[j]); });
      }
      e_s[m * TQ + cc] = val;
    }
    __syncthreads();
    const int mmax = int(min(int64_t(RS), rend - rs));
    for (int m = 0; m < mmax; ++m) {
      A b[TN];
#pragma unroll
      for (int nn = 0; nn < TN; ++nn) b[nn] = e_s[m * TQ + tx + 16 * nn];
#pragma unroll
      for (int mm = 0; mm < TM; ++mm) {
        const A a = u_s[m * TP + ty + 16 * mm];
#pragma unroll
        for (int nn = 0; nn < TN; ++nn) acc[mm][nn] += a * b[nn];
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int mm = 0; mm < TM; ++mm)
#pragma unroll
    for (int nn = 0; nn < TN; ++nn) {
      const int k = k0 + ty + 16 * mm, c = c0 + tx + 16 * nn;
      if (k < p && c < q) part_tile[int64_t(k) * q + c] = acc[mm][nn];
    }

  if (pt == 0) {  // db partial: column sums of dy over this chunk's rows of task tau, in row order
    for (int64_t j = jown0 + tid; j < jown1; j += kThreads) {
      A sum = A(0);
      for (int64_t row = rbeg; row < rend; ++row)
        if (ids == nullptr || ids[row] == tau) sum += to_acc(dy[row * d + j]);
      db_chunk[j] = sum;
    }
  }
}

template <typename A>
__global__ void __launch_bounds__(kThreads, 2)
    connector_params_reduce_kernel(const A* __restrict__ part, const A* __restrict__ dbpart,
                                   A* __restrict__ dtheta, A* __restrict__ dbias, Geometry g,
                                   int num_chunks, HatPair hat, A alpha) {
  const int64_t pq = int64_t(g.p) * g.q;
  const int64_t n_theta = int64_t(g.T) * pq;
  const int64_t total = n_theta + int64_t(g.T) * g.d;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    if (idx < n_theta) {
      const int64_t tau = floor_div_nonneg(idx, pq), e = idx - tau * pq;
      A sum = A(0);
      for (int ch = 0; ch < num_chunks; ++ch) sum += part[(tau * num_chunks + ch) * pq + e];
      const A ds = alpha * sum;
      for (int k = 0; k < g.K; ++k) dtheta[(tau * g.K + k) * pq + e] = A(hat_weight_of(hat, k)) * ds;
    } else {
      const int64_t i2 = idx - n_theta;
      const int64_t tau = floor_div_nonneg(i2, g.d), j = i2 - tau * g.d;
      A sum = A(0);
      for (int ch = 0; ch < num_chunks; ++ch) sum += dbpart[(tau * num_chunks + ch) * g.d + j];
      dbias[tau * g.d + j] = alpha * sum;
    }
  }
}

#ifndef LC_SIMT_EMULATION  // tests/emu_test.cpp compiles the kernels above with g++, without launchers
// ------------------------------------------------------------------------------------------
// host side
// ------------------------------------------------------------------------------------------
Status ok_status() {
  Status s;
  s.code = 0;
  s.message[0] = '\0';
  return s;
}

Status fail(int code, const char* fmt, ...) {
  Status s;
  s.code = code == 0 ? -1 : code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s.message, sizeof(s.message), fmt, ap);
  va_end(ap);
  return s;
}

Status check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    return fail(int(err), "%s failed to launch: %s (%s)", what, cudaGetErrorName(err),
                cudaGetErrorString(err));
  return ok_status();
}

Status check_geometry(const Geometry& g, const int64_t* ids, double t) {
  if (g.n < 0) return fail(-1, "n=%lld must be >= 0", (long long)g.n);
  if (g.d < 1 || g.r < 1 || g.d % g.r != 0)
    return fail(-1, "r=%d must be a positive divisor of d=%d", g.r, g.d);
  // interpolation fractions rem/den are converted to float exactly only below 2^24
  if (g.d > (1 << 24)) return fail(-1, "hidden size d=%d exceeds the supported 16777216", g.d);
  if (g.p < 1 || g.p > g.r) return fail(-1, "seed rows p=%d must be in [1, r=%d]", g.p, g.r);
  if (g.q < 1 || g.q > g.d) return fail(-1, "seed columns q=%d must be in [1, d=%d]", g.q, g.d);
  if (g.K < 1) return fail(-1, "anchors K=%d must be >= 1", g.K);
  if (g.T < 1 || g.T > 65535) return fail(-1, "tasks T=%d must be in [1, 65535]", g.T);
  if (ids == nullptr && g.T != 1)
    return fail(-1, "without task ids theta must hold one task (T=1), got T=%d", g.T);
  if (!(t >= 0.0 && t <= 1.0)) return fail(-1, "t=%g must be in [0, 1]", t);
  return ok_status();
}

struct DeviceLimits {
  size_t smem_optin;
  size_t smem_per_sm;
  int num_sms;
  int cc_major;
  int cc_minor;
  DeviceBudget budget() const { return DeviceBudget{smem_optin, smem_per_sm, num_sms}; }
};

Status device_limits(DeviceLimits* lim) {
  int dev = 0, optin = 0, per_sm = 0, sms = 0, major = 0, minor = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (err == cudaSuccess)
    err = cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  if (err != cudaSuccess)
    return fail(int(err), "querying the CUDA device failed: %s", cudaGetErrorString(err));
  lim->smem_optin = size_t(optin);
  lim->smem_per_sm = size_t(per_sm);
  lim->num_sms = sms;
  lim->cc_major = major;
  lim->cc_minor = minor;
  return ok_status();
}

// The float16/bfloat16 kernels use bfloat16 tensor cores (WMMA), compiled for sm_80 and sm_90.
Status tensor_core_limits(DeviceLimits* lim) {
  Status st = device_limits(lim);
  if (st.code) return st;
  if (lim->cc_major < 8)
    return fail(-1,
                "the float16/bfloat16 kernels need a GPU of compute capability 8.0 or newer (tensor cores "
                "with bfloat16), this one is %d.%d; use backend='triton' or 'reference'",
                lim->cc_major, lim->cc_minor);
  return ok_status();
}

template <typename Kernel>
Status allow_smem(Kernel kernel, size_t bytes, const char* what) {
  if (bytes <= 48 * 1024) return ok_status();
  const cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
  if (err != cudaSuccess)
    return fail(int(err), "%s: cannot reserve %zu bytes of shared memory: %s", what, bytes,
                cudaGetErrorString(err));
  return ok_status();
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

template <typename T>
bool can_pack(int d, const void* a, const void* b) {
  return d % Pack<T>::kWidth == 0 && aligned16(a) && aligned16(b);
}

template <typename A>
Status plan_rows(const Geometry& g, int* bm, size_t* smem) {
  DeviceLimits lim;
  Status st = device_limits(&lim);
  if (st.code) return st;
  *bm = choose_block_rows(g.n, g.d, g.r, g.q, sizeof(A), lim.smem_optin, lim.smem_per_sm, lim.num_sms);
  if (*bm == 0)
    return fail(-1,
                "geometry d=%d r=%d q=%d needs %zu bytes of shared memory per 16-row block, more than "
                "this device's %zu; use backend='triton' or 'reference' for it",
                g.d, g.r, g.q, rowwise_smem_bytes(16, g.d, g.r, g.q, sizeof(A)), lim.smem_optin);
  *smem = rowwise_smem_bytes(*bm, g.d, g.r, g.q, sizeof(A));
  return ok_status();
}

template <typename T, typename A>
Status launch_forward(const T* x, const A* theta, const A* bias, const int64_t* ids, T* y,
                      const Geometry& g, double t, double alpha, cudaStream_t stream) {
  if (g.n == 0) return ok_status();
  int bm = 0;
  size_t smem = 0;
  Status st = plan_rows<A>(g, &bm, &smem);
  if (st.code) return st;
  const HatPair hat = hat_pair(t, g.K);
  const bool packed = can_pack<T>(g.d, x, y);
  const dim3 grid(unsigned(ceil_div(g.n, bm)));
#define LC_LAUNCH_FWD(TMV)                                                                      \
  {                                                                                             \
    auto kernel = connector_forward_kernel<T, A, TMV>;                                          \
    st = allow_smem(kernel, smem, "connector_forward_kernel");                                 \
    if (st.code) return st;                                                                     \
    kernel<<<grid, kThreads, smem, stream>>>(x, theta, bias, ids, y, g, hat, A(alpha), packed); \
  }
  if (bm == 64) LC_LAUNCH_FWD(4) else if (bm == 32) LC_LAUNCH_FWD(2) else LC_LAUNCH_FWD(1)
#undef LC_LAUNCH_FWD
  return check_launch("connector_forward_kernel");
}

template <typename T, typename A>
Status launch_backward_dx(const T* dy, const A* theta, const int64_t* ids, T* dx, const Geometry& g,
                          double t, double alpha, cudaStream_t stream) {
  if (g.n == 0) return ok_status();
  int bm = 0;
  size_t smem = 0;
  Status st = plan_rows<A>(g, &bm, &smem);
  if (st.code) return st;
  const HatPair hat = hat_pair(t, g.K);
  const bool packed = can_pack<T>(g.d, dy, dx);
  const dim3 grid(unsigned(ceil_div(g.n, bm)));
#define LC_LAUNCH_DX(TMV)                                                                 \
  {                                                                                       \
    auto kernel = connector_backward_dx_kernel<T, A, TMV>;                                \
    st = allow_smem(kernel, smem, "connector_backward_dx_kernel");                       \
    if (st.code) return st;                                                               \
    kernel<<<grid, kThreads, smem, stream>>>(dy, theta, ids, dx, g, hat, A(alpha), packed); \
  }
  if (bm == 64) LC_LAUNCH_DX(4) else if (bm == 32) LC_LAUNCH_DX(2) else LC_LAUNCH_DX(1)
#undef LC_LAUNCH_DX
  return check_launch("connector_backward_dx_kernel");
}

template <typename T, typename A>
Status launch_backward_params(const T* x, const T* dy, const int64_t* ids, A* dtheta, A* dbias,
                              void* workspace, size_t workspace_bytes, const Geometry& g, double t,
                              double alpha, cudaStream_t stream) {
  const ParamsPlan pl = plan_params(g.n, g.d, g.r, g.p, g.q, g.T);
  const size_t need = size_t(pl.workspace_elems) * sizeof(A);
  if (workspace == nullptr || workspace_bytes < need)
    return fail(-1, "workspace of %zu bytes is too small, connector_backward_params needs %zu",
                workspace_bytes, need);
  if (!aligned16(workspace)) return fail(-1, "workspace must be 16-byte aligned");
  DeviceLimits lim;
  Status st = device_limits(&lim);
  if (st.code) return st;
  const size_t smem = params_smem_bytes(pl, sizeof(A));
  if (smem > lim.smem_optin)
    return fail(-1,
                "geometry d=%d r=%d p=%d q=%d needs %zu bytes of shared memory in the dTheta kernel, "
                "more than this device's %zu; use backend='triton' or 'reference' for it",
                g.d, g.r, g.p, g.q, smem, lim.smem_optin);
  A* part = static_cast<A*>(workspace);
  A* dbpart = part + int64_t(g.T) * pl.num_chunks * g.p * g.q;
  const HatPair hat = hat_pair(t, g.K);
  const bool packed = can_pack<T>(g.d, x, dy);

  auto partial = connector_params_partial_kernel<T, A>;
  st = allow_smem(partial, smem, "connector_params_partial_kernel");
  if (st.code) return st;
  const dim3 grid1(unsigned(int64_t(pl.num_chunks) * pl.p_tiles * pl.q_tiles), unsigned(g.T));
  partial<<<grid1, kThreads, smem, stream>>>(x, dy, ids, part, dbpart, g, pl, packed);
  st = check_launch("connector_params_partial_kernel");
  if (st.code) return st;

  const int64_t total = int64_t(g.T) * (int64_t(g.p) * g.q + g.d);
  int64_t blocks = ceil_div(total, kThreads);
  if (blocks > 4096) blocks = 4096;
  connector_params_reduce_kernel<A><<<unsigned(blocks), kThreads, 0, stream>>>(
      part, dbpart, dtheta, dbias, g, pl.num_chunks, hat, A(alpha));
  return check_launch("connector_params_reduce_kernel");
}

// ---- tensor-core path (float16 / bfloat16) ----------------------------------------------------
bool aligned32(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 31u) == 0; }

Status no_fit(const char* what, const Geometry& g, size_t optin) {
  return fail(-1,
              "%s: geometry d=%d r=%d q=%d does not fit this device's %zu bytes of shared memory per block even "
              "split into panels of 16; use backend='triton' or 'reference' for it",
              what, g.d, g.r, g.q, optin);
}

// Plans a persistent launch of `kernel`, then lowers the CTAs per SM to what the kernel's
// registers allow (the planner only sees shared memory), so the grid stays resident in one wave.
template <typename Kernel>
Status plan_tc_launch(Kernel kernel, bool dx, const Geometry& g, const DeviceLimits& lim, const char* what,
                      TcRowPlan* pl) {
  DeviceBudget budget = lim.budget();
  if (!plan_tc_rows(dx, g.n, g.d, g.r, g.q, budget, kTcThreads / 32, pl)) return no_fit(what, g, lim.smem_optin);
  Status st = allow_smem(kernel, pl->L.smem_bytes, what);
  if (st.code) return st;
  int occ = 0;
  const cudaError_t err =
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kernel, 32 * pl->warps, pl->L.smem_bytes);
  if (err != cudaSuccess) return fail(int(err), "%s: occupancy query failed: %s", what, cudaGetErrorString(err));
  if (occ < 1) return fail(-1, "%s: no block of %d threads with %zu bytes of shared memory fits an SM", what,
                           32 * pl->warps, pl->L.smem_bytes);
  if (occ < budget.max_blocks_per_sm) {
    budget.max_blocks_per_sm = occ;
    plan_tc_rows(dx, g.n, g.d, g.r, g.q, budget, kTcThreads / 32, pl);  // same layout, fewer groups
  }
  return ok_status();
}

template <typename T>
Status launch_tc_forward(const T* x, const float* theta, const float* bias, const int64_t* ids, T* y,
                         const Geometry& g, double t, double alpha, cudaStream_t stream) {
  if (g.n == 0) return ok_status();
  DeviceLimits lim;
  Status st = tensor_core_limits(&lim);
  if (st.code) return st;
  auto kernel = tc::tc_forward_kernel<T>;
  TcRowPlan pl;
  st = plan_tc_launch(kernel, false, g, lim, "tc_forward_kernel", &pl);
  if (st.code) return st;
  const bool packed = g.d % Pack<T>::kWidth == 0 && aligned16(x) && aligned16(y) && aligned16(bias);
  kernel<<<unsigned(pl.ctas), unsigned(32 * pl.warps), pl.L.smem_bytes, stream>>>(x, theta, bias, ids, y, g, pl, hat_pair(t, g.K),
                                                                      float(alpha), packed);
  return check_launch("tc_forward_kernel");
}

template <typename T>
Status launch_tc_backward_dx(const T* dy, const float* theta, const int64_t* ids, T* dx, const Geometry& g, double t,
                             double alpha, cudaStream_t stream) {
  if (g.n == 0) return ok_status();
  DeviceLimits lim;
  Status st = tensor_core_limits(&lim);
  if (st.code) return st;
  auto kernel = tc::tc_backward_dx_kernel<T>;
  TcRowPlan pl;
  st = plan_tc_launch(kernel, true, g, lim, "tc_backward_dx_kernel", &pl);
  if (st.code) return st;
  const bool packed = g.d % Pack<T>::kWidth == 0 && aligned16(dy) && aligned16(dx);
  kernel<<<unsigned(pl.ctas), unsigned(32 * pl.warps), pl.L.smem_bytes, stream>>>(dy, theta, ids, dx, g, pl, hat_pair(t, g.K),
                                                                      float(alpha), packed);
  return check_launch("tc_backward_dx_kernel");
}

Status plan_tc_params_here(const Geometry& g, TcParamsPlan* pl) {
  DeviceLimits lim;
  Status st = tensor_core_limits(&lim);
  if (st.code) return st;
  if (!plan_tc_params(g.n, g.d, g.r, g.T, lim.budget(), kTcThreads / 32, pl))
    return fail(-1,
                "tc_params_partial_kernel: r=%d needs more than this device's %zu bytes of shared memory per "
                "block for 16 pooled tokens; use backend='triton' or 'reference'",
                g.r, lim.smem_optin);
  return ok_status();
}

template <typename T>
Status launch_tc_backward_params(const T* x, const T* dy, const int64_t* ids, float* dtheta, float* dbias,
                                 void* workspace, size_t workspace_bytes, const Geometry& g, double t, double alpha,
                                 cudaStream_t stream) {
  TcParamsPlan pl;
  Status st = plan_tc_params_here(g, &pl);
  if (st.code) return st;
  if (pl.workspace_bytes > 0 && (workspace == nullptr || workspace_bytes < pl.workspace_bytes))
    return fail(-1, "workspace of %zu bytes is too small, connector_backward_params needs %zu", workspace_bytes,
                pl.workspace_bytes);
  if (pl.workspace_bytes > 0 && !aligned32(workspace)) return fail(-1, "workspace must be 32-byte aligned");
  float* part = static_cast<float*>(workspace);
  int* flags = reinterpret_cast<int*>(static_cast<unsigned char*>(workspace) + pl.part_bytes);
  const bool packed = g.d % Pack<T>::kWidth == 0 && aligned16(x) && aligned16(dy);
  if (pl.chunks > 0) {
    auto kernel = tc::tc_params_partial_kernel<T>;
    st = allow_smem(kernel, pl.smem_bytes, "tc_params_partial_kernel");
    if (st.code) return st;
    kernel<<<unsigned(pl.chunks), kTcThreads, pl.smem_bytes, stream>>>(x, dy, ids, part, flags, g, pl, packed);
    st = check_launch("tc_params_partial_kernel");
    if (st.code) return st;
  }
  const int64_t total = int64_t(g.T) * (int64_t(g.p) * g.q + g.d);
  int64_t blocks = ceil_div(total, 256);
  if (blocks > 4096) blocks = 4096;
  tc::tc_params_reduce_kernel<<<unsigned(blocks), 256, 0, stream>>>(part, flags, dtheta, dbias, g, pl,
                                                                     hat_pair(t, g.K), float(alpha));
  return check_launch("tc_params_reduce_kernel");
}

#endif  // LC_SIMT_EMULATION
}  // namespace

#ifndef LC_SIMT_EMULATION
// ------------------------------------------------------------------------------------------
// public API (connector_api.h): dtype dispatch
// ------------------------------------------------------------------------------------------
Status connector_forward(DType dtype, const void* x, const void* theta, const void* bias,
                         const int64_t* ids, void* y, Geometry g, double t, double alpha,
                         cudaStream_t stream) {
  Status st = check_geometry(g, ids, t);
  if (st.code) return st;
  switch (dtype) {
    case DType::kFloat16:
      return launch_tc_forward<__half>(static_cast<const __half*>(x), static_cast<const float*>(theta),
                                       static_cast<const float*>(bias), ids, static_cast<__half*>(y), g, t, alpha,
                                       stream);
    case DType::kBFloat16:
      return launch_tc_forward<__nv_bfloat16>(static_cast<const __nv_bfloat16*>(x), static_cast<const float*>(theta),
                                              static_cast<const float*>(bias), ids,
                                              static_cast<__nv_bfloat16*>(y), g, t, alpha, stream);
    case DType::kFloat32:
      return launch_forward<float, float>(static_cast<const float*>(x), static_cast<const float*>(theta),
                                          static_cast<const float*>(bias), ids, static_cast<float*>(y), g, t,
                                          alpha, stream);
    case DType::kFloat64:
      return launch_forward<double, double>(static_cast<const double*>(x), static_cast<const double*>(theta),
                                            static_cast<const double*>(bias), ids, static_cast<double*>(y), g,
                                            t, alpha, stream);
  }
  return fail(-1, "unknown dtype tag %d", int(dtype));
}

Status connector_backward_dx(DType dtype, const void* dy, const void* theta, const int64_t* ids,
                             void* dx, Geometry g, double t, double alpha, cudaStream_t stream) {
  Status st = check_geometry(g, ids, t);
  if (st.code) return st;
  switch (dtype) {
    case DType::kFloat16:
      return launch_tc_backward_dx<__half>(static_cast<const __half*>(dy), static_cast<const float*>(theta), ids,
                                           static_cast<__half*>(dx), g, t, alpha, stream);
    case DType::kBFloat16:
      return launch_tc_backward_dx<__nv_bfloat16>(static_cast<const __nv_bfloat16*>(dy),
                                                  static_cast<const float*>(theta), ids,
                                                  static_cast<__nv_bfloat16*>(dx), g, t, alpha, stream);
    case DType::kFloat32:
      return launch_backward_dx<float, float>(static_cast<const float*>(dy), static_cast<const float*>(theta),
                                              ids, static_cast<float*>(dx), g, t, alpha, stream);
    case DType::kFloat64:
      return launch_backward_dx<double, double>(static_cast<const double*>(dy),
                                                static_cast<const double*>(theta), ids,
                                                static_cast<double*>(dx), g, t, alpha, stream);
  }
  return fail(-1, "unknown dtype tag %d", int(dtype));
}

size_t connector_backward_params_workspace_bytes(DType dtype, Geometry g) {
  if (dtype == DType::kFloat16 || dtype == DType::kBFloat16) {
    TcParamsPlan tp;  // on failure 0: connector_backward_params then reports the cause
    return plan_tc_params_here(g, &tp).code == 0 ? tp.workspace_bytes : 0;
  }
  const ParamsPlan pl = plan_params(g.n, g.d, g.r, g.p, g.q, g.T);
  const size_t acc = dtype == DType::kFloat64 ? sizeof(double) : sizeof(float);
  return size_t(pl.workspace_elems) * acc;
}

Status connector_backward_params(DType dtype, const void* x, const void* dy, const int64_t* ids,
                                 void* dtheta, void* dbias, void* workspace,
                                 size_t workspace_bytes, Geometry g, double t, double alpha,
                                 cudaStream_t stream) {
  Status st = check_geometry(g, ids, t);
  if (st.code) return st;
  switch (dtype) {
    case DType::kFloat16:
      return launch_tc_backward_params<__half>(static_cast<const __half*>(x), static_cast<const __half*>(dy), ids,
                                               static_cast<float*>(dtheta), static_cast<float*>(dbias), workspace,
                                               workspace_bytes, g, t, alpha, stream);
    case DType::kBFloat16:
      return launch_tc_backward_params<__nv_bfloat16>(
          static_cast<const __nv_bfloat16*>(x), static_cast<const __nv_bfloat16*>(dy), ids,
          static_cast<float*>(dtheta), static_cast<float*>(dbias), workspace, workspace_bytes, g, t, alpha, stream);
    case DType::kFloat32:
      return launch_backward_params<float, float>(static_cast<const float*>(x), static_cast<const float*>(dy),
                                                  ids, static_cast<float*>(dtheta), static_cast<float*>(dbias),
                                                  workspace, workspace_bytes, g, t, alpha, stream);
    case DType::kFloat64:
      return launch_backward_params<double, double>(
          static_cast<const double*>(x), static_cast<const double*>(dy), ids, static_cast<double*>(dtheta),
          static_cast<double*>(dbias), workspace, workspace_bytes, g, t, alpha, stream);
  }
  return fail(-1, "unknown dtype tag %d", int(dtype));
}
#endif  // LC_SIMT_EMULATION

}  // namespace cuda
}  // namespace lc
