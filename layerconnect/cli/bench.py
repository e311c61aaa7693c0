"""``layerconnect bench [--e2e] ...``: the connector-op benchmark, or whole models with ``--e2e``.

One parser holds the common options and both benchmarks' own; options of the benchmark not asked for
are refused with a message naming them, never silently ignored."""

from __future__ import annotations

import argparse
import dataclasses

from . import options_or_exit


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..apps.bench import connector, e2e
    from ..apps.bench.options import BenchOptions, ConnectorBenchOptions, E2EBenchOptions
    from ..utils.options import add_options

    common = {f.name for f in dataclasses.fields(BenchOptions)}
    p = subparsers.add_parser(
        "bench",
        help="Speed benchmarks: the connector op (default) or whole models (--e2e).",
        description="Speed benchmarks. Without --e2e: the connector op on every available backend against eager "
        "PyTorch, torch.compile and the memory-copy floor. With --e2e: whole-encoder inference latency "
        "with each fine-tuning method attached (and --memory: one training step's memory). Both print "
        "a table and write JSON + PNG to --out.",
        epilog="connector benchmark:\n" + connector.EPILOG + "\nend-to-end benchmark (--e2e):\n" + e2e.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--e2e", action="store_true", help="benchmark whole models instead of the connector op")
    add_options(p, BenchOptions)
    add_options(p, ConnectorBenchOptions, exclude=common)
    add_options(p, E2EBenchOptions, exclude=common)
    p.set_defaults(func=run, _parser=p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..apps.bench import connector, e2e
    from ..apps.bench.options import BenchOptions, ConnectorBenchOptions, E2EBenchOptions

    parser = args._parser
    mine, other, app = (
        (E2EBenchOptions, ConnectorBenchOptions, e2e)
        if args.e2e
        else (ConnectorBenchOptions, E2EBenchOptions, connector)
    )
    common = {f.name for f in dataclasses.fields(BenchOptions)}
    wrong = [f for f in dataclasses.fields(other) if f.name not in common and getattr(args, f.name) != f.default]
    if wrong:
        flags = ", ".join(f.metadata.get("flag") or "--" + f.name.replace("_", "-") for f in wrong)
        which = "connector benchmark (drop --e2e)" if args.e2e else "end-to-end benchmark (add --e2e)"
        parser.error(f"{flags}: an option of the {which}")
    return app.main(args=options_or_exit(parser, mine, args))
