"""bench/bench_dag_parse.py's "construction only" parse imports what the DAG files import at their top level, and
only that: an import inside a task is the task's cost, not the parse's."""

from __future__ import annotations

import sys

import pytest

from tests.bench_scripts import BENCH_DIR, load_bench


def test_the_library_modules_of_a_dag_folder_are_its_top_level_imports(tmp_path):
    (tmp_path / "a.py").write_text(
        "import os\n"
        "import convmixer_tasks.errors\n"
        "from convmixer_tasks.run import fleet\n"
        "from airflow.sdk import dag\n"
        "def task():\n"
        "    from convmixer_tasks.run import steps  # loaded when the task runs\n"
    )
    (tmp_path / "b.py").write_text("from convmixer_tasks.run.params import RunParams\n")
    (tmp_path / "notes.md").write_text("from convmixer_tasks import nothing\n")
    assert load_bench("bench_dag_parse").library_imports(tmp_path) == [
        "convmixer_tasks.errors",
        "convmixer_tasks.run",
        "convmixer_tasks.run.fleet",  # from X import a: a may be a submodule, which importing X does not load
        "convmixer_tasks.run.params",
        "convmixer_tasks.run.params.RunParams",
    ]


def test_import_first_loads_submodules_and_skips_names(tmp_path, monkeypatch):
    package = tmp_path / "parse_bench_probe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "sub.py").write_text("NAME = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("parse_bench_probe", "parse_bench_probe.sub"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    bench = load_bench("bench_dag_parse")
    # from parse_bench_probe.sub import NAME: the submodule is loaded, NAME is taken from it, not imported
    bench.import_first(["parse_bench_probe", "parse_bench_probe.sub", "parse_bench_probe.sub.NAME"])
    assert "parse_bench_probe.sub" in sys.modules
    with pytest.raises(ModuleNotFoundError):  # a missing module is not a name to skip
        bench.import_first(["parse_bench_probe.missing"])


def test_the_dags_folder_imports_the_params_but_not_the_steps():
    modules = load_bench("bench_dag_parse").library_imports(BENCH_DIR.parent / "dags")
    assert "convmixer_tasks.run.params" in modules
    assert not any(module.endswith(("steps", "records")) for module in modules)
