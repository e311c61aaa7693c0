"""LayerConnect: hypernetwork-generated inter-layer connectors for frozen Transformer encoders.

    from layerconnect import LayerConnectConfig, add_connectors, save_connectors, load_connectors
    model = add_connectors(hf_model, LayerConnectConfig())
"""
from lc_kernels import __version__

from .config import Geometry, LayerConnectConfig
from .model import (
    LayerConnectHypernet,
    add_connectors,
    find_layers,
    load_connectors,
    remove_connectors,
    save_connectors,
)

__all__ = [
    "LayerConnectConfig",
    "Geometry",
    "LayerConnectHypernet",
    "add_connectors",
    "remove_connectors",
    "find_layers",
    "save_connectors",
    "load_connectors",
    "__version__",
]
