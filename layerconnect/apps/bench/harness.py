"""The timing harness shared by the connector and end-to-end benchmarks.

What it guarantees, because each point has bitten benchmark suites before:

* **Side by side, interleaved.** Every variant is timed in the same process and the same run; in
  each repeat the variants run in a freshly shuffled order, so slow drifts (thermal, another job on
  the shared cores) spread over all variants instead of biasing the one that ran last.
* **Warm-up first.** Each variant runs ``warmup`` untimed calls (first-call allocation, lazy
  initialisation, ``torch.compile``) before any sample is taken.
* **Median of repeats**, with the quartiles kept so a reader can see the spread.
* **Samples long enough to time.** A sample runs ``inner`` back-to-back calls, ``inner`` chosen
  from the warm-up so a sample lasts at least ``min_sample_s`` (timer resolution and the Python
  call overhead stop mattering); the reported time is per call.
* **Cold caches by rotation.** Callers pass a buffer index to each call; the index rotates through
  ``n_buffers`` input sets whose total is sized by :func:`rotation_count` to exceed the last-level
  cache, so a call never finds its input already cached from the previous call.
* **Device-correct clocks.** CPU samples use ``time.perf_counter``; CUDA samples use CUDA events
  between two synchronisations, so the asynchronous launch queue is not mistaken for the kernel.

Untimed per-call preparation (e.g. building the autograd graph before timing a backward) goes in a
variant's ``setup``; only ``run`` is inside the clock.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from ...utils.io import atomic_write_json, atomic_write_text
from ...utils.io import save_figure_atomic as save_figure
from ...utils.versions import git_commit

__all__ = [
    "Variant",
    "Stats",
    "measure_interleaved",
    "rotation_count",
    "last_level_cache_bytes",
    "environment",
    "write_json_atomic",
    "write_text_atomic",
    "save_figure_atomic",
    "fresh_seed",
    "format_table",
    "resolve_device",
    "parse_int_list",
    "progress_bar",
]


@dataclass
class Variant:
    """One thing to time. ``run(arg)`` is timed; ``setup(buffer_index)`` (untimed) makes ``arg``.

    Without ``setup``, ``run`` receives the buffer index itself.
    """

    name: str
    run: Callable[[Any], Any]
    setup: Optional[Callable[[int], Any]] = None


@dataclass
class Stats:
    """Per-call times in seconds over the timed samples of one variant."""

    median: float
    q1: float
    q3: float
    min: float
    samples: List[float] = field(default_factory=list)
    inner: int = 1

    def as_dict(self, scale: float = 1e3, suffix: str = "_ms") -> Dict[str, Any]:
        return {
            f"median{suffix}": self.median * scale,
            f"q1{suffix}": self.q1 * scale,
            f"q3{suffix}": self.q3 * scale,
            f"min{suffix}": self.min * scale,
            "repeats": len(self.samples),
            "inner": self.inner,
        }


def _quantile(sorted_vals: Sequence[float], q: float) -> float:
    # linear interpolation between closest ranks; fine for the handful of samples we keep
    if len(sorted_vals) == 1:
        return sorted_vals[0]
    pos = q * (len(sorted_vals) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (pos - lo) * (sorted_vals[hi] - sorted_vals[lo])


def _stats(samples: List[float], inner: int) -> Stats:
    s = sorted(samples)
    return Stats(
        median=statistics.median(s),
        q1=_quantile(s, 0.25),
        q3=_quantile(s, 0.75),
        min=s[0],
        samples=list(samples),
        inner=inner,
    )


class _Clock:
    """Wall clock for CPU work; CUDA events (between synchronisations) for CUDA work."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def time(self, fn: Callable[[], None]) -> float:
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        import time

        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0


def measure_interleaved(
    variants: Sequence[Variant],
    *,
    device: torch.device,
    n_buffers: int,
    warmup: int = 2,
    repeats: int = 7,
    min_sample_s: float = 0.0,
    max_inner: int = 64,
    rng: Optional[random.Random] = None,
    on_sample: Optional[Callable[[str], None]] = None,
) -> Dict[str, Stats]:
    """Time every variant side by side; returns ``{name: Stats}`` with per-call seconds.

    ``on_sample`` (e.g. a progress-bar update) is called after every timed sample.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if n_buffers < 1:
        raise ValueError(f"n_buffers must be >= 1, got {n_buffers}")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique, got {names}")
    rng = rng or random.Random()
    clock = _Clock(device)
    cursor = {v.name: 0 for v in variants}  # each variant walks the buffers on its own

    def next_index(name: str) -> int:
        i = cursor[name]
        cursor[name] = (i + 1) % n_buffers
        return i

    def one_sample(v: Variant, inner: int) -> float:
        idx = [next_index(v.name) for _ in range(inner)]
        args = [v.setup(i) for i in idx] if v.setup is not None else idx
        clock.sync()

        def body():
            for a in args:
                v.run(a)

        return clock.time(body) / inner

    inner_of: Dict[str, int] = {}
    for v in variants:
        est = float("inf")
        for _ in range(max(1, warmup)):
            est = min(est, one_sample(v, 1))
        inner_of[v.name] = 1 if est <= 0 else max(1, min(max_inner, math.ceil(min_sample_s / est)))

    samples: Dict[str, List[float]] = {v.name: [] for v in variants}
    order = list(variants)
    for _ in range(repeats):
        rng.shuffle(order)
        for v in order:
            samples[v.name].append(one_sample(v, inner_of[v.name]))
            if on_sample is not None:
                on_sample(v.name)
    return {name: _stats(samples[name], inner_of[name]) for name in names}


def last_level_cache_bytes() -> int:
    """Size of the largest CPU cache (sysfs; /proc/cpuinfo as fallback); 32 MiB if unknown."""
    best = 0
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    if base.is_dir():
        for idx in base.glob("index*"):
            try:
                txt = (idx / "size").read_text().strip().upper()
            except OSError:
                continue
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(txt[-1:], 1)
            try:
                best = max(best, int(txt.rstrip("KMG")) * mult)
            except ValueError:
                continue
    if best == 0:
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("cache size"):
                    best = int(line.split(":")[1].strip().split()[0]) * 1024
                    break
        except (OSError, ValueError, IndexError):
            pass
    return best or (32 << 20)


def rotation_count(bytes_per_set: int, target_bytes: int, max_sets: int = 512, min_sets: int = 2) -> int:
    """How many input sets of ``bytes_per_set`` to rotate so their total reaches ``target_bytes``."""
    if bytes_per_set <= 0:
        return min_sets
    return int(max(min_sets, min(max_sets, math.ceil(target_bytes / bytes_per_set))))


def fresh_seed() -> int:
    """A random seed (recorded in the JSON so a run can be replayed); never a constant."""
    return int.from_bytes(os.urandom(4), "little")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(device: torch.device) -> Dict[str, Any]:
    """Everything a reader needs to judge a figure: machine, load, versions, date."""
    env: Dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "device": str(device),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "git_commit": git_commit(short=True),
        "llc_bytes": last_level_cache_bytes(),
    }
    try:
        env["loadavg_1_5_15"] = list(os.getloadavg())
    except OSError:
        env["loadavg_1_5_15"] = None
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def write_text_atomic(path: Path, text: str) -> None:
    atomic_write_text(str(path), text)


def write_json_atomic(path: Path, obj: Any) -> None:
    atomic_write_json(str(path), obj, sort_keys=False)


def save_figure_atomic(fig, path: Path) -> None:
    save_figure(fig, str(path), dpi=110)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width table (right-aligned numbers) that reads well in a terminal and a PR."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


# ---------------------------------------------------------------------------------------------
# command-line options both benchmarks share (one definition, so `layerconnect bench` can merge them)
# ---------------------------------------------------------------------------------------------

COMMON_DESTS = (
    "device",
    "dtype",
    "quick",
    "out",
    "repeats",
    "warmup",
    "seed",
    "backends",
    "threads",
    "no_progress",
    "no_plot",
)


def apply_threads(n: Optional[int]) -> None:
    if n is not None:
        if n < 1:
            raise SystemExit(f"--threads must be >= 1, got {n}")
        torch.set_num_threads(n)


def resolve_device(name: Optional[str]) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch here; use --device cpu")
    return torch.device(name)


def parse_int_list(text: Optional[str], what: str) -> Optional[List[int]]:
    """``"1024,8k,2**15"``-style lists: ints with an optional k suffix (x1024)."""
    if text is None:
        return None
    out = []
    for tok in text.split(","):
        tok = tok.strip().lower()
        if not tok:
            continue
        try:
            out.append(int(tok[:-1]) * 1024 if tok.endswith("k") else int(tok))
        except ValueError:
            raise SystemExit(f"{what}: {tok!r} is not an integer (write e.g. 1024,8k,32768)") from None
    if not out or any(v < 1 for v in out):
        raise SystemExit(f"{what}: give positive integers, got {text!r}")
    return out


def progress_bar(total: int, enabled: bool, desc: str):
    """A tqdm bar on stderr (a no-op object when disabled or tqdm is missing)."""
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=desc, unit="sample", leave=False, dynamic_ncols=True)
        except ImportError:
            pass

    class _Null:
        def update(self, n=1):
            pass

        def set_description_str(self, s):
            pass

        def close(self):
            pass

    return _Null()


def bench_main(argv, args, options_cls, build_parser, run, format_results, plot, stem: str) -> int:
    """The shared entry point of a benchmark: parse (unless given options), run, print the table, write
    ``<out>/<stem>.json`` and (unless ``--no-plot``) ``<out>/<stem>.png``."""
    if args is None:
        from ...utils.options import from_namespace

        args = from_namespace(options_cls, build_parser().parse_args(argv))
    res = run(args)
    print(format_results(res))
    out = Path(args.out)
    write_json_atomic(out / f"{stem}.json", res)
    wrote = [str(out / f"{stem}.json")]
    if not args.no_plot and res.get("results"):
        plot(res, out / f"{stem}.png")
        wrote.append(str(out / f"{stem}.png"))
    print("wrote " + " and ".join(wrote))
    return 0


def build_bench_parser(prog: str, description: str, epilog: str, options_cls):
    """A benchmark's own argparse parser, generated from its options dataclass."""
    import argparse

    from ...utils.options import add_options

    p = argparse.ArgumentParser(
        prog=prog, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_options(p, options_cls)
    return p
