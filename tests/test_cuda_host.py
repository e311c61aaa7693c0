"""The CUDA backend's checks that need no GPU: the g++ host test of the kernels' index arithmetic
and launch planning, the kernels themselves under a CPU SIMT emulator (with the warp-level matrix
operations of the tensor-core kernels modelled), nvcc compilation of the torch-free kernels for
sm_80 and sm_90 with their register/spill report and SASS, the binding's syntax against the
installed torch headers, and the backend's registration.

The host test, the emulation and the nvcc build run through ``csrc/cuda/ci_check.py``, which
caches each result by a hash of its sources and tools: after ``bash csrc/cuda/check.sh`` (CI runs
it first) these tests reuse its results instead of compiling again; alone they run the steps.
"""

import importlib.util
import os
import shutil
import subprocess
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


def _ci_check():
    spec = importlib.util.spec_from_file_location("lc_cuda_ci_check", CUDA_DIR / "ci_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CI = _ci_check()


def _run(cmd, timeout):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def _log(res):
    return Path(res["log"]).read_text()[-8000:]


@pytest.mark.skipif(GXX is None, reason="g++ is not installed")
def test_host_test_compiles_and_passes():
    res = CI.run_host(CI.cache_dir(), GXX)
    assert res["ok"], f"host test failed:\n{_log(res)}"
    assert " 0 failures" in _log(res) and "HOST TEST PASSED" in _log(res)


@pytest.mark.skipif(GXX is None, reason="g++ is not installed")
def test_host_test_detects_a_broken_helper(tmp_path):
    """The host test must be able to fail: an off-by-one in the gather range has to be caught."""
    src = (CUDA_DIR / "connector_kernels.cuh").read_text()
    broken = src.replace("floor_div_nonneg(num + (n_in - 2), n_in - 1)", "floor_div_nonneg(num + (n_in - 1), n_in - 1)")
    assert broken != src, "the mutation no longer applies; update this test with the helper"
    (tmp_path / "cuda").mkdir()
    (tmp_path / "cuda" / "connector_kernels.cuh").write_text(broken)
    exe = tmp_path / "host_test"
    rc, out = _run(
        [
            GXX,
            "-std=c++17",
            "-O1",
            "-I",
            str(tmp_path),
            "-I",
            str(CSRC),
            str(CUDA_DIR / "tests" / "host_test.cpp"),
            "-o",
            str(exe),
        ],
        timeout=300,
    )
    assert rc == 0, out
    rc, out = _run([str(exe)], timeout=300)
    assert rc != 0 and "FAIL" in out


@pytest.mark.skipif(GXX is None, reason="g++ is not installed")
def test_kernels_pass_under_the_simt_emulator():
    """The real kernel source on the CPU, one fiber per CUDA thread, against the float64 connector
    with NaN-poisoned outputs: the CUDA-core kernels (float32/float64) to ~1e-12/2e-6, the
    tensor-core kernels (float16/bfloat16, warp-level matrix operations modelled) within an error
    bound derived from their roundings, at N in {1, 17, 4097} and d in {384, 768, 1024, 4096},
    odd g, r, p, q, several tasks, and dTheta/db bitwise identical across runs
    (csrc/cuda/tests/emu_test.cpp)."""
    res = CI.run_emu(CI.cache_dir(), GXX)
    log = _log(res)
    assert res["ok"], f"kernels failed under emulation:\n{log}"
    assert "EMULATION PASSED" in log and " 0 failures" in log


@pytest.mark.skipif(GXX is None, reason="g++ is not installed")
@pytest.mark.parametrize(
    "what, old, new",
    [
        # the forward's K loop one 16-step short: the last 16 rows of W never contribute
        ("forward K loop", "for (int ks = 0; ks < ksteps; ++ks) {", "for (int ks = 0; ks + 1 < ksteps; ++ks) {"),
        # dx reads W instead of W^T (row-major B over the panel)
        ("dx transpose", "FragBcolmajor<T> wt;", "FragB<T> wt;"),
        # the params kernel forgets the db ones column
        ("db ones column", "(ones && c == 0 && row_ok(m)) ? 1.f : 0.f", "0.f"),
        # the cp.async pipeline waits one group short: a step reads dy before its copies land
        ("cp.async wait", "__pipeline_wait_prior(kParamsStages - 2);", "__pipeline_wait_prior(kParamsStages - 1);"),
    ],
)
def test_emulator_detects_a_broken_tensor_core_kernel(tmp_path, what, old, new):
    """The tensor-core emulation must be able to fail: mutations of the kernels are caught."""
    src_dir = tmp_path / "csrc"
    shutil.copytree(CSRC / "cuda", src_dir / "cuda")
    tck = src_dir / "cuda" / "tc_kernels.cuh"
    text = tck.read_text()
    assert text.count(old) >= 1, f"the {what} mutation no longer applies; update this test with the kernel"
    tck.write_text(text.replace(old, new, 1))
    exe = tmp_path / "emu_test"
    flags = ["-O0" if f == "-O2" else f for f in CI.EMU_FLAGS]  # compiles 3x faster; --quick runs in ~1 s
    rc, out = _run(
        [
            GXX,
            *flags,
            "-I",
            str(src_dir / "cuda" / "tests" / "emu"),
            "-I",
            str(src_dir),
            str(src_dir / "cuda" / "tests" / "emu_test.cpp"),
            "-o",
            str(exe),
        ],
        timeout=600,
    )
    assert rc == 0, out
    rc, out = _run([str(exe), "--quick"], timeout=600)
    assert rc != 0 and "FAIL" in out, f"{what}: the mutated kernel passed the emulation:\n{out[-3000:]}"


@pytest.fixture(scope="module")
def nvcc_report():
    if NVCC is None:
        pytest.skip("nvcc is not installed")
    res = CI.run_nvcc(CI.cache_dir(), NVCC)
    assert res["ok"], f"nvcc failed:\n{_log(res)}"
    return res


def test_kernels_compile_for_sm80_and_sm90(nvcc_report):
    kernels = nvcc_report["kernels"]
    for arch in CI.ARCHS:
        names = {v["mangled"] for v in kernels.values() if v["arch"] == arch}
        assert any("tc_forward_kernel" in n for n in names), f"no tensor-core forward compiled for {arch}"
        assert any("connector_forward_kernel" in n for n in names), f"no CUDA-core forward compiled for {arch}"
    assert all("registers" in v for v in kernels.values()), "ptxas -v gave no register count for some kernel"


def test_no_spills_and_tensor_cores_in_every_half_kernel(nvcc_report):
    """-Xptxas -v: 0 spill bytes in every kernel on sm_80 and sm_90; cuobjdump -sass: HMMA (or
    HGMMA) instructions in every float16/bfloat16 forward, dx and params-partial kernel."""
    if not nvcc_report.get("cuobjdump"):
        pytest.skip("no cuobjdump (PATH or Triton's copy) to disassemble the cubins")
    print("\n" + CI.table(nvcc_report["kernels"]))
    assert CI.problems(nvcc_report["kernels"]) == []


def test_report_checks_can_fail():
    """The spill and tensor-core checks flag what they must (synthetic ptxas -v and SASS text)."""
    ptxas = (
        "ptxas info    : Compiling entry function '_ZN2lc4cuda2tc17tc_forward_kernelI6__halfEEvv' for 'sm_80'\n"
        "ptxas info    : Function properties for _ZN2lc4cuda2tc17tc_forward_kernelI6__halfEEvv\n"
        "    8 bytes stack frame, 12 bytes spill stores, 4 bytes spill loads\n"
        "ptxas info    : Used 128 registers, used 1 barriers, 452 bytes cmem[0]\n"
    )
    sass = (
        "\tcode for sm_80\n\t\tFunction : _ZN2lc4cuda2tc17tc_forward_kernelI6__halfEEvv\n"
        "        /*0000*/                   IMAD.MOV.U32 R1, RZ, RZ, c[0x0][0x28] ;\n"
        "        /*0010*/                   FFMA R2, R3, R4, R5 ;\n"
    ).replace("code for sm_80", "arch = sm_80")
    kernels = CI.parse_ptxas(ptxas)
    for k, v in CI.parse_sass(sass).items():
        kernels[k].update(v)
    (entry,) = kernels.values()
    assert entry["registers"] == 128 and entry["spill_stores"] == 12 and entry["hmma"] == 0
    found = CI.problems(kernels)
    assert any("spill" in p for p in found)
    assert any("no HMMA" in p for p in found)
    assert any("not in the compiled objects" in p for p in found)  # the other kernels are missing


def test_cache_key_follows_the_sources(tmp_path, monkeypatch):
    """A changed source file changes the step's key, so a stale result is never reused."""
    copy = tmp_path / "csrc" / "cuda"
    shutil.copytree(CUDA_DIR, copy)
    monkeypatch.setattr(CI, "HERE", copy)
    monkeypatch.setattr(CI, "CSRC", copy.parent)
    keys = {step: CI.step_key(step, "true") for step in ("nvcc", "emu")}
    (copy / "tc_kernels.cuh").write_text((copy / "tc_kernels.cuh").read_text() + "// changed\n")
    assert all(CI.step_key(step, "true") != keys[step] for step in keys)
    (copy / "tests" / "emu_test.cpp").write_text((copy / "tests" / "emu_test.cpp").read_text() + "// changed\n")
    nvcc_key = CI.step_key("nvcc", "true")
    (copy / "tests" / "emu_test.cpp").write_text((copy / "tests" / "emu_test.cpp").read_text() + "// again\n")
    assert CI.step_key("nvcc", "true") == nvcc_key, "a test-only change must not force an nvcc rebuild"


@pytest.mark.skipif(GXX is None, reason="g++ is not installed")
def test_binding_compiles_against_torch_headers():
    if CI.cuda_include(NVCC) is None:
        pytest.skip("no CUDA runtime headers")
    res = CI.run_binding(CI.cache_dir(), GXX)
    assert not res.get("skipped"), res.get("skipped")
    assert res["ok"], f"binding.cpp does not compile against torch {torch.__version__}:\n{_log(res)}"


def test_cuda_backend_is_registered_and_explains_itself():
    b = backends.get("cuda")
    assert b.devices == ("cuda",)
    for dt in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        assert dt in b.dtypes["cuda"]
    # the fallback order for backend="auto" where no recorded figure decides (lc_kernels/_gpu_choice.py)
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


def test_cuda_backend_accepts_and_ignores_extra_keywords():
    """The op layer may pass extra keywords (e.g. a prebuilt ``weights=``): the cuda backend's
    functions take and ignore them, and still say why they cannot run here."""
    from lc_kernels import _cuda_backend as cb

    x = torch.zeros(2, 8)
    for fn, args in (
        (cb.forward, (x, x, x, None, 0.5, 4, 1.0)),
        (cb.backward_dx, (x, x, None, 0.5, 4, 1.0)),
        (cb.backward_params, (x, x, x, None, 0.5, 4, 1.0)),
    ):
        if torch.cuda.is_available() and cb.unavailable_reason() is None:
            continue
        with pytest.raises((RuntimeError, TypeError)) as exc:
            fn(*args, weights=torch.zeros(1))
        assert "unexpected keyword" not in str(exc.value)


def test_check_script_is_executable_bash():
    script = CUDA_DIR / "check.sh"
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    assert "ci_check.py" in text, "check.sh must go through the cached steps pytest reuses"
    rc, out = _run(["bash", "-n", str(script)], timeout=30)
    assert rc == 0, out
