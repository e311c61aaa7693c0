// The Python module lc_kernels._C: plumbing only. Each backend registers its functions:
//   csrc/cpu/   register_cpu(m)   fused CPU kernels (always built)
//   csrc/cuda/  register_cuda(m)  thin binding over the torch-free CUDA kernels (built with CUDA)
#include <torch/extension.h>

#ifndef LC_TORCH_VERSION
#define LC_TORCH_VERSION "unknown"
#endif

namespace lc {
void register_cpu(pybind11::module_& m);
#ifdef LC_WITH_CUDA
void register_cuda(pybind11::module_& m);
#endif
}  // namespace lc

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "LayerConnect fused connector kernels";
  m.def("torch_version", []() { return std::string(LC_TORCH_VERSION); },
        "the torch version this extension was compiled against");
#ifdef LC_WITH_CUDA
  m.def("has_cuda", []() { return true; });
#else
  m.def("has_cuda", []() { return false; });
#endif
  lc::register_cpu(m);
#ifdef LC_WITH_CUDA
  lc::register_cuda(m);
#endif
}
