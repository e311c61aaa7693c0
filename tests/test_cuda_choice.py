"""backend="auto" on GPUs: the faster of cuda/triton per (dtype, d) from recorded figures
(lc_kernels/_gpu_choice.py), the priority order where no figure decides. Runs on CPU with fake
device descriptions and a fake registry of available GPU backends."""

import pytest
import torch

from lc_kernels import _gpu_choice as gc
from lc_kernels import backends

H200 = gc.DeviceDescription("NVIDIA H200", (9, 0))
H100 = gc.DeviceDescription("NVIDIA H100 80GB HBM3", (9, 0))
A100 = gc.DeviceDescription("NVIDIA A100-SXM4-80GB", (8, 0))


def _fig(device, cap, dtype, d, n, fwd, both=None):
    return gc.Figure(device, cap, dtype, d, n, fwd, both or {}, "test", "test")


def test_recorded_figures_pick_cuda_for_bf16_at_768_on_an_h200():
    # benchmarks/RESULTS.md section 3: cuda 2.5-2.9x faster than triton (forward), 1.9-2.1x (fwd+bwd)
    assert gc.choose(H200, torch.bfloat16, 768, ["cuda", "triton"]) == "cuda"
    assert gc.choose(H200, torch.bfloat16, 768, ["triton", "cuda"]) == "cuda"  # not the list order
    for f in gc.RECORDED:
        assert f.source and f.kernels, "every figure names its source and the kernels it timed"
        assert set(f.fwd_ms) >= {"cuda", "triton"}


def test_no_figure_means_no_decision():
    assert gc.choose(H200, torch.float16, 768, ["cuda", "triton"]) is None  # no fp16 figure
    assert gc.choose(H200, torch.bfloat16, 1024, ["cuda", "triton"]) is None  # no figure at d = 1024
    assert gc.choose(A100, torch.bfloat16, 768, ["cuda", "triton"]) is None  # other architecture
    assert gc.choose(H200, torch.bfloat16, 768, ["cuda"]) is None  # nothing to choose between


def test_same_architecture_stands_in_and_a_named_device_wins():
    figs = [
        _fig("H200", (9, 0), torch.bfloat16, 768, 1024, {"cuda": 1.0, "triton": 2.0}),
        _fig("H100", (9, 0), torch.bfloat16, 768, 1024, {"cuda": 3.0, "triton": 1.0}),
    ]
    assert gc.choose(H100, torch.bfloat16, 768, ["cuda", "triton"], figs) == "triton"  # its own figure
    assert gc.choose(H200, torch.bfloat16, 768, ["cuda", "triton"], figs) == "cuda"
    other_h = gc.DeviceDescription("NVIDIA GH200 480GB", (9, 0))  # contains "H200": its figures
    assert gc.choose(other_h, torch.bfloat16, 768, ["cuda", "triton"], figs) == "cuda"
    unknown_hopper = gc.DeviceDescription("NVIDIA H800", (9, 0))  # no name match: both cc-9.0 figures
    assert len(gc.applicable(unknown_hopper, torch.bfloat16, 768, figs)) == 2


def test_per_d_and_per_dtype_decisions_differ():
    figs = [
        _fig("H200", (9, 0), torch.bfloat16, 768, 16384, {"cuda": 1.0, "triton": 2.0}),
        _fig("H200", (9, 0), torch.bfloat16, 4096, 16384, {"cuda": 5.0, "triton": 2.0}),
        _fig("H200", (9, 0), torch.float16, 768, 16384, {"cuda": 2.0, "triton": 1.5}),
    ]
    assert gc.choose(H200, torch.bfloat16, 768, ["cuda", "triton"], figs) == "cuda"
    assert gc.choose(H200, torch.bfloat16, 4096, ["cuda", "triton"], figs) == "triton"
    assert gc.choose(H200, torch.float16, 768, ["cuda", "triton"], figs) == "triton"


def test_every_batch_size_counts_once_and_training_time_is_preferred():
    # at N = 16k triton is 2x faster, at 256k cuda is 1.5x faster: the ratio decides, not the
    # large absolute times of the big batch
    figs = [
        _fig("H200", (9, 0), torch.bfloat16, 768, 16384, {"cuda": 2.0, "triton": 1.0}),
        _fig("H200", (9, 0), torch.bfloat16, 768, 262144, {"cuda": 20.0, "triton": 30.0}),
    ]
    assert gc.choose(H200, torch.bfloat16, 768, ["cuda", "triton"], figs) == "triton"
    # forward + backward, where every figure has it, outweighs the forward alone
    figs = [
        _fig("H200", (9, 0), torch.bfloat16, 768, 16384, {"cuda": 1.0, "triton": 2.0}, {"cuda": 5.0, "triton": 3.0})
    ]
    assert gc.choose(H200, torch.bfloat16, 768, ["cuda", "triton"], figs) == "triton"


@pytest.fixture
def fake_gpu_registry(monkeypatch):
    """cuda and triton both 'available' on a fake H200; the real registry stays untouched."""
    backends._load_all()
    reg = dict(backends._REGISTRY)
    for name, prio in (("cuda", 10), ("triton", 20)):
        real = reg[name]
        reg[name] = backends.Backend(
            name=name,
            forward=real.forward,
            backward_dx=real.backward_dx,
            backward_params=real.backward_params,
            unavailable_reason=lambda: None,
            devices=("cuda",),
            dtypes={"cuda": (torch.float16, torch.bfloat16, torch.float32)},
            priority={"cuda": prio},
        )
    monkeypatch.setattr(backends, "_REGISTRY", reg)
    monkeypatch.setattr(gc, "describe", lambda device: H200)
    return reg


def test_auto_backend_uses_the_figures(fake_gpu_registry, monkeypatch):
    dev = torch.device("cuda")
    assert backends.auto_backend(dev, torch.bfloat16, d=768) == "cuda"
    # the same registry with figures where triton wins: auto follows the figures, not the order
    figs = (_fig("H200", (9, 0), torch.bfloat16, 768, 16384, {"cuda": 3.0, "triton": 1.0}),)
    monkeypatch.setattr(gc, "RECORDED", figs)
    assert backends.auto_backend(dev, torch.bfloat16, d=768) == "triton"
    assert backends.auto_backend(dev, torch.bfloat16) == "triton"  # d unknown: the dtype's figures


def test_auto_backend_falls_back_to_the_priority_order(fake_gpu_registry):
    dev = torch.device("cuda")
    assert backends.auto_backend(dev, torch.float16, d=768) == "cuda"  # no fp16 figure: priority
    assert backends.auto_backend(dev, torch.bfloat16, d=2048) == "cuda"  # no figure at this d
    assert backends.auto_backend(dev, torch.float64, d=768) == "reference"  # only reference takes fp64 here


def test_auto_backend_on_cpu_is_unchanged():
    # on CPU no figure is consulted: the priority order (the cpu extension where built)
    name = backends.auto_backend(torch.device("cpu"), torch.float32, d=768)
    assert name in ("cpu", "reference")
    assert name == backends.auto_backend(torch.device("cpu"), torch.float32)
