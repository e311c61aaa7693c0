// Torch-free helpers shared by the CUDA kernels (connector_kernels.cu) and the g++ host tests
// (tests/host_test.cpp, tests/emu_test.cpp). Everything here is plain C++ marked LC_HD, so the
// exact same interpolation, hat-weight and tiling arithmetic runs on the device and is checked on
// the host without a GPU.
//
// Notation (SPEC.md §2-§4): x (N, d), z = D(x) (N, r), seeds Theta (T, K, p, q),
// S = sum_k h_k(t) Theta_k (p, q), W = A S B^T (r, d) with A (r x p) and B (d x q) the 1-D
// align-corners interpolation matrices (two non-zeros per row). The kernels never form W; they
// use the row-interpolated seed R = A S (r x q), generated tile by tile from Theta:
//
//   forward    y  = x + alpha ((z R) B^T + b)       z R: GEMM (r), B^T: 2-tap expansion q -> d
//   backward   dx = dy + alpha U((dy B) R^T)        dy B: 2-tap adjoint gather d -> q
//   params     dS = sum_n (z_n A)^T (dy_n B)        both factors are adjoint gathers
//
// Interpolation neighbours use integer arithmetic exactly as lc_kernels.reference.interp_positions:
//   num = i (n_in - 1); lo = num / (n_out - 1); frac = (num % (n_out - 1)) / (n_out - 1);
//   hi = min(lo + 1, n_in - 1); and (0, 0, 0) when n_out == 1 or n_in == 1.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#ifdef __CUDACC__
#define LC_HD __host__ __device__ __forceinline__
#else
#define LC_HD inline
#endif

namespace lc {
namespace cuda {

// ------------------------------------------------------------------------------------------
// Tile sizes (compile-time; the kernels and the host-side planning must agree)
// ------------------------------------------------------------------------------------------
constexpr int kThreads = 256;       // every kernel uses 256 threads laid out 16 x 16
constexpr int kTileN = 64;          // output columns per GEMM pass (4 per thread, stride 16)
constexpr int kTileK = 16;          // reduction depth staged in shared memory per step
constexpr int kParamsTileP = 64;    // dTheta partial tile: seed rows (4 per thread)
constexpr int kParamsTileQ = 128;   // dTheta partial tile: seed columns (8 per thread)
constexpr int kParamsRowStep = 16;  // tokens staged per step in the dTheta partial kernel
constexpr int kMaxChunks = 64;      // token chunks of the dTheta partial sums (workspace bound)
constexpr int64_t kMaxWorkspaceElems = int64_t(1) << 24;  // 16 Mi accumulator elements

// ------------------------------------------------------------------------------------------
// Division
// ------------------------------------------------------------------------------------------
// Division inside the kernels. CUDA's IEEE divisions (float __fdiv_rn / __frcp_rn, every double
// division and reciprocal, 64-bit integer division) contain a call to a slow-path subroutine, and
// the calling convention makes ptxas spill registers in the kernels that contain one. The kernels
// divide only by small positive integers (interpolation denominators, the pooling group g), so
// they use an approximate reciprocal refined by Newton steps and an FMA-corrected quotient: within
// one unit in the last place of the IEEE quotient (tests/host_test.cpp checks the host's exact
// division against the reference; the GPU tests bound the kernels' error). --use_fast_math does
// not change this (it would turn a plain float '/' into a 2-ulp approximation).
LC_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  float r = __fdividef(1.0f, b);  // MUFU.RCP: ~1 ulp, no call
  r = fmaf(r, fmaf(-b, r, 1.0f), r);
  const float q = a * r;
  return fmaf(fmaf(-q, b, a), r, q);
#else
  return a / b;
#endif
}
LC_HD double div_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  double r = double(__fdividef(1.0f, float(b)));  // 2^-22 relative; two Newton steps reach double
  r = fma(r, fma(-b, r, 1.0), r);
  r = fma(r, fma(-b, r, 1.0), r);
  const double q = a * r;
  return fma(fma(-q, b, a), r, q);
#else
  return a / b;
#endif
}

// floor(num / den) for 0 <= num < 2^53 and den > 0, without a 64-bit integer division: 32-bit
// division when both operands fit (always for real geometries, d < 65536), else a double estimate
// corrected exactly. (On the GPU a 64-bit division is a subroutine call; its calling convention
// makes ptxas spill registers in every kernel that contains one, even on a path never taken.)
LC_HD int64_t floor_div_nonneg(int64_t num, int64_t den) {
  if (num <= 0xffffffffLL && den <= 0xffffffffLL) return int64_t(uint32_t(num) / uint32_t(den));
  int64_t q = int64_t(div_rn(double(num), double(den)));
  while (q > 0 && q * den > num) --q;
  while ((q + 1) * den <= num) ++q;
  return q;
}

// ------------------------------------------------------------------------------------------
// Interpolation arithmetic
// ------------------------------------------------------------------------------------------
struct Interp {
  int lo;
  int hi;
  int64_t rem;  // frac = rem / den (den = n_out - 1); kept exact so callers choose the rounding
  int64_t den;
};

// Neighbours of output index i when n_in samples are stretched over n_out (align corners).
LC_HD Interp interp_at(int64_t i, int64_t n_out, int64_t n_in) {
  Interp it;
  if (n_out <= 1 || n_in <= 1) {
    it.lo = 0;
    it.hi = 0;
    it.rem = 0;
    it.den = 1;
    return it;
  }
  const int64_t den = n_out - 1;
  const int64_t num = i * (n_in - 1);
  const int64_t lo = floor_div_nonneg(num, den);
  it.lo = static_cast<int>(lo);
  it.hi = static_cast<int>(lo + 1 < n_in - 1 ? lo + 1 : n_in - 1);
  it.rem = num - lo * den;
  it.den = den;
  return it;
}

// The fraction rem/den in the accumulation type (rem, den < 2^24 for float: exact operands).
template <typename A>
LC_HD A interp_frac(const Interp& it) {
  return div_rn(static_cast<A>(it.rem), static_cast<A>(it.den));
}

// Smallest output index o in [0, n_out] whose lower neighbour lo_o >= c (n_out if none). Because
// lo is non-decreasing in o, {o : lo_o == c} = [first_out_with_lo(c), first_out_with_lo(c + 1)):
// this turns the adjoint of the 2-tap interpolation (a scatter) into a deterministic gather.
LC_HD int64_t first_out_with_lo(int64_t c, int64_t n_out, int64_t n_in) {
  if (c <= 0) return 0;
  if (n_out <= 1 || n_in <= 1) return n_out;  // every lo is 0
  if (c > n_in - 1) return n_out;
  // lo_o >= c  <=>  o (n_in-1) >= c (n_out-1)  <=>  o >= ceil(c (n_out-1) / (n_in-1))
  const int64_t num = c * (n_out - 1);
  const int64_t o = floor_div_nonneg(num + (n_in - 2), n_in - 1);
  return o < n_out ? o : n_out;
}

// Adjoint of the 2-tap interpolation at input index c: sum over outputs o of B[o, c] * v(o),
// where B[o, lo_o] += 1 - frac_o and B[o, hi_o] += frac_o. Outputs with lo_o == c contribute
// (1 - frac); outputs with lo_o == c - 1 (whose hi_o is then c) contribute frac. `first(k)` must
// return first_out_with_lo(k, ...) and `frac(o)`, `value(o)` the fraction and the input value.
#ifdef __CUDACC__
#pragma nv_exec_check_disable  // instantiated with __device__ lambdas from kernels only
#endif
template <typename A, typename FirstFn, typename FracFn, typename ValueFn>
LC_HD A adjoint_gather(int64_t c, FirstFn first, FracFn frac, ValueFn value) {
  A acc = A(0);
  const int64_t b0 = first(c);
  const int64_t b1 = first(c + 1);
  for (int64_t o = b0; o < b1; ++o) acc += (A(1) - frac(o)) * value(o);
  if (c > 0) {
    const int64_t a0 = first(c - 1);
    for (int64_t o = a0; o < b0; ++o) acc += frac(o) * value(o);
  }
  return acc;
}

// ------------------------------------------------------------------------------------------
// Depth (hat) weights: at most two anchors are non-zero
// ------------------------------------------------------------------------------------------
struct HatPair {
  int a0;
  int a1;
  double w0;
  double w1;  // 0 when only one anchor contributes (a1 == a0 then)
};

// h_k(t) = max(0, 1 - |t (K-1) - k|), as lc_kernels.reference.hat_weights, for the two anchors
// around s = t (K-1); every other anchor's weight is exactly 0.
LC_HD HatPair hat_pair(double t, int num_anchors) {
  HatPair h;
  if (num_anchors <= 1) {
    h.a0 = 0;
    h.a1 = 0;
    h.w0 = 1.0;
    h.w1 = 0.0;
    return h;
  }
  const double s = t * double(num_anchors - 1);
  int a0 = static_cast<int>(std::floor(s));
  if (a0 < 0) a0 = 0;
  if (a0 > num_anchors - 1) a0 = num_anchors - 1;
  const int a1 = a0 + 1 < num_anchors ? a0 + 1 : a0;
  const double d0 = s - double(a0);
  h.a0 = a0;
  h.w0 = 1.0 - (d0 < 0 ? -d0 : d0);
  if (h.w0 < 0) h.w0 = 0;
  h.a1 = a1;
  if (a1 != a0) {
    const double d1 = s - double(a1);
    h.w1 = 1.0 - (d1 < 0 ? -d1 : d1);
    if (h.w1 < 0) h.w1 = 0;
  } else {
    h.w1 = 0.0;
  }
  return h;
}

// Weight of anchor k under `h` (what the reduction writes for every k < K).
LC_HD double hat_weight_of(const HatPair& h, int k) {
  double w = 0.0;
  if (k == h.a0) w += h.w0;
  if (k == h.a1 && h.a1 != h.a0) w += h.w1;
  return w;
}

// Coefficient of S[k, c] in W[i, j] (bilinear, align corners): A[i, k] * B[j, c].
LC_HD double bilinear_weight(int64_t i, int64_t j, int64_t k, int64_t c, int64_t r, int64_t d,
                             int64_t p, int64_t q) {
  const Interp ri = interp_at(i, r, p);
  const Interp cj = interp_at(j, d, q);
  const double fu = double(ri.rem) / double(ri.den);
  const double fv = double(cj.rem) / double(cj.den);
  double a = 0.0, b = 0.0;
  if (k == ri.lo) a += 1.0 - fu;
  if (k == ri.hi) a += fu;
  if (c == cj.lo) b += 1.0 - fv;
  if (c == cj.hi) b += fv;
  return a * b;
}

// R[i, c] = (A S)[i, c] with S = w0 Theta[a0] + w1 Theta[a1], read straight from one task's seed
// bank theta_task (K, p, q). Anchors with weight 0 are skipped (as reference.mix_anchors does).
template <typename A>
LC_HD A row_interp_seed(const A* theta_task, int p, int q, int r, const HatPair& h, A w0, A w1,
                        int64_t i, int64_t c) {
  const Interp it = interp_at(i, r, p);
  const int64_t pq = int64_t(p) * q;
  const A* t0 = theta_task + int64_t(h.a0) * pq;
  A s_lo = w0 * t0[int64_t(it.lo) * q + c];
  if (it.rem == 0) {  // row i sits on a seed row (always when p == r): half the loads
    if (h.w1 != 0.0) s_lo += w1 * theta_task[int64_t(h.a1) * pq + int64_t(it.lo) * q + c];
    return s_lo;
  }
  const A f = interp_frac<A>(it);
  A s_hi = w0 * t0[int64_t(it.hi) * q + c];
  if (h.w1 != 0.0) {
    const A* t1 = theta_task + int64_t(h.a1) * pq;
    s_lo += w1 * t1[int64_t(it.lo) * q + c];
    s_hi += w1 * t1[int64_t(it.hi) * q + c];
  }
  return (A(1) - f) * s_lo + f * s_hi;
}

// ------------------------------------------------------------------------------------------
// Launch planning (host side; also unit-tested on the host)
// ------------------------------------------------------------------------------------------
LC_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
LC_HD int odd_ld(int n) { return (n % 2 == 0) ? n + 1 : n; }  // odd row pitch: no bank conflicts

// Shared memory of the forward / backward-dx kernel with `block_rows` rows per block. Both stage
// a (rows x r) and a (rows x q) buffer, one GEMM tile, and per-column interpolation tables.
LC_HD size_t rowwise_smem_bytes(int block_rows, int d, int r, int q, size_t acc_bytes) {
  size_t elems = size_t(block_rows) * (odd_ld(r) + odd_ld(q)) + size_t(kTileK) * (kTileN + 1) +
                 size_t(d);                        // column fractions
  size_t ints = size_t(d) + size_t(q) + 2 +        // column lo / first-output tables
                size_t(2 * block_rows) + 1;        // row tasks, distinct tasks, count
  size_t bytes = elems * acc_bytes + ints * sizeof(int);
  return (bytes + 15) / 16 * 16;
}

// Rows per block for the forward / backward-dx kernels: the largest of 64/32/16 that fits the
// device's shared memory, leaves room for two resident blocks per SM and still gives every SM
// two blocks; otherwise the largest that fits at all. 0 means nothing fits.
LC_HD int choose_block_rows(int64_t n, int d, int r, int q, size_t acc_bytes, size_t smem_optin,
                            size_t smem_per_sm, int num_sms) {
  const int cands[3] = {64, 32, 16};
  for (int k = 0; k < 3; ++k) {
    const int bm = cands[k];
    const size_t s = rowwise_smem_bytes(bm, d, r, q, acc_bytes);
    if (s > smem_optin) continue;
    if (2 * s <= smem_per_sm && ceil_div(n, bm) >= 2 * int64_t(num_sms)) return bm;
  }
  for (int k = 0; k < 3; ++k) {
    const int bm = cands[k];
    if (rowwise_smem_bytes(bm, d, r, q, acc_bytes) <= smem_optin) {
      // prefer smaller blocks when the grid would otherwise leave SMs idle
      int best = bm;
      for (int k2 = k + 1; k2 < 3; ++k2) {
        if (ceil_div(n, best) >= int64_t(num_sms)) break;
        if (rowwise_smem_bytes(cands[k2], d, r, q, acc_bytes) <= smem_optin) best = cands[k2];
      }
      return best;
    }
  }
  return 0;
}

// Token chunking of the dTheta/db partial sums: chunk c owns rows [c*rows, (c+1)*rows). At most
// kMaxChunks chunks and kMaxWorkspaceElems accumulator elements in the workspace.
struct ParamsPlan {
  int64_t rows_per_chunk;
  int num_chunks;
  int p_tiles;
  int q_tiles;
  int max_i_span;  // largest range of r-indices a seed-row tile gathers from
  int max_j_span;  // largest range of d-indices a seed-column tile gathers from
  int64_t workspace_elems;  // T * chunks * (p*q + d)
};

LC_HD int64_t span_for_tile(int64_t k0, int64_t tile, int64_t n_in, int64_t n_out) {
  // outputs o with lo_o in [k0 - 1, k0 + tile): exactly those the adjoint gather of the tile reads
  const int64_t lo_c = k0 > 0 ? k0 - 1 : 0;
  const int64_t hi_c = (k0 + tile < n_in) ? k0 + tile : n_in;
  return first_out_with_lo(hi_c, n_out, n_in) - first_out_with_lo(lo_c, n_out, n_in);
}

LC_HD ParamsPlan plan_params(int64_t n, int d, int r, int p, int q, int tasks) {
  ParamsPlan pl;
  pl.p_tiles = int(ceil_div(p, kParamsTileP));
  pl.q_tiles = int(ceil_div(q, kParamsTileQ));
  const int64_t per_chunk = int64_t(tasks) * (int64_t(p) * q + d);
  int64_t max_chunks = kMaxWorkspaceElems / (per_chunk > 0 ? per_chunk : 1);
  if (max_chunks > kMaxChunks) max_chunks = kMaxChunks;
  if (max_chunks < 1) max_chunks = 1;
  // at least 256 rows per chunk so each block amortises its tables, in whole row steps
  int64_t rows = ceil_div(n > 0 ? n : 1, max_chunks);
  if (rows < 256) rows = 256;
  rows = ceil_div(rows, kParamsRowStep) * kParamsRowStep;
  pl.rows_per_chunk = rows;
  int64_t chunks = ceil_div(n, rows);
  pl.num_chunks = int(chunks < 1 ? 1 : chunks);
  int mi = 0, mj = 0;
  for (int t = 0; t < pl.p_tiles; ++t) {
    const int64_t s = span_for_tile(int64_t(t) * kParamsTileP, kParamsTileP, p, r);
    if (s > mi) mi = int(s);
  }
  for (int t = 0; t < pl.q_tiles; ++t) {
    const int64_t s = span_for_tile(int64_t(t) * kParamsTileQ, kParamsTileQ, q, d);
    if (s > mj) mj = int(s);
  }
  pl.max_i_span = mi;
  pl.max_j_span = mj;
  pl.workspace_elems = int64_t(pl.num_chunks) * per_chunk;
  return pl;
}

// Shared memory of the dTheta partial kernel: the u and e tiles of one row step and the
// fraction tables of the r- and d-ranges the tile gathers from.
LC_HD size_t params_smem_bytes(const ParamsPlan& pl, size_t acc_bytes) {
  size_t elems = size_t(kParamsRowStep) * (kParamsTileP + kParamsTileQ) +
                 size_t(pl.max_i_span) + size_t(pl.max_j_span);
  size_t ints = size_t(kParamsTileP + 3) + size_t(kParamsTileQ + 3) + kParamsRowStep + 1;
  size_t bytes = elems * acc_bytes + ints * sizeof(int);
  return (bytes + 15) / 16 * 16;
}


// ==========================================================================================
// Tensor-core path (float16 / bfloat16, tc_kernels.cuh): layouts and launch planning, shared
// by the launchers, the SIMT emulation test and the host test. Every size here is in bytes of
// dynamic shared memory or in elements, computed the same way on the host and in the kernels.
// ==========================================================================================
constexpr int kTcThreads = 256;         // 8 warps per CTA on the GPU; the kernels take any multiple of 32
constexpr int kMmaTile = 16;            // WMMA m16n16k16: every tile edge below is a multiple of 16
constexpr int kFwdChunkCols = 64;       // forward: output columns per MMA + epilogue pass (4 accumulator tiles)
constexpr int kDxChunkCols = 128;       // dx: columns of dy staged in shared memory per pass
constexpr int kDxMaxSliceRows = 128;    // dx: rows of W per panel (8 accumulator tiles per warp)
constexpr int kParamsMaxMTiles = 8;     // params: accumulator tiles per warp (rows of dW per pass / 16)
constexpr int kParamsMaxChunkRows = 1024;
constexpr int kParamsStages = 4;        // params: dy stage buffers (cp.async copies of 3 steps in flight)
constexpr int64_t kTcMaxWorkspaceFloats = int64_t(1) << 25;  // 128 MiB of fp32 partials
constexpr size_t kSmemAlign = 128;

LC_HD int round_up_int(int a, int b) { return (a + b - 1) / b * b; }
LC_HD size_t align_smem(size_t v) { return (v + kSmemAlign - 1) / kSmemAlign * kSmemAlign; }

// What the planners need to know about the device (the launchers query it; tests pass H100/A100
// numbers): opt-in shared memory per block and per SM, and the number of SMs.
struct DeviceBudget {
  size_t smem_optin;
  size_t smem_per_sm;
  int num_sms;
  int max_blocks_per_sm = 2;  // the launchers lower it to the kernel's occupancy (its registers)
};

// Seed columns c that the output columns [j0, j0 + cols) interpolate from span at most this many
// (lo of the first to hi of the last): the buffer of one row of R = A S a panel build needs. The
// lower neighbours of two columns cols - 1 apart differ by at most floor((cols-1)(q-1)/(d-1)) + 1;
// hi adds one, and the count one more.
LC_HD int seed_span(int cols, int d, int q) {
  if (d <= 1 || q <= 1) return 1;
  const int64_t s = (int64_t(cols - 1) * (q - 1)) / (d - 1) + 3;
  return int(s < q ? s : q);
}

// Shared-memory layout of the forward and dx kernels. The CTA holds one panel of W (in the
// storage type T, 2 bytes) for the whole launch; each warp has a private region for its 16-row
// tile. Forward: the panel is W[:, j0 : j0 + panel] (r_pad x panel), the region holds the pooled
// tile z (16 x r_pad, T) and a float staging tile for the epilogue (16 x kFwdChunkCols). dx: the
// panel is W[i0 : i0 + panel, :] (panel x d_pad), the region holds a staged chunk of dy
// (16 x kc, T) or, after the last chunk, h = dy W^T (16 x panel, float). While a panel is built
// the regions hold one row of R = A S (floats). A 128-byte slot after the regions holds the
// block-wide task reduction.
struct TcLayout {
  int slices;      // panels of W (forward: column slices, dx: row slices)
  int panel;       // forward: columns per panel; dx: rows per panel (multiples of 16)
  int panel_rows;  // rows of the panel in shared memory (forward r_pad, dx panel)
  int r_pad;       // r rounded up to 16 (forward: the MMA's K)
  int d_pad;       // d rounded up to 16 (dx: the MMA's K)
  int kc;          // dx: staged dy columns per pass
  int wpitch;      // panel row pitch (elements): +8 keeps 16-byte aligned rows off one bank
  int zpitch;      // forward: z tile pitch; dx: dy stage pitch (elements)
  int spitch;      // float staging pitch (forward: kFwdChunkCols + 4, dx: panel + 4)
  size_t panel_bytes;
  size_t z_bytes;  // forward: offset of the float staging tile inside a warp's region
  size_t warp_bytes;
  size_t smem_bytes;
};

LC_HD TcLayout tc_forward_layout(int d, int r, int q, int slices, int warps) {
  TcLayout L;
  L.slices = slices;
  L.panel = round_up_int((d + slices - 1) / slices, kMmaTile);
  L.r_pad = round_up_int(r, kMmaTile);
  L.panel_rows = L.r_pad;
  L.d_pad = round_up_int(d, kMmaTile);
  L.kc = 0;
  L.wpitch = L.panel + 8;
  L.zpitch = L.r_pad + 8;
  L.spitch = kFwdChunkCols + 4;
  L.panel_bytes = align_smem(size_t(L.panel_rows) * L.wpitch * 2);
  L.z_bytes = align_smem(size_t(kMmaTile) * L.zpitch * 2);
  const size_t tile = L.z_bytes + align_smem(size_t(kMmaTile) * L.spitch * 4);
  const size_t build = align_smem(size_t(seed_span(L.panel, d, q)) * 4);
  L.warp_bytes = tile > build ? tile : build;
  L.smem_bytes = L.panel_bytes + size_t(warps) * L.warp_bytes + kSmemAlign;
  return L;
}

LC_HD TcLayout tc_dx_layout(int d, int r, int q, int slices, int warps) {
  TcLayout L;
  L.slices = slices;
  L.panel = round_up_int((r + slices - 1) / slices, kMmaTile);
  L.r_pad = round_up_int(r, kMmaTile);
  L.panel_rows = L.panel;
  L.d_pad = round_up_int(d, kMmaTile);
  L.kc = L.d_pad < kDxChunkCols ? L.d_pad : kDxChunkCols;
  L.wpitch = L.d_pad + 8;
  L.zpitch = L.kc + 8;
  L.spitch = L.panel + 4;
  L.panel_bytes = align_smem(size_t(L.panel_rows) * L.wpitch * 2);
  L.z_bytes = 0;
  const size_t stage_dy = align_smem(size_t(kMmaTile) * L.zpitch * 2);
  const size_t stage_h = align_smem(size_t(kMmaTile) * L.spitch * 4);
  const size_t build = align_smem(size_t(q) * 4);
  size_t w = stage_dy > stage_h ? stage_dy : stage_h;
  L.warp_bytes = w > build ? w : build;
  L.smem_bytes = L.panel_bytes + size_t(warps) * L.warp_bytes + kSmemAlign;
  return L;
}

// A persistent launch: grid = slices x groups CTAs. CTA b works on panel b % slices and on the
// contiguous range of 16-row tiles of group b / slices (tiles_per_group each), its warps taking
// the range's tiles round-robin. CTAs of one group are adjacent, so the other panels' re-reads of
// the same rows (slices > 1) come from L2.
struct TcRowPlan {
  TcLayout L;
  int warps;
  int groups;
  int ctas;
  int64_t tiles;
  int64_t tiles_per_group;
};

// Fewest panels whose layout fits the device's opt-in shared memory with `warps` warps per CTA
// (halving the warps when even panels of 16 do not fit: every warp has a region), then the grid:
// one or two CTAs per SM (as many as fit), never more groups than tiles for every warp. false:
// nothing fits (dx with d > ~13k on an H100: one 16-row panel of W alone exceeds shared memory).
LC_HD bool plan_tc_rows(bool dx, int64_t n, int d, int r, int q, const DeviceBudget& dev, int warps, TcRowPlan* out) {
  const int units = dx ? r : d;  // what the panels split
  const int s_min = dx ? int(ceil_div(r, kDxMaxSliceRows)) : 1;
  const int s_max = int(ceil_div(units, kMmaTile));
  TcLayout L;
  bool fits = false;
  for (; warps >= 1 && !fits; warps /= 2) {
    for (int s = s_min; s <= s_max; ++s) {
      L = dx ? tc_dx_layout(d, r, q, s, warps) : tc_forward_layout(d, r, q, s, warps);
      if (L.smem_bytes <= dev.smem_optin) {
        fits = true;
        break;
      }
      // a panel of 16 is the smallest; past it only fewer warps can help
      if (L.panel == kMmaTile) break;
    }
    if (fits) break;
  }
  if (!fits) return false;
  L.slices = int(ceil_div(units, L.panel));  // rounding the panel up may leave fewer, all non-empty
  TcRowPlan pl;
  pl.L = L;
  pl.warps = warps;
  pl.tiles = ceil_div(n, kMmaTile);
  size_t per_sm = dev.smem_per_sm / (L.smem_bytes + 1024);  // 1 KB per block is reserved by the hardware
  if (per_sm > size_t(dev.max_blocks_per_sm)) per_sm = size_t(dev.max_blocks_per_sm);
  if (per_sm > 2) per_sm = 2;
  if (per_sm < 1) per_sm = 1;
  int64_t groups = int64_t(dev.num_sms) * int64_t(per_sm) / L.slices;
  const int64_t need = ceil_div(pl.tiles, warps);
  if (groups > need) groups = need;
  if (groups < 1) groups = 1;
  pl.tiles_per_group = pl.tiles > 0 ? ceil_div(pl.tiles, groups) : 1;
  pl.groups = pl.tiles > 0 ? int(ceil_div(pl.tiles, pl.tiles_per_group)) : 0;
  pl.ctas = pl.groups * L.slices;
  *out = pl;
  return true;
}

// dTheta / db on tensor cores: token chunks, each one CTA, summing u = [z | 1 | 0]^T dy for
// every task present in the chunk into a fixed slot of fp32 partials (rows 0..r-1: dW, row r: db).
// A CTA pools chunk_rows tokens at a time into shared memory (z, ones column, zero padding to
// m_pad = r + 1 rounded up to 16), then walks the columns of dW in passes of 16 x warps (each warp
// one 16-column strip and up to kParamsMaxMTiles 16-row tiles of dW in registers) over the pooled
// tokens, 16 at a time, with dy staged through kParamsStages buffers (cp.async). A chunk longer than chunk_rows adds its
// further sub-chunks into the slot it wrote (same warp, same elements). Flags mark which
// (task, chunk) slots were written; the reduction skips the others.
struct TcParamsPlan {
  int m_pad;        // rows of a slot (r + 1 rounded up to 16)
  int d_pad;        // columns of a slot (d rounded up to 16)
  int zpitch;       // pooled-chunk pitch (elements)
  int spitch;       // dy stage pitch (elements): 16 x warps + 8
  int chunk_rows;   // tokens pooled at a time (multiple of 16)
  int chunks;       // CTAs of the partial kernel (0 when n == 0)
  int64_t rows_per_chunk;
  int64_t slot_floats;
  size_t z_bytes, stage_bytes, smem_bytes;
  size_t part_bytes, workspace_bytes;  // slots, then T x chunks int flags
};

LC_HD bool plan_tc_params(int64_t n, int d, int r, int T, const DeviceBudget& dev, int warps, TcParamsPlan* out) {
  TcParamsPlan pl;
  pl.m_pad = round_up_int(r + 1, kMmaTile);
  pl.d_pad = round_up_int(d, kMmaTile);
  pl.zpitch = pl.m_pad + 8;
  pl.spitch = kMmaTile * warps + 8;
  pl.stage_bytes = align_smem(size_t(kMmaTile) * pl.spitch * 2);
  const size_t fixed = size_t(kParamsStages) * pl.stage_bytes + kSmemAlign;
  if (dev.smem_optin < fixed + align_smem(size_t(kMmaTile) * pl.zpitch * 2)) return false;
  int64_t ch = int64_t((dev.smem_optin - fixed) / (size_t(pl.zpitch) * 2));
  ch = ch / kMmaTile * kMmaTile;
  if (ch > kParamsMaxChunkRows) ch = kParamsMaxChunkRows;
  while (ch >= kMmaTile && align_smem(size_t(ch) * pl.zpitch * 2) + fixed > dev.smem_optin) ch -= kMmaTile;
  if (ch < kMmaTile) return false;
  const int64_t n_pad = ceil_div(n > 0 ? n : 1, kMmaTile) * kMmaTile;
  if (ch > n_pad) ch = n_pad;  // a small batch needs no more
  pl.chunk_rows = int(ch);
  pl.z_bytes = align_smem(size_t(ch) * pl.zpitch * 2);
  pl.smem_bytes = pl.z_bytes + fixed;
  pl.slot_floats = int64_t(pl.m_pad) * pl.d_pad;
  if (n <= 0) {
    pl.chunks = 0;
    pl.rows_per_chunk = ch;
  } else {
    int64_t chunks = ceil_div(n, ch);
    const int64_t cap = 2 * int64_t(dev.num_sms > 0 ? dev.num_sms : 1);
    if (chunks > cap) chunks = cap;
    int64_t bound = kTcMaxWorkspaceFloats / (int64_t(T) * pl.slot_floats);
    if (bound < 1) bound = 1;
    if (chunks > bound) chunks = bound;
    pl.rows_per_chunk = ceil_div(ceil_div(n, chunks), kMmaTile) * kMmaTile;
    pl.chunks = int(ceil_div(n, pl.rows_per_chunk));
  }
  pl.part_bytes = size_t(T) * size_t(pl.chunks) * size_t(pl.slot_floats) * 4;
  pl.workspace_bytes = pl.part_bytes + align_smem(size_t(T) * size_t(pl.chunks) * 4);
  *out = pl;
  return true;
}

}  // namespace cuda
}  // namespace lc
