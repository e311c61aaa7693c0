"""Atomic file writes: a temporary file in the target's folder, fsync, then ``os.replace``, so an
interrupted run leaves either the old file or the new one, never half of one.

Temporary files are named ``.tmp-*`` in the target folder and removed on any error; the final file
gets the permissions a plain ``open(path, "w")`` would give (``0o666`` minus the umask), not the
``0o600`` of ``mkstemp``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Any, Callable, Iterator

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "save_figure_atomic",
    "atomic_directory",
]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` to produce the file, then move it to ``path`` in one step."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    atomic_write(path, write)


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, obj: Any, **dump_kwargs) -> None:
    """JSON with a trailing newline; ``indent=2, sort_keys=True`` unless given; non-JSON values via ``str``."""
    dump_kwargs.setdefault("indent", 2)
    dump_kwargs.setdefault("sort_keys", True)
    dump_kwargs.setdefault("default", str)
    atomic_write_text(path, json.dumps(obj, **dump_kwargs) + "\n")


def save_figure_atomic(fig, path: str, dpi: int = 110) -> None:
    """``fig.savefig`` through :func:`atomic_write` (format from the file suffix, default png)."""
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".") or "png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi))


@contextmanager
def atomic_directory(path: str) -> Iterator[str]:
    """Build a directory's whole content in a temporary sibling, then swap it in as ``path``.

    Yields the temporary folder to write into. On success the old ``path`` (if any) is replaced as a
    whole: readers see either every old file or every new one, never a mix. On any error (or an
    interruption) the temporary folder is removed and ``path`` is left as it was. The swap is two
    renames (old aside, new in); a crash between them leaves ``path`` missing and the old content in
    ``.old-*`` beside it, which :func:`atomic_directory` cleans up on its next use.
    """
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.dirname(path), os.path.basename(path)
    os.makedirs(parent, exist_ok=True)
    for stale in os.listdir(parent):
        if stale.startswith(f".tmp-{name}-") or stale.startswith(f".old-{name}-"):
            shutil.rmtree(os.path.join(parent, stale), ignore_errors=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=parent)
    try:
        yield tmp
        for entry in os.listdir(tmp):
            full = os.path.join(tmp, entry)
            if os.path.isfile(full):
                with open(full, "rb+") as fh:
                    os.fsync(fh.fileno())
        os.chmod(tmp, 0o777 & ~_umask())
        if os.path.isdir(path):
            old = tempfile.mkdtemp(prefix=f".old-{name}-", dir=parent)
            os.rmdir(old)
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if os.path.exists(path):
                raise FileExistsError(f"{path} exists and is not a directory; remove it or choose another path")
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
