// The fused CPU connector kernels compiled for baseline x86-64 (SSE2): 16-byte vectors, 4 x 2-vector register tile (8 of 16 xmm accumulators).
// Selected at run time by connector_cpu.cpp (cpuid); the source is connector_cpu_kernels.inc.
// Only torch-free headers, all included before the target pragma (see connector_cpu_args.h).
#include <cstdint>
#include <cstring>

#include "connector_cpu_args.h"


#define LC_ISA_NS isa_default
#define LC_ISA_NAME "default"
#define LC_VB 16
#define LC_MR 4
#define LC_NV 2
#include "connector_cpu_kernels.inc"
