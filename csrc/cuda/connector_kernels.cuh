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
  // 32-bit division when it is exact to use (always for real geometries: d < 65536); the 64-bit
  // one costs several times more on the GPU and runs per generated tile element.
  const int64_t lo = (num <= 0xffffffffLL && den <= 0xffffffffLL)
                         ? int64_t(uint32_t(num) / uint32_t(den))
                         : num / den;
  it.lo = static_cast<int>(lo);
  it.hi = static_cast<int>(lo + 1 < n_in - 1 ? lo + 1 : n_in - 1);
  it.rem = num - lo * den;
  it.den = den;
  return it;
}

// IEEE round-to-nearest division: the extension is built with --use_fast_math, which would turn a
// plain float '/' into an approximation and break agreement with the reference's fractions.
LC_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
LC_HD double div_rn(double a, double b) { return a / b; }

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
  const int64_t o = (num + (n_in - 2)) / (n_in - 1);
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

}  // namespace cuda
}  // namespace lc
