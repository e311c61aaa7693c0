"""Speed of the connector op: every backend against eager PyTorch, torch.compile and the copy floor.

For each shape (N tokens, hidden size d; default geometry r = d/8, K = 2, p = r, q = d/2) and each
pass -- forward, backward (dx, dTheta, db from a prepared graph) and forward+backward -- this times,
side by side in one interleaved run (see :mod:`layerconnect.apps.bench.harness`):

    copy          torch.empty_like(x).copy_(x): the memory floor of the forward (SPEC §5)
    eager-ref     lc_kernels.reference.connector, plain autograd PyTorch (the ground truth; it
                  rebuilds the interpolation matrices A (r x p), B (d x q) in Python every call)
    eager-cached  the same formula with A and B built once per shape: the fastest eager PyTorch
                  a user would write, so the fused backends are also judged against it
    compiled-ref  torch.compile of eager-cached (A, B outside the compiled region: Dynamo would
                  otherwise unroll the reference's Python loop over d columns, which takes many
                  minutes to trace, and they depend only on the shape)
    op:<backend>  lc_kernels.connector(..., backend=<name>) for each available backend that accepts
                  this device and dtype (triton is skipped on CPU: the interpreter is a test path,
                  not a speed path; --include-triton-interpreter times it anyway)

Bytes moved, the numerator of the reported GB/s (elements of x's dtype; the tiny parameters are not
counted): forward reads x and writes y (2 N d); backward reads dy and x and writes dx (3 N d);
forward+backward is their sum (5 N d). ``x floor`` is a variant's time over the time the copy floor
would need for the same bytes (copy time x bytes / (2 N d)): 1.0 means running at memory-copy speed.

Every op variant's forward output is checked against eager-ref on the first buffer before it is
timed, so a broken backend cannot post a fast time.
"""

from __future__ import annotations

import argparse
import random
import sys
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from . import harness as H
from .options import ConnectorBenchOptions

SCHEMA = "layerconnect.apps.bench.connector/1"
HEADLINE = {"N": 8192, "d": 768}
HEADLINE_TARGET = 1.5  # the cpu backend must be this many times faster than eager-ref (fwd, fwd+bwd)
DEFAULT_N = [1024 << k for k in range(9)]  # 1k ... 256k
DEFAULT_D = [384, 768, 1024]
CPU_DEFAULT_MAX_N = 32768
PASSES = ("fwd", "bwd", "fwdbwd")
BYTES_FACTOR = {"fwd": 2, "bwd": 3, "fwdbwd": 5}  # x-sized tensors moved per pass (module docstring)
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}

DESCRIPTION = __doc__.split("\n\n")[0]
EPILOG = f"""\
Default grid: N in {{1k, 2k, ..., 256k}} tokens x d in {{384, 768, 1024}}. On CPU the default
--max-n is {CPU_DEFAULT_MAX_N}, so N in {{64k, 128k, 256k}} are skipped (each would take minutes per
shape on 2 cores and needs GBs of rotation buffers); pass --max-n 262144 to include them.
torch.compile (--compile auto): every shape on CUDA; on CPU only the headline shape
N={HEADLINE["N"]}, d={HEADLINE["d"]} (compiling each shape costs tens of seconds there).
--quick: N in {{1k, 8k}}, d = 768, 3 repeats (a smoke run).
Output: <out>/connector.json (schema {SCHEMA}) and <out>/connector.png, written atomically.
"""


def build_parser() -> argparse.ArgumentParser:
    return H.build_bench_parser("bench_connector", DESCRIPTION, EPILOG, ConnectorBenchOptions)


# ---------------------------------------------------------------------------------------------
# the variants
# ---------------------------------------------------------------------------------------------


def _hoisted_reference(r: int, alpha: float, t: float, K: int):
    """The reference formula with the (shape-only) interpolation matrices passed in, for torch.compile."""
    from lc_kernels import reference as ref

    h = ref.hat_weights(t, K)

    def f(x, theta, bias, a, b):
        s = h[0] * theta[0]
        for k in range(1, K):
            s = s + h[k] * theta[k]
        w = a @ s @ b.transpose(0, 1)
        return x + alpha * (ref.downsample(x, r) @ w + bias)

    return f


def _backend_names(
    device: torch.device, dtype: torch.dtype, wanted: Optional[List[str]], include_interp: bool
) -> Tuple[List[str], List[Dict[str, str]]]:
    import lc_kernels
    from lc_kernels import backends as B

    avail = lc_kernels.available_backends()
    all_b = B.all_backends()
    names, skipped = [], []
    pool = wanted if wanted is not None else sorted(all_b, key=lambda n: (n not in avail, n))
    for name in pool:
        if name not in all_b:
            raise SystemExit(f"--backends: {name!r} is not a known backend; known: {sorted(all_b)}")
        b = all_b[name]
        reason = b.unavailable_reason()
        if reason is not None:
            skipped.append({"variant": f"op:{name}", "reason": reason})
        elif device.type not in b.devices:
            skipped.append({"variant": f"op:{name}", "reason": f"runs on {list(b.devices)}, not {device.type}"})
        elif dtype not in b.dtypes.get(device.type, ()):
            skipped.append({"variant": f"op:{name}", "reason": f"no {dtype} on {device.type}"})
        elif name == "triton" and device.type == "cpu" and not include_interp:
            skipped.append(
                {
                    "variant": "op:triton",
                    "reason": "CPU runs triton under the interpreter (not a speed path); "
                    "--include-triton-interpreter to time it",
                }
            )
        else:
            names.append(name)
    return names, skipped


class _Shape:
    """Rotated inputs and the variant callables of one (N, d) shape."""

    def __init__(
        self,
        N: int,
        d: int,
        dtype: torch.dtype,
        device: torch.device,
        gen: torch.Generator,
        target_bytes: int,
        K: int = 2,
    ):
        self.N, self.d, self.dtype, self.device = N, d, dtype, device
        self.r, self.K, self.p, self.q = d // 8, K, d // 8, d // 2
        self.t = 0.37  # an interior depth: both hat weights are non-zero, nothing is skipped
        self.alpha = 1.0
        esz = torch.empty((), dtype=dtype).element_size()
        per_set = 2 * N * d * esz  # x and dy
        self.n_buffers = H.rotation_count(per_set, target_bytes)

        def rnd(*shape, dt=dtype, scale=1.0):
            return (torch.randn(*shape, generator=gen, dtype=torch.float32) * scale).to(device=device, dtype=dt)

        self.xs = [rnd(N, d).requires_grad_(True) for _ in range(self.n_buffers)]
        self.dys = [rnd(N, d) for _ in range(self.n_buffers)]
        cdt = torch.float64 if dtype == torch.float64 else torch.float32
        # Parameters scaled like trained ones: the connector's contribution is O(0.1) of x.
        self.theta = rnd(K, self.p, self.q, dt=cdt, scale=0.05).requires_grad_(True)
        self.bias = rnd(d, dt=cdt, scale=0.05).requires_grad_(True)
        # eager PyTorch in half precision multiplies in that precision: give it parameters in x's dtype
        self.theta_x = self.theta.detach().to(dtype).requires_grad_(True)
        self.bias_x = self.bias.detach().to(dtype).requires_grad_(True)
        self.elem_bytes = esz

    # -- the functions y = f(x) of each variant ---------------------------------------------------
    def eager_fn(self) -> Tuple[Callable, Tuple]:
        from lc_kernels import reference as ref

        th, b, t, r, a = self.theta_x, self.bias_x, self.t, self.r, self.alpha
        return (lambda x: ref.connector(x, th, b, t, r, a)), (th, b)

    def compiled_fn(self, compile: bool = True) -> Tuple[Callable, Tuple]:
        from lc_kernels import reference as ref

        f = _hoisted_reference(self.r, self.alpha, self.t, self.K)
        if compile:
            # Every shape's f shares one code object, and each shape compiles twice (grad mode on
            # and off): dynamo's default limit of 8 recompiles per code object stops a grid of
            # 4+ shapes with a hard error under fullgraph=True (seen on an H200). Old entries are
            # dead once their shape is measured, so drop them.
            torch._dynamo.reset()
            f = torch.compile(f, dynamic=False, fullgraph=True)
        a = ref.interp_matrix(self.r, self.p, dtype=self.dtype, device=self.device)
        bm = ref.interp_matrix(self.d, self.q, dtype=self.dtype, device=self.device)
        th, b = self.theta_x, self.bias_x
        return (lambda x: f(x, th, b, a, bm)), (th, b)

    def op_fn(self, backend: str) -> Tuple[Callable, Tuple]:
        import lc_kernels

        th, b, t, r, a = self.theta, self.bias, self.t, self.r, self.alpha
        return (lambda x: lc_kernels.connector(x, th, b, t, r, a, backend=backend)), (th, b)

    def variants(self, name: str, fn: Callable, params: Tuple) -> List[H.Variant]:
        xs, dys = self.xs, self.dys

        def fwd(i):
            with torch.no_grad():
                return fn(xs[i])

        def bwd_setup(i):
            with torch.enable_grad():
                return fn(xs[i]), i

        def bwd_run(state):
            y, i = state
            return torch.autograd.grad(y, (xs[i],) + params, dys[i])

        def fwdbwd(i):
            with torch.enable_grad():
                y = fn(xs[i])
                return torch.autograd.grad(y, (xs[i],) + params, dys[i])

        return [
            H.Variant(f"fwd/{name}", fwd),
            H.Variant(f"bwd/{name}", bwd_run, setup=bwd_setup),
            H.Variant(f"fwdbwd/{name}", fwdbwd),
        ]

    def copy_variant(self) -> H.Variant:
        xs = self.xs

        def copy(i):
            with torch.no_grad():
                return torch.empty_like(xs[i]).copy_(xs[i])

        return H.Variant("fwd/copy", copy)

    def check(self, fn: Callable) -> float:
        """Max |fn(x) - eager_ref(x)| / max|eager_ref(x)| in float64 on the first buffer."""
        from lc_kernels import reference as ref

        x = self.xs[0].detach()
        with torch.no_grad():
            want = ref.connector(
                x.double(), self.theta.detach().double(), self.bias.detach().double(), self.t, self.r, self.alpha
            )
            got = fn(x).double()
        return float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))


def _tolerance(dtype: torch.dtype) -> float:
    # A few ulps of the dtype times the accumulation depth (r terms of size ~|x|), loose enough for
    # any correct summation order and tight enough to catch a wrong neighbour or weight.
    return {torch.float64: 1e-12, torch.float32: 2e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}[dtype]


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------


def _grid(args, device) -> Tuple[List[int], List[int], List[Dict[str, Any]]]:
    n_list = H.parse_int_list(args.n_list, "--n")
    d_list = H.parse_int_list(args.d_list, "--d")
    if args.quick:
        n_list = n_list or [1024, 8192]
        d_list = d_list or [768]
    n_list = n_list or list(DEFAULT_N)
    d_list = d_list or list(DEFAULT_D)
    for d in d_list:
        if d % 8 or (d // 2) < 1:
            raise SystemExit(f"--d: {d} must be a multiple of 8 (default geometry r = d/8, q = d/2)")
    max_n = args.max_n if args.max_n is not None else (CPU_DEFAULT_MAX_N if device.type == "cpu" else None)
    skipped = []
    if max_n is not None:
        dropped = [n for n in n_list if n > max_n]
        if dropped:
            skipped.append({"N": dropped, "reason": f"N > --max-n {max_n}"})
        n_list = [n for n in n_list if n <= max_n]
    if not n_list:
        raise SystemExit(f"no N left to measure (--max-n {max_n} drops them all)")
    return n_list, d_list, skipped


def _want_compile(mode: str, device: torch.device, N: int, d: int) -> bool:
    if mode == "none":
        return False
    if mode == "all" or (mode == "auto" and device.type == "cuda"):
        return True
    return N == HEADLINE["N"] and d == HEADLINE["d"]


def _checked_variants(sh: "_Shape", args, device, names, dtype, checks: List[Dict[str, Any]]) -> List[H.Variant]:
    """The copy floor plus every variant whose output matches the reference (a wrong one is not timed)."""
    N, d = sh.N, sh.d
    variants = [sh.copy_variant()]
    fns = {"eager-ref": sh.eager_fn(), "eager-cached": sh.compiled_fn(compile=False)}
    if _want_compile(args.compile, device, N, d):
        fns["compiled-ref"] = sh.compiled_fn()
    for name in names:
        fns[f"op:{name}"] = sh.op_fn(name)
    tol = _tolerance(dtype)
    for vname, (fn, params) in fns.items():
        err = sh.check(fn)
        ok = err <= tol
        checks.append({"N": N, "d": d, "variant": vname, "max_rel_err": err, "tol": tol, "ok": ok})
        if not ok:
            warnings.warn(f"{vname} at N={N} d={d}: max relative error {err:.3g} > {tol:.1g}; not timed", stacklevel=2)
            continue
        variants += sh.variants(vname, fn, params)
    return variants


def run(args) -> Dict[str, Any]:
    device = H.resolve_device(args.device)
    H.apply_threads(args.threads)
    dtype = _DTYPES[args.dtype or "float32"]
    if device.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
        warnings.warn("half precision on CPU: eager matmuls are slow and no fused CPU backend takes it", stacklevel=2)
    repeats = args.repeats or (3 if args.quick else 7)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    min_sample = (
        args.min_sample_ms if args.min_sample_ms is not None else (20.0 if device.type == "cpu" else 5.0)
    ) / 1e3
    seed = args.seed if args.seed is not None else H.fresh_seed()
    rotate = int((args.rotate_mb * (1 << 20)) if args.rotate_mb else max(64 << 20, 2 * H.last_level_cache_bytes()))
    wanted = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None
    n_list, d_list, skipped = _grid(args, device)
    names, skipped_b = _backend_names(device, dtype, wanted, args.include_triton_interpreter)
    skipped += skipped_b

    env = H.environment(device)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    shapes = [(n, d) for d in d_list for n in n_list]
    per_shape = lambda n, d: (1 + 3 * (2 + len(names) + int(_want_compile(args.compile, device, n, d)))) * repeats
    bar = H.progress_bar(sum(per_shape(n, d) for n, d in shapes), not args.no_progress, "connector")
    results: List[Dict[str, Any]] = []
    checks: List[Dict[str, Any]] = []
    try:
        for N, d in shapes:
            bar.set_description_str(f"N={N} d={d}")
            sh = _Shape(N, d, dtype, device, gen, rotate)
            variants = _checked_variants(sh, args, device, names, dtype, checks)
            stats = H.measure_interleaved(
                variants,
                device=device,
                n_buffers=sh.n_buffers,
                warmup=warmup,
                repeats=repeats,
                min_sample_s=min_sample,
                rng=rng,
                on_sample=lambda _n: bar.update(1),
            )
            results += _rows(sh, stats)
            del sh, variants
    finally:
        bar.close()
    env["loadavg_end"] = list(__import__("os").getloadavg())
    out = {
        "schema": SCHEMA,
        "env": env,
        "config": {
            "device": device.type,
            "dtype": str(dtype).replace("torch.", ""),
            "N": n_list,
            "d": d_list,
            "geometry": "r=d/8, K=2, p=r, q=d/2, t=0.37, alpha=1",
            "repeats": repeats,
            "warmup": warmup,
            "min_sample_ms": min_sample * 1e3,
            "rotate_bytes": rotate,
            "seed": seed,
            "compile": args.compile,
            "backends": names,
            "argv": sys.argv[1:],
        },
        "skipped": skipped,
        "checks": checks,
        "results": results,
        "headline": _headline(results, device, dtype),
    }
    return out


def _rows(sh: _Shape, stats: Dict[str, H.Stats]) -> List[Dict[str, Any]]:
    copy_t = stats["fwd/copy"].median
    copy_bytes = 2 * sh.N * sh.d * sh.elem_bytes
    eager = {p: stats[f"{p}/eager-ref"].median for p in PASSES if f"{p}/eager-ref" in stats}
    rows = []
    for key, st in stats.items():
        pss, variant = key.split("/", 1)
        nbytes = BYTES_FACTOR[pss] * sh.N * sh.d * sh.elem_bytes
        floor_t = copy_t * nbytes / copy_bytes
        row = {
            "N": sh.N,
            "d": sh.d,
            "r": sh.r,
            "K": sh.K,
            "p": sh.p,
            "q": sh.q,
            "dtype": str(sh.dtype).replace("torch.", ""),
            "pass": pss,
            "variant": variant,
            "bytes": nbytes,
            "gbps": nbytes / st.median / 1e9,
            "x_floor": st.median / floor_t,
            "speedup_vs_eager": (eager[pss] / st.median) if pss in eager else None,
            "n_buffers": sh.n_buffers,
        }
        row.update(st.as_dict())
        rows.append(row)
    order = {p: i for i, p in enumerate(PASSES)}
    rows.sort(key=lambda r: (r["d"], r["N"], order[r["pass"]], r["variant"] != "copy", r["median_ms"]))
    return rows


def _headline(results, device, dtype) -> Optional[Dict[str, Any]]:
    """The acceptance figure: op:cpu against eager-ref, float32 CPU, N=8192, d=768."""
    if device.type != "cpu" or dtype != torch.float32:
        return None
    sel = {(r["pass"], r["variant"]): r for r in results if r["N"] == HEADLINE["N"] and r["d"] == HEADLINE["d"]}
    if not sel:
        return None
    out = {"N": HEADLINE["N"], "d": HEADLINE["d"], "target_speedup": HEADLINE_TARGET}
    for pss in ("fwd", "fwdbwd"):
        r = sel.get((pss, "op:cpu"))
        out[f"{pss}_cpu_speedup_vs_eager"] = r["speedup_vs_eager"] if r else None
        for other in ("eager-cached", "compiled-ref", "op:reference"):
            o = sel.get((pss, other))
            if r and o:
                out[f"{pss}_cpu_speedup_vs_{other}"] = o["median_ms"] / r["median_ms"]
    vals = [out.get(f"{p}_cpu_speedup_vs_eager") for p in ("fwd", "fwdbwd")]
    out["pass"] = None if None in vals else all(v >= HEADLINE_TARGET for v in vals)
    return out


# ---------------------------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------------------------


def format_results(res: Dict[str, Any]) -> str:
    rows = []
    for r in res["results"]:
        sp = r["speedup_vs_eager"]
        rows.append(
            [
                r["variant"],
                r["N"],
                r["d"],
                r["pass"],
                f"{r['median_ms']:.3f}",
                f"{r['q1_ms']:.3f}-{r['q3_ms']:.3f}",
                f"{r['gbps']:.1f}",
                f"{r['x_floor']:.2f}",
                "" if sp is None else f"{sp:.2f}x",
            ]
        )
    env = res["env"]
    head = (
        f"connector benchmark  {res['config']['device']} {res['config']['dtype']}  "
        f"{env['cpu_model'] if res['config']['device'] == 'cpu' else env.get('gpu')}  "
        f"torch {env['torch']}  threads {env['torch_threads']}  {env['date_utc']} UTC  "
        f"load {env['loadavg_1_5_15']}"
    )
    lines = [
        head,
        H.format_table(["variant", "N", "d", "pass", "median ms", "IQR ms", "GB/s", "x floor", "vs eager"], rows),
    ]
    for s in res["skipped"]:
        lines.append(f"skipped: {s}")
    for c in res["checks"]:
        if not c["ok"]:
            lines.append(f"MISMATCH (not timed): {c}")
    h = res.get("headline")
    if h:
        verdict = {True: "PASS", False: "FAIL", None: "n/a (op:cpu not measured)"}[h["pass"]]
        f = lambda v: "n/a" if v is None else f"{v:.2f}x"
        lines.append(
            f"headline N={h['N']} d={h['d']}: op:cpu vs eager-ref  fwd {f(h['fwd_cpu_speedup_vs_eager'])}  "
            f"fwd+bwd {f(h['fwdbwd_cpu_speedup_vs_eager'])}  (target >= {h['target_speedup']}x): {verdict}"
        )
        for other in ("eager-cached", "compiled-ref", "op:reference"):
            if f"fwd_cpu_speedup_vs_{other}" in h:
                lines.append(
                    f"  op:cpu vs {other}: fwd {f(h[f'fwd_cpu_speedup_vs_{other}'])}  "
                    f"fwd+bwd {f(h.get(f'fwdbwd_cpu_speedup_vs_{other}'))}"
                )
    return "\n".join(lines)


def plot(res: Dict[str, Any], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = res["config"]["d"]
    fig, axes = plt.subplots(len(PASSES), len(ds), figsize=(4.2 * len(ds), 3.2 * len(PASSES)), squeeze=False)
    variants = sorted({r["variant"] for r in res["results"]})
    for i, pss in enumerate(PASSES):
        for j, d in enumerate(ds):
            ax = axes[i][j]
            for v in variants:
                src = "fwd" if v == "copy" else pss
                pts = sorted(
                    (r["N"], r["gbps"])
                    for r in res["results"]
                    if r["variant"] == v and r["pass"] == src and r["d"] == d
                )
                if pts:
                    ax.plot(*zip(*pts), marker="o", ms=3, label=v, linestyle="--" if v == "copy" else "-")
            ax.set_xscale("log", base=2)
            ax.set_title(f"{pss}, d={d}", fontsize=9)
            ax.set_xlabel("N tokens", fontsize=8)
            ax.set_ylabel("GB/s", fontsize=8)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    env = res["env"]
    fig.suptitle(
        f"connector: achieved GB/s ({res['config']['device']}, {res['config']['dtype']}, "
        f"torch {env['torch']}, {env['date_utc']})",
        fontsize=10,
    )
    fig.tight_layout()
    H.save_figure_atomic(fig, path)
    plt.close(fig)


def main(argv: Optional[List[str]] = None, args: Optional[ConnectorBenchOptions] = None) -> int:
    return H.bench_main(argv, args, ConnectorBenchOptions, build_parser, run, format_results, plot, "connector")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
