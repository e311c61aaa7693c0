"""What produced a result: package versions and the git commit of the checkout (if any)."""

from __future__ import annotations

import importlib
import os
import platform
import subprocess
from typing import Dict, Optional, Sequence

__all__ = ["git_commit", "package_versions"]

_DEFAULT_PACKAGES = (
    "torch",
    "transformers",
    "datasets",
    "evaluate",
    "accelerate",
    "adapters",
    "peft",
    "triton",
    "lc_kernels",
)


def git_commit(short: bool = False) -> Optional[str]:
    """The commit of the source checkout this package runs from, or None (installed package, no git)."""
    here = os.path.dirname(os.path.abspath(__file__))
    cmd = ["git", "rev-parse", "--short", "HEAD"] if short else ["git", "rev-parse", "HEAD"]
    try:
        out = subprocess.run(cmd, cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def package_versions(packages: Sequence[str] = _DEFAULT_PACKAGES) -> Dict[str, Optional[str]]:
    """``{"python": ..., package: version}`` for the packages that import; plus ``git_commit``."""
    out: Dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = importlib.import_module(name).__version__
        except Exception:  # noqa: BLE001 - absent or broken optional packages are simply not listed
            continue
    out["git_commit"] = git_commit()
    return out
