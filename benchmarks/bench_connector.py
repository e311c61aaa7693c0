#!/usr/bin/env python
"""Connector-op speed: every backend vs eager PyTorch, torch.compile and the copy floor.

A thin entry point; the benchmark lives in ``layerconnect.apps.bench.connector`` (also reachable as
``layerconnect bench``). ``python benchmarks/bench_connector.py --help`` for the options.
"""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from layerconnect.apps.bench.connector import main

    sys.exit(main())
