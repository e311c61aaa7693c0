"""The CUDA backend's checks that need no GPU: the g++ host test of the kernels' index arithmetic,
the kernels themselves under a CPU SIMT emulator, nvcc compilation of the torch-free kernels for sm_80 and sm_90, the binding's syntax against the
installed torch headers, and the backend's registration (csrc/cuda/check.sh does the same)."""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

import lc_kernels
from lc_kernels import backends

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
CUDA_DIR = CSRC / "cuda"

GXX = shutil.which(os.environ.get("CXX", "g++"))
NVCC = shutil.which(os.environ.get("NVCC", "nvcc"))


def _run(cmd, timeout):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.skipif(GXX is None, reason="g++ is not installed")
def test_host_test_compiles_and_passes(tmp_path):
    exe = tmp_path / "host_test"
    rc, out = _run(
        [GXX, "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", "-I", str(CSRC), str(CUDA_DIR / "tests" / "host_test.cpp"), "-o", str(exe)],
        timeout=300,
    )
    assert rc == 0, f"g++ failed to build the host test:\n{out}"
    rc, out = _run([str(exe)], timeout=300)
    assert rc == 0 and "HOST TEST PASSED" in out, f"host test failed:\n{out}"
    assert " 0 failures" in out


@pytest.mark.skipif(GXX is None, reason="g++ is not installed")
def test_host_test_detects_a_broken_helper(tmp_path):
    """The host test must be able to fail: an off-by-one in the gather range has to be caught."""
    src = (CUDA_DIR / "connector_kernels.cuh").read_text()
    broken = src.replace("(num + (n_in - 2)) / (n_in - 1)", "(num + (n_in - 1)) / (n_in - 1)")
    assert broken != src, "the mutation no longer applies; update this test with the helper"
    (tmp_path / "cuda").mkdir()
    (tmp_path / "cuda" / "connector_kernels.cuh").write_text(broken)
    exe = tmp_path / "host_test"
    rc, out = _run([GXX, "-std=c++17", "-O1", "-I", str(tmp_path), "-I", str(CSRC), str(CUDA_DIR / "tests" / "host_test.cpp"), "-o", str(exe)], timeout=300)
    assert rc == 0, out
    rc, out = _run([str(exe)], timeout=300)
    assert rc != 0 and "FAIL" in out


@pytest.mark.skipif(GXX is None, reason="g++ is not installed")
def test_kernels_pass_under_the_simt_emulator(tmp_path):
    """The real kernel source, run on the CPU one std::thread per CUDA thread, against the dense
    float64 connector with NaN-poisoned outputs (csrc/cuda/tests/emu_test.cpp)."""
    exe = tmp_path / "emu_test"
    rc, out = _run(
        [GXX, "-std=c++20", "-O1", "-pthread", "-DLC_SIMT_EMULATION", "-I", str(CUDA_DIR / "tests" / "emu"), "-I", str(CSRC),
         str(CUDA_DIR / "tests" / "emu_test.cpp"), "-o", str(exe)],
        timeout=600,
    )
    assert rc == 0, f"g++ failed to build the emulation test:\n{out}"
    rc, out = _run([str(exe)], timeout=600)
    assert rc == 0 and "EMULATION PASSED" in out, f"kernels failed under emulation:\n{out}"


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
def test_kernels_compile_for_sm80_and_sm90(tmp_path):
    cus = sorted(CUDA_DIR.glob("*.cu"))
    assert cus, "no .cu files under csrc/cuda"
    for cu in cus:
        rc, out = _run(
            [NVCC, "-c", "-std=c++17", "-O3", "--use_fast_math", "-t", "2",
             "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90",
             "-I", str(CSRC), str(cu), "-o", str(tmp_path / (cu.name + ".o"))],
            timeout=900,
        )
        assert rc == 0, f"nvcc failed on {cu.name}:\n{out}"
        assert (tmp_path / (cu.name + ".o")).stat().st_size > 0


def _cuda_include():
    cands = [os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"]
    if NVCC:
        cands.append(str(Path(os.path.realpath(NVCC)).parent.parent))
    cands += sorted(str(p) for p in Path("/usr/local").glob("cuda-*"))
    for c in cands:
        if c and (Path(c) / "include" / "cuda_runtime_api.h").exists():
            return str(Path(c) / "include")
    return None


@pytest.mark.skipif(GXX is None or _cuda_include() is None, reason="needs g++ and the CUDA runtime headers")
def test_binding_compiles_against_torch_headers(tmp_path):
    from torch.utils.cpp_extension import include_paths

    shim = tmp_path / "shim" / "c10" / "cuda" / "impl"
    shim.mkdir(parents=True)
    (shim / "cuda_cmake_macros.h").write_text("#pragma once\n")  # generated only in CUDA builds of torch
    incs = []
    for p in include_paths() + [sysconfig.get_paths()["include"], str(tmp_path / "shim"), _cuda_include(), str(CSRC)]:
        incs += ["-I", p]
    rc, out = _run(
        [GXX, "-std=c++17", "-fsyntax-only", "-w", "-DLC_WITH_CUDA", "-DTORCH_EXTENSION_NAME=_C", *incs,
         str(CUDA_DIR / "binding.cpp")],
        timeout=600,
    )
    assert rc == 0, f"binding.cpp does not compile against torch {torch.__version__}:\n{out}"


def test_cuda_backend_is_registered_and_explains_itself():
    b = backends.get("cuda")
    assert b.devices == ("cuda",)
    for dt in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        assert dt in b.dtypes["cuda"]
    # preferred over the reference and (measured on an H200) over triton on GPUs
    assert b.priority["cuda"] < backends.get("triton").priority["cuda"] < backends.get("reference").priority["cuda"]
    reason = b.unavailable_reason()
    if not torch.cuda.is_available():
        assert reason, "without a CUDA device the cuda backend must say why it is unavailable"
        assert "cuda" not in lc_kernels.available_backends()
        x = torch.randn(2, 8)
        with pytest.raises(RuntimeError, match="backend='cuda' is not available"):
            lc_kernels.connector(x, torch.zeros(2, 1, 4), torch.zeros(8), 0.0, 1, backend="cuda")
    if reason is None:
        assert "cuda" in lc_kernels.available_backends()


def test_check_script_is_executable_bash():
    script = CUDA_DIR / "check.sh"
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    rc, out = _run(["bash", "-n", str(script)], timeout=30)
    assert rc == 0, out
