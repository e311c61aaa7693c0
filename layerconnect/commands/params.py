"""``layerconnect params``: the trainable-parameter table (works offline)."""
from __future__ import annotations

import argparse

from ..params import PRESETS

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


def _positions(text: str):
    """'inner' (default, 1..L-1), 'all' (1..L) or a comma-separated list such as '0,6,12'."""
    if text == "inner":
        return None
    if text == "all":
        return "all"
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--positions {text!r}: use 'inner', 'all' or a comma-separated list of ints, e.g. 0,6,12"
        ) from None


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("params", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("encoder (one of)")
    which = src.add_mutually_exclusive_group()
    which.add_argument("--model", metavar="NAME_OR_PATH", help="model directory or cached HF name")
    which.add_argument("--preset", choices=sorted(PRESETS), help="a known geometry")
    which.add_argument("--hidden", type=int, metavar="D", help="hidden size d (with --layers)")
    src.add_argument("--layers", type=int, metavar="L", help="number of Transformer layers (with --hidden)")
    src.add_argument("--intermediate", type=int, metavar="I", help="FFN width for --hidden (default 4*D)")
    src.add_argument("--vocab", type=int, metavar="V", help="vocabulary size for --hidden (default 30522)")
    src.add_argument("--max-positions", type=int, default=512, help="position table size for --hidden (default 512)")
    src.add_argument("--type-vocab", type=int, default=2, help="token-type table size for --hidden (default 2)")

    lc = p.add_argument_group("LayerConnect (SPEC.md §3 defaults)")
    lc.add_argument("--down-factor", type=int, default=8, help="r = d / down-factor (default 8)")
    lc.add_argument("--num-anchors", type=int, default=2, help="K, depth anchors of the seed bank (default 2)")
    lc.add_argument("--seed-rows", type=int, default=None, help="p, rows of each seed grid (default r)")
    lc.add_argument("--seed-cols", type=int, default=None, help="q, columns of each seed grid (default d/2)")
    lc.add_argument("--positions", type=_positions, default=None, metavar="inner|all|LIST",
                    help="connector positions: 'inner' (1..L-1, default), 'all' (1..L) or e.g. 0,6,12")

    base = p.add_argument_group("baselines")
    base.add_argument("--reduction-factor", type=float, default=16,
                      help="bottleneck adapters: m = d // reduction-factor (default 16, as AdapterHub)")
    base.add_argument("--lora-r", type=int, default=8, help="LoRA rank on query and value (default 8)")

    p.add_argument("--json", metavar="FILE", help="also write the table as JSON to FILE")
    p.set_defaults(func=run, _parser=p)
    return p


def run(args) -> int:
    from ..params import build_table

    parser = args._parser
    if args.layers is not None and args.hidden is None and args.model is None and args.preset is None:
        parser.error("--layers needs --hidden")
    if args.hidden is not None and args.layers is None:
        parser.error("--hidden needs --layers")
    if (args.model or args.preset) and (args.layers is not None or args.intermediate or args.vocab):
        parser.error("--layers/--intermediate/--vocab only go with --hidden (the model/preset defines them)")
    lc = dict(down_factor=args.down_factor, num_anchors=args.num_anchors, seed_rows=args.seed_rows,
              seed_cols=args.seed_cols, positions=args.positions)
    try:
        table = build_table(model=args.model, preset=args.preset, hidden=args.hidden, layers=args.layers,
                            intermediate=args.intermediate, vocab=args.vocab, max_positions=args.max_positions,
                            type_vocab=args.type_vocab, lc=lc, reduction_factor=args.reduction_factor,
                            lora_r=args.lora_r)
    except ValueError as e:
        parser.error(str(e))
    print(table.format())
    if args.json:
        table.write_json(args.json)
        print(f"\nwrote {args.json}")
    return 0
