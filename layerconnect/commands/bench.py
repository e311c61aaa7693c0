"""``layerconnect bench [--e2e] ...``: the connector-op benchmark, or whole models with ``--e2e``.

Both benchmarks live in :mod:`layerconnect.bench` (so they work from an installed package); this
sub-command merges their options into one parser and forwards to the one asked for. Options of the
other benchmark are refused with a message naming them, never silently ignored.
"""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    from layerconnect.bench import connector, e2e, harness

    p = subparsers.add_parser(
        "bench",
        help="Speed benchmarks: the connector op (default) or whole models (--e2e).",
        description=(
            "Speed benchmarks. Without --e2e: the connector op on every available backend against "
            "eager PyTorch, torch.compile and the memory-copy floor. With --e2e: whole-encoder "
            "inference latency with each fine-tuning method attached (and --memory: one training "
            "step's memory). Both print a table and write JSON + PNG to --out."
        ),
        epilog="connector benchmark:\n" + connector.EPILOG + "\nend-to-end benchmark (--e2e):\n" + e2e.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--e2e", action="store_true", help="benchmark whole models instead of the connector op")
    harness.add_common_arguments(p, default_out="bench-out")
    connector.add_arguments(p, with_common=False)
    e2e.add_arguments(p, with_common=False)
    p.set_defaults(func=run, _bench_parser=p)
    return p


def run(args: argparse.Namespace) -> int:
    from layerconnect.bench import connector, e2e

    parser = args._bench_parser
    mine, other, other_name = (
        (e2e, connector.CONNECTOR_DESTS, "the connector benchmark (drop --e2e)")
        if args.e2e else (connector, e2e.E2E_DESTS, "the end-to-end benchmark (add --e2e)")
    )
    wrong = [d for d in other if getattr(args, d) != parser.get_default(d)]
    if wrong:
        flags = ", ".join("--" + d.replace("_", "-").replace("n-list", "n").replace("d-list", "d") for d in wrong)
        parser.error(f"{flags}: an option of {other_name}")
    return mine.main(args=args)
