"""LayerConnect: hypernetwork-generated inter-layer connectors for frozen Transformer encoders.

    from layerconnect import LayerConnectConfig, add_connectors, save_connectors, load_connectors
    model = add_connectors(hf_model, LayerConnectConfig())

Package layers (imports only point down; import-linter checks it in CI):

    layerconnect.cli        argparse only: turns a command line into one options object per application
    layerconnect.apps       applications: GLUE training (single and joint), serving, benchmarks
    layerconnect.multitask  many tasks on one frozen encoder: stacking, head shells
    layerconnect.baselines, layerconnect.params   the methods compared with, parameter counts
    layerconnect.method     the method: config, hypernetwork, injection, artefacts, readouts
    layerconnect.utils      atomic files, model paths, versions, options dataclasses
    lc_kernels              the connector op and its kernels (never imports layerconnect)
"""

from lc_kernels import __version__

from .method import (
    Geometry,
    LayerConnectConfig,
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
