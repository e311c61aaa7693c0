// The "cpu" backend of the LayerConnect connector: torch-facing driver of the fused CPU kernels.
//
// Registers on lc_kernels._C (normalised calling convention of lc_kernels/backends.py):
//   forward_cpu(x, theta, bias, ids, t, r, alpha, out=None)                 -> y   (out may be x)
//   backward_dx_cpu(dy, theta, ids, t, r, alpha, out=None)                  -> dx
//   backward_params_cpu(x, dy, theta, ids, t, r, alpha, out_dtheta=None, out_dbias=None)
//                                                                           -> (dtheta, dbias)
//   cpu_isa() / cpu_set_isa(name)   which instruction-set variant runs (tests force each one;
//                                   LC_CPU_ISA=default|avx2|avx512 picks one at start-up)
// x/dy (N, d) float32 or float64, theta (T, K, p, q) and bias (T, d) in the same dtype, ids (N,)
// int64 or None (then T == 1). Accumulation is in the input dtype (float32 or float64).
//
// Per call, O(T K p q + T d p) set-up work here: hat weights, the mixed seed
// S_tau = (alpha/g) sum_k h_k Theta_tau,k (zero-padded; for dx, M_tau = B S_tau^T, d x p) and
// integer-exact interpolation tables. The O(N) work runs in connector_cpu_kernels.inc (tiling and
// memory traffic are described there), parallelised with at::parallel_for over 64-row blocks
// (forward, dx) or over fixed row chunks (params: per-chunk partial sums of (zsum A)^T dy, p x d,
// reduced in chunk order, so bitwise deterministic for any thread count, then multiplied by the
// sparse B once). Nothing N-sized is allocated besides the output.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "connector_cpu_args.h"

namespace lc {
namespace cpu {
namespace {

// ------------------------------------------------------------------------------------------------
// instruction-set dispatch
// ------------------------------------------------------------------------------------------------

enum class Isa : int { kDefault = 0, kAvx2 = 1, kAvx512 = 2 };

bool isa_supported(Isa isa) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  switch (isa) {
    case Isa::kDefault:
      return true;
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }
  return false;
#else
  return isa == Isa::kDefault;
#endif
}

Isa best_isa() {
  if (isa_supported(Isa::kAvx512)) return Isa::kAvx512;
  if (isa_supported(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kDefault;
}

std::atomic<int> g_isa{-1};

bool parse_isa(const std::string& name, Isa* out) {
  if (name == "auto") {
    *out = best_isa();
  } else if (name == "avx512") {
    *out = Isa::kAvx512;
  } else if (name == "avx2") {
    *out = Isa::kAvx2;
  } else if (name == "default") {
    *out = Isa::kDefault;
  } else {
    return false;
  }
  return true;
}

// The widest supported variant, unless LC_CPU_ISA names another one (e.g. "avx2" where AVX-512
// lowers the clock of the rest of the program); an unknown or unsupported value falls back to auto.
Isa current_isa() {
  int v = g_isa.load(std::memory_order_relaxed);
  if (v < 0) {
    Isa isa = best_isa();
    const char* env = std::getenv("LC_CPU_ISA");
    Isa want;
    if (env != nullptr && parse_isa(env, &want) && isa_supported(want)) isa = want;
    v = static_cast<int>(isa);
    g_isa.store(v, std::memory_order_relaxed);
  }
  return static_cast<Isa>(v);
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    default:
      return "default";
  }
}

template <typename T>
const KernelTable<T>& kernels();
template <>
const KernelTable<float>& kernels<float>() {
  switch (current_isa()) {
    case Isa::kAvx512:
      return isa_avx512::table_f32();
    case Isa::kAvx2:
      return isa_avx2::table_f32();
    default:
      return isa_default::table_f32();
  }
}
template <>
const KernelTable<double>& kernels<double>() {
  switch (current_isa()) {
    case Isa::kAvx512:
      return isa_avx512::table_f64();
    case Isa::kAvx2:
      return isa_avx2::table_f64();
    default:
      return isa_default::table_f64();
  }
}

std::string get_isa() { return isa_name(current_isa()); }

// Force an instruction-set variant ("default", "avx2", "avx512", or "auto"); returns the previous.
std::string set_isa(const std::string& name) {
  const std::string prev = get_isa();
  Isa want;
  TORCH_CHECK(parse_isa(name, &want), "cpu_set_isa: name must be one of 'auto', 'default', 'avx2', 'avx512', got '",
              name, "'");
  TORCH_CHECK(isa_supported(want), "cpu_set_isa: this CPU does not support '", name,
              "'; use 'auto' or 'default'");
  g_isa.store(static_cast<int>(want), std::memory_order_relaxed);
  return prev;
}

// ------------------------------------------------------------------------------------------------
// validation (errors name the argument and the fix)
// ------------------------------------------------------------------------------------------------

void check_cpu(const char* fn, const char* name, const at::Tensor& v) {
  TORCH_CHECK(v.device().is_cpu(), fn, ": ", name, " must be a CPU tensor, got device ", v.device(),
              "; the 'cpu' backend only takes CPU tensors: move it with .cpu() or use backend='auto'");
}

void check_contig(const char* fn, const char* name, const at::Tensor& v) {
  TORCH_CHECK(v.is_contiguous(), fn, ": ", name, " must be contiguous (strides ", v.strides(),
              "); call .contiguous() first (lc_kernels.connector does this for you)");
}

void check_act(const char* fn, const char* name, const at::Tensor& v) {
  check_cpu(fn, name, v);
  TORCH_CHECK(v.scalar_type() == at::kFloat || v.scalar_type() == at::kDouble, fn, ": ", name,
              " must be float32 or float64 for the 'cpu' backend, got ", v.scalar_type(),
              "; cast it (.float()) or use backend='reference' for float16/bfloat16");
  TORCH_CHECK(v.dim() == 2, fn, ": ", name, " must have shape (N, d), got ", v.sizes(),
              "; flatten the leading dimensions (lc_kernels.connector does this for you)");
  check_contig(fn, name, v);
}

struct Dims {
  int64_t N, d, T, K, p, q, g;
};

void check_ids(const char* fn, const c10::optional<at::Tensor>& ids, int64_t N, int64_t T) {
  if (ids.has_value()) {
    const at::Tensor& v = *ids;
    check_cpu(fn, "ids", v);
    TORCH_CHECK(v.scalar_type() == at::kLong, fn, ": ids must be int64, got ", v.scalar_type(), "; use ids.long()");
    TORCH_CHECK(v.dim() == 1 && v.size(0) == N, fn, ": ids must have shape (N,) = (", N, ",), got ", v.sizes());
    check_contig(fn, "ids", v);
    const int64_t* p = v.data_ptr<int64_t>();
    for (int64_t n = 0; n < N; ++n) {
      TORCH_CHECK(p[n] >= 0 && p[n] < T, fn, ": ids must be task indices in [0, T=", T, "), got ids[", n, "]=", p[n]);
    }
  } else {
    TORCH_CHECK(T == 1, fn, ": ids=None means a single task, but theta has T=", T,
                " task banks; pass ids (one task index per row)");
  }
}

// out = x (in place) is allowed: each 64-row block is pooled before any of its rows is written and
// threads own disjoint blocks. Any other overlap would read rows already overwritten.
void check_overlap(const char* fn, const at::Tensor& x, const at::Tensor& y, bool given) {
  if (!given || y.data_ptr() == x.data_ptr()) return;
  const auto* xb = static_cast<const char*>(x.data_ptr());
  const auto* yb = static_cast<const char*>(y.data_ptr());
  const int64_t nbytes = x.numel() * static_cast<int64_t>(x.element_size());
  TORCH_CHECK(yb + nbytes <= xb || xb + nbytes <= yb, fn,
              ": out overlaps x without being x; pass out=x (in place) or a separate tensor");
}

// Checks theta (T, K, p, q), bias (T, d) if given, ids, t, r against the activation `act`.
Dims check_params(const char* fn, const char* act_name, const at::Tensor& act, const at::Tensor& theta,
                  const at::Tensor* bias, const c10::optional<at::Tensor>& ids, double t, int64_t r,
                  double alpha) {
  check_cpu(fn, "theta", theta);
  TORCH_CHECK(theta.scalar_type() == act.scalar_type(), fn, ": theta must have the dtype of ", act_name, " (",
              act.scalar_type(), "), got ", theta.scalar_type(), "; cast it with .to(", act_name, ".dtype)");
  TORCH_CHECK(theta.dim() == 4, fn, ": theta must have shape (T, K, p, q), got ", theta.sizes(),
              "; add the task dimension with theta.unsqueeze(0)");
  check_contig(fn, "theta", theta);
  Dims D{act.size(0), act.size(1), theta.size(0), theta.size(1), theta.size(2), theta.size(3), 0};
  TORCH_CHECK(D.T >= 1 && D.K >= 1, fn, ": theta must have T >= 1 tasks and K >= 1 anchors, got ", theta.sizes());
  TORCH_CHECK(D.d >= 1, fn, ": ", act_name, " must have a non-empty last dimension d, got ", act.sizes());
  TORCH_CHECK(r >= 1 && r <= D.d, fn, ": r must be in [1, d=", D.d, "], got r=", r);
  TORCH_CHECK(D.d % r == 0, fn, ": r=", r, " must divide d=", D.d, " (down-sampling pools g=d/r channels)");
  D.g = D.d / r;
  TORCH_CHECK(D.p >= 1 && D.p <= r, fn, ": seed rows p=", D.p, " (theta.shape[2]) must be in [1, r=", r, "]");
  TORCH_CHECK(D.q >= 1 && D.q <= D.d, fn, ": seed columns q=", D.q, " (theta.shape[3]) must be in [1, d=", D.d, "]");
  TORCH_CHECK(D.p * D.q <= (int64_t(1) << 30), fn, ": seed grid p*q=", D.p * D.q, " is too large");
  TORCH_CHECK(std::isfinite(t) && t >= 0.0 && t <= 1.0, fn, ": t must be a float in [0, 1], got ", t);
  TORCH_CHECK(std::isfinite(alpha), fn, ": alpha must be finite, got ", alpha);
  if (bias != nullptr) {
    check_cpu(fn, "bias", *bias);
    TORCH_CHECK(bias->scalar_type() == act.scalar_type(), fn, ": bias must have the dtype of ", act_name, " (",
                act.scalar_type(), "), got ", bias->scalar_type(), "; cast it with .to(", act_name, ".dtype)");
    TORCH_CHECK(bias->dim() == 2 && bias->size(0) == D.T && bias->size(1) == D.d, fn,
                ": bias must have shape (T, d) = (", D.T, ", ", D.d, "), got ", bias->sizes());
    check_contig(fn, "bias", *bias);
  }
  check_ids(fn, ids, D.N, D.T);
  return D;
}

// out= buffers let tests pre-fill with NaN and see that every element is written.
at::Tensor make_out(const char* fn, const char* name, const c10::optional<at::Tensor>& out, at::IntArrayRef sizes,
                    at::ScalarType dtype) {
  if (!out.has_value()) return at::empty(sizes, at::TensorOptions().dtype(dtype));
  const at::Tensor& o = *out;
  check_cpu(fn, name, o);
  TORCH_CHECK(o.scalar_type() == dtype, fn, ": ", name, " must be ", dtype, ", got ", o.scalar_type());
  TORCH_CHECK(o.sizes() == sizes, fn, ": ", name, " must have shape ", sizes, ", got ", o.sizes());
  check_contig(fn, name, o);
  return o;
}

// ------------------------------------------------------------------------------------------------
// per-call set-up: hat weights, mixed seeds, interpolation tables
// ------------------------------------------------------------------------------------------------

std::vector<double> hat_weights(double t, int64_t K) {
  // Exactly reference.hat_weights (double precision, then cast by the caller).
  std::vector<double> h(K, 0.0);
  if (K == 1) {
    h[0] = 1.0;
    return h;
  }
  const double s = t * static_cast<double>(K - 1);
  for (int64_t k = 0; k < K; ++k) h[k] = std::max(0.0, 1.0 - std::fabs(s - static_cast<double>(k)));
  return h;
}

int64_t pad_to(int64_t n, int64_t elem_bytes) {
  const int64_t w = kPadBytes / elem_bytes;
  return (n + w - 1) / w * w;
}

template <typename T>
struct Tables {
  std::vector<int32_t> rlo, rhi, clo, chi, cptr, cj;
  std::vector<T> rwlo, rwhi, cwlo, cwhi, cw;
  Geometry<T> geo{};

  // Align-corners neighbours with integer arithmetic (reference.interp_positions).
  static void interp(int64_t n_out, int64_t n_in, std::vector<int32_t>& lo, std::vector<int32_t>& hi,
                     std::vector<T>& wlo, std::vector<T>& whi) {
    lo.resize(n_out);
    hi.resize(n_out);
    wlo.resize(n_out);
    whi.resize(n_out);
    const int64_t den = n_out - 1;
    for (int64_t i = 0; i < n_out; ++i) {
      int64_t l = 0, h = 0;
      double f = 0.0;
      if (den != 0 && n_in != 1) {
        const int64_t num = i * (n_in - 1);
        l = num / den;
        f = static_cast<double>(num % den) / static_cast<double>(den);
        h = std::min<int64_t>(l + 1, n_in - 1);
      }
      lo[i] = static_cast<int32_t>(l);
      hi[i] = static_cast<int32_t>(h);
      wlo[i] = static_cast<T>(1.0 - f);
      whi[i] = static_cast<T>(f);
    }
  }

  Tables(const Dims& D) {
    interp(D.d / D.g, D.p, rlo, rhi, rwlo, rwhi);
    interp(D.d, D.q, clo, chi, cwlo, cwhi);
    // CSR transpose of the column map B (zero weights dropped), for dS = dWide B: seed column c
    // receives sum_e cw[e] * dWide[:, cj[e]] over e in [cptr[c], cptr[c+1]).
    cptr.assign(D.q + 1, 0);
    for (int64_t j = 0; j < D.d; ++j) {
      if (cwlo[j] != T(0)) ++cptr[clo[j] + 1];
      if (cwhi[j] != T(0)) ++cptr[chi[j] + 1];
    }
    for (int64_t c = 0; c < D.q; ++c) cptr[c + 1] += cptr[c];
    cj.resize(cptr[D.q]);
    cw.resize(cptr[D.q]);
    std::vector<int32_t> fill(cptr.begin(), cptr.end() - 1);
    for (int64_t j = 0; j < D.d; ++j) {
      if (cwlo[j] != T(0)) {
        cj[fill[clo[j]]] = static_cast<int32_t>(j);
        cw[fill[clo[j]]++] = cwlo[j];
      }
      if (cwhi[j] != T(0)) {
        cj[fill[chi[j]]] = static_cast<int32_t>(j);
        cw[fill[chi[j]]++] = cwhi[j];
      }
    }
    geo.d = D.d;
    geo.r = D.d / D.g;
    geo.g = D.g;
    geo.p = D.p;
    geo.q = D.q;
    geo.ppad = pad_to(D.p, sizeof(T));
    geo.qpad = pad_to(D.q, sizeof(T));
    geo.rlo = rlo.data();
    geo.rhi = rhi.data();
    geo.rwlo = rwlo.data();
    geo.rwhi = rwhi.data();
    geo.clo = clo.data();
    geo.chi = chi.data();
    geo.cwlo = cwlo.data();
    geo.cwhi = cwhi.data();
  }
};

// S_tau = scale * sum_k h_k Theta[tau, k] in double (float32 seeds lose nothing before the
// kernel's float32 accumulation), as (T, p, q).
template <typename T>
std::vector<double> mixed_seed(const at::Tensor& theta, const Dims& D, const std::vector<double>& h, double scale) {
  std::vector<double> out(static_cast<size_t>(D.T * D.p * D.q), 0.0);
  const T* th = theta.data_ptr<T>();
  for (int64_t tau = 0; tau < D.T; ++tau) {
    for (int64_t k = 0; k < D.K; ++k) {
      if (h[k] == 0.0) continue;
      const T* src = th + (tau * D.K + k) * D.p * D.q;
      double* dst = out.data() + tau * D.p * D.q;
      for (int64_t i = 0; i < D.p * D.q; ++i) dst[i] += h[k] * static_cast<double>(src[i]);
    }
  }
  for (double& v : out) v *= scale;
  return out;
}

// Forward seed: S_tau as (T, p, qpad), zero-padded columns.
template <typename T>
std::vector<T> forward_seed(const std::vector<double>& S, const Dims& D, int64_t qpad) {
  std::vector<T> out(static_cast<size_t>(D.T * D.p * qpad), T(0));
  for (int64_t row = 0; row < D.T * D.p; ++row)
    for (int64_t c = 0; c < D.q; ++c) out[row * qpad + c] = static_cast<T>(S[row * D.q + c]);
  return out;
}

// dx seed: M_tau = B S_tau^T as (T, d, ppad): row j mixes seed columns lo_j, hi_j.
template <typename T>
std::vector<T> backward_dx_seed(const std::vector<double>& S, const Dims& D, const Tables<T>& tab, int64_t ppad) {
  std::vector<T> out(static_cast<size_t>(D.T * D.d * ppad), T(0));
  for (int64_t tau = 0; tau < D.T; ++tau) {
    const double* St = S.data() + tau * D.p * D.q;
    for (int64_t j = 0; j < D.d; ++j) {
      const int64_t lo = tab.clo[j], hi = tab.chi[j];
      const double wl = static_cast<double>(tab.cwlo[j]), wh = static_cast<double>(tab.cwhi[j]);
      T* dst = out.data() + (tau * D.d + j) * ppad;
      for (int64_t a = 0; a < D.p; ++a) dst[a] = static_cast<T>(wl * St[a * D.q + lo] + wh * St[a * D.q + hi]);
    }
  }
  return out;
}

const int64_t* ids_ptr(const c10::optional<at::Tensor>& ids) {
  return ids.has_value() ? ids->data_ptr<int64_t>() : nullptr;
}

int64_t num_blocks(int64_t N) { return (N + kBlockRows - 1) / kBlockRows; }

// ------------------------------------------------------------------------------------------------
// the three operations
// ------------------------------------------------------------------------------------------------

// The O(N) part of the forward: 64-row blocks, in parallel when there is more than one (a single block
// runs inline: waking the thread pool costs more than 16 rows of work).
template <typename T>
void run_forward_blocks(const ForwardArgs<T>& A, int64_t N) {
  const KernelTable<T>& K = kernels<T>();
  const int64_t scratch = forward_scratch(A.geo);
  auto body = [&](int64_t b0, int64_t b1) {
    // One scratch buffer per thread, kept between calls (allocating and zeroing ~60 kB per call cost
    // more than a 16-row block). New elements are zeroed when it grows; the kernel writes every
    // element it reads except the epilogue's slack, which therefore stays zero.
    thread_local std::vector<T> buf;
    if (buf.size() < static_cast<size_t>(scratch)) buf.resize(static_cast<size_t>(scratch));
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t n0 = blk * kBlockRows;
      K.forward_block(A, n0, std::min(kBlockRows, N - n0), buf.data());
    }
  };
  const int64_t nb = num_blocks(N);
  if (nb == 1) {
    body(0, 1);
  } else {
    at::parallel_for(0, nb, 1, body);
  }
}

template <typename T>
void forward_impl(const at::Tensor& x, const at::Tensor& theta, const at::Tensor& bias,
                  const c10::optional<at::Tensor>& ids, double t, const Dims& D, double alpha, at::Tensor& y) {
  Tables<T> tab(D);
  const std::vector<double> h = hat_weights(t, D.K);
  const std::vector<T> seed =
      forward_seed<T>(mixed_seed<T>(theta, D, h, alpha / static_cast<double>(D.g)), D, tab.geo.qpad);
  std::vector<T> abias(static_cast<size_t>(D.T * D.d));
  const T* b = bias.data_ptr<T>();
  for (int64_t i = 0; i < D.T * D.d; ++i) abias[i] = static_cast<T>(alpha * static_cast<double>(b[i]));
  ForwardArgs<T> A{tab.geo, x.data_ptr<T>(), y.data_ptr<T>(), ids_ptr(ids), seed.data(), abias.data()};
  run_forward_blocks<T>(A, D.N);
}

template <typename T>
void backward_dx_impl(const at::Tensor& dy, const at::Tensor& theta, const c10::optional<at::Tensor>& ids,
                      double t, const Dims& D, double alpha, at::Tensor& dx) {
  Tables<T> tab(D);
  const std::vector<double> h = hat_weights(t, D.K);
  const std::vector<T> seed_bt =
      backward_dx_seed<T>(mixed_seed<T>(theta, D, h, alpha / static_cast<double>(D.g)), D, tab, tab.geo.ppad);
  BackwardDxArgs<T> A{tab.geo, dy.data_ptr<T>(), dx.data_ptr<T>(), ids_ptr(ids), seed_bt.data()};
  const KernelTable<T>& K = kernels<T>();
  const int64_t scratch = backward_dx_scratch(tab.geo);
  at::parallel_for(0, num_blocks(D.N), 1, [&](int64_t b0, int64_t b1) {
    std::vector<T> buf(static_cast<size_t>(scratch));
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t n0 = blk * kBlockRows;
      K.backward_dx_block(A, n0, std::min(kBlockRows, D.N - n0), buf.data());
    }
  });
}

template <typename T>
void backward_params_impl(const at::Tensor& x, const at::Tensor& dy, const at::Tensor& theta,
                          const c10::optional<at::Tensor>& ids, double t, const Dims& D, double alpha,
                          at::Tensor& dtheta, at::Tensor& dbias) {
  (void)theta;
  Tables<T> tab(D);
  const std::vector<double> h = hat_weights(t, D.K);
  const int64_t wide = D.T * D.p * D.d;  // one chunk's partial dWide (T, p, d), then db (T, d)
  const int64_t part = wide + D.T * D.d;
  // Fixed chunking (a function of the shapes only, never of the thread count) so the reduction
  // order, hence every bit of the result, is the same however many threads run.
  const int64_t blocks = num_blocks(D.N);
  const int64_t budget = int64_t(1) << 23;  // elements of partial sums kept at most (32 MiB float32)
  int64_t nchunks = std::max<int64_t>(1, (blocks + 7) / 8);  // 8 blocks = 512 rows per chunk
  nchunks = std::max<int64_t>(1, std::min(nchunks, budget / std::max<int64_t>(part, 1)));
  const int64_t blocks_per_chunk = std::max<int64_t>(1, (blocks + nchunks - 1) / nchunks);
  nchunks = std::max<int64_t>(1, (blocks + blocks_per_chunk - 1) / blocks_per_chunk);
  std::vector<T> partials(static_cast<size_t>(nchunks * part));
  BackwardParamsArgs<T> A{tab.geo, x.data_ptr<T>(), dy.data_ptr<T>(), ids_ptr(ids)};
  const KernelTable<T>& K = kernels<T>();
  const int64_t scratch = backward_params_scratch(tab.geo);
  at::parallel_for(0, nchunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<T> buf(static_cast<size_t>(scratch), T(0));
    for (int64_t c = c0; c < c1; ++c) {
      T* dw = partials.data() + c * part;
      std::fill(dw, dw + part, T(0));  // first touch in the worker thread
      const int64_t blk_end = std::min(blocks, (c + 1) * blocks_per_chunk);
      for (int64_t blk = c * blocks_per_chunk; blk < blk_end; ++blk) {
        const int64_t n0 = blk * kBlockRows;
        K.backward_params_block(A, n0, std::min(kBlockRows, D.N - n0), buf.data(), dw, dw + wide);
      }
    }
  });
  // Reduce chunk partials in chunk order, apply B (dS = dWide B, sparse), then
  // dTheta_k = h_k (alpha/g) dS and db = alpha sum_n dy.
  T* dth = dtheta.data_ptr<T>();
  T* dbp = dbias.data_ptr<T>();
  const T seed_scale = static_cast<T>(alpha / static_cast<double>(D.g));
  const T bias_scale = static_cast<T>(alpha);
  at::parallel_for(0, D.T * D.p, 1, [&](int64_t r0, int64_t r1) {
    std::vector<T> acc(static_cast<size_t>(D.d)), ds(static_cast<size_t>(D.q));
    for (int64_t row = r0; row < r1; ++row) {
      const int64_t tau = row / D.p, a = row % D.p;
      std::fill(acc.begin(), acc.end(), T(0));
      for (int64_t c = 0; c < nchunks; ++c) {
        const T* src = partials.data() + c * part + row * D.d;
        for (int64_t j = 0; j < D.d; ++j) acc[j] += src[j];
      }
      for (int64_t c = 0; c < D.q; ++c) {
        T s = 0;
        for (int32_t e = tab.cptr[c]; e < tab.cptr[c + 1]; ++e) s += tab.cw[e] * acc[tab.cj[e]];
        ds[c] = s;
      }
      for (int64_t k = 0; k < D.K; ++k) {
        T* dst = dth + ((tau * D.K + k) * D.p + a) * D.q;
        const T hk = static_cast<T>(h[k]) * seed_scale;
        for (int64_t c = 0; c < D.q; ++c) dst[c] = hk * ds[c];
      }
    }
  });
  for (int64_t tau = 0; tau < D.T; ++tau) {
    T* dst = dbp + tau * D.d;
    std::fill(dst, dst + D.d, T(0));
    for (int64_t c = 0; c < nchunks; ++c) {
      const T* src = partials.data() + c * part + wide + tau * D.d;
      for (int64_t j = 0; j < D.d; ++j) dst[j] += src[j];
    }
    for (int64_t j = 0; j < D.d; ++j) dst[j] *= bias_scale;
  }
}

// ------------------------------------------------------------------------------------------------
// forward plans: the per-call set-up done once
// ------------------------------------------------------------------------------------------------

// Everything forward_cpu derives from (theta, bias, t, r, alpha) before it reads x -- interpolation
// tables, the mixed and scaled seed, the scaled bias -- built once. A model whose seed bank has not
// changed since (inference) then pays only the O(N) kernel per connector call: at small N the set-up
// is most of forward_cpu's time. The plan copies what it needs; later changes to theta or bias do not
// reach it (the caller rebuilds it when they change).
class ForwardPlan {
 public:
  virtual ~ForwardPlan() = default;
  virtual at::Tensor forward(const at::Tensor& x, const c10::optional<at::Tensor>& ids,
                             const c10::optional<at::Tensor>& out) const = 0;
};

template <typename T>
class ForwardPlanImpl final : public ForwardPlan {
 public:
  ForwardPlanImpl(const at::Tensor& theta, const at::Tensor& bias, double t, double alpha, const Dims& D)
      : D_(D), tab_(D), dtype_(theta.scalar_type()) {
    seed_ = forward_seed<T>(mixed_seed<T>(theta, D, hat_weights(t, D.K), alpha / static_cast<double>(D.g)), D,
                            tab_.geo.qpad);
    abias_.resize(static_cast<size_t>(D.T * D.d));
    const T* b = bias.data_ptr<T>();
    for (int64_t i = 0; i < D.T * D.d; ++i) abias_[i] = static_cast<T>(alpha * static_cast<double>(b[i]));
  }
  ForwardPlanImpl(const ForwardPlanImpl&) = delete;  // tab_.geo points into tab_'s own vectors
  ForwardPlanImpl& operator=(const ForwardPlanImpl&) = delete;

  at::Tensor forward(const at::Tensor& x, const c10::optional<at::Tensor>& ids,
                     const c10::optional<at::Tensor>& out) const override {
    const char* fn = "CpuForwardPlan.forward";
    check_act(fn, "x", x);
    TORCH_CHECK(x.scalar_type() == dtype_, fn, ": x must have the plan's dtype ", dtype_, ", got ",
                x.scalar_type(), "; build the plan from parameters of x's dtype");
    TORCH_CHECK(x.size(1) == D_.d, fn, ": x must have d=", D_.d, " columns (the plan's), got ", x.sizes());
    check_ids(fn, ids, x.size(0), D_.T);
    at::Tensor y = make_out(fn, "out", out, x.sizes(), x.scalar_type());
    check_overlap(fn, x, y, out.has_value());
    if (x.size(0) == 0) return y;
    ForwardArgs<T> A{tab_.geo, x.data_ptr<T>(), y.data_ptr<T>(), ids_ptr(ids), seed_.data(), abias_.data()};
    run_forward_blocks<T>(A, x.size(0));
    return y;
  }

 private:
  Dims D_;
  Tables<T> tab_;
  at::ScalarType dtype_;
  std::vector<T> seed_, abias_;
};

std::shared_ptr<ForwardPlan> make_forward_plan(const at::Tensor& theta, const at::Tensor& bias, double t,
                                               int64_t r, double alpha) {
  const char* fn = "cpu_forward_plan";
  check_cpu(fn, "theta", theta);
  TORCH_CHECK(theta.scalar_type() == at::kFloat || theta.scalar_type() == at::kDouble, fn,
              ": theta must be float32 or float64, got ", theta.scalar_type());
  TORCH_CHECK(bias.dim() == 2, fn, ": bias must have shape (T, d), got ", bias.sizes());
  // check_params reads N and d from an activation: a 0-row one of the right width and dtype (and 0 task
  // ids, which any T accepts: the ids come with each forward call)
  const at::Tensor probe = at::empty({0, bias.size(1)}, theta.options());
  const Dims D = check_params(fn, "x", probe, theta, &bias, at::empty({0}, at::kLong), t, r, alpha);
  std::shared_ptr<ForwardPlan> plan;
  AT_DISPATCH_FLOATING_TYPES(theta.scalar_type(), "cpu_forward_plan", [&] {
    plan = std::make_shared<ForwardPlanImpl<scalar_t>>(theta, bias, t, alpha, D);
  });
  return plan;
}

// ------------------------------------------------------------------------------------------------
// bindings
// ------------------------------------------------------------------------------------------------

at::Tensor forward_cpu(const at::Tensor& x, const at::Tensor& theta, const at::Tensor& bias,
                       const c10::optional<at::Tensor>& ids, double t, int64_t r, double alpha,
                       const c10::optional<at::Tensor>& out) {
  const char* fn = "forward_cpu";
  check_act(fn, "x", x);
  const Dims D = check_params(fn, "x", x, theta, &bias, ids, t, r, alpha);
  at::Tensor y = make_out(fn, "out", out, x.sizes(), x.scalar_type());
  check_overlap(fn, x, y, out.has_value());
  if (D.N == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "forward_cpu",
                             [&] { forward_impl<scalar_t>(x, theta, bias, ids, t, D, alpha, y); });
  return y;
}

at::Tensor backward_dx_cpu(const at::Tensor& dy, const at::Tensor& theta, const c10::optional<at::Tensor>& ids,
                           double t, int64_t r, double alpha, const c10::optional<at::Tensor>& out) {
  const char* fn = "backward_dx_cpu";
  check_act(fn, "dy", dy);
  const Dims D = check_params(fn, "dy", dy, theta, nullptr, ids, t, r, alpha);
  at::Tensor dx = make_out(fn, "out", out, dy.sizes(), dy.scalar_type());
  if (D.N == 0) return dx;
  AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "backward_dx_cpu",
                             [&] { backward_dx_impl<scalar_t>(dy, theta, ids, t, D, alpha, dx); });
  return dx;
}

std::tuple<at::Tensor, at::Tensor> backward_params_cpu(const at::Tensor& x, const at::Tensor& dy,
                                                       const at::Tensor& theta,
                                                       const c10::optional<at::Tensor>& ids, double t, int64_t r,
                                                       double alpha, const c10::optional<at::Tensor>& out_dtheta,
                                                       const c10::optional<at::Tensor>& out_dbias) {
  const char* fn = "backward_params_cpu";
  check_act(fn, "x", x);
  check_act(fn, "dy", dy);
  TORCH_CHECK(dy.sizes() == x.sizes(), fn, ": dy must have the shape of x ", x.sizes(), ", got ", dy.sizes());
  TORCH_CHECK(dy.scalar_type() == x.scalar_type(), fn, ": dy must have the dtype of x (", x.scalar_type(),
              "), got ", dy.scalar_type());
  const Dims D = check_params(fn, "x", x, theta, nullptr, ids, t, r, alpha);
  at::Tensor dtheta = make_out(fn, "out_dtheta", out_dtheta, theta.sizes(), theta.scalar_type());
  at::Tensor dbias = make_out(fn, "out_dbias", out_dbias, {D.T, D.d}, theta.scalar_type());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "backward_params_cpu", [&] {
    backward_params_impl<scalar_t>(x, dy, theta, ids, t, D, alpha, dtheta, dbias);
  });
  return {dtheta, dbias};
}

}  // namespace
}  // namespace cpu

void register_cpu(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("forward_cpu", &cpu::forward_cpu,
        "Fused connector forward y = x + alpha (D(x) W + b) on CPU (normalised convention)", py::arg("x"),
        py::arg("theta"), py::arg("bias"), py::arg("ids"), py::arg("t"), py::arg("r"), py::arg("alpha"),
        py::arg("out") = py::none());
  m.def("backward_dx_cpu", &cpu::backward_dx_cpu, "Fused dx = dy + alpha U(dy W^T) on CPU", py::arg("dy"),
        py::arg("theta"), py::arg("ids"), py::arg("t"), py::arg("r"), py::arg("alpha"),
        py::arg("out") = py::none());
  m.def("backward_params_cpu", &cpu::backward_params_cpu,
        "Fused (dtheta, dbias) of the connector on CPU, deterministic token reduction", py::arg("x"), py::arg("dy"),
        py::arg("theta"), py::arg("ids"), py::arg("t"), py::arg("r"), py::arg("alpha"),
        py::arg("out_dtheta") = py::none(), py::arg("out_dbias") = py::none());
  py::class_<cpu::ForwardPlan, std::shared_ptr<cpu::ForwardPlan>>(
      m, "CpuForwardPlan", "A connector forward with its set-up done once (see cpu_forward_plan)")
      .def("forward", &cpu::ForwardPlan::forward, py::arg("x"), py::arg("ids") = py::none(),
           py::arg("out") = py::none(), "y = x + alpha (D(x) W + b) for x (N, d); out may be x (in place)");
  m.def("cpu_forward_plan", &cpu::make_forward_plan,
        "Prepare forward_cpu's set-up (tables, mixed seed, scaled bias) for theta (T, K, p, q), bias (T, d)",
        py::arg("theta"), py::arg("bias"), py::arg("t"), py::arg("r"), py::arg("alpha"));
  m.def("cpu_isa", &cpu::get_isa, "The instruction-set variant the cpu kernels use: default, avx2 or avx512");
  m.def("cpu_set_isa", &cpu::set_isa, py::arg("name"),
        "Force the cpu kernels' instruction set ('auto', 'default', 'avx2', 'avx512'); returns the previous one");
}

}  // namespace lc
