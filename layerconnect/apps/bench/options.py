"""Options of the two benchmarks (``layerconnect bench`` and ``layerconnect bench --e2e``).

Defaults live here once; ``None`` means "the benchmark's own default for the device" (documented in each
help text and in the benchmark's epilog)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ...utils.options import option

__all__ = ["BenchOptions", "ConnectorBenchOptions", "E2EBenchOptions", "COMMON", "CONNECTOR", "E2E"]

COMMON = "common options"
CONNECTOR = "connector benchmark"
E2E = "end-to-end benchmark (--e2e)"


@dataclass
class BenchOptions:
    """What both benchmarks take."""

    device: Optional[str] = option(
        None, "where to run (default: cuda if available, else cpu)", choices=("cpu", "cuda"), group=COMMON
    )
    dtype: Optional[str] = option(
        None,
        "activation dtype (default: float32 on cpu; see each benchmark for cuda)",
        choices=("float32", "float64", "float16", "bfloat16"),
        group=COMMON,
    )
    quick: bool = option(False, "a small grid with few repeats: a smoke run, not figures to quote", group=COMMON)
    out: str = option("bench-out", "directory for the JSON and PNG", group=COMMON)
    repeats: Optional[int] = option(None, "timed samples per variant (the median is reported)", group=COMMON)
    warmup: Optional[int] = option(None, "untimed calls per variant before timing", group=COMMON)
    seed: Optional[int] = option(
        None, "seed of the random inputs (default: a fresh one, recorded in the JSON)", group=COMMON
    )
    backends: Optional[str] = option(
        None, "comma-separated connector backends to include (default: every available one)", group=COMMON
    )
    threads: Optional[int] = option(None, "torch.set_num_threads for the run (default: torch's choice)", group=COMMON)
    no_progress: bool = option(False, "no progress bar", group=COMMON)
    no_plot: bool = option(False, "skip the PNG (matplotlib not needed then)", group=COMMON)


@dataclass
class ConnectorBenchOptions(BenchOptions):
    """The connector op against eager PyTorch, torch.compile and the copy floor."""

    n_list: Optional[str] = option(
        None,
        "comma-separated token counts N (k = x1024), e.g. 1k,8k,32k (default: 1k..256k)",
        flag="--n",
        group=CONNECTOR,
    )
    d_list: Optional[str] = option(
        None, "comma-separated hidden sizes d (default: 384,768,1024)", flag="--d", group=CONNECTOR
    )
    max_n: Optional[int] = option(None, "drop N above this (default: 32768 on cpu, no limit on cuda)", group=CONNECTOR)
    compile: str = option(
        "auto",
        "which shapes also time torch.compile(reference): auto = all on cuda, the headline shape on cpu",
        choices=("auto", "all", "headline", "none"),
        group=CONNECTOR,
    )
    include_triton_interpreter: bool = option(
        False, "also time the triton backend on CPU (TRITON_INTERPRET; very slow, not a speed path)", group=CONNECTOR
    )
    rotate_mb: Optional[float] = option(
        None,
        "total size of the rotated input buffers per shape (default: max(64, 2 x last-level cache))",
        group=CONNECTOR,
    )
    min_sample_ms: Optional[float] = option(
        None, "run calls back to back until a timed sample lasts this long (default: 20 cpu, 5 cuda)", group=CONNECTOR
    )


@dataclass
class E2EBenchOptions(BenchOptions):
    """Whole encoders with each fine-tuning method attached."""

    models: Optional[str] = option(None, "comma-separated, from minilm, bert-base, bert-large", group=E2E)
    batch: Optional[str] = option(None, "comma-separated batch sizes", group=E2E)
    seq: Optional[str] = option(None, "comma-separated sequence lengths", group=E2E)
    methods: Optional[str] = option(
        None,
        "comma-separated, from base, houlsby, pfeiffer, lora, lora-merged, "
        "layerconnect, layerconnect-oop (default: all but layerconnect-oop; "
        "base is always timed)",
        group=E2E,
    )
    shapes: Optional[str] = option(
        None,
        "explicit batch x length pairs instead of the --batch/--seq grid, e.g. 1x16,8x64,32x128 (the serving shapes)",
        group=E2E,
    )
    modes: str = option(
        "eager",
        "comma-separated execution modes, each timed against the bare model in the same "
        "mode: eager, compile (torch.compile fullgraph), cuda-graphs (torch.compile "
        "mode='reduce-overhead', CUDA only)",
        group=E2E,
    )
    memory: bool = option(
        False, "also measure one training step's peak memory and saved activations per method", group=E2E
    )
    memory_only: bool = option(False, "only the memory measurement", group=E2E)
    memory_shape: str = option("bert-base,32,128", "model,batch,seq of the memory measurement", group=E2E)
