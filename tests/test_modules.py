"""The package's module structure: every module of convmixer_tasks imports on its own (in a fresh interpreter), no
two modules import each other in a circle (counting every import, the ones inside functions and under
``TYPE_CHECKING`` too), no module is over 500 lines, and the modules the DAG file and the UI plugin parse with stay
free of torch/numpy/onnx/PIL."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "convmixer_tasks"
HEAVY = ("torch", "numpy", "onnx", "onnxruntime", "onnxscript", "PIL")
# What the DAG file parses with, and the vocabularies (registries) the Params, the CLI and the plugin read.
LIGHT = (
    "convmixer_tasks.run.steps",
    "convmixer_tasks.run.records",
    "convmixer_tasks.run.settings",
    "convmixer_tasks.run.params",
    "convmixer_tasks.models.variants",
    "convmixer_tasks.stages.prepfolder",
    "convmixer_tasks.run.workdir",
    "convmixer_tasks.cache",
    "convmixer_tasks.checks",
    "convmixer_tasks.errors",
    "convmixer_tasks.fileio",
    "convmixer_tasks.verdict.gate",
    "convmixer_tasks.backends.base",
    "convmixer_tasks.metrics",
    "convmixer_tasks.metrics.url",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    """Every importable module of the package: files in folders that are packages (migrations are Alembic scripts,
    loaded by path, not modules)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if all((folder / "__init__.py").is_file() for folder in path.parents if folder.is_relative_to(PACKAGE)):
            modules[module_name(path)] = path
    return modules


MODULES = package_modules()

IMPORT_ALONE = r"""
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


@pytest.fixture(scope="module")
def imported_alone() -> dict[str, subprocess.CompletedProcess]:
    def run(name: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", IMPORT_ALONE, name], cwd=REPO, capture_output=True, text=True, timeout=180
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(MODULES, pool.map(run, MODULES), strict=True))


def test_the_package_has_the_modules_this_file_expects():
    assert {"convmixer_tasks.run.steps", "convmixer_tasks.run.local_run", "convmixer_tasks.metrics.url"} <= set(MODULES)
    assert not {"convmixer_tasks.flow", "convmixer_tasks.pipeline"} & set(MODULES)
    assert set(LIGHT) <= set(MODULES)


@pytest.mark.parametrize("name", list(MODULES))
def test_each_module_imports_alone(imported_alone, name):
    proc = imported_alone[name]
    assert proc.returncode == 0, f"`import {name}` in a fresh interpreter failed:\n{proc.stderr[-3000:]}"


@pytest.mark.parametrize("name", LIGHT)
def test_parse_time_modules_import_no_heavy_library(imported_alone, name):
    proc = imported_alone[name]
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert not loaded & set(HEAVY), f"importing {name} loads {sorted(loaded & set(HEAVY))}"


# --- no import cycle --------------------------------------------------------------------------------------------


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time_statements(body: list[ast.stmt]):
    """The statements that run when the module is imported: not function bodies, not ``if TYPE_CHECKING``."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _import_time_statements(node.body)
            yield from _import_time_statements(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(handler.body for handler in node.handlers), node.orelse, node.finalbody):
                yield from _import_time_statements(block)
        elif isinstance(node, (ast.With, ast.ClassDef)):
            yield from _import_time_statements(node.body)
        else:
            yield node


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:index]) for index in range(1, len(parts) + 1)]


def _every_statement(tree: ast.Module):
    """Every import statement of the module, wherever it is: inside functions and under ``if TYPE_CHECKING`` too."""
    return (node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)))


def import_graph(every_import: bool = False) -> dict[str, set[str]]:
    """Module -> the package modules its import-time statements import (``every_import``: all its import
    statements, the ones inside functions and under ``TYPE_CHECKING`` included).

    Importing ``a.b.c`` runs ``a`` and ``a.b`` first, so those count too — except the importing module's own parent
    packages, which Python has already entered before the module runs."""
    graph = {}
    for name, path in MODULES.items():
        is_package = path.name == "__init__.py"
        own_parents = set(_with_parents(name)[:-1])
        targets = set()
        tree = ast.parse(path.read_text(), str(path))
        for node in _every_statement(tree) if every_import else _import_time_statements(tree.body):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                names = [source] + [f"{source}.{alias.name}" for alias in node.names]
            else:
                continue
            for imported in names:
                targets |= {module for module in _with_parents(imported) if module in MODULES}
        graph[name] = targets - own_parents - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Every group of modules that import each other in a circle (strongly connected components of 2 or more)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the package's depth is far below the recursion limit
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group: set[str] = set()
            while not group or node not in group:
                group.add(stack.pop())
            if len(group) > 1:
                found.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


MAX_MODULE_LINES = 500


def test_no_import_cycle_among_the_packages_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycle_counting_imports_inside_functions_and_under_type_checking():
    """A function-level or type-only import does not fail at import time, but it still ties the two modules together:
    neither can be understood, moved or tested without the other."""
    found = cycles(import_graph(every_import=True))
    assert not found, "import cycles (every import counted): " + "; ".join(" <-> ".join(sorted(g)) for g in found)


def test_no_module_is_over_the_line_limit():
    counts = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    long = {name: count for name, count in counts.items() if count > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by concern): {long}"
    assert len(MODULES) > 40  # the walk found the package, subpackages included


def test_the_cycle_check_sees_imports_it_must_and_ignores_the_ones_it_must_not():
    """The graph is only as good as its parsing: check it on what the package is known to do."""
    graph = import_graph()
    assert "convmixer_tasks.run.records" in graph["convmixer_tasks.run.steps"]  # from ... import
    assert "convmixer_tasks.metrics" in graph["convmixer_tasks.run.rows"]  # the parent package of metrics.schema
    assert "convmixer_tasks.metrics.writes" in graph["convmixer_tasks.metrics"]  # a package's own submodules
    assert "convmixer_tasks.metrics" not in graph["convmixer_tasks.metrics.writes"]  # not its own package
    assert (
        "convmixer_tasks.stages.preprocess" not in graph["convmixer_tasks.run.steps"]
    )  # imported inside functions only
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    every = import_graph(every_import=True)
    assert "convmixer_tasks.stages.preprocess" in every["convmixer_tasks.run.steps"]  # inside functions: counted here
    assert "convmixer_tasks.device_state" in every["convmixer_tasks.backends.base"]  # under TYPE_CHECKING
    assert "convmixer_tasks.device_state" not in graph["convmixer_tasks.backends.base"]
    assert cycles({"a": {"b"}, "b": {"a", "c"}, "c": set(), "d": {"d"}}) == [{"a", "b"}]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "x": {"y"}, "y": {"x"}}) == [{"a", "b", "c"}, {"x", "y"}]
