#!/usr/bin/env python3
"""The GPU-free checks of the CUDA kernels, each run once per source version and cached.

    python csrc/cuda/ci_check.py [host] [emu] [nvcc] [binding] [--force] [--cache DIR]   (default: all)

Steps (stdlib only; csrc/cuda/check.sh and tests/test_cuda_host.py both call this module):
  host  g++ host test of the index arithmetic and launch planning (tests/host_test.cpp)
  emu   the real kernel source under the SIMT/WMMA emulator against float64 (tests/emu_test.cpp)
  nvcc  every csrc/cuda/*.cu compiled for sm_80 and sm_90 with -Xptxas -v; the object's SASS is
        disassembled (cuobjdump, from PATH or the copy Triton ships) and a per-kernel report is
        written: registers, spill bytes, stack, shared memory, HMMA/HGMMA instruction counts.
  binding  binding.cpp syntax-checked by g++ against the installed torch's headers (a CPU-only
        torch lacks one generated CUDA header, c10/cuda/impl/cuda_cmake_macros.h, shimmed empty);
        skipped when torch is not importable or the CUDA runtime headers are not found.

A step's result (pass/fail, log, report) is stored under the cache directory (default
build/cuda-check beside the repository's csrc/, override with LC_CUDA_CHECK_CACHE) in a folder
named by a SHA-256 of everything that determines it: the source files it reads, the tool's
version text and the flags. A later call with the same key reuses the result instead of
recompiling (CI runs check.sh, then pytest), and a changed source or tool never reuses a stale one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent  # csrc/cuda
CSRC = HERE.parent
ROOT = CSRC.parent

NVCC_FLAGS = [
    "-c",
    "-std=c++17",
    "-O3",
    "--use_fast_math",
    "-lineinfo",
    "-t",
    "2",
    "-gencode",
    "arch=compute_80,code=sm_80",
    "-gencode",
    "arch=compute_90,code=sm_90",
    "-Xptxas",
    "-v",
]
HOST_FLAGS = ["-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror"]
EMU_FLAGS = ["-std=c++20", "-O2", "-fno-strict-aliasing", "-DLC_SIMT_EMULATION"]
BINDING_FLAGS = ["-std=c++17", "-fsyntax-only", "-w", "-DLC_WITH_CUDA", "-DTORCH_EXTENSION_NAME=_C"]
TIMEOUT_S = {"host": 600, "emu": 1800, "nvcc": 1800, "binding": 900}
STEPS = ("host", "emu", "nvcc", "binding")


def cache_dir(override: Optional[str] = None) -> Path:
    return Path(override or os.environ.get("LC_CUDA_CHECK_CACHE") or (ROOT / "build" / "cuda-check"))


def _tool_version(exe: str) -> str:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
        return out.stdout + out.stderr
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable: {exc}"


def _sources(step: str) -> List[Path]:
    if step == "nvcc":  # what nvcc reads: the kernels and their headers, not the tests or the binding
        files = [p for p in HERE.iterdir() if p.suffix in (".cu", ".cuh", ".h")]
    elif step == "binding":
        files = [HERE / "binding.cpp", HERE / "connector_api.h"]
    else:
        files = [p for p in HERE.rglob("*") if p.suffix in (".cu", ".cuh", ".h", ".cpp")]
    return sorted(files)


def step_key(step: str, tool: str) -> str:
    h = hashlib.sha256()
    flags = {"nvcc": NVCC_FLAGS, "host": HOST_FLAGS, "emu": EMU_FLAGS, "binding": BINDING_FLAGS}[step]
    h.update(f"{step}\n{' '.join(flags)}\n{_tool_version(tool)}\n".encode())
    if step == "nvcc":
        h.update((find_cuobjdump() or "no cuobjdump").encode())
    if step == "binding":
        h.update(" ".join(_binding_includes() or ["unavailable"]).encode())
        h.update(_torch_version().encode())
    for p in _sources(step):
        h.update(str(p.relative_to(CSRC)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:20]


def _torch_version() -> str:
    try:
        import torch  # noqa: PLC0415

        return torch.__version__
    except Exception:  # noqa: BLE001 - no torch: the binding step is skipped
        return "none"


def cuda_include(nvcc: Optional[str] = None) -> Optional[str]:
    """The CUDA toolkit's include directory (nvcc may be a wrapper script outside the toolkit)."""
    cands = [os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"]
    exe = shutil.which(nvcc or os.environ.get("NVCC", "nvcc"))
    if exe:
        cands.append(str(Path(os.path.realpath(exe)).parent.parent))
    cands += sorted(str(p) for p in Path("/usr/local").glob("cuda-*"))
    for c in cands:
        if c and (Path(c) / "include" / "cuda_runtime_api.h").exists():
            return str(Path(c) / "include")
    return None


def _binding_includes() -> Optional[List[str]]:
    """torch's, Python's and the CUDA runtime's include directories, or None when one is missing."""
    try:
        import sysconfig  # noqa: PLC0415

        from torch.utils.cpp_extension import include_paths  # noqa: PLC0415
    except Exception:  # noqa: BLE001
        return None
    inc = cuda_include()
    if inc is None:
        return None
    return include_paths() + [sysconfig.get_paths()["include"], inc]


def find_cuobjdump() -> Optional[str]:
    exe = shutil.which("cuobjdump")
    if exe:
        return exe
    try:  # Triton ships cuobjdump/nvdisasm/ptxas for its NVIDIA backend
        import triton  # noqa: PLC0415

        cand = Path(triton.__file__).resolve().parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        return str(cand) if cand.exists() else None
    except Exception:  # noqa: BLE001 - triton missing or broken: no disassembler
        return None


def _run(cmd: List[str], timeout: int, log: List[str]) -> int:
    log.append("$ " + " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        log.append(f"timed out after {timeout} s")
        return 124
    log.append(proc.stdout + proc.stderr)
    return proc.returncode


# ------------------------------------------------------------------------------------------------
# ptxas -v and SASS parsing
# ------------------------------------------------------------------------------------------------
_COMPILING = re.compile(r"Compiling entry function '(?P<name>[^']+)' for '(?P<arch>sm_\d+)'")
_PROPS = re.compile(r"Function properties for (?P<name>\S+)")
_SPILL = re.compile(r"(?P<stack>\d+) bytes stack frame, (?P<st>\d+) bytes spill stores, (?P<ld>\d+) bytes spill loads")
_USED = re.compile(r"Used (?P<regs>\d+) registers(?:.*?(?P<smem>\d+) bytes smem)?")


def parse_ptxas(text: str) -> Dict[str, dict]:
    """Per (arch, mangled kernel): registers, stack, spill stores/loads, static shared memory."""
    out: Dict[str, dict] = {}
    cur = None
    props_for = None
    for line in text.splitlines():
        m = _COMPILING.search(line)
        if m:
            cur = (m.group("arch"), m.group("name"))
            out.setdefault(f"{cur[0]} {cur[1]}", {"arch": cur[0], "mangled": cur[1]})
            continue
        m = _PROPS.search(line)
        if m:
            props_for = m.group("name")
            continue
        m = _SPILL.search(line)
        if m and cur and props_for == cur[1]:
            e = out[f"{cur[0]} {cur[1]}"]
            e.update(stack=int(m.group("stack")), spill_stores=int(m.group("st")), spill_loads=int(m.group("ld")))
            continue
        m = _USED.search(line)
        if m and cur:
            e = out[f"{cur[0]} {cur[1]}"]
            e.update(registers=int(m.group("regs")), static_smem=int(m.group("smem") or 0))
            cur = None
    return out


_ARCH = re.compile(r"arch = (sm_\d+)")
_FUNC = re.compile(r"Function : (\S+)")


def parse_sass(text: str) -> Dict[str, dict]:
    """Per (arch, mangled kernel): counts of tensor-core instructions in the disassembly."""
    out: Dict[str, dict] = {}
    arch = None
    key = None
    for line in text.splitlines():
        m = _ARCH.search(line)
        if m:
            arch = m.group(1)
            continue
        m = _FUNC.search(line)
        if m and arch:
            key = f"{arch} {m.group(1)}"
            out[key] = {"hmma": 0, "hgmma": 0, "instructions": 0}
            continue
        if key and re.match(r"\s*/\*[0-9a-f]{4,}\*/", line):
            out[key]["instructions"] += 1
            op = line.split("*/", 1)[1]
            if re.search(r"\bHGMMA\.", op):
                out[key]["hgmma"] += 1
            elif re.search(r"\bHMMA\.", op):
                out[key]["hmma"] += 1
    return out


def demangle(names: List[str]) -> Dict[str, str]:
    exe = shutil.which("c++filt")
    if not exe or not names:
        return {n: n for n in names}
    proc = subprocess.run([exe], input="\n".join(names), capture_output=True, text=True)
    pretty = proc.stdout.splitlines()
    if len(pretty) != len(names):
        return {n: n for n in names}
    return {
        n: re.sub(r"lc::cuda::(\(anonymous namespace\)::)?", "", p).split("(")[0].replace("void ", "")
        for n, p in zip(names, pretty)
    }


# ------------------------------------------------------------------------------------------------
# steps
# ------------------------------------------------------------------------------------------------
def _store(folder: Path, ok: bool, log: List[str], extra: Optional[dict] = None) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "log.txt").write_text("\n".join(log))
    res = {"ok": ok, "log": str(folder / "log.txt"), **(extra or {})}
    (folder / "result.json").write_text(json.dumps(res, indent=1))
    return res


def _cached(folder: Path, force: bool) -> Optional[dict]:
    f = folder / "result.json"
    if f.exists() and not force:
        res = json.loads(f.read_text())
        res["cached"] = True
        return res
    return None


def run_host(cache: Path, cxx: str, force: bool = False) -> dict:
    folder = cache / f"host-{step_key('host', cxx)}"
    res = _cached(folder, force)
    if res:
        return res
    log: List[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        exe = str(Path(tmp) / "host_test")
        rc = _run(
            [cxx, *HOST_FLAGS, "-I", str(CSRC), str(HERE / "tests" / "host_test.cpp"), "-o", exe],
            TIMEOUT_S["host"],
            log,
        )
        ok = rc == 0 and _run([exe], TIMEOUT_S["host"], log) == 0 and "HOST TEST PASSED" in log[-1]
    return _store(folder, ok, log)


def run_emu(cache: Path, cxx: str, force: bool = False) -> dict:
    folder = cache / f"emu-{step_key('emu', cxx)}"
    res = _cached(folder, force)
    if res:
        return res
    log: List[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        exe = str(Path(tmp) / "emu_test")
        rc = _run(
            [
                cxx,
                *EMU_FLAGS,
                "-I",
                str(HERE / "tests" / "emu"),
                "-I",
                str(CSRC),
                str(HERE / "tests" / "emu_test.cpp"),
                "-o",
                exe,
            ],
            TIMEOUT_S["emu"],
            log,
        )
        ok = rc == 0 and _run([exe], TIMEOUT_S["emu"], log) == 0 and "EMULATION PASSED" in log[-1]
    return _store(folder, ok, log)


def run_binding(cache: Path, cxx: str, force: bool = False) -> dict:
    incs = _binding_includes()
    if incs is None:
        return {"ok": True, "skipped": "no importable torch or no CUDA runtime headers", "log": ""}
    folder = cache / f"binding-{step_key('binding', cxx)}"
    res = _cached(folder, force)
    if res:
        return res
    log: List[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        shim = Path(tmp) / "c10" / "cuda" / "impl"
        shim.mkdir(parents=True)
        (shim / "cuda_cmake_macros.h").write_text("#pragma once\n")  # generated only in CUDA builds of torch
        args = [a for p in [str(CSRC), *incs[:-1], tmp, incs[-1]] for a in ("-I", p)]
        ok = _run([cxx, *BINDING_FLAGS, *args, str(HERE / "binding.cpp")], TIMEOUT_S["binding"], log) == 0
    return _store(folder, ok, log)


def run_nvcc(cache: Path, nvcc: str, force: bool = False) -> dict:
    folder = cache / f"nvcc-{step_key('nvcc', nvcc)}"
    res = _cached(folder, force)
    if res:
        return res
    log: List[str] = []
    folder.mkdir(parents=True, exist_ok=True)
    cuobjdump = find_cuobjdump()
    kernels: Dict[str, dict] = {}
    ok = True
    for cu in sorted(HERE.glob("*.cu")):
        obj = folder / (cu.name + ".o")
        rc = _run([nvcc, *NVCC_FLAGS, "-I", str(CSRC), str(cu), "-o", str(obj)], TIMEOUT_S["nvcc"], log)
        if rc != 0:
            ok = False
            continue
        (folder / (cu.name + ".ptxas.txt")).write_text(log[-1])
        per = parse_ptxas(log[-1])
        if cuobjdump:
            proc = subprocess.run([cuobjdump, "-sass", str(obj)], capture_output=True, text=True, timeout=600)
            (folder / (cu.name + ".sass")).write_text(proc.stdout)
            for k, v in parse_sass(proc.stdout).items():
                if k in per:
                    per[k].update(v)
        for v in per.values():
            v["source"] = cu.name
        kernels.update(per)
    names = demangle(sorted({v["mangled"] for v in kernels.values()}))
    for v in kernels.values():
        v["name"] = names.get(v["mangled"], v["mangled"])
    extra = {"kernels": kernels, "cuobjdump": cuobjdump, "nvcc": _tool_version(nvcc).strip().splitlines()[-1:]}
    return _store(folder, ok, log, extra)


# The tensor-core kernels: one instantiation per 16-bit storage type, each must contain tensor-core
# instructions on both architectures; every kernel must compile without register spills.
TC_KERNELS = ("tc_forward_kernel", "tc_backward_dx_kernel", "tc_params_partial_kernel")
TC_TYPES = {"float16": "I6__half", "bfloat16": "I13__nv_bfloat16"}
ARCHS = ("sm_80", "sm_90")


def problems(kernels: Dict[str, dict]) -> List[str]:
    """What the nvcc report violates: spills anywhere, a missing or tensor-core-free kernel."""
    out = []
    for v in kernels.values():
        if v.get("spill_stores", 1) or v.get("spill_loads", 1):
            out.append(
                f"{v['arch']} {v.get('name', v['mangled'])}: {v.get('spill_stores')} bytes spill stores, "
                f"{v.get('spill_loads')} bytes spill loads"
            )
    for arch in ARCHS:
        for kern in TC_KERNELS:
            for dtype, tag in TC_TYPES.items():
                hits = [v for v in kernels.values() if v["arch"] == arch and f"{len(kern)}{kern}{tag}" in v["mangled"]]
                if not hits:
                    out.append(f"{arch} {kern}<{dtype}>: not in the compiled objects")
                elif "hmma" not in hits[0]:
                    out.append(f"{arch} {kern}<{dtype}>: no SASS (cuobjdump unavailable)")
                elif hits[0]["hmma"] + hits[0]["hgmma"] == 0:
                    out.append(f"{arch} {kern}<{dtype}>: no HMMA/HGMMA instruction in its SASS")
    return out


def table(kernels: Dict[str, dict]) -> str:
    rows = sorted(kernels.values(), key=lambda v: (v.get("name", ""), v["arch"]))
    lines = [f"{'kernel':58s} {'arch':6s} {'regs':>4s} {'spill st/ld':>11s} {'stack':>5s} {'HMMA':>5s} {'HGMMA':>5s}"]
    for v in rows:
        lines.append(
            f"{v.get('name', v['mangled'])[:58]:58s} {v['arch']:6s} {v.get('registers', -1):4d} "
            f"{v.get('spill_stores', -1):5d}/{v.get('spill_loads', -1):<5d} {v.get('stack', -1):5d} "
            f"{v.get('hmma', -1):5d} {v.get('hgmma', -1):5d}"
        )
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("steps", nargs="*", help="host, emu, nvcc and/or binding (default: all)")
    ap.add_argument("--force", action="store_true", help="rerun even when a cached result exists")
    ap.add_argument("--cache", default=None, help="cache directory (default build/cuda-check)")
    ap.add_argument("--nvcc", default=os.environ.get("NVCC", "nvcc"))
    ap.add_argument("--cxx", default=os.environ.get("CXX", "g++"))
    args = ap.parse_args(argv)
    unknown = [s for s in args.steps if s not in STEPS]
    if unknown:
        ap.error(f"unknown step(s) {unknown}; choose from {', '.join(STEPS)}")
    cache = cache_dir(args.cache)
    status = 0
    for step in args.steps or STEPS:
        if step == "nvcc":
            res = run_nvcc(cache, args.nvcc, args.force)
        elif step == "host":
            res = run_host(cache, args.cxx, args.force)
        elif step == "emu":
            res = run_emu(cache, args.cxx, args.force)
        else:
            res = run_binding(cache, args.cxx, args.force)
            if res.get("skipped"):
                print(f"== binding: skipped ({res['skipped']})")
                continue
        tag = "cached" if res.get("cached") else "ran"
        print(f"== {step}: {'PASS' if res['ok'] else 'FAIL'} ({tag}; log {res['log']})")
        if not res["ok"]:
            print(Path(res["log"]).read_text()[-6000:])
            status = 1
        elif step == "emu":
            print("\n".join(Path(res["log"]).read_text().splitlines()[-3:]))
        if step == "nvcc" and res.get("kernels"):
            print(table(res["kernels"]))
            bad = problems(res["kernels"])
            for b in bad:
                print("PROBLEM:", b)
            if bad:
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
