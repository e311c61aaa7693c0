"""The op against hostile or unusual input (issue 18): every backend answers the same way, compiled or not.

* a process whose very first connector call is a compiled one works (backends register at import);
* task ids outside [0, T) raise IndexError on every backend, in eager mode and under torch.compile;
* a non-finite alpha or an empty seed bank (K = 0) is refused with the same error everywhere;
* a non-finite value in x spoils its own row and no other, on every backend.
"""

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import lc_kernels

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU_BACKENDS = [b for b in lc_kernels.available_backends() if b in ("reference", "cpu", "triton")]


def _run_fresh(code):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=REPO, capture_output=True, text=True, timeout=600
    )


def test_first_call_compiled_in_a_fresh_process():
    p = _run_fresh("""
        import torch, lc_kernels
        x, th, b = torch.randn(6, 16), torch.randn(2, 2, 8), torch.randn(16)
        f = torch.compile(lambda x: lc_kernels.connector(x, th, b, 0.5, 4), fullgraph=True)
        err = (f(x) - lc_kernels.reference.connector(x, th, b, 0.5, 4)).abs().max()
        assert err < 1e-5, err
        import transformers
        from layerconnect import LayerConnectConfig, add_connectors
        cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                                      vocab_size=50)
        torch.manual_seed(0)
        model = add_connectors(transformers.BertModel(cfg).eval(), LayerConnectConfig(down_factor=4, positions="all"))
        with torch.no_grad():
            model.layerconnect.bias.normal_()
        ids = torch.randint(0, 50, (2, 7))
        compiled = torch.compile(model, fullgraph=True)
        with torch.no_grad():
            got, want = compiled(input_ids=ids).last_hidden_state, model(input_ids=ids).last_hidden_state
        assert (got - want).abs().max() < 1e-4
        print("OK")
    """)
    assert p.returncode == 0 and "OK" in p.stdout, p.stderr[-3000:]


def _multi(backend, T=3):
    g = torch.Generator().manual_seed(1)
    dtype = torch.float64 if backend != "triton" else torch.float32
    x = torch.randn(5, 16, generator=g, dtype=dtype)
    theta = torch.randn(T, 2, 2, 8, generator=g, dtype=dtype)
    bias = torch.randn(T, 16, generator=g, dtype=dtype)
    return x, theta, bias


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("bad", [3, -1, 100000])
@pytest.mark.parametrize("compiled", [False, True])
def test_out_of_range_task_ids_raise_everywhere(backend, bad, compiled):
    x, theta, bias = _multi(backend)
    ids = torch.tensor([0, 1, bad, 2, 0])

    def call(x, ids):
        return lc_kernels.connector(x, theta, bias, 0.3, 4, backend=backend, task_ids=ids)

    f = torch.compile(call, fullgraph=True) if compiled else call
    with pytest.raises(Exception, match=r"task_ids must be in \[0, T=3\)") as e:
        f(x, ids)
    assert isinstance(e.value, IndexError) or "IndexError" in repr(e.value)
    ok = f(x, torch.tensor([0, 1, 2, 2, 0]))  # and the same call with valid ids works
    assert torch.isfinite(ok).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_bad_alpha_and_empty_bank_are_refused_everywhere(backend):
    x, theta, bias = _multi(backend, T=1)
    for alpha in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="alpha must be a finite float"):
            lc_kernels.connector(x, theta[0], bias[0], 0.3, 4, alpha=alpha, backend=backend)
    with pytest.raises(ValueError, match=r"at least one anchor \(K >= 1\)"):
        lc_kernels.connector(x, theta[0, :0], bias[0], 0.3, 4, backend=backend)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_a_non_finite_value_spoils_only_its_row(backend, value):
    x, theta, bias = _multi(backend, T=1)
    clean = lc_kernels.connector(x, theta[0], bias[0], 0.3, 4, backend=backend)
    dirty = x.clone()
    dirty[2, 5] = value
    y = lc_kernels.connector(dirty, theta[0], bias[0], 0.3, 4, backend=backend)
    assert not torch.isfinite(y[2]).all()
    others = [0, 1, 3, 4]
    assert torch.equal(y[others], clean[others])


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("compiled", [False, True])
def test_out_of_range_task_ids_raise_on_gpu_backends(backend, compiled):
    if backend not in lc_kernels.available_backends():
        pytest.skip(f"{backend} is not available here")
    x, theta, bias = (v.cuda().float() for v in _multi("cpu"))

    def call(x, ids):
        return lc_kernels.connector(x, theta, bias, 0.3, 4, backend=backend, task_ids=ids)

    f = torch.compile(call, fullgraph=True) if compiled else call
    with pytest.raises(Exception, match=r"task_ids must be in \[0, T=3\)"):
        f(x, torch.tensor([0, 1, 7, 2, 0], device="cuda"))
    assert torch.isfinite(f(x, torch.tensor([0, 1, 2, 2, 0], device="cuda"))).all()
