"""Many tasks on one frozen encoder (SPEC §6): throughput and memory of a mixed batch.

    python benchmarks/bench_multitask.py [--tasks 1,4,16,64] [--batch 32] [--seq 32] [--reps 5] [--data-dir DIR]
                                         [--backend auto] [--threads N] [--out benchmarks/multitask_results.json]

For each T the same ``batch`` pre-tokenised sequences (GLUE SST-2 dev sentences when available,
padded/truncated to ``seq`` tokens) are answered three ways, each row by its own task (row i -> task
i mod T):

    single      the baseline: ONE task, base + load_connectors, the whole batch in one pass
    mixed       MultiTaskModel with T tasks stacked: the whole mixed batch in one pass
    sequential  T single-task batches one after another on one model, swapping each task's
                connector and head tensors in before its rows (what serving without §6 does)
    copies      T separate single-task model copies, each answering its rows (same compute as
                sequential without the swap; memory T x the model; only up to --max-copies)

Timings: the shared harness (``layerconnect.apps.bench.harness``): one warm-up, ``reps`` samples per mode
in a freshly shuffled order each round, median reported; plus each mode's median process CPU time
(the machine is shared, see ``_measure``). Inference mode, tokenisation excluded.
Memory: bytes of a task artefact on disk, bytes a task adds to the stacked in-memory parameters,
and the bytes T model copies would take. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def _texts(n: int, data_dir: str | None) -> list:
    """``n`` SST-2 dev sentences from ``data_dir`` (GLUE TSV layout) when there, else synthetic text."""
    path = os.path.join(data_dir, "SST-2", "dev.tsv") if data_dir else ""
    if path and os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            lines = [ln.split("\t")[0] for ln in fh.read().splitlines()[1:] if ln.strip()]
        if len(lines) >= n:
            return lines[:n]
    words = "a fine film with a quiet and very moving story about people and time".split()
    return [" ".join(words[(i + j) % len(words)] for j in range(40)) for i in range(n)]


def _make_artefacts(model_path: str, n: int, out: str, cfg) -> list:
    """``n`` task artefacts with random seed banks, biases and heads (what training would write)."""
    from transformers import AutoModelForSequenceClassification

    from layerconnect import add_connectors, save_connectors

    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)
    add_connectors(model, cfg)
    g = torch.Generator().manual_seed(0)
    paths = []
    for k in range(n):
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        paths.append(save_connectors(model, os.path.join(out, f"task{k:03d}")))
    return paths


def _single_model(model_path: str, artefact: str, backend: str):
    from transformers import AutoModelForSequenceClassification

    from layerconnect import load_connectors

    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)
    load_connectors(model, artefact)
    model.layerconnect.backend = backend
    return model.eval()


def _measure(fns: dict, reps: int) -> tuple:
    """Wall-clock Stats per mode from the shared harness (warm-up, shuffled interleaving, median and
    quartiles), plus the median process CPU time (all threads) of each mode: on a shared machine
    time-sharing with other jobs inflates wall time but not the CPU work a mode costs."""
    from layerconnect.apps.bench.harness import Variant, measure_interleaved

    cpu = {k: [] for k in fns}

    def variant(name, fn):
        def run(_):
            c0 = time.process_time()
            fn()
            cpu[name].append(time.process_time() - c0)

        return Variant(name, run)

    # one input set: the batch is tiny next to the weights (~87 MB for MiniLM), which no cache holds
    stats = measure_interleaved(
        [variant(k, f) for k, f in fns.items()], device=torch.device("cpu"), n_buffers=1, warmup=1, repeats=reps
    )
    # the warm-up call is in cpu[] too: drop it
    return stats, {k: statistics.median(v[1:] or v) for k, v in cpu.items()}


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="base encoder (default: the offline all-MiniLM-L6-v2)")
    ap.add_argument("--tasks", default="1,4,16,64", help="comma-separated T values")
    ap.add_argument("--batch", type=int, default=32, help="sequences per batch")
    ap.add_argument("--seq", type=int, default=32, help="tokens per sequence (padded/truncated)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--data-dir",
        default=os.environ.get("LAYERCONNECT_GLUE_DIR", os.path.join(os.path.dirname(HERE), "..", "shared", "glue")),
        help="GLUE TSV folder whose SST-2/dev.tsv gives the texts (default: $LAYERCONNECT_GLUE_DIR, else "
        "../shared/glue beside the repository; synthetic text when absent)",
    )
    ap.add_argument("--max-copies", type=int, default=16, help="largest T for which real model copies are built")
    ap.add_argument("--out", default=os.path.join(HERE, "multitask_results.json"))
    args = ap.parse_args(argv)

    import lc_kernels
    from layerconnect import LayerConnectConfig
    from layerconnect.multitask import MultiTaskModel
    from layerconnect.utils.paths import default_model_path

    if args.threads:
        torch.set_num_threads(args.threads)
    model_path = args.model or default_model_path()
    ts = sorted({int(t) for t in args.tasks.split(",")})
    backend = lc_kernels.resolve_backend(args.backend, torch.zeros(1))
    cfg = LayerConnectConfig()  # the SPEC defaults
    tmp = tempfile.mkdtemp(prefix="lc-bench-mt-")
    rows_out = []
    try:
        arts = _make_artefacts(model_path, max(ts), tmp, cfg)
        from transformers import AutoTokenizer

        mt = MultiTaskModel(model_path, {}, backend=backend)
        tok = AutoTokenizer.from_pretrained(model_path)
        enc = tok(
            _texts(args.batch, args.data_dir),
            padding="max_length",
            truncation=True,
            max_length=args.seq,
            return_tensors="pt",
        )
        enc = dict(enc)
        base = _single_model(model_path, arts[0], backend)
        base_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
        # the tensors a task swap must copy in (connectors + head)
        task_tensors = [n for n, p in base.named_parameters() if n.startswith(("layerconnect.", "classifier."))]
        from safetensors.torch import load_file

        for T in ts:
            for k in range(len(mt.task_names), T):
                mt.add_task(f"task{k:03d}", arts[k])
            ids = torch.arange(args.batch) % T
            groups = [(k, (ids == k).nonzero().squeeze(1)) for k in range(T)]
            groups = [(k, rows) for k, rows in groups if len(rows)]
            states = {k: load_file(os.path.join(arts[k], "connectors.safetensors")) for k, _ in groups}
            params = dict(base.named_parameters())

            def sequential(groups=groups, states=states, params=params):
                for k, rows in groups:
                    for n in task_tensors:
                        params[n].copy_(states[k][n])
                    base(**{key: v[rows] for key, v in enc.items()})

            fns = {
                "single": lambda: base(**enc),
                "mixed": lambda ids=ids: mt.forward_groups(task_ids=ids, **enc),
                "sequential": sequential,
            }
            copies = {}
            if T <= args.max_copies:
                copies = {k: _single_model(model_path, arts[k], backend) for k, _ in groups}

                def run_copies(groups=groups, copies=copies):
                    for k, rows in groups:
                        copies[k](**{key: v[rows] for key, v in enc.items()})

                fns["copies"] = run_copies
            with torch.inference_mode():
                stats, cpu = _measure(fns, args.reps)
            del copies
            t_single, t_mixed, t_seq = stats["single"].median, stats["mixed"].median, stats["sequential"].median
            t_copies = stats["copies"].median if "copies" in stats else None
            per_task_mem = mt.task_param_bytes(mt.task_names[0])
            rec = {
                "T": T,
                "single_seq_per_s": args.batch / t_single,
                "mixed_seq_per_s": args.batch / t_mixed,
                "mixed_vs_single": t_single / t_mixed,
                "sequential_seq_per_s": args.batch / t_seq,
                "copies_seq_per_s": None if t_copies is None else args.batch / t_copies,
                "wall_s_per_batch": {
                    k: {"median": v.median, "q1": v.q1, "q3": v.q3, "min": v.min} for k, v in stats.items()
                },
                "cpu_s_per_batch": cpu,
                "mixed_vs_single_cpu": cpu["single"] / cpu["mixed"],
                "mixed_ms": 1000 * t_mixed,
                "single_ms": 1000 * t_single,
                "sequential_ms": 1000 * t_seq,
                "copies_ms": None if t_copies is None else 1000 * t_copies,
                "artefact_bytes_per_task": _dir_bytes(arts[0]),
                "stacked_bytes_per_task": per_task_mem,
                "stacked_bytes_total": sum(mt.task_param_bytes(n) for n in mt.task_names),
                "copies_bytes_total": T * base_bytes,
            }
            rows_out.append(rec)
            print(
                f"T={T:3d}: single {rec['single_seq_per_s']:7.1f} seq/s | mixed {rec['mixed_seq_per_s']:7.1f} seq/s "
                f"({100 * rec['mixed_vs_single']:5.1f} % of single; "
                f"CPU time {100 * rec['mixed_vs_single_cpu']:5.1f} %) "
                f"| sequential {rec['sequential_seq_per_s']:7.1f} | "
                f"copies {'-' if t_copies is None else format(rec['copies_seq_per_s'], '7.1f')}",
                flush=True,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    from layerconnect.apps.bench.harness import environment, write_json_atomic

    g = mt.geometry
    meta = {
        "command": "python benchmarks/bench_multitask.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "environment": environment(torch.device("cpu")),
        "model": model_path,
        "base_param_bytes": base_bytes,
        "geometry": g.to_dict(),
        "backend": backend,
        "batch": args.batch,
        "seq": args.seq,
        "reps": args.reps,
        "results": rows_out,
    }
    print()
    print(
        f"batch {args.batch} x {args.seq} tokens, backend {backend}, base model {base_bytes / 2**20:.1f} MiB "
        f"(d={g.d}, L={g.L}, r={g.r}, K={g.K}, p={g.p}, q={g.q}, |P|={g.num_connectors})"
    )
    hdr = (
        "| T | single seq/s | mixed seq/s | mixed / single (median wall) | mixed / single (median CPU time) "
        "| T sequential batches seq/s | T copies seq/s "
        "| artefact bytes/task | stacked bytes/task | T copies bytes |"
    )
    print(hdr)
    print("|" + "---|" * 10)
    for r in rows_out:
        copies = "-" if r["copies_seq_per_s"] is None else f"{r['copies_seq_per_s']:.1f}"
        print(
            f"| {r['T']} | {r['single_seq_per_s']:.1f} | {r['mixed_seq_per_s']:.1f} "
            f"| {100 * r['mixed_vs_single']:.1f} % "
            f"| {100 * r['mixed_vs_single_cpu']:.1f} % "
            f"| {r['sequential_seq_per_s']:.1f} | {copies} | {r['artefact_bytes_per_task']:,} "
            f"| {r['stacked_bytes_per_task']:,} | {r['copies_bytes_total']:,} |"
        )
    write_json_atomic(args.out, meta)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
