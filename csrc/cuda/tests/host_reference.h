// Independent float64 ground truth for the host-side tests of the CUDA kernels (host_test.cpp,
// emu_test.cpp), written from SPEC.md without the kernels' helpers: floating-point align-corners
// positions, the hat function, dense interpolation matrices and a dense connector (W formed).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace lc_ref {

// ---- independent references -----------------------------------------------------------------
// Align-corners sample position u = i (n_in-1)/(n_out-1) in long double; floor/frac from it.
inline void ref_position(int64_t i, int64_t n_out, int64_t n_in, int64_t* lo, int64_t* hi, long double* frac) {
  if (n_out == 1 || n_in == 1) {
    *lo = *hi = 0;
    *frac = 0;
    return;
  }
  const long double u = (long double)i * (long double)(n_in - 1) / (long double)(n_out - 1);
  long double fl = std::floor(u);
  // u is a ratio of integers: when it is within rounding of an integer it *is* that integer
  if (u - fl > 1.0L - 1e-12L) fl += 1.0L;
  *lo = (int64_t)fl;
  *hi = std::min<int64_t>(*lo + 1, n_in - 1);
  *frac = std::max<long double>(0.0L, u - fl);
}

inline std::vector<double> dense_interp(int64_t n_out, int64_t n_in) {  // (n_out x n_in)
  std::vector<double> m(n_out * n_in, 0.0);
  for (int64_t i = 0; i < n_out; ++i) {
    int64_t lo, hi;
    long double f;
    ref_position(i, n_out, n_in, &lo, &hi, &f);
    m[i * n_in + lo] += double(1.0L - f);
    m[i * n_in + hi] += double(f);
  }
  return m;
}

inline double ref_hat(double t, int K, int k) {
  if (K == 1) return 1.0;
  return std::max(0.0, 1.0 - std::fabs(t * (K - 1) - k));
}

struct Geo {
  int n, d, r, p, q, K, T;
};

struct Dense {
  std::vector<double> y, dx, dtheta, db;
};

inline Dense dense_connector(const Geo& g, const std::vector<double>& x, const std::vector<double>& dy,
                             const std::vector<double>& theta, const std::vector<double>& bias,
                             const std::vector<int64_t>& ids, double t, double alpha) {
  const int gs = g.d / g.r;
  const std::vector<double> A = dense_interp(g.r, g.p), B = dense_interp(g.d, g.q);
  // W_tau = A S_tau B^T, dense
  std::vector<double> W(size_t(g.T) * g.r * g.d, 0.0);
  for (int tau = 0; tau < g.T; ++tau)
    for (int i = 0; i < g.r; ++i)
      for (int j = 0; j < g.d; ++j) {
        double w = 0.0;
        for (int k = 0; k < g.p; ++k)
          for (int c = 0; c < g.q; ++c) {
            double s = 0.0;
            for (int a = 0; a < g.K; ++a)
              s += ref_hat(t, g.K, a) * theta[((size_t(tau) * g.K + a) * g.p + k) * g.q + c];
            w += A[i * g.p + k] * s * B[j * g.q + c];
          }
        W[(size_t(tau) * g.r + i) * g.d + j] = w;
      }
  Dense out;
  out.y.assign(size_t(g.n) * g.d, 0.0);
  out.dx.assign(size_t(g.n) * g.d, 0.0);
  out.dtheta.assign(size_t(g.T) * g.K * g.p * g.q, 0.0);
  out.db.assign(size_t(g.T) * g.d, 0.0);
  std::vector<double> dW(size_t(g.T) * g.r * g.d, 0.0);
  for (int n = 0; n < g.n; ++n) {
    const int tau = int(ids[n]);
    std::vector<double> z(g.r, 0.0);
    for (int i = 0; i < g.r; ++i) {
      for (int k = 0; k < gs; ++k) z[i] += x[size_t(n) * g.d + i * gs + k];
      z[i] /= gs;
    }
    for (int j = 0; j < g.d; ++j) {
      double o = bias[size_t(tau) * g.d + j];
      for (int i = 0; i < g.r; ++i) o += z[i] * W[(size_t(tau) * g.r + i) * g.d + j];
      out.y[size_t(n) * g.d + j] = x[size_t(n) * g.d + j] + alpha * o;
      out.db[size_t(tau) * g.d + j] += alpha * dy[size_t(n) * g.d + j];
      for (int i = 0; i < g.r; ++i) dW[(size_t(tau) * g.r + i) * g.d + j] += alpha * z[i] * dy[size_t(n) * g.d + j];
    }
    for (int j = 0; j < g.d; ++j) {
      double h = 0.0;
      const int i = j / gs;
      for (int jj = 0; jj < g.d; ++jj) h += dy[size_t(n) * g.d + jj] * W[(size_t(tau) * g.r + i) * g.d + jj];
      out.dx[size_t(n) * g.d + j] = dy[size_t(n) * g.d + j] + alpha * h / gs;
    }
  }
  for (int tau = 0; tau < g.T; ++tau)
    for (int k = 0; k < g.p; ++k)
      for (int c = 0; c < g.q; ++c) {
        double ds = 0.0;  // dS = A^T dW B
        for (int i = 0; i < g.r; ++i)
          for (int j = 0; j < g.d; ++j) ds += A[i * g.p + k] * dW[(size_t(tau) * g.r + i) * g.d + j] * B[j * g.q + c];
        for (int a = 0; a < g.K; ++a)
          out.dtheta[((size_t(tau) * g.K + a) * g.p + k) * g.q + c] = ref_hat(t, g.K, a) * ds;
      }
  return out;
}

// ---- the same connector by separable products (W = A S B^T as two products, then N x r x d
// GEMMs): fast enough for d = 4096 and N = 4097 in the emulation tests. host_test.cpp checks it
// against dense_connector. Also returns the parts the error bounds are built from.
struct Fast {
  std::vector<double> y, dx, dtheta, db;
  std::vector<double> zw;  // (n, d): z W, the forward's matmul term
  std::vector<double> h;   // (n, r): dy W^T
  std::vector<double> ds;  // (T, p, q): dS = A^T dW B (dW = alpha z^T dy over the task's rows)
};

inline Fast fast_connector(const Geo& g, const std::vector<double>& x, const std::vector<double>& dy,
                           const std::vector<double>& theta, const std::vector<double>& bias,
                           const std::vector<int64_t>& ids, double t, double alpha) {
  const int gs = g.d / g.r;
  const std::vector<double> A = dense_interp(g.r, g.p), B = dense_interp(g.d, g.q);
  Fast out;
  out.y.assign(size_t(g.n) * g.d, 0.0);
  out.dx.assign(size_t(g.n) * g.d, 0.0);
  out.zw.assign(size_t(g.n) * g.d, 0.0);
  out.h.assign(size_t(g.n) * g.r, 0.0);
  out.dtheta.assign(size_t(g.T) * g.K * g.p * g.q, 0.0);
  out.db.assign(size_t(g.T) * g.d, 0.0);
  out.ds.assign(size_t(g.T) * g.p * g.q, 0.0);
  for (int tau = 0; tau < g.T; ++tau) {
    std::vector<double> S(size_t(g.p) * g.q, 0.0), AS(size_t(g.r) * g.q, 0.0), W(size_t(g.r) * g.d, 0.0);
    for (int a = 0; a < g.K; ++a) {
      const double w = ref_hat(t, g.K, a);
      if (w == 0.0) continue;
      for (size_t e = 0; e < S.size(); ++e) S[e] += w * theta[(size_t(tau) * g.K + a) * g.p * g.q + e];
    }
    for (int i = 0; i < g.r; ++i)
      for (int k = 0; k < g.p; ++k) {
        const double a = A[size_t(i) * g.p + k];
        if (a == 0.0) continue;
        for (int c = 0; c < g.q; ++c) AS[size_t(i) * g.q + c] += a * S[size_t(k) * g.q + c];
      }
    for (int j = 0; j < g.d; ++j)
      for (int c = 0; c < g.q; ++c) {
        const double b = B[size_t(j) * g.q + c];
        if (b == 0.0) continue;
        for (int i = 0; i < g.r; ++i) W[size_t(i) * g.d + j] += AS[size_t(i) * g.q + c] * b;
      }
    std::vector<double> dW(size_t(g.r) * g.d, 0.0), z(g.r);
    bool any = false;
    for (int n = 0; n < g.n; ++n) {
      if (ids[n] != tau) continue;
      any = true;
      const double* xr = x.data() + size_t(n) * g.d;
      const double* dr = dy.data() + size_t(n) * g.d;
      for (int i = 0; i < g.r; ++i) {
        double s = 0.0;
        for (int k = 0; k < gs; ++k) s += xr[i * gs + k];
        z[i] = s / gs;
      }
      double* zw = out.zw.data() + size_t(n) * g.d;
      double* h = out.h.data() + size_t(n) * g.r;
      for (int i = 0; i < g.r; ++i) {
        const double* wr = W.data() + size_t(i) * g.d;
        double* dwr = dW.data() + size_t(i) * g.d;
        double hs = 0.0;
        for (int j = 0; j < g.d; ++j) {
          zw[j] += z[i] * wr[j];
          hs += dr[j] * wr[j];
          dwr[j] += alpha * z[i] * dr[j];
        }
        h[i] = hs;
      }
      for (int j = 0; j < g.d; ++j) {
        out.y[size_t(n) * g.d + j] = xr[j] + alpha * (zw[j] + bias[size_t(tau) * g.d + j]);
        out.dx[size_t(n) * g.d + j] = dr[j] + alpha * h[j / gs] / gs;
        out.db[size_t(tau) * g.d + j] += alpha * dr[j];
      }
    }
    if (!any) continue;
    // dS = A^T dW B
    std::vector<double> dWB(size_t(g.r) * g.q, 0.0);
    for (int j = 0; j < g.d; ++j)
      for (int c = 0; c < g.q; ++c) {
        const double b = B[size_t(j) * g.q + c];
        if (b == 0.0) continue;
        for (int i = 0; i < g.r; ++i) dWB[size_t(i) * g.q + c] += dW[size_t(i) * g.d + j] * b;
      }
    double* ds = out.ds.data() + size_t(tau) * g.p * g.q;
    for (int i = 0; i < g.r; ++i)
      for (int k = 0; k < g.p; ++k) {
        const double a = A[size_t(i) * g.p + k];
        if (a == 0.0) continue;
        for (int c = 0; c < g.q; ++c) ds[size_t(k) * g.q + c] += a * dWB[size_t(i) * g.q + c];
      }
    for (int a = 0; a < g.K; ++a)
      for (size_t e = 0; e < size_t(g.p) * g.q; ++e)
        out.dtheta[(size_t(tau) * g.K + a) * g.p * g.q + e] = ref_hat(t, g.K, a) * ds[e];
  }
  return out;
}

}  // namespace lc_ref
