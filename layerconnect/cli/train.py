"""``layerconnect train``: fine-tune on one GLUE task (or several, jointly) with LayerConnect or a baseline."""

from __future__ import annotations

import json
import sys

from . import options_or_exit

EPILOG = """\
selection: a fixed slice of train (--heldout, never trained on) chooses the epoch; the chosen checkpoint is
scored on dev once, and printed beside the majority-class score. Example (about 5 minutes on 2 CPU cores):
  layerconnect train --task sst2 --train-subsample 2000 --epochs 2 --data-dir ../shared/glue
"""


def add_parser(subparsers):
    import argparse

    from ..apps.glue.options import TrainOptions
    from ..utils.options import add_options

    p = subparsers.add_parser(
        "train",
        help="Fine-tune on a GLUE task with LayerConnect or a baseline method.",
        description="Fine-tune on a GLUE task (transformers.Trainer). Works unchanged under "
        "`torchrun --nproc_per_node N -m layerconnect.cli train ...` (data parallel).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(p, TrainOptions)
    p.set_defaults(func=run, _parser=p)
    return p


def run(args) -> int:
    from ..apps.glue.options import TrainOptions
    from ..apps.glue.run import train

    opts = options_or_exit(args._parser, TrainOptions, args)
    metrics = train(opts)
    if metrics.get("interrupted"):
        return 130
    if opts.joint:
        print(json.dumps({k: metrics[k] for k in ("scores", "average", "artefacts", "wall_time_s")}, indent=2))
        return 0
    if metrics.get("world_size", 1) == 1 or _rank() == 0:
        keys = (
            "task",
            "method",
            "pooling",
            "lr",
            "selection",
            "scores",
            "score",
            "majority_dev_score",
            "trainable_params",
            "head_params",
            "wall_time_s",
        )
        shown = {k: metrics[k] for k in keys}
        shown["selection"] = {k: v for k, v in metrics["selection"].items() if k != "history"}
        print(json.dumps(shown, indent=2))
        print(
            f"dev score {metrics['score']:.2f} (majority class: {metrics['majority_dev_score']:.2f}); "
            f"saved to {opts.resolved_output_dir()}",
            file=sys.stderr,
        )
    return 0


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))
