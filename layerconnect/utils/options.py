"""One options dataclass per application; the command line is generated from it.

Each field that the command line exposes carries its help text (and, when needed, its flag, choices,
metavar or argparse action) in ``dataclasses.field(metadata=...)`` through :func:`option`. The
default is written once, in the dataclass, and serves the Python API, ``--help`` and the docs alike
(the HfArgumentParser idea, kept small):

    @dataclass
    class ServeOptions:
        port: int = option(8000, "TCP port to listen on")

    add_options(parser, ServeOptions)            # --port (default 8000, shown in --help)
    opts = from_namespace(ServeOptions, args)    # a ServeOptions instance

Rules: ``bool`` fields become ``--flag`` (default False) or ``--no-flag`` (default True);
``Optional[X]`` fields take an ``X`` and default to None; ``List[str]`` fields are repeatable.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Dict, Iterable, Optional, Type

__all__ = ["option", "add_options", "from_namespace", "option_fields", "to_command"]

_MISSING = dataclasses.MISSING


def option(
    default: Any = _MISSING,
    help: str = "",
    *,
    flag: Optional[str] = None,
    choices=None,
    metavar: Optional[str] = None,
    type=None,
    group: Optional[str] = None,
    cli: bool = True,
    default_factory=_MISSING,
):
    """A dataclass field with command-line metadata. ``cli=False`` keeps it out of the parser."""
    meta = {
        "help": help,
        "flag": flag,
        "choices": choices,
        "metavar": metavar,
        "type": type,
        "group": group,
        "cli": cli,
    }
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def option_fields(cls) -> Iterable[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", False)]


def _unwrap_optional(tp):
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _default_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f" (default {value:g})"
    return f" (default {value})"


def add_options(
    parser: argparse.ArgumentParser, cls: Type, exclude: Iterable[str] = (), groups: Optional[Dict[str, str]] = None
) -> None:
    """Add one argument per CLI field of dataclass ``cls`` to ``parser`` (groups by field metadata)."""
    hints = typing.get_type_hints(cls)
    made: Dict[str, argparse._ArgumentGroup] = {}
    skip = set(exclude)
    for f in option_fields(cls):
        if f.name in skip:
            continue
        meta = f.metadata
        target = parser
        if meta.get("group"):
            title = meta["group"]
            if title not in made:
                made[title] = parser.add_argument_group(title, (groups or {}).get(title))
            target = made[title]
        _add_one(target, f, hints[f.name])


def _add_one(target, f: dataclasses.Field, hint) -> None:
    meta = f.metadata
    default = f.default if f.default is not _MISSING else None
    tp = _unwrap_optional(hint)
    flag = meta.get("flag") or "--" + f.name.replace("_", "-")
    # argparse %-formats help texts: a literal % must be doubled
    kwargs: Dict[str, Any] = {"dest": f.name, "help": meta.get("help", "").replace("%", "%%")}
    if tp is bool:
        if default is True:
            flag = meta.get("flag") or "--no-" + f.name.replace("_", "-")
            kwargs.update(action="store_false", default=True)
        else:
            kwargs.update(action="store_true", default=False)
        target.add_argument(flag, **kwargs)
        return
    if typing.get_origin(tp) in (list, typing.List):
        kwargs.update(action="append", default=None, metavar=meta.get("metavar"))
        target.add_argument(flag, **kwargs)
        return
    required = f.default is _MISSING and f.default_factory is _MISSING
    kwargs.update(type=meta.get("type") or tp, default=default, required=required)
    if meta.get("choices") is not None:
        kwargs["choices"] = meta["choices"]
    if meta.get("metavar"):
        kwargs["metavar"] = meta["metavar"]
    if not required:
        kwargs["help"] = kwargs["help"] + _default_text(default)
    target.add_argument(flag, **kwargs)


def from_namespace(cls, ns: argparse.Namespace, **overrides):
    """An instance of ``cls`` from the parsed arguments (fields absent from ``ns`` keep their default)."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in overrides:
            values[f.name] = overrides[f.name]
        elif hasattr(ns, f.name):
            v = getattr(ns, f.name)
            if v is None and f.default_factory is not _MISSING:
                continue  # an unused repeatable flag: keep the empty default
            values[f.name] = v
    return cls(**values)


def to_command(opts, prog: str, positional: Iterable[str] = ()) -> str:
    """A copy-pasteable command line reproducing ``opts``: every CLI field whose value is not its default."""
    import shlex

    parts = [prog]
    for f in option_fields(type(opts)):
        value = getattr(opts, f.name)
        default = (
            f.default
            if f.default is not _MISSING
            else (f.default_factory() if f.default_factory is not _MISSING else _MISSING)
        )
        if f.name in positional or value == default or value is None:
            continue
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else (f.metadata.get("flag") or "--no-" + f.name.replace("_", "-")))
        elif isinstance(value, (list, tuple)):
            parts += [f"{flag} {shlex.quote(str(v))}" for v in value]
        else:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)
