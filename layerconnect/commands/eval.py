"""``layerconnect eval --checkpoint DIR``: score a saved run on its task's dev set (or held-out slice)."""
from __future__ import annotations

import json


def add_parser(subparsers):
    p = subparsers.add_parser("eval", help="Evaluate a saved checkpoint on its task's dev set.",
                              description="Rebuild base model + method, load the trained tensors of a "
                                          "`layerconnect train` run (or one of its checkpoint-N folders) and score it.")
    p.add_argument("--checkpoint", required=True, help="a run's --output-dir or one of its checkpoint-N folders")
    p.add_argument("--data-dir", default=None, help="GLUE TSV folder (default: the run's, else $LAYERCONNECT_GLUE_DIR)")
    p.add_argument("--split", default=None,
                   help="'dev' (all dev splits), a dev split name (MNLI: matched/mismatched) or 'heldout' "
                        "(default: what the run selected on)")
    p.add_argument("--model", default=None, help="base model path if it moved since training")
    p.add_argument("--batch-size", type=int, default=None, help="default: the run's eval batch size")
    p.add_argument("--output", default=None, help="also write the result JSON here")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from layerconnect.glue.evaluation import evaluate_checkpoint
    from layerconnect.glue.training import _write_json

    res = evaluate_checkpoint(args.checkpoint, data_dir=args.data_dir, split=args.split,
                              batch_size=args.batch_size, model=args.model)
    print(json.dumps(res, indent=2))
    if args.output:
        _write_json(args.output, res)
    return 0
