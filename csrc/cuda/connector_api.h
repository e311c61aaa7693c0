// The plain C++ API of the CUDA connector kernels (no torch): raw device pointers, sizes, a dtype
// tag and a stream. binding.cpp is the only caller; it validates tensors and turns a non-zero
// Status into a Python exception. Every pointer is a device pointer to contiguous memory:
//
//   x, y, dy, dx        (n, d)        in `dtype` (float16 / bfloat16 / float32 / float64)
//   theta, dtheta       (T, K, p, q)  compute type: double for float64 x, else float
//   bias, dbias         (T, d)        compute type
//   ids                 (n,) int64, or nullptr (then T must be 1)
//
// Rows whose task id is outside [0, T) get NaN outputs (forward, dx) and are left out of the
// parameter gradients; lc_kernels.ops validates ids before calling, so this only guards memory.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace lc {
namespace cuda {

enum class DType : int { kFloat16 = 0, kBFloat16 = 1, kFloat32 = 2, kFloat64 = 3 };

struct Geometry {
  int64_t n;  // tokens (rows of x)
  int d;      // hidden size
  int r;      // connector rank, d % r == 0
  int p;      // seed rows, 1 <= p <= r
  int q;      // seed columns, 1 <= q <= d
  int K;      // anchors
  int T;      // stacked tasks
};

// code == 0 on success; otherwise message says what failed (a CUDA error names the launch).
struct Status {
  int code;
  char message[512];
};

Status connector_forward(DType dtype, const void* x, const void* theta, const void* bias,
                         const int64_t* ids, void* y, Geometry g, double t, double alpha,
                         cudaStream_t stream);

Status connector_backward_dx(DType dtype, const void* dy, const void* theta, const int64_t* ids,
                             void* dx, Geometry g, double t, double alpha, cudaStream_t stream);

// Bytes of scratch memory connector_backward_params needs for this geometry (device memory the
// caller allocates, e.g. from the torch caching allocator; no alignment beyond 16 bytes needed).
size_t connector_backward_params_workspace_bytes(DType dtype, Geometry g);

// Two launches: token-split partial sums into `workspace`, then a fixed-order reduction that
// applies alpha and the hat weights. No atomics: bit-identical results run to run.
Status connector_backward_params(DType dtype, const void* x, const void* dy, const int64_t* ids,
                                 void* dtheta, void* dbias, void* workspace,
                                 size_t workspace_bytes, Geometry g, double t, double alpha,
                                 cudaStream_t stream);

}  // namespace cuda
}  // namespace lc
