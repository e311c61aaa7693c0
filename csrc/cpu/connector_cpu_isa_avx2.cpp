// The fused CPU connector kernels compiled for AVX2 + FMA: 32-byte vectors, 6 x 2-vector register tile (12 of 16 ymm accumulators).
// Selected at run time by connector_cpu.cpp (cpuid); the source is connector_cpu_kernels.inc.
// Only torch-free headers, all included before the target pragma (see connector_cpu_args.h).
#include <cstdint>
#include <cstring>

#include "connector_cpu_args.h"

// GCC on x86 only: elsewhere (clang, other architectures) this unit compiles as baseline code,
// still correct, just not faster; on non-x86 it is never selected (no cpuid match).
#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
#pragma GCC target("avx2,fma")
#endif
#define LC_ISA_NS isa_avx2
#define LC_ISA_NAME "avx2"
#define LC_VB 32
#define LC_MR 6
#define LC_NV 2
#include "connector_cpu_kernels.inc"
