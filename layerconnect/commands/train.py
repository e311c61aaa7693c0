"""``layerconnect train``: fine-tune on one GLUE task with LayerConnect or a baseline method."""
from __future__ import annotations

import json
import sys

# LayerConnect's few generated weights want a far larger step than adapters (an earlier MRPC probe:
# ~1e-2 against ~1e-3, 3e-2 diverged; a 2-epoch SST-2 run at 1e-2 reached 78.7 % dev accuracy after its first epoch).
DEFAULT_LR = {"layerconnect": 1e-2, "full": 2e-5}


def add_parser(subparsers):
    from layerconnect.glue.tasks import TASK_NAMES
    from layerconnect.glue.training import METHODS

    p = subparsers.add_parser(
        "train", help="Fine-tune on a GLUE task with LayerConnect or a baseline method.",
        description="Fine-tune on a GLUE task (transformers.Trainer). Works unchanged under "
                    "`torchrun --nproc_per_node N -m layerconnect.cli train ...` (data parallel).")
    from layerconnect.multitask_train import add_multitask_arguments, task_argument

    p.add_argument("--task", required=True, type=task_argument, metavar="TASK[,TASK...]",
                   help=f"one of {', '.join(TASK_NAMES)}; several comma-separated = joint multi-task training")
    add_multitask_arguments(p)
    p.add_argument("--method", default="layerconnect", choices=METHODS)
    p.add_argument("--model", default=None, help="HF name or path (default: the offline all-MiniLM-L6-v2)")
    p.add_argument("--data-dir", default=None,
                   help="GLUE TSV folder <dir>/<TASK>/{train,dev}.tsv (default: $LAYERCONNECT_GLUE_DIR, else the hub)")
    p.add_argument("--output-dir", default=None, help="default: runs/<task>-<method>-s<seed>")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=float, default=None, help="default 3")
    g.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="default: 1e-2 for layerconnect, 2e-5 for full, 1e-3 otherwise")
    p.add_argument("--batch-size", type=int, default=32, help="per process")
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its last checkpoint")
    p.add_argument("--train-subsample", type=int, default=None,
                   help="train on a fixed random N rows (the same N rows whatever --seed)")
    p.add_argument("--heldout", type=int, default=0,
                   help="select/evaluate on a fixed N-row slice of train instead of dev (for LR search)")
    p.add_argument("--warmup-ratio", type=float, default=0.06)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--save-steps", type=int, default=None,
                   help="evaluate and checkpoint every N steps (default: every epoch, or at the end of --max-steps)")
    p.add_argument("--logging-steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    lc = p.add_argument_group("LayerConnect options (--method layerconnect)")
    lc.add_argument("--positions", default=None, help="'inner' (default, 1..L-1), 'all' (1..L) or e.g. '0,3,6'")
    lc.add_argument("--down-factor", type=int, default=None, help="r = d / down_factor (default 8)")
    lc.add_argument("--num-anchors", type=int, default=None, help="K seed grids (default 2)")
    lc.add_argument("--alpha", type=float, default=None, help="connector scale (default 1.0)")
    lc.add_argument("--backend", default=None, help="connector backend (default auto)")
    p.add_argument("--method-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra option passed to the method (repeatable; VALUE parsed as JSON if it can be)")
    p.set_defaults(func=run)
    return p


def _parse_value(v: str):
    try:
        return json.loads(v)
    except ValueError:
        return v


def method_options(args) -> dict:
    opts = {}
    if args.method == "layerconnect":
        for k in ("positions", "down_factor", "num_anchors", "alpha", "backend"):
            v = getattr(args, k)
            if v is not None:
                opts[k] = v
    else:
        given = [k for k in ("positions", "down_factor", "num_anchors", "alpha", "backend") if getattr(args, k) is not None]
        if given:
            raise SystemExit(f"error: --{given[0].replace('_', '-')} only applies to --method layerconnect")
    for kv in args.method_option:
        if "=" not in kv:
            raise SystemExit(f"error: --method-option {kv!r} must look like KEY=VALUE")
        k, v = kv.split("=", 1)
        opts[k.strip().replace("-", "_")] = _parse_value(v)
    return opts


def run(args) -> int:
    if "," in args.task:  # several tasks: joint training on one frozen encoder (SPEC §6)
        from layerconnect.multitask_train import run_multitask

        return run_multitask(args)
    from layerconnect.glue.training import RunConfig, command_line, train

    lr = args.lr if args.lr is not None else DEFAULT_LR.get(args.method, 1e-3)
    epochs = args.epochs if args.epochs is not None else 3.0
    max_steps = args.max_steps if args.max_steps is not None else -1
    out = args.output_dir or f"runs/{args.task}-{args.method}-s{args.seed}"
    cfg = RunConfig(
        task=args.task, method=args.method, model=args.model, data_dir=args.data_dir, output_dir=out,
        epochs=epochs, max_steps=max_steps, lr=lr, batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size, max_length=args.max_length, seed=args.seed, resume=args.resume,
        train_subsample=args.train_subsample, heldout=args.heldout, warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm, save_steps=args.save_steps,
        logging_steps=args.logging_steps, threads=args.threads, progress=not args.no_progress,
        method_options=method_options(args),
    )
    shown = {k: v for k, v in vars(args).items() if k not in ("func", "command", "method_option")}
    shown.update({"lr": lr, "output_dir": out})
    if args.max_steps is None:
        shown["epochs"] = epochs
    cfg.command = command_line(shown) + "".join(f" --method-option {kv}" for kv in args.method_option)
    metrics = train(cfg)
    if metrics.get("interrupted"):
        return 130
    main = metrics.get("world_size", 1) == 1 or _rank() == 0
    if main:
        print(json.dumps({k: metrics[k] for k in ("task", "method", "eval_split", "scores", "score",
                                                  "trainable_params", "wall_time_s")}, indent=2))
        print(f"saved to {out}", file=sys.stderr)
    return 0


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))
