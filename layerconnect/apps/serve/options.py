"""Options of ``layerconnect serve`` (defaults written once, here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

from ...utils.options import option

__all__ = ["ServeOptions"]


@dataclass
class ServeOptions:
    """One HTTP service: a frozen base encoder and the task artefacts it answers for."""

    model: str = option(help="base encoder: Hugging Face name or local path (with its tokenizer)")
    task: List[str] = option(
        help="a task artefact to serve under NAME (repeat for more tasks)", metavar="NAME=PATH", default_factory=list
    )
    host: str = option("127.0.0.1", "address to listen on (loopback only by default)")
    port: int = option(8000, "TCP port")
    max_batch: int = option(32, "most sequences answered by one encoder pass")
    max_request_rows: int = option(32, "most sequences in one POST /predict (at most --max-batch; more: 413)")
    max_body_bytes: int = option(1 << 20, "largest request body in bytes (more: 413)")
    max_wait_ms: float = option(5.0, "how long the first waiting request waits for others to join its batch")
    backend: str = option("auto", "connector backend: auto or one of lc_kernels.available_backends()")
    max_length: int = option(128, "tokenizer truncation length (texts are cut to what it can use)")
    dtype: str = option("float32", "model dtype", choices=("float32", "float64", "bfloat16", "float16"))
    device: str = option("cpu", "torch device for the model (cpu, cuda, cuda:1, ...)")
    log_level: str = option("info", "server log level", choices=("critical", "error", "warning", "info", "debug"))

    def __post_init__(self):
        if not self.task:
            raise ValueError("give at least one --task NAME=PATH")
        for name in ("max_batch", "max_request_rows", "max_body_bytes", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ValueError(f"--max-wait-ms must be >= 0, got {self.max_wait_ms}")
        self.task_paths()

    def task_paths(self) -> Dict[str, str]:
        """``{NAME: PATH}`` from the ``--task NAME=PATH`` values (names unique)."""
        out: Dict[str, str] = {}
        for value in self.task:
            name, sep, path = value.partition("=")
            if not sep or not name or not path:
                raise ValueError(f"--task {value!r}: expected NAME=PATH (a save_connectors directory)")
            if name in out:
                raise ValueError(f"--task names must be unique, got {name!r} more than once")
            out[name] = path
        return out
