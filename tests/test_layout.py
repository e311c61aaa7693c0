"""The shape of the codebase: size limits of functions and classes in ``layerconnect/``, and the one-way
import layers (also checked by ``lint-imports`` in CI; this test needs no extra tool)."""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_FUNCTION, MAX_CLASS = 80, 250
# (package, packages it must never import)
LAYERS = [
    ("lc_kernels", ["layerconnect"]),
    (
        "layerconnect/utils",
        [
            "layerconnect.method",
            "layerconnect.multitask",
            "layerconnect.apps",
            "layerconnect.cli",
            "layerconnect.baselines",
            "layerconnect.params",
        ],
    ),
    (
        "layerconnect/method",
        [
            "layerconnect.multitask",
            "layerconnect.apps",
            "layerconnect.cli",
            "layerconnect.baselines",
            "layerconnect.params",
        ],
    ),
    ("layerconnect/multitask", ["layerconnect.apps", "layerconnect.cli"]),
    ("layerconnect/apps", ["layerconnect.cli"]),
]


def _modules(folder):
    for root, _, files in os.walk(os.path.join(REPO, folder)):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(root, f)
                with open(path, encoding="utf-8") as fh:
                    yield os.path.relpath(path, REPO), ast.parse(fh.read())


def _imported(path, tree):
    """Absolute names of every module imported by ``tree`` (relative imports resolved)."""
    pkg = os.path.dirname(path).replace(os.sep, ".")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = pkg.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            yield name
            yield from (f"{name}.{a.name}" for a in node.names)


def test_no_long_functions_or_classes():
    long = []
    for path, tree in _modules("layerconnect"):
        for node in ast.walk(tree):
            size = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and size > MAX_FUNCTION:
                long.append(f"{path}: def {node.name} ({size} lines)")
            if isinstance(node, ast.ClassDef) and size > MAX_CLASS:
                long.append(f"{path}: class {node.name} ({size} lines)")
    assert not long, "split these up:\n" + "\n".join(long)


@pytest.mark.parametrize("folder,forbidden", LAYERS)
def test_imports_point_down_only(folder, forbidden):
    bad = []
    for path, tree in _modules(folder):
        for name in _imported(path, tree):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path} imports {name}")
    assert not bad, "\n".join(sorted(set(bad)))


def test_the_checker_sees_relative_imports():
    tree = ast.parse("from ..apps.glue import tasks\nfrom . import hypernet\n")
    names = set(_imported(os.path.join("layerconnect", "method", "x.py"), tree))
    assert "layerconnect.apps.glue.tasks" in names and "layerconnect.method.hypernet" in names
