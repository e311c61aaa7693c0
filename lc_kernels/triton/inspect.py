"""Compile the Triton backend's kernels for a GPU target without a GPU and read the result.

    python -m lc_kernels.triton.inspect --arch 90            # sm_90 (H100/H200)
    python -m lc_kernels.triton.inspect --arch 80 --dtypes bf16 --d 768

For every kernel the backend launches (``launch.kernel_plans``), at every configuration of its
autotune space, for each dtype and d (SPEC default geometry r = d/8, p = r, q = d/2, K = 2; N a
multiple of 16), it compiles ahead of time with Triton's own compiler (``triton.compile`` with a
``GPUTarget``), disassembles the cubin with the ``cuobjdump`` Triton ships, and prints one JSON line:

    name, variant, dtype, d, arch, config (BN, BD, num_warps, num_stages, ...), num_warps, registers,
    spill_bytes (local memory per thread: spills), shared_bytes (Triton's dynamic shared memory),
    tensor_core_instructions (HGMMA + HMMA in the SASS), fp64_instructions (D* opcodes and
    conversions to/from F64), global_loads_128 (LDG/LDGSTS with a 128-bit width), global_loads,
    sass_instructions, compile_s

Identical compilations (d = 768 and d = 1024 share every compile-time constant) are done once; with
``--jobs`` > 1 they run in parallel processes. This is CPU-side evidence of a GPU design, never a
timing. TRITON_INTERPRET must be unset (the module re-runs itself without it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, List, Optional, Sequence

_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "fp64": "float64"}


def _tool(name: str) -> str:
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name} not found at {path}: this triton has no NVIDIA tools")
    return path


def _params(fn) -> List[tuple]:
    """(name, is_constexpr) of a kernel's parameters (a JIT function, or an interpreted one)."""
    if hasattr(fn, "params"):
        return [(prm.name, prm.is_constexpr) for prm in fn.params]
    import inspect as _std_inspect

    import triton.language as tl

    return [
        (name, prm.annotation in (tl.constexpr, "tl.constexpr"))
        for name, prm in _std_inspect.signature(fn.fn).parameters.items()
    ]


def _signature(fn, plan) -> tuple:
    """(signature, constexprs, attrs) as Triton's JIT would specialise them for these arguments."""
    sig: Dict[str, str] = {}
    constexprs: Dict[str, object] = dict(plan.constexprs)
    attrs: Dict[tuple, list] = {}
    for i, (name, is_constexpr) in enumerate(_params(fn)):
        if is_constexpr:
            sig[name] = "constexpr"
            continue
        if name in plan.pointers:
            sig[name] = "*" + plan.pointers[name]
            attrs[(i,)] = [["tt.divisibility", 16]]  # torch allocations are 16-byte aligned
        elif name in plan.floats:
            sig[name] = "fp32"
        elif name in plan.ints:
            v = int(plan.ints[name])
            if v == 1:  # Triton specialises integer arguments equal to 1 as constants
                sig[name] = "constexpr"
                constexprs[name] = 1
                continue
            sig[name] = "i64" if abs(v) >= 2**31 else "i32"
            if v % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            raise KeyError(f"{plan.name}: no value for argument {name}")
    return sig, constexprs, attrs


def _count(sass: str) -> Dict[str, int]:
    ops = re.findall(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)", sass)
    base = Counter(o.split(".")[0] for o in ops)
    fp64 = sum(
        1 for o in ops if o.split(".")[0] in ("DADD", "DMUL", "DFMA", "DSETP", "DMNMX", "DMMA", "DSET") or ".F64" in o
    )
    ldg = [o for o in ops if o.split(".")[0] in ("LDG", "LDGSTS")]
    return {
        "tensor_core_instructions": base.get("HGMMA", 0) + base.get("HMMA", 0),
        "fp64_instructions": fp64,
        "global_loads_128": sum(1 for o in ldg if o.endswith(".128")),
        "global_loads": len(ldg),
        "local_memory_instructions": base.get("STL", 0) + base.get("LDL", 0),
        "sass_instructions": len(ops),
    }


def compile_one(job: dict) -> dict:
    """Compile one (kernel, config) for ``job['arch']``; returns the measurements."""
    import torch  # noqa: F401  (the plans use torch dtypes)
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from . import launch

    plan = next(
        p
        for p in launch.kernel_plans(job["d"], getattr(torch, job["torch_dtype"]), **job["plan_kw"])
        if p.name == job["name"] and p.variant == job["variant"]
    )
    cfg = dict(job["config"])
    opts = {"num_warps": cfg.pop("num_warps", 4), "num_stages": cfg.pop("num_stages", 3)}
    plan.constexprs = {**plan.constexprs, **cfg}
    sig, constexprs, attrs = _signature(plan.fn, plan)
    t0 = time.time()
    cc = triton.compile(
        ASTSource(fn=plan.fn, signature=sig, constexprs=constexprs, attrs=attrs),
        target=GPUTarget("cuda", job["arch"], 32),
        options=opts,
    )
    secs = time.time() - t0
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cc.asm["cubin"])
        path = f.name
    try:
        tool = _tool("cuobjdump")
        res = subprocess.run([tool, "-res-usage", path], capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([tool, "-sass", path], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(path)
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", res)
    if m is None:
        raise RuntimeError(f"cuobjdump -res-usage printed no resource line for {plan.name}:\n{res}")
    meta = cc.metadata
    shared = meta.shared if hasattr(meta, "shared") else meta["shared"]
    out = {
        "registers": int(m[1]),
        "spill_bytes": int(m[4]) + int(m[2]),
        "shared_bytes": int(shared) + int(m[3]),
        **_count(sass),
        "compile_s": round(secs, 2),
    }
    return out


def _jobs(arch: int, dtypes: Sequence[str], ds: Sequence[int], kernels: Optional[Sequence[str]], plan_kw: dict):
    import torch

    from . import launch

    jobs, rows = {}, []
    for dt in dtypes:
        tdt = getattr(torch, _DTYPES[dt])
        for d in ds:
            for plan in launch.kernel_plans(d, tdt, **plan_kw):
                if kernels and plan.name not in kernels:
                    continue
                for cfg in plan.configs:
                    full = dict(cfg)
                    # identical compilations share one job: the key is everything that reaches the compiler
                    sig, constexprs, attrs = _signature(plan.fn, _with(plan, cfg))
                    key = (
                        plan.name,
                        plan.variant,
                        arch,
                        json.dumps(sig, sort_keys=True),
                        json.dumps({k: str(v) for k, v in constexprs.items()}, sort_keys=True),
                        json.dumps(sorted((str(k), v) for k, v in attrs.items())),
                        cfg.get("num_warps"),
                        cfg.get("num_stages"),
                    )
                    jobs.setdefault(
                        key,
                        dict(
                            name=plan.name,
                            variant=plan.variant,
                            arch=arch,
                            d=d,
                            torch_dtype=_DTYPES[dt],
                            config=full,
                            plan_kw=plan_kw,
                        ),
                    )
                    rows.append(
                        (
                            key,
                            dict(
                                name=plan.name,
                                variant=plan.variant,
                                dtype=dt,
                                d=d,
                                arch=arch,
                                config={
                                    **{
                                        k: v
                                        for k, v in plan.constexprs.items()
                                        if k in ("G", "R_PAD", "RK", "RC", "GC", "DOT", "BR", "BP", "BQ")
                                    },
                                    **full,
                                },
                                num_warps=full.get("num_warps", 4),
                            ),
                        )
                    )
    return jobs, rows


def _with(plan, cfg):
    import copy

    p = copy.copy(plan)
    p.constexprs = {**plan.constexprs, **{k: v for k, v in cfg.items() if k not in ("num_warps", "num_stages")}}
    return p


def run(
    arch: int, dtypes: Sequence[str], ds: Sequence[int], kernels=None, jobs: int = 1, plan_kw: Optional[dict] = None
) -> List[dict]:
    """All measurements as a list of dicts (one per kernel, dtype, d, config)."""
    jobs_by_key, rows = _jobs(arch, dtypes, ds, kernels, plan_kw or {})
    keys = list(jobs_by_key)
    if jobs > 1 and len(keys) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as ex:
            results = dict(zip(keys, ex.map(compile_one, [jobs_by_key[k] for k in keys])))
    else:
        results = {k: compile_one(jobs_by_key[k]) for k in keys}
    return [{**row, **results[key]} for key, row in rows]


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lc_kernels.triton.inspect", description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", type=int, default=90, help="compute capability x 10 (80: A100, 90: H100/H200)")
    ap.add_argument("--dtypes", default="bf16,fp16,fp32", help="comma-separated of bf16, fp16, fp32, fp64")
    ap.add_argument("--d", default="384,768,1024", help="comma-separated hidden sizes (r = d/8, q = d/2)")
    ap.add_argument("--kernels", default="", help="comma-separated kernel names (default: all)")
    ap.add_argument("--multitask", action="store_true", help="compile the task-id (HAS_IDS) variants, T = 3")
    ap.add_argument(
        "--from-x", action="store_true", help="compile the params partials that pool x (no saved z) instead"
    )
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="parallel compile processes")
    a = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":  # the kernels must be real JIT functions: re-run without it
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        return subprocess.call([sys.executable, "-m", "lc_kernels.triton.inspect", *(argv or sys.argv[1:])], env=env)
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    dtypes = [s for s in a.dtypes.split(",") if s]
    bad = [s for s in dtypes if s not in _DTYPES]
    if bad:
        ap.error(f"--dtypes: unknown {bad}; choose from {sorted(_DTYPES)}")
    ds = [int(s) for s in a.d.split(",") if s]
    kernels = [s for s in a.kernels.split(",") if s] or None
    for row in run(a.arch, dtypes, ds, kernels, a.jobs, dict(has_ids=a.multitask, from_x=a.from_x)):
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
