"""Benchmark: the metrics page's history endpoints and its run page on a seeded database of 10,000 rows (server
side only).

Seeds a SQLite metrics DB (20 batch-size/backend series, runs an hour apart, a toolkit change half way, 200 kept
per-loop times and a fingerprint per row) and times ``/api/runs`` (one page), ``/api/series`` (the charts) and
``/api/runs/<id>`` (the run page of the latest row) through the plugin's FastAPI app, with the Airflow login
dependency replaced by an allow-all (auth is not what is measured). Beside each figure it times the baseline measured
in the same run: reading every matching row as whole ORM rows page by page and sorting in Python, which is what the
page did before ``metrics.history_rows`` and ``query_runs(by_run_time=True)``; for the run page, reading its whole
series that way and unpacking every row's samples.

Run: .venv/bin/python bench/bench_metrics_page.py [--rows 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

from convmixer_tasks import metrics  # noqa: E402

# The history view (its table page and its charts) and the run page; "{latest}" is the newest row's id.
TARGETS_MS = {"/api/runs": 300.0, "/api/series": 300.0, "/api/runs/{latest}": 500.0}
LOOPS = 200  # kept per-loop times per row (a 200-loop benchmark)


def seed(url: str, rows: int) -> None:
    from convmixer_tasks.measure.loopstats import pack_samples

    metrics.upgrade(url)
    samples = pack_samples([4.0 + 0.01 * (loop % 17) for loop in range(LOOPS)])
    start = datetime(2026, 1, 1, tzinfo=UTC)
    series = [(backend, batch) for backend in ("onnxruntime", "ascend") for batch in (1, 4, 8, 16, 32, 64, 2, 3, 5, 6)]
    batch_rows = []
    for index in range(rows):
        backend, batch_size = series[index % len(series)]
        run = index // len(series)
        ran = start + timedelta(hours=run)
        batch_rows.append({
            "run_id": f"scheduled__{ran.isoformat()}", "dag_id": "convmixer_validation", "logical_date": ran,
            "started_at": ran + timedelta(minutes=1), "finished_at": ran + timedelta(minutes=9),
            "model_variant": "convmixer_1536_20", "backend": backend, "batch_size": batch_size,
            "device": "Ascend310P3" if backend == "ascend" else "AMD EPYC",
            "toolkit_version": "8.0.RC3" if index < rows // 2 else "8.1.RC1", "input_dtype": "float32",
            "image_count": 50000, "top1": 81.3 + (index % 7) * 0.01, "top5": 95.5, "throughput": 900.0 + index % 50,
            "latency_mean_ms": 4.0, "latency_p50_ms": 4.0, "latency_p99_ms": 5.0, "status": "ok",
            "baseline_top1": 81.37, "baseline_throughput": 910.0, "gate_reasons": ["top1 ok", "throughput ok"],
            "samples_ms": samples, "sample_count": LOOPS,
            "fingerprint": {"backend": backend, "toolkit_version": "8.0.RC3" if index < rows // 2 else "8.1.RC1"},
        })  # fmt: skip
        if len(batch_rows) == 1000:
            metrics.record_runs(url, batch_rows)
            batch_rows = []
    if batch_rows:
        metrics.record_runs(url, batch_rows)


def old_history(url: str) -> list[dict]:
    """The baseline: every row as a whole ORM row, page by page, sorted by run time in Python."""
    rows: list[dict] = []
    while True:
        chunk, total = metrics.query_runs(url, limit=metrics.MAX_LIMIT, offset=len(rows))
        rows.extend(chunk)
        if not chunk or len(rows) >= total:
            return sorted(rows, key=lambda r: (r["started_at"] or r["logical_date"], r["id"]), reverse=True)


def old_run_page(url: str, row_id: int) -> list[list[float]]:
    """The run page's baseline: its whole series as ORM rows, page by page, every row's samples unpacked."""
    from convmixer_tasks.measure.loopstats import unpack_samples

    row = metrics.get_row(url, row_id)
    assert row is not None, f"row {row_id} was just recorded"
    series = {"model": row["model_variant"], "backend": row["backend"], "device": row["device"],
              "batch_size": row["batch_size"]}  # fmt: skip
    rows: list[dict] = []
    while True:
        chunk, total = metrics.query_runs(url, limit=metrics.MAX_LIMIT, offset=len(rows), **series)
        rows.extend(chunk)
        if not chunk or len(rows) >= total:
            return [unpack_samples(one["samples_ms"]) for one in rows if one["samples_ms"]]


def timed(call, repeat: int) -> float:
    """Median wall milliseconds over ``repeat`` calls (after one warm-up call)."""
    call()
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="bench-airflow-"))
    import convmixer_metrics.app as page_app
    from fastapi.testclient import TestClient

    with tempfile.TemporaryDirectory(prefix="bench-metrics-page-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'metrics.db'}"
        began = time.perf_counter()
        seed(url, args.rows)
        print(f"seeded {args.rows} rows in {time.perf_counter() - began:.1f}s")
        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
        from airflow.api_fastapi.core_api.security import get_user

        app = page_app.create_app(db_url=lambda: url)
        # Auth is not what is measured: every caller is an admin the (uninitialised) auth manager is not asked about.
        app.dependency_overrides[page_app._may_view_plugins] = lambda: None
        app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="bench", role="admin")
        page_app._may_edit_dag = lambda user, dag_id: None
        client = TestClient(app)
        latest = client.get("/api/runs", params={"limit": 1}).json()["rows"][0]["id"]
        paths = {path.format(latest=latest): target for path, target in TARGETS_MS.items()}
        for path in paths:
            assert client.get(path).status_code == 200, path
        boxes = client.get(f"/api/runs/{latest}").json()["latency"]["runs"]
        assert len(boxes) == 1 + page_app.run_view.LATENCY_RUNS_BEFORE and all(run["box"] for run in boxes)
        assert client.get("/api/series").json()["points"] == min(args.rows, page_app.MAX_CHART_POINTS)
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        print(f"CPU: {cpu}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}")
        baseline = timed(lambda: old_history(url), args.repeat)
        print(f"baseline (whole rows, sorted in Python): {baseline:.0f} ms")
        run_baseline = timed(lambda: old_run_page(url, latest), args.repeat)
        print(f"run page baseline (its whole series as ORM rows, every sample unpacked): {run_baseline:.0f} ms")
        failed = False
        for path, target in paths.items():
            ms = timed(lambda p=path: client.get(p), args.repeat)
            against = run_baseline if path.startswith("/api/runs/") else baseline
            verdict = "met" if ms < target else "NOT met"
            failed |= ms >= target
            print(f"{path}: {ms:.0f} ms (target < {target:.0f} ms: {verdict}); baseline / this = {against / ms:.1f}x")
        # For the record: the charts without their cap (every matching point), which the page no longer sends.
        capped, page_app.MAX_CHART_POINTS = page_app.MAX_CHART_POINTS, args.rows + 1
        ms = timed(lambda: client.get("/api/series"), args.repeat)
        page_app.MAX_CHART_POINTS = capped
        print(f"/api/series without the {capped}-point cap (not served): {ms:.0f} ms")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
