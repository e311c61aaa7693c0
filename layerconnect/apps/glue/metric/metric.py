"""Shim so ``evaluate.load(<this folder>, task)`` works: evaluate loads ``<folder>/<folder name>.py``.
The metric itself lives in ``glue.py`` next to this file."""

from layerconnect.apps.glue.metric.glue import Glue  # noqa: F401
