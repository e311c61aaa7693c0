"""Bad inputs to the cuda backend's binding (lc_kernels._C.cuda_*) raise RuntimeErrors that name
the argument and the fix. Each call runs in its own fresh Python process: on an H200 the second
call of the former single test (a non-contiguous x) killed the whole pytest process with a
segmentation fault, hiding every later call and test. Now a crash fails only its own case, with
the signal and the child's output.

Also a script, for triage on a GPU machine (benchmarks/gpu_check.sh, step ``triage``):

    python tests/test_cuda_bad_inputs.py CASE     # one call, in this process; exit 0 when it raised
    python tests/test_cuda_bad_inputs.py --list
"""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# case -> (the call, with x, dy (8, 16) float64, th (1, 2, 2, 8) and b (1, 16) on the GPU; the
# pattern its RuntimeError must match)
CASES = {
    "theta_dtype": ("C.cuda_forward(x, th.float(), b, None, 0.5, 4, 1.0)", r"theta must be"),
    "noncontiguous_x": ("C.cuda_forward(x.t().contiguous().t(), th, b, None, 0.5, 4, 1.0)", r"contiguous"),
    "cpu_x": ("C.cuda_forward(x.cpu(), th, b, None, 0.5, 4, 1.0)", r"CUDA tensor"),
    "bias_shape": ("C.cuda_forward(x, th, b[:, :8].contiguous(), None, 0.5, 4, 1.0)", r"bias must have shape"),
    "tasks_without_ids": (
        "C.cuda_forward(x, th.expand(2, -1, -1, -1).contiguous(), b.expand(2, -1).contiguous(), None, 0.5, 4, 1.0)",
        r"without ids",
    ),
    "r_not_divisor": ("C.cuda_forward(x, th, b, None, 0.5, 3, 1.0)", r"r=3"),
    "t_out_of_range": ("C.cuda_backward_dx(dy, th, None, 1.5, 4, 1.0)", r"t must be"),
    "ids_dtype": (
        "C.cuda_forward(x, th, b, torch.zeros(8, dtype=torch.int32, device='cuda'), 0.5, 4, 1.0)",
        r"ids must be int64",
    ),
    "dy_dtype": ("C.cuda_backward_params(x, dy.float(), th, None, 0.5, 4, 1.0)", r"dy must have x's dtype"),
    # float64 runs on CUDA cores: one 16-row block at d = 8192 needs more shared memory than exists
    "smem_too_large": (
        "C.cuda_forward(torch.zeros(1, 8192, device='cuda', dtype=torch.float64), "
        "torch.zeros(1, 1, 1, 8192, device='cuda', dtype=torch.float64), "
        "torch.zeros(1, 8192, device='cuda', dtype=torch.float64), None, 0.5, 8192, 1.0)",
        r"shared memory.*triton",
    ),
    # the tensor-core path (bfloat16) names the alternative too when a dx panel cannot fit
    "bf16_dx_too_wide": (
        "C.cuda_backward_dx(torch.zeros(16, 65536, device='cuda', dtype=torch.bfloat16), "
        "torch.zeros(1, 1, 4, 8, device='cuda'), None, 0.5, 8192, 1.0)",
        r"shared memory.*triton",
    ),
}


def run_case(name: str) -> int:
    """Runs one call here; 0 when it raised a matching RuntimeError (printed), else 1."""
    import torch

    import lc_kernels

    call, pattern = CASES[name]
    C = lc_kernels._ext.load()
    g = torch.Generator().manual_seed(15)
    x = torch.randn(8, 16, generator=g, dtype=torch.float64).cuda()
    dy = torch.randn(8, 16, generator=g, dtype=torch.float64).cuda()
    th = (torch.randn(2, 2, 8, generator=g, dtype=torch.float64) * 0.5).cuda()[None]
    b = (torch.randn(16, generator=g, dtype=torch.float64) * 0.5).cuda()[None]
    print(f"case {name}: {call}", flush=True)
    try:
        eval(call, {"C": C, "torch": torch, "x": x, "dy": dy, "th": th, "b": b})  # noqa: S307 - fixed table above
    except RuntimeError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else ""
        print(f"RAISED: {msg}", flush=True)
        return 0 if re.search(pattern, str(exc)) else 1
    print("NO ERROR RAISED", flush=True)
    return 1


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_raises_clear_error_in_its_own_process(name):
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), name],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )
    out = proc.stdout + proc.stderr
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        pytest.fail(f"{name}: the child process died of {sig} (triage: benchmarks/gpu_check.sh step 'triage')\n{out}")
    assert proc.returncode == 0, f"{name}: expected a RuntimeError matching {CASES[name][1]!r}\n{out}"
    assert "RAISED:" in out


def test_case_table_is_well_formed():
    """Runs without a GPU: every call parses and its pattern compiles."""
    assert "noncontiguous_x" in CASES  # the call that crashed the H200 run
    for name, (call, pattern) in CASES.items():
        compile(call, name, "eval")
        re.compile(pattern)


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CASES:
        print("usage: python tests/test_cuda_bad_inputs.py CASE   (cases: " + ", ".join(sorted(CASES)) + ")")
        sys.exit(0 if sys.argv[1:] == ["--list"] else 2)
    sys.exit(run_case(sys.argv[1]))
