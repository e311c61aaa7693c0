#!/usr/bin/env bash
# Checks the CUDA backend sources on a machine without a GPU:
#   1. the host test (g++, no CUDA, no torch): interpolation, hat weights, bilinear weights,
#      adjoint gathers, division helpers, launch planning (CUDA-core and tensor-core paths), and
#      a float64 emulation of the kernels' algorithm;
#   2. the real kernels run on the CPU by a small SIMT emulator with the warp-level matrix
#      operations modelled (tests/emu/), against a float64 connector, outputs NaN-poisoned
#      (tests/emu_test.cpp);
#   3. every torch-free .cu compiled by nvcc for sm_80 and sm_90 with -Xptxas -v, disassembled,
#      and checked: no kernel spills registers, every float16/bfloat16 forward, dx and
#      params-partial kernel contains tensor-core (HMMA/HGMMA) instructions;
#   4. binding.cpp syntax-checked against the installed torch headers (skipped when torch is not
#      importable; LC_SKIP_BINDING_CHECK=1 skips it). A CPU-only torch lacks one generated CUDA
#      header (c10/cuda/impl/cuda_cmake_macros.h), which is shimmed as an empty file.
# All steps run through csrc/cuda/ci_check.py, which stores each result under build/cuda-check
# keyed by a hash of the sources and tools it depends on: the pytest tests of tests/test_cuda_host.py
# reuse them instead of compiling again (LC_CUDA_CHECK_FORCE=1 reruns everything).
# Usage: bash csrc/cuda/check.sh     (NVCC, CXX, PYTHON override the tools)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NVCC="${NVCC:-nvcc}"
CXX="${CXX:-g++}"
PYTHON="${PYTHON:-python}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
FORCE=()
[ "${LC_CUDA_CHECK_FORCE:-0}" = "1" ] && FORCE=(--force)

echo "== host test, SIMT/WMMA emulation, nvcc sm_80 + sm_90 ($("$NVCC" --version | tail -n 2 | head -n 1))"
# The emulator (the longest step, one thread) runs beside the others; its output follows theirs.
EMU_LOG="$(mktemp)"
"$PYTHON" "$HERE/ci_check.py" emu --cxx "$CXX" ${FORCE[@]+"${FORCE[@]}"} >"$EMU_LOG" 2>&1 &
EMU_PID=$!
trap 'kill "$EMU_PID" 2>/dev/null || true; rm -f "$EMU_LOG"' EXIT
"$PYTHON" "$HERE/ci_check.py" host nvcc --nvcc "$NVCC" --cxx "$CXX" ${FORCE[@]+"${FORCE[@]}"}

if [ "${LC_SKIP_BINDING_CHECK:-0}" != "1" ]; then
  echo "== binding.cpp syntax against the installed torch's headers"
  "$PYTHON" "$HERE/ci_check.py" binding --cxx "$CXX" ${FORCE[@]+"${FORCE[@]}"}
else
  echo "== binding.cpp syntax: skipped (LC_SKIP_BINDING_CHECK=1)"
fi
EMU_RC=0
wait "$EMU_PID" || EMU_RC=$?
cat "$EMU_LOG"
[ "$EMU_RC" -eq 0 ] || { echo "CUDA CHECK FAILED (emulator)"; exit "$EMU_RC"; }
echo "CUDA CHECK PASSED"
