// The fused CPU connector kernels compiled for AVX-512: 64-byte vectors, 8 x 3-vector register tile
// (24 of 32 zmm accumulators). 8 rows divide the 64-row blocks and 48 columns the default 384-, 768-
// and 96-wide panels, so no tile is partial at the defaults: the forward GEMM measured 8 % faster
// than with 6 x 4 (0.97 vs 1.06 ms at N = 4096, d = 768, p = 96, q = 384 on 2 Ice Lake cores).
// Selected at run time by connector_cpu.cpp (cpuid); the source is connector_cpu_kernels.inc.
// Only torch-free headers, all included before the target pragma (see connector_cpu_args.h).
#include <cstdint>
#include <cstring>

#include "connector_cpu_args.h"

// GCC on x86 only: elsewhere (clang, other architectures) this unit compiles as baseline code,
// still correct, just not faster; on non-x86 it is never selected (no cpuid match).
#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")
#endif
#define LC_ISA_NS isa_avx512
#define LC_ISA_NAME "avx512"
#define LC_VB 64
#define LC_MR 8
#define LC_NV 3
#include "connector_cpu_kernels.inc"
