"""``layerconnect serve``: many LayerConnect tasks on one frozen encoder, over HTTP (SPEC §6)."""

from __future__ import annotations

from . import options_or_exit


def add_parser(subparsers):
    from ..apps.serve.options import ServeOptions
    from ..utils.options import add_options

    p = subparsers.add_parser(
        "serve",
        help="HTTP JSON service answering many tasks on one frozen encoder.",
        description="Load one base encoder and N task artefacts (save_connectors directories), stack "
        "their connectors, and answer POST /predict with request batching across clients "
        "(GET /tasks lists the tasks and the limits).",
    )
    add_options(p, ServeOptions)
    p.set_defaults(func=run, _parser=p)
    return p


def run(args) -> int:
    from ..apps.serve.http import serve
    from ..apps.serve.options import ServeOptions

    return serve(options_or_exit(args._parser, ServeOptions, args))
