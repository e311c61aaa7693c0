// SIMT emulation stand-in for the CUDA toolkit's <mma.h>: the warp-level matrix operations (WMMA,
// m16n16k16, half/bfloat16 operands, float accumulators) the tensor-core kernels of
// tc_kernels.cuh use, as whole-tile operations of the emulated warp.
//
// Model. A 16x16 tile is shared by the 32 lanes of a warp, each lane holding a fixed part, as on
// the GPU (where the part is 8 elements of the accumulator). Here lane L owns the accumulator
// elements (i, j) with j == L % 16 and i % 2 == L / 16; the union over the warp is the whole tile:
//   load_matrix_sync(matrix_a)   each lane reads the rows of A its outputs need (i % 2 == L / 16)
//   load_matrix_sync(matrix_b)   each lane reads the column of B its outputs need (j == L % 16)
//   mma_sync(d, a, b, c)         d = a b + c on the lane's elements: operands are the stored
//                                16-bit values (exact in float), products and sums in float (fma)
//   load/store_matrix_sync(acc), fill_fragment: the lane's elements
// So a tile is only right when all 32 lanes execute the operation (as WMMA requires), and a
// result is only visible to other lanes through memory after a __syncwarp(), as on the GPU.
//
// Checked here like the hardware requires (a violation aborts the emulation with a message, where
// the GPU would fault or silently misbehave): the tile pointer is 256-bit (32-byte) aligned and the
// leading dimension is a multiple of 16 bytes.
//
// Not modelled: the tensor cores' internal accumulation order and rounding (the GPU may add the
// 16 products of a dot product in another order with wider intermediate precision), so results
// agree with the GPU to fp32 accumulation error, not bitwise.
#pragma once

#include <cstdio>
#include <cstdlib>

#include "simt_emulation.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

namespace emu {
inline float to_float(__half v) { return __half2float(v); }
inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

[[noreturn]] inline void fail(const char* op, const char* what, const void* p, unsigned ldm) {
  std::fprintf(stderr, "WMMA emulation: %s: %s (pointer %p, ldm %u, thread %u of block %u)\n", op, what, p, ldm,
               lc_simt::thread_idx.x, lc_simt::block_idx.x);
  std::abort();
}

inline void check(const void* p, unsigned ldm, size_t elem_bytes, const char* op) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) fail(op, "tile pointer is not 256-bit aligned", p, ldm);
  if ((size_t(ldm) * elem_bytes) % 16 != 0) fail(op, "leading dimension is not a multiple of 16 bytes", p, ldm);
}

inline int lane() { return int(lc_simt::thread_idx.x % 32); }
inline int own_col() { return lane() % 16; }
inline int own_row0() { return lane() / 16; }  // owned rows: own_row0(), +2, ..., 14 + own_row0()
template <typename L>
constexpr bool is_row_major() {
  return std::is_same<L, row_major>::value;
}
}  // namespace emu

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulator models the m16n16k16 shape only");
  float v[16][16];
};

template <typename T, typename L>
inline void load_matrix_sync(fragment<matrix_a, 16, 16, 16, T, L>& a, const T* p, unsigned ldm) {
  emu::check(p, ldm, sizeof(T), "load_matrix_sync(matrix_a)");
  for (int i = emu::own_row0(); i < 16; i += 2)
    for (int k = 0; k < 16; ++k)
      a.v[i][k] = emu::to_float(emu::is_row_major<L>() ? p[size_t(i) * ldm + k] : p[size_t(k) * ldm + i]);
}

template <typename T, typename L>
inline void load_matrix_sync(fragment<matrix_b, 16, 16, 16, T, L>& b, const T* p, unsigned ldm) {
  emu::check(p, ldm, sizeof(T), "load_matrix_sync(matrix_b)");
  const int j = emu::own_col();
  for (int k = 0; k < 16; ++k)
    b.v[k][j] = emu::to_float(emu::is_row_major<L>() ? p[size_t(k) * ldm + j] : p[size_t(j) * ldm + k]);
}

inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& c, const float* p, unsigned ldm,
                             layout_t layout) {
  emu::check(p, ldm, sizeof(float), "load_matrix_sync(accumulator)");
  const int j = emu::own_col();
  for (int i = emu::own_row0(); i < 16; i += 2)
    c.v[i][j] = layout == mem_row_major ? p[size_t(i) * ldm + j] : p[size_t(j) * ldm + i];
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& c, unsigned ldm,
                              layout_t layout) {
  emu::check(p, ldm, sizeof(float), "store_matrix_sync");
  const int j = emu::own_col();
  for (int i = emu::own_row0(); i < 16; i += 2)
    (layout == mem_row_major ? p[size_t(i) * ldm + j] : p[size_t(j) * ldm + i]) = c.v[i][j];
}

inline void fill_fragment(fragment<accumulator, 16, 16, 16, float>& c, float value) {
  const int j = emu::own_col();
  for (int i = emu::own_row0(); i < 16; i += 2) c.v[i][j] = value;
}

template <typename T, typename LA, typename LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, T, LB>& b,
                     const fragment<accumulator, 16, 16, 16, float>& c) {
  const int j = emu::own_col();
  for (int i = emu::own_row0(); i < 16; i += 2) {
    float s = c.v[i][j];
    for (int k = 0; k < 16; ++k) s = std::fma(a.v[i][k], b.v[k][j], s);
    d.v[i][j] = s;
  }
}

}  // namespace wmma
}  // namespace nvcuda
