#!/usr/bin/env python
"""Host cost of one connector call at small N (issue 15): what a serving batch pays per connector.

Times, side by side in one interleaved run (``layerconnect.apps.bench.harness``), on the same
(N, d) float32 tensor on CPU:

    add          torch.add(x, x): the yardstick (one elementwise op through the dispatcher)
    add_         x.add_(y) in place
    op           lc_kernels.connector(x, theta, bias, t, r): validation, custom op, cpu kernel
    op_          lc_kernels.connector_(x, ...): the same, in place
    plan         the model's fast path: a CpuForwardPlan built once, .forward(x) per call
    plan_        the same, in place (what a LayerConnect model runs under inference_mode)

Prints a table with each variant's median (µs) and its ratio to ``add``, writes JSON to --out.

    python benchmarks/bench_host.py --n 16 --d 384 --threads 1 --repeats 15 --out bench-out/host
"""

from __future__ import annotations

import argparse
import os
import random
import sys

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=16, help="tokens N (default 16: one sequence of 16 tokens)")
    p.add_argument("--d", type=int, default=384, help="hidden size d (default 384: MiniLM)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--repeats", type=int, default=15, help="timed samples per variant (default 15)")
    p.add_argument("--out", default=os.path.join("bench-out", "host"), help="output folder (default bench-out/host)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import lc_kernels
    from layerconnect.apps.bench import harness as H
    from lc_kernels import _ext

    if "cpu" not in lc_kernels.available_backends():
        raise SystemExit("the cpu backend is not built here: pip install --no-build-isolation -e .")
    n, d = args.n, args.d
    r, k, pp, q = d // 8, 2, d // 8, d // 2
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(n, d, generator=g) for _ in range(2)]
    theta, bias = torch.randn(k, pp, q, generator=g) * 0.1, torch.randn(d, generator=g) * 0.1
    plan = _ext.load().cpu_forward_plan(theta.unsqueeze(0).contiguous(), bias.unsqueeze(0).contiguous(), 0.5, r, 1.0)
    # the in-place variants repeat on the same buffers: alpha = 0 leaves x unchanged, same kernel work
    zero = _ext.load().cpu_forward_plan(theta.unsqueeze(0).contiguous(), bias.unsqueeze(0).contiguous(), 0.5, r, 0.0)
    want = lc_kernels.reference.connector(xs[0].double(), theta.double(), bias.double(), 0.5, r)
    assert torch.allclose(plan.forward(xs[0]).double(), want, atol=1e-5), "plan output differs from the reference"
    variants = [
        H.Variant("add", lambda i: torch.add(xs[i], xs[i])),
        H.Variant("add_", lambda i: xs[i].add_(0.0)),
        H.Variant("op", lambda i: lc_kernels.connector(xs[i], theta, bias, 0.5, r, backend="cpu")),
        H.Variant("op_", lambda i: lc_kernels.connector_(xs[i], theta, bias, 0.0, r, alpha=0.0, backend="cpu")),
        H.Variant("plan", lambda i: plan.forward(xs[i])),
        H.Variant("plan_", lambda i: zero.forward(xs[i], None, xs[i])),
    ]
    with torch.inference_mode():
        stats = H.measure_interleaved(
            variants,
            device=torch.device("cpu"),
            n_buffers=2,
            warmup=3,
            repeats=args.repeats,
            min_sample_s=0.02,
            rng=random.Random(0),
        )
    base = stats["add"].median
    rows = [
        [name, f"{st.median * 1e6:.2f}", f"{st.q1 * 1e6:.2f}-{st.q3 * 1e6:.2f}", f"{st.median / base:.2f}"]
        for name, st in stats.items()
    ]
    print(f"host cost per call, N={n}, d={d}, float32, {args.threads} thread(s)")
    print(H.format_table(["variant", "median us", "IQR us", "x add"], rows))
    res = {
        "schema": "layerconnect.bench.host/1",
        "n": n,
        "d": d,
        "threads": args.threads,
        "env": H.environment(torch.device("cpu")),
        "results": {
            name: {"median_us": st.median * 1e6, "q1_us": st.q1 * 1e6, "q3_us": st.q3 * 1e6, "x_add": st.median / base}
            for name, st in stats.items()
        },
    }
    H.write_json_atomic(H.Path(args.out) / "host.json", res)
    print(f"wrote {os.path.join(args.out, 'host.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
