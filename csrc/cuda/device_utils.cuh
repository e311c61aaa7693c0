// Device helpers shared by the CUDA-core kernels (connector_kernels.cu) and the tensor-core
// kernels (tc_kernels.cuh): element conversions, NaN, 16-byte packs and the pooling sum.
// Storage types T: __half, __nv_bfloat16, float, double; accumulation type A: float or double.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "connector_kernels.cuh"

namespace lc {
namespace cuda {

// ------------------------------------------------------------------------------------------
// element conversion and 16-byte packs
// ------------------------------------------------------------------------------------------
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }

template <typename T>
struct Conv;
template <>
struct Conv<__half> {
  __device__ static __half from(float v) { return __float2half_rn(v); }
};
template <>
struct Conv<__nv_bfloat16> {
  __device__ static __nv_bfloat16 from(float v) { return __float2bfloat16_rn(v); }
};
template <>
struct Conv<float> {
  __device__ static float from(float v) { return v; }
};
template <>
struct Conv<double> {
  __device__ static double from(double v) { return v; }
};

template <typename A>
__device__ __forceinline__ A quiet_nan();
template <>
__device__ __forceinline__ float quiet_nan<float>() { return __int_as_float(0x7fc00000); }
template <>
__device__ __forceinline__ double quiet_nan<double>() {
  return __longlong_as_double(0x7ff8000000000000LL);
}

template <typename T>
struct Pack {
  static constexpr int kWidth = 16 / sizeof(T);
};

template <typename T, typename A>
__device__ __forceinline__ void load_pack(const T* p, A* out) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int k = 0; k < Pack<T>::kWidth; ++k) out[k] = to_acc(e[k]);
}

template <typename T, typename A>
__device__ __forceinline__ void store_pack(T* p, const A* in) {
  uint4 raw;
  T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int k = 0; k < Pack<T>::kWidth; ++k) e[k] = Conv<T>::from(in[k]);
  *reinterpret_cast<uint4*>(p) = raw;
}

// Mean over one pooling group of g channels starting at px (D of SPEC §2).
// Sum of one pooling group of g channels starting at px (16-byte packs when `packed`: the caller
// guarantees g % Pack<T>::kWidth == 0 and a 16-byte aligned px).
template <typename T, typename A>
__device__ __forceinline__ A group_sum(const T* px, int g, bool packed) {
  A s = A(0);
  if (packed) {
    constexpr int V = Pack<T>::kWidth;
    for (int v = 0; v < g; v += V) {
      A buf[V];
      load_pack<T, A>(px + v, buf);
#pragma unroll
      for (int k = 0; k < V; ++k) s += buf[k];
    }
  } else {
    for (int k = 0; k < g; ++k) s += to_acc(px[k]);
  }
  return s;
}

template <typename T, typename A>
__device__ __forceinline__ A group_mean(const T* px, int g, bool packed) {
  return div_rn(group_sum<T, A>(px, g, packed), A(g));
}

}  // namespace cuda
}  // namespace lc
