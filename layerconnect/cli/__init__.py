"""``layerconnect`` command line: ``train | eval | params | bench | serve`` (``--help`` on each).

argparse only: each sub-command module (``layerconnect/cli/<name>.py``) generates its arguments from
its application's options dataclass (:mod:`layerconnect.utils.options`), turns the parsed namespace
into one options object, and hands it to the application. Modules are imported lazily so
``layerconnect --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

COMMANDS = {
    "train": "Fine-tune on a GLUE task with LayerConnect or a baseline method.",
    "eval": "Evaluate a saved run on its task's dev set.",
    "params": "Trainable-parameter table: LayerConnect against adapters, LoRA, BitFit, full FT.",
    "bench": "Speed benchmarks: the connector op (default) or whole models (--e2e).",
    "serve": "HTTP JSON service answering many tasks on one frozen encoder.",
}


def build_parser(argv: Optional[List[str]] = None) -> argparse.ArgumentParser:
    from lc_kernels import __version__

    parser = argparse.ArgumentParser(
        prog="layerconnect",
        description="LayerConnect: hypernetwork-generated inter-layer connectors for parameter-efficient fine-tuning.",
    )
    parser.add_argument("--version", action="version", version=f"layerconnect {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    # Only import the module of the command asked for (or all of them for --help).
    wanted = [a for a in (argv or []) if a in COMMANDS][:1] or list(COMMANDS)
    for name in COMMANDS:
        if name in wanted:
            importlib.import_module(f"layerconnect.cli.{name}").add_parser(sub)
        else:
            sub.add_parser(name, help=COMMANDS[name], add_help=False)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


def options_or_exit(parser: argparse.ArgumentParser, cls, args: argparse.Namespace, **overrides):
    """``cls`` built from ``args``; a ValueError from its checks becomes a usage error naming the flag."""
    from ..utils.options import from_namespace

    try:
        return from_namespace(cls, args, **overrides)
    except ValueError as exc:
        parser.error(str(exc))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
