// Thin torch binding of the CUDA connector kernels: checks tensors (device, dtype, contiguity,
// shapes), picks the current stream of x's device, calls the torch-free launchers
// (connector_api.h) and turns a failed launch into a Python RuntimeError naming the cause.
// Compiled only when torch has CUDA (setup.py defines LC_WITH_CUDA and globs csrc/cuda/*.cpp).
//
// Python entry points (lc_kernels._C), in the normalised convention of lc_kernels/backends.py:
//   cuda_forward(x, theta, bias, ids, t, r, alpha)              -> y
//   cuda_backward_dx(dy, theta, ids, t, r, alpha)               -> dx
//   cuda_backward_params(x, dy, theta, ids, t, r, alpha)        -> (dtheta, dbias)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <optional>

#include "cuda/connector_api.h"

namespace lc {
namespace {

namespace lcc = lc::cuda;

lcc::DType dtype_tag(const at::Tensor& x, const char* name) {
  switch (x.scalar_type()) {
    case at::kHalf:
      return lcc::DType::kFloat16;
    case at::kBFloat16:
      return lcc::DType::kBFloat16;
    case at::kFloat:
      return lcc::DType::kFloat32;
    case at::kDouble:
      return lcc::DType::kFloat64;
    default:
      TORCH_CHECK(false, "cuda backend: ", name, " must be float16, bfloat16, float32 or float64, got ",
                  x.scalar_type());
  }
}

at::ScalarType compute_type(const at::Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

void check_tensor(const at::Tensor& v, const char* name, const at::Tensor& x) {
  TORCH_CHECK(v.is_cuda(), "cuda backend: ", name, " must be a CUDA tensor, got one on ", v.device(),
              "; move it with .cuda() or use backend='reference'");
  TORCH_CHECK(v.device() == x.device(), "cuda backend: ", name, " is on ", v.device(), " but x is on ", x.device(),
              "; put all inputs on one device");
  TORCH_CHECK(v.is_contiguous(), "cuda backend: ", name, " must be contiguous (call .contiguous()), got strides ",
              v.strides());
}

// Validates x-like (n, d), theta (T, K, p, q), ids and r; returns the geometry.
lcc::Geometry geometry(const at::Tensor& x, const char* xname, const at::Tensor& theta,
                       const std::optional<at::Tensor>& ids, int64_t r) {
  check_tensor(x, xname, x);
  check_tensor(theta, "theta", x);
  TORCH_CHECK(x.dim() == 2, "cuda backend: ", xname, " must be 2-D (n, d), got shape ", x.sizes());
  TORCH_CHECK(theta.dim() == 4, "cuda backend: theta must be 4-D (T, K, p, q), got shape ", theta.sizes());
  TORCH_CHECK(theta.scalar_type() == compute_type(x), "cuda backend: theta must be ", compute_type(x), " for ", xname,
              " of dtype ", x.scalar_type(), ", got ", theta.scalar_type(), "; cast it with .to(",
              compute_type(x), ")");
  const int64_t d = x.size(1);
  TORCH_CHECK(d >= 1 && d < (int64_t(1) << 31), "cuda backend: hidden size d=", d, " is out of range");
  TORCH_CHECK(r >= 1 && r <= d && d % r == 0, "cuda backend: r=", r, " must be a positive divisor of d=", d);
  const int64_t p = theta.size(2), q = theta.size(3);
  TORCH_CHECK(p >= 1 && p <= r, "cuda backend: seed rows p=", p, " must be in [1, r=", r, "]");
  TORCH_CHECK(q >= 1 && q <= d, "cuda backend: seed columns q=", q, " must be in [1, d=", d, "]");
  TORCH_CHECK(theta.size(1) >= 1, "cuda backend: theta needs at least one anchor (K >= 1)");
  const int64_t T = theta.size(0);
  TORCH_CHECK(T >= 1 && T <= 65535, "cuda backend: theta holds T=", T, " tasks; 1 <= T <= 65535 is supported");
  if (ids.has_value()) {
    const at::Tensor& i = *ids;
    check_tensor(i, "ids", x);
    TORCH_CHECK(i.scalar_type() == at::kLong, "cuda backend: ids must be int64, got ", i.scalar_type());
    TORCH_CHECK(i.dim() == 1 && i.size(0) == x.size(0), "cuda backend: ids must have shape (n,) = (", x.size(0),
                ",), got ", i.sizes());
  } else {
    TORCH_CHECK(T == 1, "cuda backend: without ids theta must hold one task, got T=", T,
                "; pass ids (one task index per row)");
  }
  lcc::Geometry g;
  g.n = x.size(0);
  g.d = int(d);
  g.r = int(r);
  g.p = int(p);
  g.q = int(q);
  g.K = int(theta.size(1));
  g.T = int(T);
  return g;
}

void check_t(double t) {
  TORCH_CHECK(t >= 0.0 && t <= 1.0, "cuda backend: t must be in [0, 1], got ", t);
}

void raise_if_failed(const lcc::Status& st, const char* op) {
  TORCH_CHECK(st.code == 0, "cuda backend: ", op, ": ", st.message);
}

const int64_t* ids_ptr(const std::optional<at::Tensor>& ids) {
  return ids.has_value() ? ids->data_ptr<int64_t>() : nullptr;
}

at::Tensor cuda_forward(const at::Tensor& x, const at::Tensor& theta, const at::Tensor& bias,
                        const std::optional<at::Tensor>& ids, double t, int64_t r, double alpha) {
  const lcc::Geometry g = geometry(x, "x", theta, ids, r);
  check_t(t);
  check_tensor(bias, "bias", x);
  TORCH_CHECK(bias.scalar_type() == theta.scalar_type(), "cuda backend: bias must have theta's dtype ",
              theta.scalar_type(), ", got ", bias.scalar_type());
  TORCH_CHECK(bias.dim() == 2 && bias.size(0) == g.T && bias.size(1) == g.d, "cuda backend: bias must have shape (T, d) = (",
              g.T, ", ", g.d, "), got ", bias.sizes());
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty_like(x);
  const lcc::Status st = lcc::connector_forward(dtype_tag(x, "x"), x.data_ptr(), theta.data_ptr(), bias.data_ptr(),
                                                ids_ptr(ids), y.data_ptr(), g, t, alpha,
                                                c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
  raise_if_failed(st, "forward");
  return y;
}

at::Tensor cuda_backward_dx(const at::Tensor& dy, const at::Tensor& theta, const std::optional<at::Tensor>& ids,
                            double t, int64_t r, double alpha) {
  const lcc::Geometry g = geometry(dy, "dy", theta, ids, r);
  check_t(t);
  const c10::cuda::CUDAGuard guard(dy.device());
  at::Tensor dx = at::empty_like(dy);
  const lcc::Status st = lcc::connector_backward_dx(dtype_tag(dy, "dy"), dy.data_ptr(), theta.data_ptr(), ids_ptr(ids),
                                                    dx.data_ptr(), g, t, alpha,
                                                    c10::cuda::getCurrentCUDAStream(dy.device().index()).stream());
  raise_if_failed(st, "backward_dx");
  return dx;
}

std::tuple<at::Tensor, at::Tensor> cuda_backward_params(const at::Tensor& x, const at::Tensor& dy,
                                                        const at::Tensor& theta,
                                                        const std::optional<at::Tensor>& ids, double t, int64_t r,
                                                        double alpha) {
  const lcc::Geometry g = geometry(x, "x", theta, ids, r);
  check_t(t);
  check_tensor(dy, "dy", x);
  TORCH_CHECK(dy.sizes() == x.sizes(), "cuda backend: dy must have x's shape ", x.sizes(), ", got ", dy.sizes());
  TORCH_CHECK(dy.scalar_type() == x.scalar_type(), "cuda backend: dy must have x's dtype ", x.scalar_type(), ", got ",
              dy.scalar_type());
  const c10::cuda::CUDAGuard guard(x.device());
  const lcc::DType tag = dtype_tag(x, "x");
  at::Tensor dtheta = at::empty_like(theta);
  at::Tensor dbias = at::empty({g.T, g.d}, theta.options());
  // scratch from the caching allocator: reused across steps, freed with the tensor
  const size_t ws_bytes = lcc::connector_backward_params_workspace_bytes(tag, g);
  at::Tensor ws = at::empty({int64_t(ws_bytes > 0 ? ws_bytes : 1)}, x.options().dtype(at::kByte));
  const lcc::Status st = lcc::connector_backward_params(
      tag, x.data_ptr(), dy.data_ptr(), ids_ptr(ids), dtheta.data_ptr(), dbias.data_ptr(), ws.data_ptr(), ws_bytes, g, t,
      alpha, c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
  raise_if_failed(st, "backward_params");
  return {dtheta, dbias};
}

}  // namespace

void register_cuda(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("cuda_forward", &cuda_forward, "fused connector forward on CUDA: y = x + alpha (D(x) W + b)", py::arg("x"),
        py::arg("theta"), py::arg("bias"), py::arg("ids"), py::arg("t"), py::arg("r"), py::arg("alpha"));
  m.def("cuda_backward_dx", &cuda_backward_dx, "fused dx = dy + alpha U(dy W^T) on CUDA", py::arg("dy"),
        py::arg("theta"), py::arg("ids"), py::arg("t"), py::arg("r"), py::arg("alpha"));
  m.def("cuda_backward_params", &cuda_backward_params,
        "(dtheta, dbias) on CUDA: two deterministic launches, no atomics", py::arg("x"), py::arg("dy"),
        py::arg("theta"), py::arg("ids"), py::arg("t"), py::arg("r"), py::arg("alpha"));
}

}  // namespace lc
