"""Benchmarks of LayerConnect: the connector op (:mod:`.connector`) and whole models (:mod:`.e2e`),
sharing one timing harness (:mod:`.harness`). Run them as ``layerconnect bench [--e2e]`` or
``python benchmarks/bench_connector.py`` / ``benchmarks/bench_e2e.py``."""
