"""``layerconnect serve``: many LayerConnect tasks on one frozen encoder, over HTTP (SPEC §6)."""
from __future__ import annotations

import argparse
import sys


def _task_spec(value: str):
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--task {value!r}: expected NAME=PATH (a save_connectors directory)")
    return name, path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "serve",
        help="HTTP JSON service answering many tasks on one frozen encoder.",
        description="Load one base encoder and N task artefacts (save_connectors directories), stack "
                    "their connectors, and answer POST /predict with request batching across clients "
                    "(GET /tasks lists the tasks).",
    )
    p.add_argument("--model", required=True, help="base encoder: Hugging Face name or local path (with tokenizer)")
    p.add_argument("--task", dest="tasks", action="append", type=_task_spec, required=True, metavar="NAME=PATH",
                   help="a task artefact to serve under NAME (repeat for more tasks)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=32,
                   help="most sequences answered by one encoder pass; larger calls get 413 (default 32)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long the first waiting request waits for others to join its batch (default 5)")
    p.add_argument("--backend", default="auto", help="connector backend: auto or one of lc_kernels.available_backends()")
    p.add_argument("--max-length", type=int, default=128, help="tokenizer truncation length")
    p.add_argument("--dtype", choices=["float32", "float64", "bfloat16", "float16"], default="float32")
    p.add_argument("--device", default="cpu", help="torch device for the model (cpu, cuda, cuda:1, ...)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import torch
    import uvicorn

    from ..multitask import MultiTaskModel
    from ..serve import create_app

    names = [n for n, _ in args.tasks]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        print(f"error: --task names must be unique, got {dup} more than once", file=sys.stderr)
        return 2
    if args.max_batch < 1 or args.max_wait_ms < 0:
        print("error: --max-batch must be >= 1 and --max-wait-ms >= 0", file=sys.stderr)
        return 2
    model = MultiTaskModel(args.model, dict(args.tasks), backend=args.backend,
                           dtype=getattr(torch, args.dtype), max_length=args.max_length)
    model.to(args.device)
    app = create_app(model, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms)
    print(f"serving {len(names)} task(s) {names} on http://{args.host}:{args.port} "
          f"(max batch {args.max_batch}, max wait {args.max_wait_ms} ms)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
