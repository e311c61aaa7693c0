"""``python -m lc_kernels.triton.inspect``: the Triton kernels compiled ahead of time for a GPU target
on this GPU-less machine, and the design claims read back from the SASS (issue 13):

* every float16/bfloat16 forward, dx and params-partial kernel, at every configuration the backend
  may pick, has tensor-core instructions (HGMMA on sm_90, HMMA on sm_80), 0 spilled bytes, at most
  168 registers per thread (three 128-thread CTAs per SM) and no float64 instruction;
* no kernel spills, and no kernel of a non-float64 dtype has a float64 instruction;
* the hot kernels load x / dy / z mostly with 128-bit loads;
* the multi-task (task id) variants at d = 768 in bf16: tensor cores, no spills, <= 168 registers.

The compile runs in a subprocess without TRITON_INTERPRET (conftest sets it for the interpreter
tests); Triton's own cache makes repeated runs fast. CPU-side evidence of a GPU design, not timings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")

from lc_kernels.triton import inspect as I  # noqa: E402
from lc_kernels.triton import launch as L  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOT = ("connector_fwd_kernel", "connector_bwd_dx_kernel", "connector_bwd_partial_kernel")
ALL = ("build_weights_kernel", *HOT, "connector_bwd_reduce_kernel")
KEYS = (
    "name",
    "dtype",
    "d",
    "num_warps",
    "registers",
    "spill_bytes",
    "shared_bytes",
    "tensor_core_instructions",
    "fp64_instructions",
    "global_loads_128",
    "config",
)


def _have_nvidia_tools() -> bool:
    try:
        from triton.backends.nvidia.compiler import CUDABackend  # noqa: F401

        I._tool("cuobjdump")
    except (ImportError, FileNotFoundError):
        return False
    return True


needs_tools = pytest.mark.skipif(not _have_nvidia_tools(), reason="this triton has no NVIDIA backend/cuobjdump")


def _inspect(*args: str):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run(
        [sys.executable, "-m", "lc_kernels.triton.inspect", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert rows, res.stdout[-2000:]
    return rows


@pytest.fixture(scope="module")
def sm90():
    return _inspect("--arch", "90", "--dtypes", "bf16,fp16", "--d", "384,768,1024")


@pytest.fixture(scope="module")
def sm80():
    return _inspect("--arch", "80", "--dtypes", "bf16", "--d", "768")


@pytest.fixture(scope="module")
def sm90_multitask():
    return _inspect("--arch", "90", "--dtypes", "bf16", "--d", "768", "--multitask", "--kernels", ",".join(HOT))


def _space(name, dtype, d, has_ids=False):
    """Configurations of ``name`` over all its variants (the forward: inference and training)."""
    tdt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    return [c for p in L.kernel_plans(d, tdt, has_ids=has_ids) if p.name == name for c in p.configs]


@needs_tools
def test_every_kernel_and_configuration_is_reported(sm90):
    for row in sm90:
        assert all(k in row for k in KEYS), row
    for dtype in ("bf16", "fp16"):
        for d in (384, 768, 1024):
            got = [r for r in sm90 if r["dtype"] == dtype and r["d"] == d]
            assert {r["name"] for r in got} == set(ALL), (dtype, d)
            for name in ALL:
                assert len([r for r in got if r["name"] == name]) == len(_space(name, dtype, d)), (name, dtype, d)


def _check_hot_half(rows, wide_loads=True):
    checked = 0
    for r in rows:
        if r["dtype"] in ("bf16", "fp16") and r["name"] in HOT:
            what = f"{r['name']} {r['dtype']} d={r['d']} {r['config']}"
            assert r["tensor_core_instructions"] > 0, what
            assert r["spill_bytes"] == 0, what
            assert r["registers"] <= 168, what
            assert r["fp64_instructions"] == 0, what
            if wide_loads:  # 16-byte loads of x / dy / z: most global loads (task ids add narrow ones)
                assert r["global_loads_128"] >= 0.6 * r["global_loads"], what
            checked += 1
    return checked


@needs_tools
def test_sm90_half_kernels_use_tensor_cores_without_spills(sm90):
    assert _check_hot_half(sm90) == 2 * 3 * sum(len(_space(n, "bf16", 768)) for n in HOT)


@needs_tools
def test_sm80_half_kernels_use_tensor_cores_without_spills(sm80):
    assert _check_hot_half(sm80) == sum(len(_space(n, "bf16", 768)) for n in HOT)


@needs_tools
def test_sm90_multitask_half_kernels_use_tensor_cores_without_spills(sm90_multitask):
    n = sum(len(_space(n, "bf16", 768, has_ids=True)) for n in HOT)
    assert _check_hot_half(sm90_multitask, wide_loads=False) == n
    assert {r["variant"] for r in sm90_multitask if r["name"] == "connector_fwd_kernel"} == {"inference", "training"}


@needs_tools
def test_no_kernel_spills_or_uses_float64_outside_float64(sm90, sm80, sm90_multitask):
    for r in sm90 + sm80 + sm90_multitask:
        assert r["spill_bytes"] == 0, r
        assert r["fp64_instructions"] == 0, r


def test_sass_counting_and_specialisation_rules():
    sass = """
        /*0100*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR4], R24 ;
        /*0110*/              @!P0 LDG.E.128 R4, desc[UR6][R2.64] ;
        /*0120*/                   LDGSTS.E.BYPASS.LTC128B.128 [R7], desc[UR6][R4.64] ;
        /*0130*/                   LDG.E R9, desc[UR6][R2.64] ;
        /*0140*/                   HMMA.16816.F32.BF16 R8, R4, R2, R8 ;
        /*0150*/                   DFMA R2, R4, R6, R2 ;
        /*0160*/                   F2F.F64.F32 R2, R5 ;
        /*0170*/                   STL [R1], R2 ;
    """
    c = I._count(sass)
    assert c["tensor_core_instructions"] == 2 and c["fp64_instructions"] == 2
    assert c["global_loads_128"] == 2 and c["global_loads"] == 3 and c["local_memory_instructions"] == 1
    plan = next(p for p in L.kernel_plans(768, torch.bfloat16) if p.name == "connector_bwd_reduce_kernel")
    plan.ints = dict(plan.ints, T=1, S=17)
    sig, constexprs, attrs = I._signature(plan.fn, plan)
    names = [name for name, _ in I._params(plan.fn)]
    assert sig["T"] == "constexpr" and constexprs["T"] == 1  # Triton specialises ints equal to 1
    assert sig["S"] == "i32" and (names.index("S"),) not in attrs  # 17 is not a multiple of 16
    assert attrs[(names.index("d"),)] == [["tt.divisibility", 16]] and sig["pw_ptr"] == "*fp32"
