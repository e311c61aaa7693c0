// Plain-data arguments shared by the torch-facing driver (connector_cpu.cpp) and the per-ISA
// kernel translation units (connector_cpu_isa_*.cpp). Deliberately torch-free: the ISA units are
// compiled with `#pragma GCC target(...)`, and any inline function they pulled in from torch or
// the STL would be emitted with AVX instructions and could be picked by the linker for the
// default build too (an ODR trap that crashes on older CPUs).
#pragma once

#include <cstdint>

namespace lc {
namespace cpu {

// Rows per block: one block's x rows (64 x d x 4 B = 192 KiB at d = 768) stay in L2 between the
// down-sampling pass and the residual epilogue, so x is read from DRAM once.
constexpr int64_t kBlockRows = 64;
// Scratch/seed rows are padded to a multiple of 64 bytes so every ISA's vector width divides them
// and the GEMM micro-kernel never needs a column tail.
constexpr int64_t kPadBytes = 64;

// Integer-exact align-corners interpolation tables (reference.interp_positions): output index i
// mixes input lo[i] (weight wlo[i] = 1 - frac) and hi[i] (weight whi[i] = frac).
template <typename T>
struct Geometry {
  int64_t d, r, g, p, q;
  int64_t ppad, qpad;                 // p, q rounded up to kPadBytes / sizeof(T)
  const int32_t* rlo; const int32_t* rhi; const T* rwlo; const T* rwhi;   // r entries (rows <- p)
  const int32_t* clo; const int32_t* chi; const T* cwlo; const T* cwhi;   // d entries (cols <- q)
};

template <typename T>
struct ForwardArgs {
  Geometry<T> geo;
  const T* x;            // (N, d)
  T* y;                  // (N, d)
  const int64_t* ids;    // (N,) or nullptr (task 0)
  const T* seed;         // (T, p, qpad): (alpha / g) * sum_k h_k Theta_k, zero-padded columns
  const T* abias;        // (T, d): alpha * bias
};

template <typename T>
struct BackwardDxArgs {
  Geometry<T> geo;
  const T* dy;           // (N, d)
  T* dx;                 // (N, d)
  const int64_t* ids;
  const T* seed_bt;      // (T, d, ppad): (alpha / g) * B S^T, zero-padded columns
};

template <typename T>
struct BackwardParamsArgs {
  Geometry<T> geo;
  const T* x;
  const T* dy;
  const int64_t* ids;
};

// Scratch sizes (elements of T) each kernel needs per thread; the forward's V rows are followed
// by two vectors of slack because its epilogue loads a two-vector window at any seed column.
template <typename T>
inline int64_t forward_scratch(const Geometry<T>& g) {
  return kBlockRows * (g.p + g.qpad) + 2 * kPadBytes / static_cast<int64_t>(sizeof(T)) + g.r;
}
template <typename T>
inline int64_t backward_dx_scratch(const Geometry<T>& g) { return kBlockRows * g.ppad; }
template <typename T>
inline int64_t backward_params_scratch(const Geometry<T>& g) { return kBlockRows * g.p + g.r; }

// One ISA's kernels. Each processes rows [n0, n0 + nb) with nb <= kBlockRows.
template <typename T>
struct KernelTable {
  const char* isa;
  void (*forward_block)(const ForwardArgs<T>&, int64_t n0, int64_t nb, T* scratch);
  void (*backward_dx_block)(const BackwardDxArgs<T>&, int64_t n0, int64_t nb, T* scratch);
  // Accumulates into dwide (T, p, d) the raw sum_n (zsum_n A)^T dy_n and into dbias (T, d) the raw
  // sum_n dy_n; the driver applies B (d -> q), alpha / g, alpha and the hat weights afterwards.
  void (*backward_params_block)(const BackwardParamsArgs<T>&, int64_t n0, int64_t nb, T* scratch,
                                T* dwide, T* dbias);
};

#define LC_DECLARE_ISA(ns)                      \
  namespace ns {                                \
  const KernelTable<float>& table_f32();        \
  const KernelTable<double>& table_f64();       \
  }
LC_DECLARE_ISA(isa_default)
LC_DECLARE_ISA(isa_avx2)
LC_DECLARE_ISA(isa_avx512)
#undef LC_DECLARE_ISA

}  // namespace cpu
}  // namespace lc
