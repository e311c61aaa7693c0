// Runs the real CUDA kernels of connector_kernels.cu on the CPU under a SIMT emulator (one fiber
// per CUDA thread, tests/emu/simt_emulation.h) and compares every output with the float64
// connector of host_reference.h. Outputs and the workspace start NaN-poisoned,
// so an element a kernel forgets to write fails the test.
//
//   g++ -std=c++20 -O2 -fno-strict-aliasing -DLC_SIMT_EMULATION -I csrc/cuda/tests/emu -I csrc \
//       csrc/cuda/tests/emu_test.cpp -o emu_test && ./emu_test [--quick]
//
// (-fno-strict-aliasing: the kernels move 16-byte packs through uint4 and read their elements
// through T*, as CUDA code does; nvcc accepts it, g++ may otherwise reorder such reads.)
//
// The tensor-core kernels (tc_kernels.cuh, float16/bfloat16) run with their warp-level matrix
// operations modelled by tests/emu/mma.h, on emulated devices (budgets of shared memory and a few
// SMs, so each persistent CTA streams many tiles), against the float64 connector with a per-element
// error bound derived from the kernels' roundings (16-bit operands, fp32 accumulation).
//
// What this cannot check: anything GPU-specific (memory model and races the barrier hides, real
// shared-memory limits, misaligned-vector faults, the fp16/bf16 intrinsics themselves, the tensor
// cores' internal accumulation order, speed).
#ifndef LC_SIMT_EMULATION
#error "build emu_test.cpp with -DLC_SIMT_EMULATION -I csrc/cuda/tests/emu (see the header comment)"
#endif

#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <random>
#include <vector>

#include "cuda/connector_kernels.cu"
#include "cuda/tests/host_reference.h"

namespace lc {
namespace cuda {
namespace {
// the dynamic shared memory every kernel declares as `extern __shared__ ... smem_raw[]`
constexpr size_t kEmuSmemBytes = size_t(1) << 20;
alignas(128) unsigned char smem_raw[kEmuSmemBytes];
}  // namespace
namespace tc {
// ... and the tensor-core kernels' `extern __shared__ ... tc_smem[]`: exactly the planned bytes
// are used, so an access past the plan's layout lands in the guard area checked after each launch
alignas(128) unsigned char tc_smem[size_t(1) << 20];
}  // namespace tc
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

// =============================================================================================
// tensor-core kernels (float16 / bfloat16)
// =============================================================================================
template <typename T>
struct Unit;  // unit roundoff of the storage type (round to nearest)
template <>
struct Unit<__half> {
  static constexpr double u = 1.0 / 2048;
};
template <>
struct Unit<__nv_bfloat16> {
  static constexpr double u = 1.0 / 256;
};
constexpr double kU32 = 1.0 / 16777216.0;  // fp32 unit roundoff, 2^-24
constexpr double kSlack = 1.0 / 1048576.0;  // 2^-20: subnormal roundings of fp16 operands and outputs

// Emulated devices: shared memory per block and per SM of an H100 and an A100, a tight one that
// forces panels and sub-chunks, and few SMs so every persistent CTA streams many tiles.
constexpr DeviceBudget kH100{227 * 1024, 228 * 1024, 3};
constexpr DeviceBudget kA100{163 * 1024, 164 * 1024, 2};
constexpr DeviceBudget kTight{64 * 1024, 64 * 1024, 1};  // 1 SM: 2 chunks, so sub-chunks

struct TcCase {
  const char* what;
  Geo geo;
  DeviceBudget dev;
  int warps;
  bool packed;  // false: force the scalar paths (misaligned or odd sizes take them anyway)
  double t, alpha;
};

// Worst |got - want| / bound over the elements (NaN, a missing write, fails); rows with skip[n]
// are left out (invalid task ids, checked separately).
static void check_bounded(const char* what, const char* dtype, const TcCase& c, const std::vector<double>& got,
                          const std::vector<double>& want, const std::vector<double>& bound) {
  ++g_checks;
  double worst = 0.0;
  size_t bad = 0, first = 0;
  for (size_t k = 0; k < got.size(); ++k) {
    const double err = std::fabs(got[k] - want[k]);
    const double ratio = err / bound[k];
    if (!(err <= bound[k])) {
      if (bad++ == 0) first = k;
    }
    if (ratio > worst || std::isnan(ratio)) worst = ratio;
  }
  const Geo& g = c.geo;
  std::printf("  %-9s %-8s %-34s n=%-5d d=%-4d r=%-3d p=%-3d q=%-4d K=%d T=%d warps=%d: worst err/bound %.3f%s\n", what,
              dtype, c.what, g.n, g.d, g.r, g.p, g.q, g.K, g.T, c.warps, worst, bad ? "  FAIL" : "");
  if (bad || got.size() != want.size()) {
    ++g_failures;
    std::printf("FAIL %s %s %s: %zu of %zu outside the bound, first at %zu: %.9g vs %.9g (bound %.3g)\n", what, dtype,
                c.what, bad, got.size(), first, got.empty() ? 0.0 : got[first], want.empty() ? 0.0 : want[first],
                bound.empty() ? 0.0 : bound[first]);
    if (getenv("LC_EMU_DEBUG"))
      for (size_t k = 0; k < 16 && k < got.size(); ++k) std::printf("    [%zu] got %.6g want %.6g\n", k, got[k], want[k]);
  }
}

template <typename T>
static double to_d(T v) {
  return to_double(v);
}

// One geometry through the three tensor-core launches (forward, dx, params partial + reduce).
template <typename T>
static void run_tc_case(const char* dtype, const TcCase& c, uint64_t seed, bool determinism) {
  const Geo& geo = c.geo;
  const double u = Unit<T>::u;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd;
  const size_t ne = size_t(geo.n) * geo.d;
  std::vector<T> x(ne), dy(ne);
  std::vector<double> x64(ne), dy64(ne), xabs(ne), dyabs(ne);
  for (size_t k = 0; k < ne; ++k) {
    x[k] = to_storage<T>(nd(rng));
    dy[k] = to_storage<T>(nd(rng));
    x64[k] = to_double(x[k]);
    dy64[k] = to_double(dy[k]);
    xabs[k] = std::fabs(x64[k]);
    dyabs[k] = std::fabs(dy64[k]);
  }
  const size_t kpq = size_t(geo.K) * geo.p * geo.q;
  std::vector<float> theta(size_t(geo.T) * kpq), bias(size_t(geo.T) * geo.d);
  std::vector<double> th64(theta.size()), thabs(theta.size()), b64(bias.size()), zeros(bias.size(), 0.0);
  for (size_t k = 0; k < theta.size(); ++k) {
    theta[k] = float(0.5 * nd(rng));
    th64[k] = theta[k];
    thabs[k] = std::fabs(th64[k]);
  }
  for (size_t k = 0; k < bias.size(); ++k) b64[k] = bias[k] = float(0.5 * nd(rng));
  std::vector<int64_t> ids(geo.n, 0);
  if (geo.T > 1)  // runs of rows per task, switching inside tiles, plus isolated rows
    for (int n = 0; n < geo.n; ++n) ids[n] = int64_t((n / 7 + (n % 5 == 0)) % geo.T);
  const lc_ref::Fast want = lc_ref::fast_connector(geo, x64, dy64, th64, b64, ids, c.t, c.alpha);
  // the same products on absolute values: the scale every rounding error is relative to
  const lc_ref::Fast ab = lc_ref::fast_connector(geo, xabs, dyabs, thabs, zeros, ids, c.t, 1.0);
  const int64_t* idp = geo.T > 1 ? ids.data() : nullptr;
  const Geometry g{geo.n, geo.d, geo.r, geo.p, geo.q, geo.K, geo.T};
  const HatPair hat = hat_pair(c.t, geo.K);
  const unsigned threads = unsigned(32 * c.warps);
  const int gs = geo.d / geo.r;
  const double aa = std::fabs(c.alpha);
  const T nan_t = to_storage<T>(std::numeric_limits<double>::quiet_NaN());
  auto a16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  // the launchers' rule for 16-byte packs (a misaligned 16-byte load faults here as on the GPU)
  const bool packed = c.packed && geo.d % 8 == 0 && a16(x.data()) && a16(dy.data()) && a16(bias.data());

  // forward
  TcRowPlan fp;
  if (!plan_tc_rows(false, geo.n, geo.d, geo.r, geo.q, c.dev, c.warps, &fp)) {
    ++g_failures;
    std::printf("FAIL %s: the forward does not fit the emulated device\n", c.what);
    return;
  }
  std::vector<T> y(ne, nan_t);
  const bool packed_fwd = packed && a16(y.data());
  if (fp.ctas > 0)
    lc_simt::launch(dim3(unsigned(fp.ctas)), threads, [&] {
      tc::tc_forward_kernel<T>(x.data(), theta.data(), bias.data(), idp, y.data(), g, fp, hat, float(c.alpha), packed_fwd);
    });
  {
    std::vector<double> got(ne), bound(ne);
    const double e_op = 2 * u + u * u + (gs + 16) * kU32, e_acc = (fp.L.r_pad + 4) * kU32;
    for (size_t k = 0; k < ne; ++k) {
      const size_t n = k / geo.d, j = k % geo.d;
      const double S = ab.zw[k], b = std::fabs(b64[size_t(ids[n]) * geo.d + j]);
      got[k] = to_double(y[k]);
      bound[k] = aa * S * (e_op + e_acc) + 4 * kU32 * (xabs[k] + aa * (S + b)) + u * std::fabs(want.y[k]) +
                 kSlack * (1 + aa * S);
    }
    check_bounded("forward", dtype, c, got, want.y, bound);
  }

  // backward dx
  TcRowPlan xp;
  if (!plan_tc_rows(true, geo.n, geo.d, geo.r, geo.q, c.dev, c.warps, &xp)) {
    ++g_failures;
    std::printf("FAIL %s: dx does not fit the emulated device\n", c.what);
    return;
  }
  std::printf("  %-9s %-8s %-34s forward %d panel(s) of %d cols, %d CTAs x %d warps, %zu B smem; dx %d panel(s) of %d rows, "
              "%d CTAs, %zu B\n", "plan", dtype, c.what, fp.L.slices, fp.L.panel, fp.ctas, fp.warps, fp.L.smem_bytes,
              xp.L.slices, xp.L.panel, xp.ctas, xp.L.smem_bytes);
  std::vector<T> dx(ne, nan_t);
  const bool packed_dx = packed && a16(dx.data());
  if (xp.ctas > 0)
    lc_simt::launch(dim3(unsigned(xp.ctas)), threads, [&] {
      tc::tc_backward_dx_kernel<T>(dy.data(), theta.data(), idp, dx.data(), g, xp, hat, float(c.alpha), packed_dx);
    });
  {
    std::vector<double> got(ne), bound(ne);
    const double e = u + 16 * kU32 + (xp.L.d_pad + 16) * kU32;
    for (size_t k = 0; k < ne; ++k) {
      const size_t n = k / geo.d, j = k % geo.d;
      const double H = ab.h[n * geo.r + j / gs] / gs;
      got[k] = to_double(dx[k]);
      bound[k] = aa * H * e + 4 * kU32 * (dyabs[k] + aa * H) + u * std::fabs(want.dx[k]) + kSlack * (1 + aa * H);
    }
    check_bounded("dx", dtype, c, got, want.dx, bound);
  }

  // backward params: partials into a poisoned workspace, then the reduction (3 blocks: grid-stride)
  TcParamsPlan pp;
  if (!plan_tc_params(geo.n, geo.d, geo.r, geo.T, c.dev, c.warps, &pp)) {
    ++g_failures;
    std::printf("FAIL %s: params do not fit the emulated device\n", c.what);
    return;
  }
  auto run_params = [&](float poison, std::vector<float>& dtheta, std::vector<float>& dbias) {
    std::vector<float> ws(pp.workspace_bytes / 4 + 64, poison);
    float* part = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(ws.data()) + 127) & ~uintptr_t(127));
    int* flags = reinterpret_cast<int*>(reinterpret_cast<unsigned char*>(part) + pp.part_bytes);
    dtheta.assign(theta.size(), std::numeric_limits<float>::quiet_NaN());
    dbias.assign(bias.size(), std::numeric_limits<float>::quiet_NaN());
    if (pp.chunks > 0)
      lc_simt::launch(dim3(unsigned(pp.chunks)), threads, [&] {
        tc::tc_params_partial_kernel<T>(x.data(), dy.data(), idp, part, flags, g, pp, packed);
      });
    lc_simt::launch(dim3(3), 256, [&] {
      tc::tc_params_reduce_kernel(part, flags, dtheta.data(), dbias.data(), g, pp, hat, float(c.alpha));
    });
  };
  std::vector<float> dtheta, dbias;
  run_params(std::numeric_limits<float>::quiet_NaN(), dtheta, dbias);
  {
    const double e = u + (gs + 16) * kU32 + (geo.n + 4 * pp.chunks + 64) * kU32;
    std::vector<double> got(dtheta.begin(), dtheta.end()), bound(dtheta.size());
    const size_t pq = size_t(geo.p) * geo.q;
    for (size_t k = 0; k < dtheta.size(); ++k) {
      const size_t tau = k / kpq, a = (k / pq) % geo.K, e2 = k % pq;
      const double D = ab.ds[tau * pq + e2] * lc_ref::ref_hat(c.t, geo.K, int(a));
      bound[k] = aa * D * e + kSlack * (1 + aa * D);
    }
    check_bounded("dtheta", dtype, c, got, want.dtheta, bound);
    std::vector<double> gotb(dbias.begin(), dbias.end()), boundb(dbias.size());
    for (size_t k = 0; k < dbias.size(); ++k) boundb[k] = aa * ab.db[k] * (geo.n + 4 * pp.chunks + 64) * kU32 + kSlack;
    check_bounded("dbias", dtype, c, gotb, want.db, boundb);
  }
  if (determinism) {  // a second run over a differently poisoned workspace: identical bits
    std::vector<float> dtheta2, dbias2;
    run_params(1e30f, dtheta2, dbias2);
    ++g_checks;
    const bool same = std::memcmp(dtheta.data(), dtheta2.data(), dtheta.size() * 4) == 0 &&
                      std::memcmp(dbias.data(), dbias2.data(), dbias.size() * 4) == 0;
    std::printf("  %-9s %-8s %-34s chunks=%d rows/chunk=%lld pooled/step=%d: %s\n", "determin.", dtype, c.what,
                pp.chunks, (long long)pp.rows_per_chunk, pp.chunk_rows, same ? "bitwise identical" : "DIFFERENT  FAIL");
    if (!same) ++g_failures;
  }
}

// Rows whose task id is outside [0, T) get NaN (forward, dx) and leave the others right.
template <typename T>
static void run_tc_invalid_ids(const char* dtype) {
  const Geo geo{40, 64, 8, 4, 32, 2, 2};
  std::mt19937_64 rng(77);
  std::normal_distribution<double> nd;
  std::vector<T> x(size_t(geo.n) * geo.d), y(x.size(), to_storage<T>(0.0)), dx(x.size(), to_storage<T>(0.0));
  for (auto& v : x) v = to_storage<T>(nd(rng));
  std::vector<float> theta(size_t(geo.T) * geo.K * geo.p * geo.q, 0.25f), bias(size_t(geo.T) * geo.d, 0.5f);
  std::vector<int64_t> ids(geo.n, 1);
  ids[3] = 2;
  ids[17] = -1;
  ids[33] = 0;
  const Geometry g{geo.n, geo.d, geo.r, geo.p, geo.q, geo.K, geo.T};
  TcRowPlan fp, xp;
  plan_tc_rows(false, geo.n, geo.d, geo.r, geo.q, kH100, 2, &fp);
  plan_tc_rows(true, geo.n, geo.d, geo.r, geo.q, kH100, 2, &xp);
  lc_simt::launch(dim3(unsigned(fp.ctas)), 64, [&] {
    tc::tc_forward_kernel<T>(x.data(), theta.data(), bias.data(), ids.data(), y.data(), g, fp, hat_pair(0.5, 2), 1.f, true);
  });
  lc_simt::launch(dim3(unsigned(xp.ctas)), 64, [&] {
    tc::tc_backward_dx_kernel<T>(x.data(), theta.data(), ids.data(), dx.data(), g, xp, hat_pair(0.5, 2), 1.f, true);
  });
  ++g_checks;
  for (int n = 0; n < geo.n; ++n)
    for (int j = 0; j < geo.d; ++j) {
      const bool should_nan = (n == 3 || n == 17);
      for (const auto* out : {&y, &dx}) {
        const double v = to_double((*out)[size_t(n) * geo.d + j]);
        if (should_nan != std::isnan(v)) {
          ++g_failures;
          std::printf("FAIL tc invalid ids %s: row %d col %d = %g\n", dtype, n, j, v);
          return;
        }
      }
    }
}

static void run_tc_suite(bool quick) {
  // (n, d, r, p, q, K, T): SPEC's defaults r = d/8, p = r, q = d/2 at d = 384 ... 4096, and odd shapes
  const TcCase small[] = {
      {"g=3 p=3 q=5, N=17", {17, 384, 128, 3, 5, 2, 1}, kH100, 4, true, 0.35, 0.8},
      {"r=5 d=40 (padding), 3 tasks", {33, 40, 5, 2, 40, 3, 3}, kH100, 2, true, 1.0, 1.1},
      {"r=5 d=30 g=6, scalar paths", {23, 30, 5, 3, 7, 2, 1}, kH100, 2, true, 0.0, 0.9},
  };
  const TcCase full[] = {
      {"SPEC d=384, N=4097", {4097, 384, 48, 48, 192, 2, 1}, kH100, 4, true, 0.5, 1.0},
      {"SPEC d=768, N=1", {1, 768, 96, 96, 384, 2, 1}, kH100, 8, true, 0.3, 1.0},
      {"SPEC d=768, N=17, A100 (2 panels)", {17, 768, 96, 96, 384, 2, 1}, kA100, 4, true, 0.3, 1.0},
      {"SPEC d=768, N=4097, 3 tasks", {4097, 768, 96, 96, 384, 2, 3}, kH100, 4, true, 0.7, 0.8},
      {"g=3 K=3 d=768, N=17, 2 tasks", {17, 768, 256, 5, 7, 3, 2}, kH100, 4, true, 0.6, 1.0},
      {"SPEC d=1024, N=17", {17, 1024, 128, 128, 512, 2, 1}, kH100, 4, true, 0.25, 1.0},
      {"SPEC d=1024, N=1, scalar paths", {1, 1024, 128, 128, 512, 2, 1}, kH100, 4, false, 0.25, 1.0},
      {"SPEC d=4096, N=17", {17, 4096, 512, 512, 2048, 2, 1}, kH100, 4, true, 0.9, 1.0},
      {"SPEC d=4096, N=1", {1, 4096, 512, 512, 2048, 2, 1}, kH100, 4, true, 0.1, 1.0},
      {"tight smem: sub-chunks (RMW slots)", {2000, 384, 48, 48, 192, 2, 2}, kTight, 4, true, 0.4, 1.2},
  };
  std::printf("tensor-core kernels under the WMMA emulation (err/bound <= 1 passes):\n");
  uint64_t seed = 900;
  for (const TcCase& c : small) {
    run_tc_case<__half>("float16", c, seed++, true);
    run_tc_case<__nv_bfloat16>("bfloat16", c, seed++, true);
  }
  run_tc_invalid_ids<__half>("float16");
  run_tc_invalid_ids<__nv_bfloat16>("bfloat16");
  if (quick) return;
  for (const TcCase& c : full) {
    const bool det = c.geo.n >= 2000;
    run_tc_case<__half>("float16", c, seed++, det);
    run_tc_case<__nv_bfloat16>("bfloat16", c, seed++, det);
  }
}


int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress lines as they come (CI logs, timeouts)
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";  // the tensor-core mutation test
  if (quick) {
    run_tc_suite(true);
    std::printf("%d checks, %d failures\n", g_checks, g_failures);
    if (g_failures == 0) std::printf("EMULATION PASSED\n");
    return g_failures == 0 ? 0 : 1;
  }
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
  // every block height, packed and scalar paths (the CUDA-core kernels serve float32 / float64;
  // float16 / bfloat16 run on the tensor-core kernels below)
  const Geo mid{70, 96, 12, 12, 48, 2, 2};
  for (int bm : {16, 32, 64})
    for (bool packed : {true, false}) {
      run_case<double, double>("float64", mid, bm, packed, true, 0.35, 1.0, 300 + bm);
      run_case<float, float>("float32", mid, bm, packed, true, 0.35, 1.0, 400 + bm);
    }
  run_invalid_ids<float, float>("float32");
  run_invalid_ids<double, double>("float64");
  std::printf("CUDA-core kernels (float32 / float64): %d checks, %d failures\n", g_checks, g_failures);
  run_tc_suite(false);
  std::printf("%d checks, %d failures\n", g_checks, g_failures);
  if (g_failures == 0) std::printf("EMULATION PASSED\n");
  return g_failures == 0 ? 0 : 1;
}
