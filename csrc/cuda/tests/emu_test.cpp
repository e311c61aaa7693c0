// Runs the real CUDA kernels of connector_kernels.cu on the CPU under a SIMT emulator (one
// std::thread per CUDA thread, std::barrier for __syncthreads) and compares every output with
// the dense float64 connector of host_reference.h. Outputs and the workspace start NaN-poisoned,
// so an element a kernel forgets to write fails the test.
//
//   g++ -std=c++20 -O1 -pthread -DLC_SIMT_EMULATION -I csrc/cuda/tests/emu -I csrc \
//       csrc/cuda/tests/emu_test.cpp -o emu_test && ./emu_test
//
// What this cannot check: anything GPU-specific (memory model and races the barrier hides, real
// shared-memory limits, misaligned-vector faults, the fp16/bf16 intrinsics themselves, speed).
#ifndef LC_SIMT_EMULATION
#error "build emu_test.cpp with -DLC_SIMT_EMULATION -I csrc/cuda/tests/emu (see the header comment)"
#endif

#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "cuda/connector_kernels.cu"
#include "cuda/tests/host_reference.h"

namespace lc {
namespace cuda {
namespace {
// the dynamic shared memory every kernel declares as `extern __shared__ ... smem_raw[]`
constexpr size_t kEmuSmemBytes = size_t(1) << 20;
alignas(16) unsigned char smem_raw[kEmuSmemBytes];
}  // namespace
}  // namespace cuda
}  // namespace lc

using namespace lc::cuda;
using lc_ref::Dense;
using lc_ref::Geo;

static int g_failures = 0, g_checks = 0;

template <typename T>
T to_storage(double v);
template <>
double to_storage<double>(double v) { return v; }
template <>
float to_storage<float>(double v) { return float(v); }
template <>
__half to_storage<__half>(double v) { return __float2half_rn(float(v)); }
template <>
__nv_bfloat16 to_storage<__nv_bfloat16>(double v) { return __float2bfloat16_rn(float(v)); }

static double to_double(double v) { return v; }
static double to_double(float v) { return v; }
static double to_double(__half v) { return __half2float(v); }
static double to_double(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
struct Tol;  // per-element |got - want| <= atol * scale + rtol * |want|
template <>
struct Tol<double> {
  static constexpr double rtol = 1e-12, atol = 1e-12;
};
template <>
struct Tol<float> {
  static constexpr double rtol = 2e-6, atol = 2e-6;
};
template <>
struct Tol<__half> {  // two units of fp16 rounding of the output; fp32 math is far below that
  static constexpr double rtol = 1.0 / 1024, atol = 1e-5;
};
template <>
struct Tol<__nv_bfloat16> {
  static constexpr double rtol = 1.0 / 128, atol = 1e-5;
};

static void check_all(const char* what, const char* dtype, const Geo& g, int bm, const std::vector<double>& got,
                      const std::vector<double>& want, double rtol, double atol) {
  ++g_checks;
  double scale = 1.0;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  size_t bad = 0, first = 0;
  for (size_t k = 0; k < got.size(); ++k) {
    const double err = std::fabs(got[k] - want[k]);
    if (!(err <= atol * scale + rtol * std::fabs(want[k]))) {
      if (bad++ == 0) first = k;
    }
  }
  if (got.size() != want.size() || bad) {
    ++g_failures;
    std::printf("FAIL %s %s (n=%d d=%d r=%d p=%d q=%d K=%d T=%d, %d rows/block): %zu bad of %zu, first at %zu: %.17g vs %.17g\n",
                what, dtype, g.n, g.d, g.r, g.p, g.q, g.K, g.T, bm, bad, got.size(), first,
                got.empty() ? 0.0 : got[first], want.empty() ? 0.0 : want[first]);
  }
}

template <typename T, typename A>
static void run_case(const char* dtype, const Geo& geo, int bm, bool packed, bool with_ids, double t, double alpha,
                     uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd;
  const size_t nd_elems = size_t(geo.n) * geo.d;
  std::vector<T> x(nd_elems), dy(nd_elems);
  std::vector<double> x64(nd_elems), dy64(nd_elems);
  for (size_t k = 0; k < nd_elems; ++k) {
    x[k] = to_storage<T>(nd(rng));
    dy[k] = to_storage<T>(nd(rng));
    x64[k] = to_double(x[k]);
    dy64[k] = to_double(dy[k]);
  }
  const size_t kpq = size_t(geo.K) * geo.p * geo.q;
  std::vector<A> theta(size_t(geo.T) * kpq), bias(size_t(geo.T) * geo.d);
  std::vector<double> theta64(theta.size()), bias64(bias.size());
  for (size_t k = 0; k < theta.size(); ++k) theta64[k] = theta[k] = A(0.5 * nd(rng));
  for (size_t k = 0; k < bias.size(); ++k) bias64[k] = bias[k] = A(0.5 * nd(rng));
  std::vector<int64_t> ids(geo.n, 0);
  if (with_ids)
    for (int n = 0; n < geo.n; ++n) ids[n] = int64_t((n / 5 + (n % 3 == 0)) % geo.T);  // runs and switches
  const Dense want = lc_ref::dense_connector(geo, x64, dy64, theta64, bias64, ids, t, alpha);

  Geometry g{geo.n, geo.d, geo.r, geo.p, geo.q, geo.K, geo.T};
  const HatPair hat = hat_pair(t, geo.K);
  const int64_t* idp = with_ids ? ids.data() : nullptr;
  const size_t smem = rowwise_smem_bytes(bm, geo.d, geo.r, geo.q, sizeof(A));
  if (smem > kEmuSmemBytes) {
    std::printf("skip: %zu bytes of shared memory\n", smem);
    return;
  }
  const T nan_t = to_storage<T>(std::numeric_limits<double>::quiet_NaN());
  const dim3 grid(unsigned(ceil_div(geo.n, bm)));

  // forward
  std::vector<T> y(nd_elems, nan_t);
  lc_simt::launch(grid, kThreads, [&] {
    if (bm == 64) connector_forward_kernel<T, A, 4>(x.data(), theta.data(), bias.data(), idp, y.data(), g, hat, A(alpha), packed);
    else if (bm == 32) connector_forward_kernel<T, A, 2>(x.data(), theta.data(), bias.data(), idp, y.data(), g, hat, A(alpha), packed);
    else connector_forward_kernel<T, A, 1>(x.data(), theta.data(), bias.data(), idp, y.data(), g, hat, A(alpha), packed);
  });
  std::vector<double> y64(nd_elems);
  for (size_t k = 0; k < nd_elems; ++k) y64[k] = to_double(y[k]);
  check_all("forward y", dtype, geo, bm, y64, want.y, Tol<T>::rtol, Tol<T>::atol);

  // backward dx
  std::vector<T> dx(nd_elems, nan_t);
  lc_simt::launch(grid, kThreads, [&] {
    if (bm == 64) connector_backward_dx_kernel<T, A, 4>(dy.data(), theta.data(), idp, dx.data(), g, hat, A(alpha), packed);
    else if (bm == 32) connector_backward_dx_kernel<T, A, 2>(dy.data(), theta.data(), idp, dx.data(), g, hat, A(alpha), packed);
    else connector_backward_dx_kernel<T, A, 1>(dy.data(), theta.data(), idp, dx.data(), g, hat, A(alpha), packed);
  });
  std::vector<double> dx64(nd_elems);
  for (size_t k = 0; k < nd_elems; ++k) dx64[k] = to_double(dx[k]);
  check_all("backward dx", dtype, geo, bm, dx64, want.dx, Tol<T>::rtol, Tol<T>::atol);

  // backward params: partial sums into a NaN-poisoned workspace, then the reduction
  const ParamsPlan pl = plan_params(geo.n, geo.d, geo.r, geo.p, geo.q, geo.T);
  std::vector<A> ws(size_t(pl.workspace_elems), A(std::numeric_limits<double>::quiet_NaN()));
  A* part = ws.data();
  A* dbpart = part + size_t(geo.T) * pl.num_chunks * geo.p * geo.q;
  std::vector<A> dtheta(theta.size(), A(std::numeric_limits<double>::quiet_NaN()));
  std::vector<A> dbias(bias.size(), A(std::numeric_limits<double>::quiet_NaN()));
  if (params_smem_bytes(pl, sizeof(A)) > kEmuSmemBytes) {
    std::printf("skip params: shared memory\n");
    return;
  }
  lc_simt::launch(dim3(unsigned(pl.num_chunks * pl.p_tiles * pl.q_tiles), unsigned(geo.T)), kThreads, [&] {
    connector_params_partial_kernel<T, A>(x.data(), dy.data(), idp, part, dbpart, g, pl, packed);
  });
  lc_simt::launch(dim3(3), kThreads, [&] {  // 3 blocks: exercises the grid-stride loop
    connector_params_reduce_kernel<A>(part, dbpart, dtheta.data(), dbias.data(), g, pl.num_chunks, hat, A(alpha));
  });
  // the parameter gradients accumulate in A (fp32 for half types) from the rounded inputs
  const double prt = std::is_same<A, double>::value ? 1e-11 : 2e-5;
  check_all("dtheta", dtype, geo, bm, std::vector<double>(dtheta.begin(), dtheta.end()), want.dtheta, prt, prt);
  check_all("dbias", dtype, geo, bm, std::vector<double>(dbias.begin(), dbias.end()), want.db, prt, prt);
}

template <typename T, typename A>
static void run_invalid_ids(const char* dtype) {
  // ids outside [0, T) must give NaN rows (forward and dx) and leave the other rows right
  const Geo geo{20, 16, 4, 2, 8, 2, 2};
  std::vector<T> x(size_t(geo.n) * geo.d, to_storage<T>(1.0)), y(x.size(), to_storage<T>(0.0));
  std::vector<A> theta(size_t(geo.T) * geo.K * geo.p * geo.q, A(0.25)), bias(size_t(geo.T) * geo.d, A(0.5));
  std::vector<int64_t> ids(geo.n, 1);
  ids[3] = 2;
  ids[17] = -1;
  Geometry g{geo.n, geo.d, geo.r, geo.p, geo.q, geo.K, geo.T};
  lc_simt::launch(dim3(2), kThreads, [&] {
    connector_forward_kernel<T, A, 1>(x.data(), theta.data(), bias.data(), ids.data(), y.data(), g, hat_pair(0.5, 2), A(1.0), false);
  });
  ++g_checks;
  for (int n = 0; n < geo.n; ++n)
    for (int j = 0; j < geo.d; ++j) {
      const double v = to_double(y[size_t(n) * geo.d + j]);
      const bool should_nan = (n == 3 || n == 17);
      if (should_nan != std::isnan(v)) {
        ++g_failures;
        std::printf("FAIL invalid ids %s: row %d col %d = %g\n", dtype, n, j, v);
        return;
      }
    }
}

int main() {
  // (n, d, r, p, q, K, T)
  const Geo geos[] = {
      {37, 24, 8, 3, 7, 2, 1},      // odd sizes
      {5, 12, 1, 1, 1, 1, 1},       // r == p == q == 1
      {70, 96, 12, 12, 48, 2, 3},   // BERT ratios, three tasks
      {41, 30, 30, 7, 30, 4, 1},    // g == 1, q == d
      {1, 8, 8, 8, 8, 3, 1},        // identity interpolation, one row
      {33, 40, 5, 2, 40, 3, 2},     // g == 8, odd r, two tasks
      {600, 16, 4, 3, 9, 2, 2},     // three token chunks in the dTheta kernel
      {40, 320, 80, 70, 150, 2, 1}, // two p-tiles and two q-tiles of dS, three GEMM column passes
  };
  const double ts[] = {0.0, 0.35, 1.0};
  int which = 0;
  for (const Geo& geo : geos) {
    const double t = ts[which % 3];
    const bool ids = geo.T > 1;
    run_case<double, double>("float64", geo, 16, true, ids, t, 0.8, 100 + which);
    run_case<float, float>("float32", geo, 32, which % 2 == 0, ids, t, 1.3, 200 + which);
    ++which;
  }
  // every block height, packed and scalar paths, the half types
  const Geo mid{70, 96, 12, 12, 48, 2, 2};
  for (int bm : {16, 32, 64})
    for (bool packed : {true, false}) {
      run_case<double, double>("float64", mid, bm, packed, true, 0.35, 1.0, 300 + bm);
      run_case<__half, float>("float16", mid, bm, packed, true, 0.35, 1.0, 400 + bm);
      run_case<__nv_bfloat16, float>("bfloat16", mid, bm, packed, true, 0.35, 1.0, 500 + bm);
    }
  run_case<__half, float>("float16", geos[0], 16, true, false, 0.5, 1.0, 600);  // d % 8 != 0: scalar
  run_case<__nv_bfloat16, float>("bfloat16", geos[5], 32, true, true, 1.0, 1.0, 601);
  run_invalid_ids<float, float>("float32");
  run_invalid_ids<__nv_bfloat16, float>("bfloat16");
  std::printf("%d checks, %d failures\n", g_checks, g_failures);
  if (g_failures == 0) std::printf("EMULATION PASSED\n");
  return g_failures == 0 ? 0 : 1;
}
