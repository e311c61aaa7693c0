"""The method itself (SPEC §1-§3): config, hypernetwork, injection into encoders, artefacts, readouts.

Imports nothing from ``layerconnect.multitask``, ``layerconnect.apps`` or ``layerconnect.cli``
(checked by import-linter in CI).
"""

from .artefact import (
    CONFIG_FILE,
    CONNECTOR_FILE,
    ArtefactError,
    load_connectors,
    read_connector_meta,
    save_connectors,
    trained_state,
)
from .config import Geometry, LayerConnectConfig, depth_coordinates, resolve_positions
from .hypernet import LayerConnectHypernet
from .inject import EncoderParts, add_connectors, find_layers, get_hypernet, head_module_names, remove_connectors

__all__ = [
    "LayerConnectConfig",
    "Geometry",
    "resolve_positions",
    "depth_coordinates",
    "LayerConnectHypernet",
    "EncoderParts",
    "find_layers",
    "add_connectors",
    "remove_connectors",
    "head_module_names",
    "get_hypernet",
    "save_connectors",
    "load_connectors",
    "read_connector_meta",
    "trained_state",
    "ArtefactError",
    "CONNECTOR_FILE",
    "CONFIG_FILE",
]
