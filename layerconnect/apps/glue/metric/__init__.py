"""Local ``evaluate`` GLUE metric; ``METRIC_PATH`` is what to pass to ``evaluate.load``."""

import os

METRIC_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "glue.py")
