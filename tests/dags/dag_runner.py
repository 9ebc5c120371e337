"""Run the ConvMixer DAG with ``dag.test`` in a fresh process and report what happened as JSON.

Used by tests/dags/test_dag_run.py. A separate process because Airflow reads AIRFLOW_HOME (and so which metadata
database it uses) once, at its first import: the caller sets AIRFLOW_HOME, the work dir and the metrics URL in the
environment, then this script imports Airflow, resets its (temporary) database and runs the scenarios in order.

    python tests/dags/dag_runner.py SPEC.json OUT.json

SPEC: {"runs": [{"name", "conf", "fail_once": convmixer_tasks.run.steps function name | null, "fail_always": name |
null,
                 "seed_from": {"run": earlier run name, "batch_size", "count", "throughput_factor"} | null}]}
      seed_from records ``count`` ok rows copied from that run's row, throughput multiplied: a fast history.
OUT:  {"runs": [{"name", "run_id", "state", "seconds", "tasks": [...], "xcom": {...}, "rows": [...],
                 "cache_files": {relpath: [inode, mtime_ns, size]}}]}
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DAG_ID = "convmixer_validation"


def _inject(steps, name: str, *, once: bool) -> Callable[..., Any]:
    """Make ``steps.<name>`` raise: after doing its work once (a crash after the write), or always (before it).

    The DAG's tasks call ``steps.<name>`` through the module at run time, and ``dag.test`` runs them in this
    process, so replacing the module attribute is what the task sees."""
    real = getattr(steps, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if once:
            result = real(*args, **kwargs)
            if calls["n"] == 1:
                raise RuntimeError(f"injected failure in {name} after it finished (attempt 1)")
            return result
        raise RuntimeError(f"injected failure in {name}")

    setattr(steps, name, wrapper)
    return real


def _snapshot(cache_root: Path) -> dict[str, list[int]]:
    files = {}
    if cache_root.is_dir():
        for path in sorted(cache_root.rglob("*")):
            if path.is_file():
                stat = path.stat()
                files[str(path.relative_to(cache_root))] = [stat.st_ino, stat.st_mtime_ns, stat.st_size]
    return files


def main(spec_path: str, out_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    assert "airflow" not in sys.modules, "Airflow must be imported after AIRFLOW_HOME is set"
    from airflow.utils import db

    db.resetdb()
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    from convmixer_tasks.metrics import query_runs, record_run
    from convmixer_tasks.run import steps

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    dag = bag.dags[DAG_ID]
    metrics_url = os.environ["CONVMIXER_METRICS_DB_URL"]
    work_dir = Path(os.environ["AIRFLOW__CONVMIXER__WORK_DIR"])

    results: list[dict[str, Any]] = []
    for run in spec["runs"]:
        restore: dict[str, Callable[..., Any]] = {}
        if run.get("seed_from"):
            seed = run["seed_from"]
            source = next(r for r in results if r["name"] == seed["run"])
            template = next(row for row in source["rows"] if row["batch_size"] == seed["batch_size"])
            for index in range(seed["count"]):
                row = {
                    key: value
                    for key, value in template.items()
                    if key not in ("id", "created_at", "updated_at", "ran_at")
                }
                row.update(
                    run_id=f"seeded-{index}",
                    status="ok",
                    gate_reasons=None,
                    logical_date=datetime.now(UTC).isoformat(),
                    throughput=template["throughput"] * seed["throughput_factor"],
                    throughput_robust=template["throughput_robust"] * seed["throughput_factor"],
                )  # judged
                if index == 0:  # the seeded level is the series' history: the real runs before it do not count
                    row.update(
                        rebaselined_at=datetime.now(UTC).isoformat(),
                        rebaselined_by="dag_runner",
                        rebaseline_reason="seeded history",
                    )
                record_run(metrics_url, row)
        if run.get("fail_once"):
            restore[run["fail_once"]] = _inject(steps, run["fail_once"], once=True)
        if run.get("fail_always"):
            restore[run["fail_always"]] = _inject(steps, run["fail_always"], once=False)
        started = time.perf_counter()
        try:
            dag_run = dag.test(run_conf=run.get("conf") or {})
        finally:
            for name, real in restore.items():
                setattr(steps, name, real)
        seconds = time.perf_counter() - started

        with create_session() as session:
            tis = dag_run.get_task_instances(session=session)
            tasks = [
                {
                    "task_id": ti.task_id,
                    "map_index": ti.map_index,
                    "state": str(ti.state),
                    "try_number": ti.try_number,
                    "duration": ti.duration,
                    "queue": ti.queue,
                    "pool": ti.pool,
                    "rendered_map_index": ti.rendered_map_index,
                }
                for ti in tis
            ]
            xcom: dict[str, dict[str, object]] = {}
            for entry in session.query(XComModel).filter(
                XComModel.dag_id == DAG_ID, XComModel.run_id == dag_run.run_id, XComModel.key == "return_value"
            ):
                xcom.setdefault(entry.task_id, {})[str(entry.map_index)] = entry.value
        rows, _ = query_runs(metrics_url, limit=500)
        results.append(
            {
                "name": run["name"],
                "run_id": dag_run.run_id,
                "state": str(dag_run.state),
                "seconds": seconds,
                "tasks": tasks,
                "xcom": xcom,
                "rows": [row for row in rows if row["run_id"] == dag_run.run_id],
                "all_rows": len(rows),
                "cache_files": _snapshot(work_dir / "cache"),
            }
        )
    Path(out_path).write_text(json.dumps({"runs": results}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
