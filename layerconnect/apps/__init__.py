"""Applications built on the method: GLUE training (single-task and joint), serving, benchmarks.

Each application takes one options dataclass (defaults written once; the command line in
``layerconnect.cli`` is generated from it). Applications may import ``layerconnect.multitask``,
``layerconnect.method`` and the rest below them, never ``layerconnect.cli``.
"""
