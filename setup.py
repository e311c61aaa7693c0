"""Build of the optional compiled extension ``lc_kernels._C``.

Install with ``pip install --no-build-isolation .`` so the extension builds against the torch you
already have (torch is deliberately *not* a build requirement: a build environment would download a
multi-GB CUDA torch). Without torch at build time (plain ``pip install .``) the package installs
without the extension and says at import how to get it.

Knobs (environment variables):
  LC_SKIP_EXT=1        do not compile anything
  LC_FORCE_CUDA=1      build the CUDA part even if torch/nvcc detection says no
  LC_SKIP_CUDA=1       never build the CUDA part
  LC_CUDA_ARCHS="80;90"  explicit compute capabilities for -gencode (default 80 and 90)
  MAX_JOBS=N           parallel compile jobs (default: from CPU count and memory)
"""

import glob
import os
import sys

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _default_max_jobs():
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem_gib = 8
    # nvcc can use ~4 GiB per job on heavy templated files
    return max(1, min(os.cpu_count() or 1, int(mem_gib // 4)))


def _rel(paths):
    return [os.path.relpath(p, HERE) for p in paths]


def extensions():
    if os.environ.get("LC_SKIP_EXT") == "1":
        print("lc_kernels: LC_SKIP_EXT=1, not compiling the extension", file=sys.stderr)
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        print(
            "lc_kernels: torch is not importable at build time (build isolation?); installing without "
            "the compiled extension. Reinstall with `pip install --no-build-isolation .` to build it.",
            file=sys.stderr,
        )
        return [], {}
    os.environ.setdefault("MAX_JOBS", str(_default_max_jobs()))

    # -fopenmp: at::parallel_for is header-inlined and only threads when _OPENMP is defined; the
    # extension then shares torch's bundled libgomp (same soname, already loaded by torch).
    cxx = ["-O3", "-std=c++17", "-fopenmp", f'-DLC_TORCH_VERSION="{torch.__version__}"']
    link = ["-fopenmp"]
    sources = _rel(
        [os.path.join(HERE, "csrc", "ext.cpp")] + sorted(glob.glob(os.path.join(HERE, "csrc", "cpu", "*.cpp")))
    )
    include_dirs = [os.path.join(HERE, "csrc")]

    want_cuda = os.environ.get("LC_FORCE_CUDA") == "1" or (torch.version.cuda is not None and CUDA_HOME is not None)
    if os.environ.get("LC_SKIP_CUDA") == "1":
        want_cuda = False
    if want_cuda:
        archs = os.environ.get("LC_CUDA_ARCHS", "80;90").replace(",", ";").split(";")
        gencode = []
        for a in filter(None, (s.strip().replace(".", "") for s in archs)):
            gencode += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
        nvcc = ["-O3", "-std=c++17", "--use_fast_math", "-lineinfo", *gencode]
        cuda_sources = _rel(
            sorted(glob.glob(os.path.join(HERE, "csrc", "cuda", "*.cu")))
            + sorted(glob.glob(os.path.join(HERE, "csrc", "cuda", "*.cpp")))
        )
        ext = CUDAExtension(
            "lc_kernels._C",
            sources + cuda_sources,
            include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx + ["-DLC_WITH_CUDA"], "nvcc": nvcc + ["-DLC_WITH_CUDA"]},
            extra_link_args=link,
        )
    else:
        ext = CppExtension(
            "lc_kernels._C", sources, include_dirs=include_dirs, extra_compile_args={"cxx": cxx}, extra_link_args=link
        )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
