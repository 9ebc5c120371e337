"""What parsing the DAG file costs the dag-processor, beside a trivial one-task DAG, in one process that has
Airflow loaded already (as the processor has).

Airflow 3's dag-processor parses each file in a fresh child of a process that has imported Airflow but none of the
DAG's own libraries; so does this: the parent imports Airflow (and ``DagBag``), then each repetition forks a child
that parses one folder with ``DagBag`` and reports its wall and CPU time. The first forks warm nothing the next
one keeps, so each repetition pays the DAG file's imports (``convmixer_tasks``) as the processor does.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_dag_parse.py [--repeat 15] [--repo CHECKOUT]

``--repo`` measures another checkout's DAG and package (a baseline: ``git worktree add /tmp/base <commit>``).

Prints the median wall and CPU milliseconds of both, and the difference (target: at most 20 ms); and a third
parse of the DAG file in children that imported its ``convmixer_tasks`` modules before the clock started: what the
DAG's construction alone costs (its Params, tasks, mapping, timetable), the floor no import work on our side can go
below without changing the DAG's shape. The package is
byte-compiled first (as an installed package is): with PYTHONDONTWRITEBYTECODE set, every child would otherwise
compile each module's source again.
"""

from __future__ import annotations

import argparse
import ast
import compileall
import gc
import importlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRIVIAL_DAG = """
from datetime import datetime
from airflow.sdk import dag, task


@dag(dag_id="trivial", start_date=datetime(2026, 1, 1), schedule=None, catchup=False)
def trivial():
    @task
    def one():
        return 1

    one()


trivial()
"""


def library_imports(folder: Path) -> list[str]:
    """The ``convmixer_tasks`` modules the DAG files in ``folder`` import at their top level: for ``from X import a``
    both ``X`` and ``X.a`` (which ``import_first`` skips when ``a`` is a name, not a submodule)."""
    modules = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("convmixer_tasks"):
                modules += [node.module or "", *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                modules += [alias.name for alias in node.names if alias.name.startswith("convmixer_tasks")]
    return modules


def import_first(modules: Sequence[str]) -> None:
    """Imports each module in order; a ``from X import a`` candidate ``X.a`` that X already has (a name it defines,
    or a submodule loaded already) is skipped, as the import statement would take it from X."""
    for module in modules:
        parent, _, name = module.rpartition(".")
        if parent in sys.modules and hasattr(sys.modules[parent], name):
            continue
        importlib.import_module(module)


def parse_in_child(folder: Path, imported_first: Sequence[str] = ()) -> dict[str, float]:
    """Fork; the child imports ``imported_first`` (untimed), parses ``folder`` and sends back its times (and the
    share a garbage collection took) and what it found.

    The parent collects first, so every child starts from the same collector counts: a full collection in a
    forked child walks (and copies, page by page) the whole inherited heap, ~130 ms here, and whether one falls
    inside a parse depends on the counts the fork inherited as much as on the file. Its time is reported beside."""
    from airflow.dag_processing.dagbag import DagBag

    gc.collect()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one parse, as the dag-processor's file processor does
        os.close(read)
        collecting = {"ms": 0.0, "since": 0.0}

        def timed(phase: str, info: dict) -> None:
            if phase == "start":
                collecting["since"] = time.process_time()
            else:
                collecting["ms"] += (time.process_time() - collecting["since"]) * 1000

        import_first(imported_first)
        gc.callbacks.append(timed)
        wall, cpu = time.perf_counter(), time.process_time()
        bag = DagBag(dag_folder=str(folder))
        result = {
            "wall_ms": (time.perf_counter() - wall) * 1000,
            "cpu_ms": (time.process_time() - cpu) * 1000,
            "gc_ms": collecting["ms"],
            "dags": len(bag.dag_ids),
            "errors": len(bag.import_errors),
        }
        os.write(write, json.dumps(result).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    result = json.loads(data)
    if result["errors"] or not result["dags"]:
        raise SystemExit(f"{folder}: the DAG did not parse ({result})")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose dags/ and package are parsed")
    args = parser.parse_args()
    repo = args.repo.resolve()
    compileall.compile_dir(repo / "convmixer_tasks", quiet=1)
    with tempfile.TemporaryDirectory() as home:
        os.environ.setdefault("AIRFLOW_HOME", home)
        os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
        sys.path.insert(0, str(repo))
        import airflow.sdk  # noqa: F401  (what the dag-processor has loaded before it parses anything)
        from airflow.dag_processing.dagbag import DagBag

        trivial = Path(home) / "trivial_dags"
        trivial.mkdir()
        (trivial / "trivial.py").write_text(TRIVIAL_DAG)
        DagBag(dag_folder=str(trivial))  # Airflow's own lazy imports: loaded in the parent
        ours = repo / "dags"
        runs = {  # name: (folder, modules imported before the clock starts)
            "trivial": (trivial, []),
            "convmixer_validation": (ours, []),
            "construction only": (ours, library_imports(ours)),
        }
        times: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
        for _ in range(args.repeat):  # interleaved: a change in the machine's load hits all alike
            for name, (folder, imported_first) in runs.items():
                times[name].append(parse_in_child(folder, imported_first))
    medians = {
        name: {kind: statistics.median(one[kind] for one in runs) for kind in ("wall_ms", "cpu_ms", "gc_ms")}
        for name, runs in times.items()
    }
    for name, median in medians.items():
        print(
            f"{name:22s} median wall {median['wall_ms']:7.1f} ms   cpu {median['cpu_ms']:7.1f} ms   of it in gc "
            f"{median['gc_ms']:5.1f} ms  ({args.repeat} parses)"
        )
    for kind in ("wall_ms", "cpu_ms"):
        extra = medians["convmixer_validation"][kind] - medians["trivial"][kind]
        floor = medians["construction only"][kind] - medians["trivial"][kind]
        print(
            f"DAG file over the trivial DAG ({kind[:-3]}): {extra:+.1f} ms (target <= 20 ms); "
            f"with our imports done before the clock: {floor:+.1f} ms"
        )
    print(f"load average: {' '.join(f'{load:.2f}' for load in os.getloadavg())}; cpu: {_cpu_model()}")
    return 0


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
