"""benchmarks/bench_kernels.py without a GPU: its arguments, floors, summary and table, and that it
refuses clearly where there is no CUDA device (the timings themselves run in benchmarks/gpu_check.sh)."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATH = os.path.join(ROOT, "benchmarks", "bench_kernels.py")


@pytest.fixture(scope="module")
def bk():
    spec = importlib.util.spec_from_file_location("bench_kernels", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_imports_only_torch_lc_kernels_and_the_standard_library():
    tree = ast.parse(open(PATH).read())
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module.split(".")[0])
    assert mods - set(sys.stdlib_module_names) == {"torch", "lc_kernels"}


def test_arguments(bk):
    a = bk.build_parser().parse_args([])
    assert a.d == [768, 384, 1024] and a.n == [4096, 16384, 65536, 262144] and a.dtype == "bfloat16"
    a = bk.build_parser().parse_args(["--d", "768", "--n", "16k,3000", "--dtype", "float16", "--max-seconds", "90"])
    assert a.d == [768] and a.n == [16384, 3000] and a.max_seconds == 90.0
    for bad in ("0", "4x", "-1k", ","):
        with pytest.raises(Exception, match="--n"):
            bk.parse_sizes(bad, "--n")
    with pytest.raises(SystemExit):
        bk.build_parser().parse_args(["--dtype", "float64"])
    assert bk.out_path("") is None and bk.out_path("o/r.json") == "o/r.json"
    assert bk.out_path("o") == os.path.join("o", "bench_kernels.json")


def test_floors_and_rotation(bk):
    assert bk.geometry(768) == {"d": 768, "r": 96, "p": 96, "q": 384, "K": 2}
    f = bk.floors(2.0, 1024, 768, 96)
    assert f["fwd"] == f["dx"] == 2.0
    assert f["params"] == pytest.approx(2.0 * (768 + 96) / (2 * 768))  # read z and dy once
    assert f["fwd+z"] == pytest.approx(2.0 * (2 * 768 + 96) / (2 * 768))
    l2 = 50 << 20
    for per_set in (1 << 20, 6 << 20, 400 << 20):
        k = bk.rotation_sets(per_set, l2)
        assert k >= 2 and (k * per_set > 2 * l2 or k == 64)


def _fake(bk):
    med = {
        "copy": 0.2,
        "fwd": 0.24,
        "fwd+z": 0.26,
        "dx": 0.28,
        "params": 0.2,
        "wbuild": 0.004,
        "compiled-fwd": 0.6,
        "compiled-bwd": 0.96,
    }
    return [
        {"d": 768, "N": 262144, "r": 96, "variants": {k: {"median_ms": v} for k, v in med.items()}},
        {"d": 384, "N": 3000, "r": 48, "variants": {"copy": {"median_ms": 0.01}, "fwd": {"median_ms": 0.02}}},
    ]


def test_summary_and_table(bk):
    rows = bk.summarize(_fake(bk))
    r = rows[0]
    assert r["fwd_x_floor"] == pytest.approx(1.2) and r["dx_x_floor"] == pytest.approx(1.4)
    assert r["params_x_floor"] == pytest.approx(0.2 / (0.2 * (768 + 96) / 1536))
    assert r["compiled_fwd_over_fwd"] == pytest.approx(2.5) and r["compiled_bwd_over_bwd"] == pytest.approx(2.0)
    assert "compiled_fwd_over_fwd" not in rows[1] and rows[1]["fwd_x_floor"] == pytest.approx(2.0)
    table = bk.format_table(rows).splitlines()
    assert len(table) == 4 and table[0].split()[:4] == ["d", "N", "copy", "fwd"]
    assert "256k" in table[2] and "1.20" in table[2] and "2.50" in table[2]
    assert "3000" in table[3] and table[3].split()[-1] == "-"  # missing variants print as '-'
    assert len({len(line) for line in table}) == 1  # aligned columns
    json.dumps(rows)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_refuses_clearly_without_cuda(tmp_path):
    res = subprocess.run(
        [sys.executable, PATH, "--out", str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert res.returncode == 2 and "needs a CUDA device" in res.stderr
    assert not os.listdir(tmp_path)


def test_dry_run_of_one_shape_on_cpu(bk):
    """run_shape end to end on CPU tensors (Triton interpreter, wall-clock timer, no graphs, no L2
    rotation): every variant runs through the real launchers and the summary reads its output."""
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the dry run needs the Triton interpreter (CPU tensors)")
    args = bk.build_parser().parse_args(["--repeats", "1", "--warmup", "0", "--inner", "1"])
    res = bk.run_shape(64, 40, torch.float32, args, bk._Timer(graphs=True, device=torch.device("cpu")), compile_=False)
    assert res["rotation_sets"] == 2 and res["forward_rel_err"] < 1e-5
    assert set(res["variants"]) == {"copy", "fwd", "fwd+z", "dx", "params", "wbuild"}
    assert all(v["median_ms"] > 0 and v["samples"] == 1 for v in res["variants"].values())
    row = bk.summarize([res])[0]
    assert row["fwd_x_floor"] > 0 and "compiled_fwd_over_fwd" not in row


def test_the_compiled_reference_computes_the_connector_and_its_gradients(bk):
    from lc_kernels import reference as ref

    g = bk.geometry(64)
    r, p, q = g["r"], g["p"], g["q"]
    x, dy = torch.randn(10, 64, dtype=torch.float64), torch.randn(10, 64, dtype=torch.float64)
    th, b = torch.randn(2, p, q, dtype=torch.float64), torch.randn(64, dtype=torch.float64)
    a, bm = ref.interp_matrix(r, p), ref.interp_matrix(64, q)
    fwd, bwd = bk._reference_fns(r, 0.4, 0.9, compile_=False)
    torch.testing.assert_close(fwd(x, th, b, a, bm), ref.connector(x, th, b, 0.4, r, 0.9))
    dx, dth, db = bwd(x, dy, th, a, bm)
    edx, edth, edb = ref.connector_backward(x, dy, th, 0.4, r, 0.9)
    torch.testing.assert_close(dx, edx)
    torch.testing.assert_close(dth, edth)
    torch.testing.assert_close(db, edb)
