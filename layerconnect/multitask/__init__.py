"""Many LayerConnect tasks on one frozen encoder (SPEC §6): stacking and head shells.

Imports nothing from ``layerconnect.apps`` or ``layerconnect.cli`` (checked by import-linter in CI).
"""

from .heads import EncoderSlot, TaskReadout, make_head_shell
from .loading import TaskInfo
from .model import MultiTaskModel

__all__ = ["MultiTaskModel", "TaskInfo", "make_head_shell", "EncoderSlot", "TaskReadout"]
