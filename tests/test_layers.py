"""The package's import graph, read with ``ast`` from every module of every folder (function-level imports included):
layers only look down, nothing below the world imports it, and there is no import circle anywhere."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]

BOTTOM = 0
LAYERS = {"memlora.runtime": 1, "memlora.export": 2, "memlora.corpus": 3, "memlora.distill": 4, "memlora.bench": 5,
          "memlora.world": 6}
"""Rank of each package: a module may import a lower rank, or its own package. The modules of ``memlora/`` are the
bottom (errors, paths, the model builders, shared metrics), except the entry points in ``TOP``. What distill and the
benchmarks both need (LoCoMo, the example files, the VQA set) lives in ``memlora.corpus`` below them; the benchmarks
sit above the toolchain they measure (the training-throughput benchmark drives the trainer), and distill never imports
them."""
TOP = {"memlora.cli": 7, "memlora.demo": 7}
"""The top-level entry points: they may import anything, the world included."""


def package_dirs() -> dict[str, Path]:
    """``memlora.*`` package -> folder, as pyproject.toml maps them."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {package: ROOT / folder for package, folder in setuptools["package-dir"].items()}


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in package_dirs().items():
        for path in sorted(folder.glob("*.py")):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


MODULES = modules()


def resolve(name: str) -> str | None:
    """The project module an imported name refers to (``memlora.x.y`` may be a module or a name in ``memlora.x``)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str) -> list[tuple[str, int]]:
    """``(imported project module, line)`` for every import statement of ``module``, at any depth."""
    path = MODULES[module]
    package = module if path.stem == "__init__" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] if base else []
        for name in names:
            target = resolve(name)
            if target is not None and target != module:
                found.append((target, node.lineno))
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def rank(module: str) -> int:
    if module in TOP:
        return TOP[module]
    for package, value in LAYERS.items():
        if module == package or module.startswith(package + "."):
            return value
    return BOTTOM


def package_of(module: str) -> str:
    """The ``LAYERS`` package ``module`` belongs to, or ``module`` itself (the bottom and the top entries)."""
    return next((p for p in LAYERS if module == p or module.startswith(p + ".")), module)


def upward_imports(graph) -> list[str]:
    """Every import of a higher rank, and every import across packages of the same rank (siblings stay apart)."""
    return [f"{m} (rank {rank(m)}) imports {t} (rank {rank(t)}) at line {line}"
            for m, targets in graph.items() for t, line in targets
            if rank(t) > rank(m) or (rank(t) == rank(m) and rank(m) in LAYERS.values()
                                     and package_of(t) != package_of(m))]


def circles(graph) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), each one import circle or more."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w, _ in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_folder_is_read():
    assert {"memlora", "memlora.runtime", "memlora.export", "memlora.corpus", "memlora.distill", "memlora.bench",
            "memlora.world"} <= set(package_dirs())
    assert len(MODULES) > 80
    assert any(t == "memlora.world.generator" for t, _ in GRAPH["memlora.world.experts"])  # edges name real modules


def test_layers_only_look_down():
    assert upward_imports(GRAPH) == []


def test_nothing_below_the_world_imports_it():
    users = sorted({m for m, targets in GRAPH.items() for t, _ in targets
                    if t.startswith("memlora.world") and not m.startswith("memlora.world") and m not in TOP})
    assert users == []


def test_no_import_circle():
    assert circles(GRAPH) == []


@pytest.mark.parametrize("graph, expected", [
    ({"memlora.runtime.a": [("memlora.world.b", 3)], "memlora.world.b": []},
     ["memlora.runtime.a (rank 1) imports memlora.world.b (rank 6) at line 3"]),
    ({"memlora.export.a": [("memlora.runtime.b", 1)], "memlora.runtime.b": []}, []),
    ({"memlora.errors": [("memlora.cli", 9)], "memlora.cli": []}, ["memlora.errors (rank 0) imports memlora.cli (rank 7) at line 9"]),
    ({"memlora.bench.a": [("memlora.distill.b", 7)], "memlora.distill.b": []}, []),
    ({"memlora.distill.a": [("memlora.bench.b", 2)], "memlora.bench.b": []},
     ["memlora.distill.a (rank 4) imports memlora.bench.b (rank 5) at line 2"]),
    ({"memlora.distill.a": [("memlora.world.b", 2)], "memlora.world.b": []},
     ["memlora.distill.a (rank 4) imports memlora.world.b (rank 6) at line 2"]),
    ({"memlora.bench.a": [("memlora.corpus.b", 4), ("memlora.bench.c", 5)], "memlora.bench.c": []}, []),
    ({"memlora.distill.a": [("memlora.corpus.b", 4)], "memlora.corpus.b": [("memlora.runtime.c", 1)]}, []),
    ({"memlora.cli": [("memlora.demo", 3)], "memlora.paths": [("memlora.errors", 2)]}, []),
])
def test_the_upward_check_flags_what_it_must(graph, expected):
    assert upward_imports(graph) == expected


def test_the_circle_check_flags_a_hidden_circle():
    graph = {"memlora.models": [("memlora.vlm_models", 5)], "memlora.vlm_models": [("memlora.tokenizer", 3)],
             "memlora.tokenizer": [("memlora.models", 40)], "memlora.paths": []}
    assert circles(graph) == [["memlora.models", "memlora.tokenizer", "memlora.vlm_models"]]
    assert circles({"memlora.models": [("memlora.paths", 1)], "memlora.paths": []}) == []


def test_function_level_imports_are_read():
    """A function-level import is an edge like any other (a circle hidden inside a function still counts)."""
    demo = [t for t, _ in GRAPH["memlora.demo"]]
    assert "memlora.runtime.memory" in demo  # imported only inside functions of memlora.demo


def unexplained_function_imports(module: str, source: str) -> list[int]:
    """Lines of function-level imports of project modules with no reason comment: on the statement's own lines, on the
    line above it, or above the run of function-level imports it belongs to (one comment may explain a block)."""
    comments, comment_only = set(), set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments.add(token.start[0])
            if not token.line[: token.start[1]].strip():
                comment_only.add(token.start[0])
    imports = {}
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                imports[node.lineno] = node
    found = []
    for line, node in sorted(imports.items()):
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                 else [f"{node.module}.{alias.name}" for alias in node.names] if node.module and not node.level else [])
        if getattr(node, "level", 0):  # a relative import is always a project import
            names = ["memlora"]
        if not any(name.startswith("memlora") for name in names):
            continue
        first = line
        while first - 1 in {n.end_lineno for n in imports.values()} and first - 1 not in comment_only:
            first = next(n.lineno for n in imports.values() if n.end_lineno == first - 1)
        explained = (any(n in comments for n in range(node.lineno, node.end_lineno + 1))
                     or first - 1 in comment_only or line - 1 in comment_only)
        if not explained:
            found.append(line)
    return found


@pytest.mark.parametrize("module", sorted(MODULES))
def test_function_level_imports_give_a_reason(module):
    assert unexplained_function_imports(module, MODULES[module].read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("source, expected", [
    ("def f():\n    from memlora.runtime.memory import Memory\n", [2]),
    ("def f():\n    from memlora.runtime.memory import Memory  # FAISS: off the import path\n", []),
    ("def f():\n    # FAISS: off the import path\n    from memlora.runtime.memory import Memory\n"
     "    from memlora.runtime.store import MemoryStore\n", []),
    ("def f():\n    # FAISS: off the import path\n    from memlora.runtime.memory import Memory\n\n"
     "    from memlora.runtime.store import MemoryStore\n", [5]),
    ("def f():\n    import json\n    from pathlib import Path\n", []),
    ("from memlora.paths import data_file\n\n\ndef f():\n    return data_file\n", []),
    ("def f():\n    x = '# not a comment'\n    from memlora.runtime import store\n", [3]),
    ("class A:\n    def f(self):\n        from memlora.export.vlm_export import export_vision\n", [3]),
])
def test_the_reason_check_flags_what_it_must(source, expected):
    assert unexplained_function_imports("memlora.demo", source) == expected
