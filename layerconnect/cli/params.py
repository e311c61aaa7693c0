"""``layerconnect params``: the trainable-parameter table (works offline)."""

from __future__ import annotations

import argparse

from . import options_or_exit

HELP = "Trainable-parameter table: LayerConnect against adapters, LoRA, BitFit, full FT."

DESCRIPTION = """\
Print how many parameters each method trains: full fine-tuning, BitFit, Houlsby and Pfeiffer
bottleneck adapters (AdapterHub double_seq_bn / seq_bn), LoRA, LayerConnect and head-only.
Counts EXCLUDE the task head (all methods train the same head), are given as a percentage of the
full base model, and as LayerConnect's size relative to each method.

Which encoder (one of; default: BERT-base geometry):
  --model NAME_OR_PATH   a local model directory (or a model already in the HF cache); counted on
                         the real architecture, instantiated on the meta device (no weights loaded)
  --preset NAME          bert-base, bert-large, or minilm (the offline all-MiniLM-L6-v2)
  --hidden D --layers L  a BERT-layout geometry (FFN 4*D and vocabulary 30522 unless given)
"""

EPILOG = """\
examples:
  layerconnect params
  layerconnect params --preset bert-large --num-anchors 3
  layerconnect params --hidden 768 --layers 12 --positions all --json params.json
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..params import ParamsOptions
    from ..utils.options import add_options

    p = subparsers.add_parser(
        "params",
        help=HELP,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(p, ParamsOptions)
    p.set_defaults(func=run, _parser=p)
    return p


def run(args) -> int:
    from ..params import ParamsOptions

    opts = options_or_exit(args._parser, ParamsOptions, args)
    try:
        table = opts.table()
    except ValueError as e:
        args._parser.error(str(e))
    print(table.format())
    if opts.json:
        table.write_json(opts.json)
        print(f"\nwrote {opts.json}")
    return 0
