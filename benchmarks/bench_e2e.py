#!/usr/bin/env python
"""End-to-end inference cost of each fine-tuning method on a whole encoder (and training memory).

A thin entry point; the benchmark lives in ``layerconnect.apps.bench.e2e`` (also reachable as
``layerconnect bench --e2e``). ``python benchmarks/bench_e2e.py --help`` for the options.
"""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from layerconnect.apps.bench.e2e import main

    sys.exit(main())
