// Placeholder until the fused CPU kernels land (issue 3): registers nothing.
#include <torch/extension.h>
namespace lc {
void register_cpu(pybind11::module_& m) { (void)m; }
}  // namespace lc
