#!/usr/bin/env python
"""Per-kernel GPU timings of the Triton connector backend against the copy floor and torch.compile.

    python benchmarks/bench_kernels.py --out gpu_out/bench_kernels.json
    python benchmarks/bench_kernels.py --d 768 --n 16k,256k --repeats 30

For each hidden size d (SPEC default geometry r = d/8, p = r, q = d/2, K = 2, t = 0.4) and token count
N, in one interleaved run (every repeat times each variant once, in the same order):

    copy          y.copy_(x): the memory floor of the forward and of dx (read N*d, write N*d)
    fwd           the Triton forward with a prebuilt W (inference: no z written)
    fwd+z         the training forward: also writes z = D(x) (N x r)
    dx            the Triton dx kernel with the prebuilt W
    params        dTheta, db from the saved z: split-K partials + ordered reduction (2 launches)
    wbuild        build_weights for one position (once per step for the whole model)
    compiled-fwd  torch.compile of the reference forward (interpolation matrices A, B built once per
                  shape outside the compiled region, as a user would)
    compiled-bwd  torch.compile of the reference's SPEC §4 backward (dx, dTheta, db) on the same inputs

Cold L2: every variant cycles through enough input sets (x, dy, z) to exceed twice the L2 cache, so no
call finds its inputs in L2. Each sample replays a CUDA graph of ``inner`` back-to-back calls (host
launch overhead excluded; eager timing with events if a variant cannot be captured) and divides by
``inner``; the reported figure is the median of ``--repeats`` samples after ``--warmup``.

Floors: ``fwd``, ``fwd+z`` and ``dx`` are judged against the measured copy (x floor = time / copy
time); ``params`` against reading z and dy once, i.e. copy time x (N*r + N*d) / (2 N*d). Targets
(issue 13, bf16, d = 768): fwd <= 1.25x floor and >= 2x faster than compiled-fwd for N >= 16k;
dx <= 1.5x floor; params <= 2x its floor. Needs a CUDA device (refuses clearly without one); imports
only torch and lc_kernels. Writes a JSON file (``--out``) and prints a table last.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

SCHEMA = "lc_kernels.bench_kernels/1"
DEFAULT_D = (768, 384, 1024)  # the target first: a run cut short by --max-seconds still has it
DEFAULT_N = (4096, 16384, 65536, 262144)
VARIANTS = ("copy", "fwd", "fwd+z", "dx", "params", "wbuild", "compiled-fwd", "compiled-bwd")
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def parse_sizes(text: str, what: str) -> List[int]:
    """'4k,16k,65536' -> [4096, 16384, 65536] (k = x1024); a clear error for anything else."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        mult = 1024 if part[-1] in "kK" else 1
        body = part[:-1] if mult != 1 else part
        if not body.isdigit() or int(body) <= 0:
            raise argparse.ArgumentTypeError(f"{what}: {part!r} is not a positive integer (k = x1024 allowed)")
        out.append(int(body) * mult)
    if not out:
        raise argparse.ArgumentTypeError(f"{what}: give at least one value")
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="bench_kernels.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--d",
        type=lambda s: parse_sizes(s, "--d"),
        default=list(DEFAULT_D),
        help="comma-separated hidden sizes (r = d/8, q = d/2); default 768,384,1024",
    )
    ap.add_argument(
        "--n",
        type=lambda s: parse_sizes(s, "--n"),
        default=list(DEFAULT_N),
        help="comma-separated token counts, k = x1024; default 4k,16k,64k,256k",
    )
    ap.add_argument("--dtype", choices=sorted(_DTYPES), default="bfloat16")
    ap.add_argument("--repeats", type=int, default=15, help="timed samples per variant (median reported)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed samples per variant first")
    ap.add_argument(
        "--inner", type=int, default=0, help="calls per sample (default: enough for ~2 ms of copy time, at least 4)"
    )
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile(reference) variants")
    ap.add_argument("--no-graphs", action="store_true", help="time eagerly with events instead of CUDA graphs")
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=0.0,
        help="start no new shape after this many seconds (0: no limit); skipped shapes are listed",
    )
    ap.add_argument("--out", default="", help="JSON file to write (a directory gets bench_kernels.json)")
    ap.add_argument("--seed", type=int, default=0)
    return ap


# ---------------------------------------------------------------------------------------------
# the CPU-side logic (tested without a GPU)
# ---------------------------------------------------------------------------------------------


def geometry(d: int) -> Dict[str, int]:
    r = d // 8
    return {"d": d, "r": r, "p": r, "q": d // 2, "K": 2}


def rotation_sets(bytes_per_set: int, l2_bytes: int, max_sets: int = 64) -> int:
    """Input sets to cycle through so that one pass over them exceeds twice the L2 cache."""
    if bytes_per_set <= 0:
        return 1
    return max(2, min(max_sets, math.ceil(2 * l2_bytes / bytes_per_set) + 1))


def floors(copy_ms: float, n: int, d: int, r: int) -> Dict[str, float]:
    """Memory floors in ms per variant, from the measured copy of x (2 N d elements moved)."""
    return {
        "fwd": copy_ms,
        "fwd+z": copy_ms * (2 * d + r) / (2 * d),
        "dx": copy_ms,
        "params": copy_ms * (d + r) / (2 * d),
    }


def summarize(results: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per shape with each variant's median ms, x its floor, and the ratios to compiled torch."""
    rows = []
    for res in results:
        med = {k: v["median_ms"] for k, v in res["variants"].items() if v.get("median_ms") is not None}
        row: Dict[str, Any] = {"d": res["d"], "N": res["N"], **{f"{k}_ms": v for k, v in med.items()}}
        if "copy" in med:
            fl = floors(med["copy"], res["N"], res["d"], res["r"])
            for k, f in fl.items():
                if k in med:
                    row[f"{k}_x_floor"] = med[k] / f
        if "fwd" in med and "compiled-fwd" in med:
            row["compiled_fwd_over_fwd"] = med["compiled-fwd"] / med["fwd"]
        if all(k in med for k in ("dx", "params", "compiled-bwd")):
            row["compiled_bwd_over_bwd"] = med["compiled-bwd"] / (med["dx"] + med["params"])
        rows.append(row)
    return rows


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_table(rows: Sequence[Dict[str, Any]]) -> str:
    """The printed table: times in ms, then x floor, then speed-up over torch.compile(reference)."""
    head = [
        "d",
        "N",
        "copy",
        "fwd",
        "x fl",
        "fwd+z",
        "x fl",
        "dx",
        "x fl",
        "params",
        "x fl",
        "wbuild",
        "c-fwd",
        "c/fwd",
        "c-bwd",
        "c/bwd",
    ]
    lines = [head]
    for r in rows:
        n = r["N"]
        lines.append(
            [
                str(r["d"]),
                f"{n // 1024}k" if n % 1024 == 0 else str(n),
                _fmt(r.get("copy_ms"), ".4f"),
                _fmt(r.get("fwd_ms"), ".4f"),
                _fmt(r.get("fwd_x_floor"), ".2f"),
                _fmt(r.get("fwd+z_ms"), ".4f"),
                _fmt(r.get("fwd+z_x_floor"), ".2f"),
                _fmt(r.get("dx_ms"), ".4f"),
                _fmt(r.get("dx_x_floor"), ".2f"),
                _fmt(r.get("params_ms"), ".4f"),
                _fmt(r.get("params_x_floor"), ".2f"),
                _fmt(r.get("wbuild_ms"), ".4f"),
                _fmt(r.get("compiled-fwd_ms"), ".4f"),
                _fmt(r.get("compiled_fwd_over_fwd"), ".2f"),
                _fmt(r.get("compiled-bwd_ms"), ".4f"),
                _fmt(r.get("compiled_bwd_over_bwd"), ".2f"),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def out_path(out: str) -> Optional[str]:
    if not out:
        return None
    if out.endswith(".json"):
        return out
    return os.path.join(out, "bench_kernels.json")


# ---------------------------------------------------------------------------------------------
# the GPU part
# ---------------------------------------------------------------------------------------------


class _Timer:
    """CUDA-event timing of CUDA-graph replays; on CPU (the tests' dry run) wall-clock, no graphs."""

    def __init__(self, graphs: bool, device: Optional[torch.device] = None):
        self.device = torch.device("cuda") if device is None else device
        self.graphs = graphs and device.type == "cuda"

    def prepare(self, calls: List[Callable[[], Any]]) -> Callable[[], None]:
        """A callable running ``calls`` once each: a CUDA graph replay where capture works."""

        def eager():
            for c in calls:
                c()

        if not self.graphs:
            return eager
        try:
            eager()  # warm (compilation, autotuning, caches) outside the capture
            torch.cuda.synchronize()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                eager()
            return g.replay
        except Exception as exc:  # noqa: BLE001 - fall back to eager timing, and say so
            print(f"  (CUDA graph capture failed, timing eagerly: {type(exc).__name__}: {exc})", file=sys.stderr)
            torch.cuda.synchronize()
            return eager

    def sample(self, run: Callable[[], None], n_calls: int) -> float:
        if self.device.type != "cuda":
            t0 = time.perf_counter()
            run()
            return (time.perf_counter() - t0) * 1e3 / n_calls
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        run()
        b.record()
        b.synchronize()
        return a.elapsed_time(b) / n_calls


def _reference_fns(r: int, t: float, alpha: float, compile_: bool):
    from lc_kernels import reference as ref

    h = ref.hat_weights(t, 2)

    # what a user would compile: W in the activation dtype, matmuls there (tensor cores), Theta-side
    # math in float32; t = 0.4 with K = 2 mixes both anchors
    def fwd(x, theta, bias, a, b):
        w = (a @ (h[0] * theta[0] + h[1] * theta[1]) @ b.transpose(0, 1)).to(x.dtype)
        return x + alpha * (ref.downsample(x, r) @ w + bias.to(x.dtype))

    def bwd(x, dy, theta, a, b):  # SPEC §4 written out
        d = x.shape[-1]
        w = (a @ (h[0] * theta[0] + h[1] * theta[1]) @ b.transpose(0, 1)).to(x.dtype)
        dx = dy + alpha * ref.upsample_adjoint(dy @ w.transpose(0, 1), d)
        dw = alpha * (ref.downsample(x, r).transpose(0, 1) @ dy).to(a.dtype)
        ds = a.transpose(0, 1) @ dw @ b
        return dx, torch.stack([h[0] * ds, h[1] * ds]), alpha * dy.to(a.dtype).sum(0)

    if compile_:  # automatic dynamic shapes: about two compiles per function for the whole grid
        return torch.compile(fwd, fullgraph=True), torch.compile(bwd, fullgraph=True)
    return fwd, bwd


_COMPILED: Dict[tuple, tuple] = {}


def run_shape(d: int, n: int, dtype: torch.dtype, args, timer: _Timer, compile_: bool) -> Dict[str, Any]:
    import lc_kernels
    from lc_kernels import reference as ref
    from lc_kernels.triton import launch as L

    geo = geometry(d)
    r, p, q, kk = geo["r"], geo["p"], geo["q"], geo["K"]
    t, alpha = 0.4, 1.0
    dev = timer.device
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    l2 = getattr(torch.cuda.get_device_properties(dev), "L2_cache_size", 50 << 20) if dev.type == "cuda" else 0
    esize = torch.empty((), dtype=dtype).element_size()
    sets = rotation_sets(2 * n * d * esize + n * r * esize, l2)
    xs = [torch.randn(n, d, device=dev, dtype=dtype, generator=gen) for _ in range(sets)]
    dys = [torch.randn(n, d, device=dev, dtype=dtype, generator=gen) for _ in range(sets)]
    theta = 0.02 * torch.randn(1, kk, p, q, device=dev, generator=gen)
    bias = 0.02 * torch.randn(1, d, device=dev, generator=gen)
    w = L.build_weights(theta, [t], r, d, dtype)[0]
    zs = [L.forward_save_z(x, theta, bias, None, t, r, alpha, weights=w)[1] for x in xs]
    y, dx = torch.empty_like(xs[0]), torch.empty_like(xs[0])
    zbuf = torch.empty_like(zs[0])
    # correctness before speed: the forward against the float64 reference (bf16-level tolerance)
    ex = ref.connector(xs[0][:2048].double(), theta[0].double(), bias[0].double(), t, r, alpha)
    got = lc_kernels.connector(xs[0][:2048], theta[0], bias[0], t, r, alpha, backend="triton", weights=w[0])
    err = float((got.double() - ex).abs().max() / ex.abs().max())
    copy_calls = [lambda i=i: y.copy_(xs[i]) for i in range(sets)]
    calls: Dict[str, List[Callable[[], Any]]] = {
        "copy": copy_calls,
        "fwd": [lambda i=i: L.forward(xs[i], theta, bias, None, t, r, alpha, out=y, weights=w) for i in range(sets)],
        "fwd+z": [
            lambda i=i: L.forward_save_z(xs[i], theta, bias, None, t, r, alpha, weights=w, out=(y, zbuf))
            for i in range(sets)
        ],
        "dx": [lambda i=i: L.backward_dx(dys[i], theta, None, t, r, alpha, out=dx, weights=w) for i in range(sets)],
        "params": [lambda i=i: L.backward_params_z(zs[i], dys[i], theta, None, t, r, alpha) for i in range(sets)],
        "wbuild": [lambda: L.build_weights(theta, [t], r, d, dtype)],
    }
    if compile_:
        a = ref.interp_matrix(r, p, dtype=torch.float32, device=dev)
        b = ref.interp_matrix(d, q, dtype=torch.float32, device=dev)
        if (r, t, alpha) not in _COMPILED:  # one compiled pair per r: shapes then recompile dynamically
            _COMPILED[(r, t, alpha)] = _reference_fns(r, t, alpha, compile_=True)
        cf, cb = _COMPILED[(r, t, alpha)]
        th3, b1 = theta[0], bias[0]
        calls["compiled-fwd"] = [lambda i=i: cf(xs[i], th3, b1, a, b) for i in range(sets)]
        calls["compiled-bwd"] = [lambda i=i: cb(xs[i], dys[i], th3, a, b) for i in range(sets)]
    # calls per sample: about 2 ms of copy time, at least one pass over the sets
    copy_once = timer.sample(timer.prepare(copy_calls), sets)
    reps = args.inner or max(1, math.ceil(2.0 / max(copy_once * sets, 1e-3)))
    runs = {k: timer.prepare(v * reps) for k, v in calls.items()}
    samples: Dict[str, List[float]] = {k: [] for k in runs}
    for i in range(args.warmup + args.repeats):
        for k, run in runs.items():
            ms = timer.sample(run, len(calls[k]) * reps)
            if i >= args.warmup:
                samples[k].append(ms)
    variants = {
        k: {
            "median_ms": statistics.median(v),
            "min_ms": min(v),
            "max_ms": max(v),
            "samples": len(v),
            "calls_per_sample": len(calls[k]) * reps,
        }
        for k, v in samples.items()
    }
    return {
        "d": d,
        "N": n,
        "r": r,
        "p": p,
        "q": q,
        "K": kk,
        "rotation_sets": sets,
        "forward_rel_err": err,
        "variants": variants,
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "bench_kernels.py needs a CUDA device (torch.cuda.is_available() is False); nothing was timed. "
            "Run it on a GPU machine, e.g. through benchmarks/gpu_check.sh.",
            file=sys.stderr,
        )
        return 2
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("bench_kernels.py times compiled kernels: unset TRITON_INTERPRET", file=sys.stderr)
        return 2
    import lc_kernels

    if "triton" not in lc_kernels.available_backends():
        from lc_kernels import backends

        print(f"the triton backend is unavailable: {backends.get('triton').unavailable_reason()}", file=sys.stderr)
        return 2
    dtype = _DTYPES[args.dtype]
    timer = _Timer(graphs=not args.no_graphs)
    start = time.time()
    results, skipped = [], []
    for d in args.d:
        for n in args.n:
            if args.max_seconds and time.time() - start > args.max_seconds:
                skipped.append({"d": d, "N": n})
                continue
            t0 = time.time()
            res = run_shape(d, n, dtype, args, timer, compile_=not args.no_compile)
            res["seconds"] = round(time.time() - t0, 1)
            results.append(res)
            torch.cuda.empty_cache()  # the shape's rotation buffers are gone with run_shape's frame
            print(f"d={d} N={n}: {res['seconds']} s, forward rel. error {res['forward_rel_err']:.2e}", flush=True)
    rows = summarize(results)
    doc = {
        "schema": SCHEMA,
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "dtype": args.dtype,
        "args": {k: v for k, v in vars(args).items()},
        "results": results,
        "rows": rows,
        "skipped": skipped,
    }
    try:
        doc["triton"] = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        pass
    path = out_path(args.out)
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(doc, f, indent=1)
        os.replace(path + ".tmp", path)
    if skipped:
        print("skipped (over --max-seconds): " + ", ".join(f"d={s['d']} N={s['N']}" for s in skipped))
    print(
        f"\nper-kernel medians, {args.dtype}, ms (x fl = x the memory floor; c/fwd, c/bwd = "
        "torch.compile(reference) time / Triton time)"
    )
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
