"""Loads the compiled extension ``lc_kernels._C`` and says clearly why it is unavailable.

The extension is optional: without it the ``reference`` (and, with Triton, ``triton``) backends
still work. ``load()`` returns the module or None; ``why_unavailable()`` returns the reason (None
when loaded). The first failed load warns once with the fix.

Opt-in just-in-time build: with ``LC_JIT_BUILD=1`` and a source checkout (``csrc/`` beside the
package), a missing extension is compiled on first use with ``torch.utils.cpp_extension.load``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional

_MOD = None
_REASON: Optional[str] = None
_TRIED = False

REBUILD_HINT = (
    "rebuild it with `pip install --no-build-isolation .` (or `pip install --no-build-isolation -e .`) "
    "in the source tree with the torch you use, or set LC_JIT_BUILD=1 in a source checkout to compile on first use"
)


def _source_dir() -> Optional[Path]:
    root = Path(__file__).resolve().parent.parent / "csrc"
    return root if (root / "ext.cpp").exists() else None


def _jit_build():
    from torch.utils import cpp_extension

    src = _source_dir()
    if src is None:
        raise ImportError("LC_JIT_BUILD=1 but no csrc/ source tree is beside the package")
    import torch

    sources = [str(src / "ext.cpp")] + sorted(str(p) for p in (src / "cpu").glob("*.cpp"))
    return cpp_extension.load(
        name="lc_kernels_C_jit",
        sources=sources,
        extra_include_paths=[str(src)],
        # -fopenmp as in setup.py: at::parallel_for only threads when compiled with OpenMP
        extra_cflags=["-O3", "-std=c++17", "-fopenmp", f'-DLC_TORCH_VERSION="{torch.__version__}"'],
        extra_ldflags=["-fopenmp"],
        verbose=False,
    )


def load():
    """The extension module, or None (with the reason in :func:`why_unavailable`)."""
    global _MOD, _REASON, _TRIED
    if _TRIED:
        return _MOD
    _TRIED = True
    if os.environ.get("LC_DISABLE_EXT") == "1":
        _REASON = "disabled by LC_DISABLE_EXT=1"
        return None
    import torch

    try:
        from . import _C  # type: ignore[attr-defined]
    except ImportError as exc:
        if os.environ.get("LC_JIT_BUILD") == "1":
            try:
                _C = _jit_build()
            except Exception as jexc:  # noqa: BLE001 - report any build failure with its cause
                _REASON = f"the compiled extension lc_kernels._C is not installed and the JIT build failed: {jexc}"
                _warn()
                return None
        else:
            msg = str(exc)
            if "undefined symbol" in msg:
                _REASON = (
                    f"lc_kernels._C does not match the installed torch {torch.__version__} "
                    f"(it was probably built for another version: {msg}); {REBUILD_HINT}"
                )
            else:
                _REASON = f"the compiled extension lc_kernels._C is not installed ({msg}); {REBUILD_HINT}"
            _warn()
            return None
    built_for = _C.torch_version() if hasattr(_C, "torch_version") else "unknown"
    if built_for.split("+")[0] != torch.__version__.split("+")[0]:
        _REASON = f"lc_kernels._C was built for torch {built_for}, you have {torch.__version__}; {REBUILD_HINT}"
        _warn()
        return None
    _MOD = _C
    return _MOD


def _warn():
    warnings.warn(f"lc_kernels: compiled backends unavailable: {_REASON}", RuntimeWarning, stacklevel=3)


def why_unavailable() -> Optional[str]:
    load()
    return _REASON
