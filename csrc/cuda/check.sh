#!/usr/bin/env bash
# Checks the CUDA backend sources on a machine without a GPU:
#   1. the host test (g++, no CUDA, no torch): interpolation, hat weights, bilinear weights,
#      adjoint gathers, launch planning and a float64 emulation of the kernels' algorithm;
#   2. the real kernels run on the CPU by a small SIMT emulator (tests/emu/) against a dense float64
#      connector, outputs NaN-poisoned (tests/emu_test.cpp);
#   3. every torch-free .cu compiled by nvcc for sm_80 and sm_90;
#   4. binding.cpp syntax-checked against the installed torch headers (skipped when torch is not
#      importable; LC_SKIP_BINDING_CHECK=1 skips it). A CPU-only torch lacks one generated CUDA
#      header (c10/cuda/impl/cuda_cmake_macros.h), which is shimmed as an empty file.
# Usage: bash csrc/cuda/check.sh     (NVCC, CXX, PYTHON override the tools)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CSRC="$(dirname "$HERE")"
NVCC="${NVCC:-nvcc}"
CXX="${CXX:-g++}"
PYTHON="${PYTHON:-python}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "== host test ($CXX)"
"$CXX" -std=c++17 -O1 -Wall -Wextra -Werror -I "$CSRC" "$HERE/tests/host_test.cpp" -o "$TMP/host_test"
"$TMP/host_test"

echo "== kernels under the SIMT emulator ($CXX, one std::thread per CUDA thread)"
"$CXX" -std=c++20 -O1 -pthread -DLC_SIMT_EMULATION -I "$HERE/tests/emu" -I "$CSRC" "$HERE/tests/emu_test.cpp" -o "$TMP/emu_test"
"$TMP/emu_test"

echo "== nvcc: sm_80 + sm_90 ($("$NVCC" --version | tail -n 2 | head -n 1))"
for cu in "$HERE"/*.cu; do
  echo "   $(basename "$cu")"
  "$NVCC" -c -std=c++17 -O3 --use_fast_math -lineinfo -t 2 \
    -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
    -I "$CSRC" "$cu" -o "$TMP/$(basename "$cu").o"
done

if [ "${LC_SKIP_BINDING_CHECK:-0}" != "1" ] && "$PYTHON" -c "import torch" >/dev/null 2>&1; then
  echo "== binding.cpp syntax against torch $("$PYTHON" -c 'import torch; print(torch.__version__)')"
  mkdir -p "$TMP/shim/c10/cuda/impl"
  echo '#pragma once' > "$TMP/shim/c10/cuda/impl/cuda_cmake_macros.h"
  # nvcc may be a wrapper script: look for the toolkit's headers where toolkits live
  CUDA_INC=""
  for cand in "${CUDA_HOME:-/nonexistent}/include" \
      "$(dirname "$(dirname "$(readlink -f "$(command -v "$NVCC")")")")/include" \
      /usr/local/cuda/include /usr/local/cuda-*/include; do
    if [ -f "$cand/cuda_runtime_api.h" ]; then CUDA_INC="$cand"; break; fi
  done
  [ -n "$CUDA_INC" ] || { echo "cannot find cuda_runtime_api.h; set CUDA_HOME" >&2; exit 1; }
  TORCH_INC="$("$PYTHON" -c "
from torch.utils.cpp_extension import include_paths; import sysconfig
print(' '.join('-I' + p for p in include_paths() + [sysconfig.get_paths()['include']]))")"
  # shellcheck disable=SC2086
  "$CXX" -std=c++17 -fsyntax-only -w -DLC_WITH_CUDA -DTORCH_EXTENSION_NAME=_C \
    -I "$CSRC" $TORCH_INC -I "$TMP/shim" -I "$CUDA_INC" "$HERE/binding.cpp"
else
  echo "== binding.cpp syntax: skipped (no importable torch or LC_SKIP_BINDING_CHECK=1)"
fi
echo "CUDA CHECK PASSED"
