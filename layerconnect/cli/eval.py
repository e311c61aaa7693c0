"""``layerconnect eval --checkpoint DIR``: score a saved run on its task's dev set (or held-out slice)."""

from __future__ import annotations

import json

from . import options_or_exit


def add_parser(subparsers):
    from ..apps.glue.options import EvalOptions
    from ..utils.options import add_options

    p = subparsers.add_parser(
        "eval",
        help="Evaluate a saved run on its task's dev set.",
        description="Rebuild base model + method + readout, load the trained tensors of a "
        "`layerconnect train` run (or one of its checkpoint-N folders) and score it.",
    )
    add_options(p, EvalOptions)
    p.set_defaults(func=run, _parser=p)
    return p


def run(args) -> int:
    from ..apps.glue.evaluation import evaluate
    from ..apps.glue.options import EvalOptions

    print(json.dumps(evaluate(options_or_exit(args._parser, EvalOptions, args)), indent=2))
    return 0
