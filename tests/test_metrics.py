"""The metrics store on SQLite and PostgreSQL: migration, upsert, refusals, queries, error messages.

PostgreSQL is required (CI starts it): each session creates its own database on the server at
$CONVMIXER_TEST_PG_URL (default postgres@127.0.0.1:5432/postgres, trust auth) and drops it afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from convmixer_tasks import metrics
from convmixer_tasks.errors import ConfigError, MetricsError
from convmixer_tasks.metrics.engine import alembic_config, get_engine
from convmixer_tasks.metrics.schema import KEY_COLUMNS, TABLE_NAME, VERSION_TABLE, Base, MetricsRow, ValidationRun
from tests.stored import stored_row, stored_run

DAY0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
HEAD = "0008"  # the newest migration


# --- helpers (test_gate.py imports these; the database fixtures are in tests/conftest.py) ------------------------


def make_row(**overrides) -> dict:
    """A complete, valid row; tests override what they look at."""
    row = dict(
        run_id="manual__2026-11-01",
        dag_id="convmixer_validation",
        logical_date=DAY0,
        model_variant="convmixer_demo",
        backend="onnxruntime",
        device="cpu-x86",
        batch_size=4,
        toolkit_version="onnxruntime 1.x",
        input_dtype="float32",
        image_count=64,
        top1=70.0,
        top5=90.0,
        throughput=100.0,
        latency_mean_ms=40.0,
        latency_p50_ms=39.0,
        latency_p99_ms=45.0,
        parity_max_abs_diff=1e-5,
        status="ok",
        onnx_sha256="a" * 64,
    )
    row.update(overrides)
    return row


def count_rows(url: str) -> int:
    with get_engine(url).connect() as connection:
        count = connection.scalar(sa.select(sa.func.count()).select_from(ValidationRun))
        assert count is not None, "COUNT(*) always gives a row"
        return count


# --- migration ------------------------------------------------------------------------------------------------


def test_upgrade_creates_table_and_is_idempotent(empty_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no alembic.ini anywhere near: configuration is in code
    assert metrics.upgrade(empty_url) == HEAD
    inspector = sa.inspect(get_engine(empty_url))
    columns = {column["name"] for column in inspector.get_columns(TABLE_NAME)}
    assert columns == set(ValidationRun.__table__.columns.keys())
    uniques = [sorted(u["column_names"]) for u in inspector.get_unique_constraints(TABLE_NAME)]
    assert sorted(KEY_COLUMNS) in uniques

    row_id = metrics.record_run(empty_url, make_row())
    assert metrics.upgrade(empty_url) == HEAD  # second run: no error, data kept, one version row
    assert stored_run(empty_url, "manual__2026-11-01", 4, "onnxruntime")["id"] == row_id
    assert version_rows(empty_url) == [HEAD]


def version_rows(url: str) -> list[str]:
    with get_engine(url).connect() as connection:
        return list(connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all())


def insert_raw(url: str, **values) -> None:
    """Insert past record_run's validation, so only the database's own constraints judge the row."""
    now = datetime.now(UTC)
    base = dict(
        run_id="raw", logical_date=now, model_variant="m", backend="b", batch_size=1, created_at=now, updated_at=now
    )
    with get_engine(url).begin() as connection:
        connection.execute(sa.insert(ValidationRun).values(**{**base, **values}))


def raw_row(url: str, run_id: str) -> dict:
    """A row read with 0001's columns (the model's newer ones do not exist after a downgrade)."""
    columns = "status, gate_reasons, top1"
    with get_engine(url).connect() as connection:
        row = connection.execute(sa.text(f"SELECT {columns} FROM {TABLE_NAME} WHERE run_id = :r"), {"r": run_id}).one()
    reasons = row.gate_reasons
    return {
        "status": row.status,
        "top1": row.top1,
        "gate_reasons": json.loads(reasons) if isinstance(reasons, str) else reasons,
    }


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    with get_engine(url).begin() as connection:
        config = alembic_config(url)
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


OLD_COLUMNS = ("id", "run_id", "status", "top1", "throughput", "gate_reasons")


def record_old(url: str, **overrides) -> None:
    """A row at an old revision: only the columns it has (the current model has more)."""
    values = {**make_row(**overrides), "created_at": DAY0, "updated_at": DAY0}
    table = sa.table(TABLE_NAME, *(sa.column(name, ValidationRun.__table__.c[name].type) for name in values))
    with get_engine(url).begin() as connection:
        connection.execute(sa.insert(table).values(**values))


def read_old(url: str, run_id: str) -> dict:
    table = sa.table(TABLE_NAME, *(sa.column(name, ValidationRun.__table__.c[name].type) for name in OLD_COLUMNS))
    with get_engine(url).connect() as connection:
        return dict(connection.execute(sa.select(table).where(table.c.run_id == run_id)).mappings().one())


def test_upgrade_from_0001_keeps_rows_and_allows_pending(empty_url):
    """A database created before 'pending' existed is widened in place: its rows stay as they were."""
    assert metrics.upgrade(empty_url, revision="0001") == "0001"
    record_old(empty_url)
    before = read_old(empty_url, "manual__2026-11-01")
    row_id = before["id"]
    with pytest.raises(sa.exc.IntegrityError):  # 0001's constraint knows no 'pending'
        insert_raw(empty_url, status="pending", top1=50.0, top5=60.0)

    assert metrics.upgrade(empty_url) == HEAD
    assert read_old(empty_url, "manual__2026-11-01") == before
    assert before["id"] == row_id and before["status"] == "ok"
    assert stored_run(empty_url, "manual__2026-11-01", 4, "onnxruntime")["samples_ms"] is None
    assert stored_run(empty_url, "manual__2026-11-01", 4, "onnxruntime")["evidence"] is None  # 0003
    assert stored_run(empty_url, "manual__2026-11-01", 4, "onnxruntime")["precision_mode"] == "fp32"  # 0005
    insert_raw(empty_url, status="pending", top1=50.0, top5=60.0, precision_mode="fp32")
    with pytest.raises(sa.exc.IntegrityError):  # the other constraints survived the rebuild (SQLite batch mode)
        insert_raw(empty_url, run_id="raw2", status="pending", precision_mode="fp32")
    with pytest.raises(sa.exc.IntegrityError):
        insert_raw(empty_url, run_id="raw3", status="weird", top1=1.0, top5=1.0, precision_mode="fp32")
    with pytest.raises(sa.exc.IntegrityError):  # 0005: precision is part of the key and never empty
        insert_raw(empty_url, run_id="raw4", status="pending", top1=50.0, top5=60.0)
    assert metrics.upgrade(empty_url) == HEAD  # idempotent
    assert version_rows(empty_url) == [HEAD] and count_rows(empty_url) == 2
    inspector = sa.inspect(get_engine(empty_url))
    assert {"ix_convmixer_validation_runs_logical_date", "ix_convmixer_validation_runs_series"} <= {
        index["name"] for index in inspector.get_indexes(TABLE_NAME)
    }  # PostgreSQL lists the unique key too


def test_downgrade_to_0001_turns_pending_rows_into_failed(empty_url):
    """0001 has no 'pending'; an ungated row must not become 'ok' (it would join the gate's history)."""
    metrics.upgrade(empty_url)
    metrics.record_run(empty_url, make_row(run_id="gated"))
    metrics.record_run(empty_url, make_row(run_id="waiting", status="pending"))
    downgrade(empty_url, "0001")
    assert version_rows(empty_url) == ["0001"]
    gated, waiting = (read_old(empty_url, run_id) for run_id in ("gated", "waiting"))
    assert (gated["status"], gated["gate_reasons"]) == ("ok", None)
    assert waiting["status"] == "failed" and waiting["top1"] == 70.0  # the measurement stays on record
    assert "pending" in waiting["gate_reasons"][0] and "downgrade" in waiting["gate_reasons"][0]
    with pytest.raises(sa.exc.IntegrityError):
        insert_raw(empty_url, status="pending", top1=50.0, top5=60.0)
    assert metrics.upgrade(empty_url) == HEAD


def test_concurrent_upgrades_queue_instead_of_racing(empty_url):
    """Two DAG tasks starting at once may both call upgrade(); the lock makes the second wait and find 'head'."""
    barrier = threading.Barrier(3)
    results, errors = [], []

    def run() -> None:
        try:
            barrier.wait()
            results.append(metrics.upgrade(empty_url))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and results == [HEAD] * 3
    assert metrics.query_runs(empty_url) == ([], 0)


def test_migration_0005_keys_rows_by_precision_and_refuses_a_lossy_downgrade(empty_url):
    """0005: an old row gets its backend's mode; two precision modes of one run × batch size × backend are two
    rows; a change point goes with its run; the downgrade refuses while two modes share the old key."""
    from convmixer_tasks.metrics.schema import ChangePoint

    metrics.upgrade(empty_url, revision="0004")
    record_old(empty_url, run_id="old-npu", backend="ascend", device="Ascend310P3")
    metrics.upgrade(empty_url)
    assert stored_run(empty_url, "old-npu", 4, "ascend")["precision_mode"] == "force_fp16"
    fp16 = metrics.record_run(empty_url, make_row(run_id="r", backend="ascend", precision_mode="force_fp16"))
    fp32 = metrics.record_run(
        empty_url,
        make_row(
            run_id="r",
            backend="ascend",
            precision_mode="must_keep_origin_dtype",
            energy={"source": "npu-smi", "samples": 3},
            energy_j_per_image=0.5,
        ),
    )
    assert fp16 != fp32 and count_rows(empty_url) == 3
    with pytest.raises(MetricsError, match="energy must be a JSON object"):
        metrics.record_run(empty_url, make_row(run_id="bad", energy=[1, 2]))
    with get_engine(empty_url).begin() as connection:
        connection.execute(
            sa.insert(ChangePoint).values(
                series_key="s",
                series={"backend": "ascend"},
                metric="throughput",
                start_row_id=fp32,
                magnitude_pct=-5.0,
                created_at=DAY0,
            )
        )
    with pytest.raises(RuntimeError, match=r"1 run × batch size × backend.*more than one precision mode"):
        downgrade(empty_url, "0004")
    with get_engine(empty_url).begin() as connection:
        connection.execute(sa.text("PRAGMA foreign_keys=ON") if empty_url.startswith("sqlite") else sa.text("SELECT 1"))
        connection.execute(sa.delete(ValidationRun).where(ValidationRun.id == fp32))
    downgrade(empty_url, "0004")
    assert version_rows(empty_url) == ["0004"] and count_rows(empty_url) == 2
    assert "convmixer_change_points" not in sa.inspect(get_engine(empty_url)).get_table_names()
    metrics.upgrade(empty_url)


def test_model_matches_migration(metrics_url):
    """Autogenerate finds nothing to do: schema.py and the migration describe the same table."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with get_engine(metrics_url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True, "version_table": VERSION_TABLE})
        assert compare_metadata(context, Base.metadata) == []


def test_database_constraints_back_up_validation(metrics_url):
    """Even a writer that skips record_run cannot store an unknown status or half an accuracy."""
    for bad in (dict(status="weird"), dict(status="ok", top1=1.0), dict(status="ok"), dict(status="pending")):
        with pytest.raises(sa.exc.IntegrityError):
            insert_raw(metrics_url, **bad)
    assert count_rows(metrics_url) == 0


# --- record_run / update_status -------------------------------------------------------------------------------


def test_retry_updates_the_same_row(metrics_url):
    first_id = metrics.record_run(metrics_url, make_row(status="failed", top1=None, top5=None, throughput=None))
    first = stored_run(metrics_url, "manual__2026-11-01", 4, "onnxruntime")
    assert first["top1"] is None and first["status"] == "failed"

    retry = MetricsRow(
        run_id="manual__2026-11-01",
        model_variant="convmixer_demo",
        backend="onnxruntime",
        batch_size=4,
        status="ok",
        top1=71.5,
        top5=91.0,
        throughput=123.0,
        device="cpu-x86",
    )
    assert metrics.record_run(metrics_url, retry) == first_id
    assert count_rows(metrics_url) == 1
    after = stored_run(metrics_url, "manual__2026-11-01", 4, "onnxruntime")
    assert (after["status"], after["top1"], after["top5"], after["throughput"]) == ("ok", 71.5, 91.0, 123.0)
    assert after["created_at"] == first["created_at"]
    assert after["updated_at"] > first["updated_at"]
    assert after["logical_date"] == first["logical_date"]  # the retry did not say: keep the run's date
    assert after["latency_mean_ms"] is None  # fields the retry left out describe the latest attempt

    # Another batch size or backend of the same DAG run is another row.
    metrics.record_run(metrics_url, make_row(batch_size=8))
    metrics.record_run(metrics_url, make_row(backend="ascend"))
    assert count_rows(metrics_url) == 3


def test_keep_gated_leaves_a_verdict_but_replaces_a_pending_row(metrics_url):
    """The failure path records 'failed' with keep_gated: a gated row keeps its verdict, an ungated one fails."""
    ids = {}
    for run_id, status in (("gated-ok", "ok"), ("gated-slow", "regressed"), ("waiting", "pending")):
        ids[run_id] = metrics.record_run(metrics_url, make_row(run_id=run_id, status=status, gate_reasons=[status]))
    failed = [
        make_row(run_id=run_id, status="failed", top1=None, top5=None, throughput=None, gate_reasons=["crashed"])
        for run_id in (*ids, "new")
    ]
    recorded = metrics.record_runs(metrics_url, failed, keep_gated=True)
    assert recorded[:3] == list(ids.values()) and count_rows(metrics_url) == 4
    rows = {run_id: stored_run(metrics_url, run_id, 4, "onnxruntime") for run_id in (*ids, "new")}
    assert (rows["gated-ok"]["status"], rows["gated-ok"]["top1"], rows["gated-ok"]["gate_reasons"]) == (
        "ok",
        70.0,
        ["ok"],
    )
    assert (rows["gated-slow"]["status"], rows["gated-slow"]["gate_reasons"]) == ("regressed", ["regressed"])
    assert (rows["waiting"]["status"], rows["waiting"]["top1"]) == ("failed", None)
    assert rows["new"]["status"] == "failed"
    # Without keep_gated (a retried record step) the latest attempt replaces even a verdict.
    metrics.record_runs(metrics_url, failed[:1])
    assert stored_run(metrics_url, "gated-ok", 4, "onnxruntime")["status"] == "failed"


def test_concurrent_inserts_of_one_key_leave_one_row(metrics_url):
    writers = 4
    barrier = threading.Barrier(writers)
    ids, errors = [], []

    def write(throughput: float) -> None:
        try:
            barrier.wait()
            ids.append(metrics.record_run(metrics_url, make_row(throughput=throughput)))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(100.0 + i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(ids)) == 1 and count_rows(metrics_url) == 1
    stored = stored_run(metrics_url, "manual__2026-11-01", 4, "onnxruntime")["throughput"]
    assert stored in {100.0 + i for i in range(writers)}


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (dict(top5=None), "partial accuracy"),
        (dict(top1=None), "partial accuracy"),
        (dict(top1=None, top5=None), "needs accuracy"),  # status ok without accuracy
        (dict(top1=None, top5=None, status="regressed"), "needs accuracy"),
        (dict(top1=None, top5=None, status="pending"), "needs accuracy"),
        (dict(status="passed"), "status 'passed'"),
        (dict(top1=0.7, top5=0.9, status="ok", baseline_top1=101.0), "baseline_top1"),
        (dict(top1=95.0, top5=90.0), "top5"),
        (dict(throughput=float("nan")), "throughput"),
        (dict(throughput=-1.0), "throughput"),
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size="4"), "batch_size"),
        (dict(run_id=""), "run_id"),
        (dict(onnx_sha256="/tmp/model.onnx"), "onnx_sha256"),
        (dict(logical_date="yesterday"), "logical_date"),
        (dict(gate_reasons="slow"), "gate_reasons"),
        (dict(top_1=70.0), "top_1"),
    ],
)
def test_record_refuses_bad_rows_and_writes_nothing(metrics_url, overrides, named):
    with pytest.raises(MetricsError, match=named):
        metrics.record_run(metrics_url, make_row(**overrides))
    assert count_rows(metrics_url) == 0


@contextlib.contextmanager
def refusing_batch_size(url: str, batch_size: int):
    """A trigger that makes the database itself refuse rows of ``batch_size`` (a constraint violation, as a CHECK
    would raise): for rows that pass the store's validation but not the database."""
    table = TABLE_NAME
    engine = get_engine(url)
    if engine.dialect.name == "sqlite":
        create = [
            f"CREATE TRIGGER test_refuse BEFORE INSERT ON {table} WHEN NEW.batch_size = {batch_size} "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END"
        ]
        drop = ["DROP TRIGGER test_refuse"]
    else:
        create = [
            f"""CREATE FUNCTION test_refuse() RETURNS trigger AS $$ BEGIN
                        IF NEW.batch_size = {batch_size} THEN
                          RAISE EXCEPTION 'refused by the test trigger' USING ERRCODE = 'check_violation';
                        END IF;
                        RETURN NEW;
                      END $$ LANGUAGE plpgsql""",
            f"CREATE TRIGGER test_refuse BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION test_refuse()",
        ]
        drop = [f"DROP TRIGGER test_refuse ON {table}", "DROP FUNCTION test_refuse()"]
    with engine.begin() as connection:
        for statement in create:
            connection.execute(sa.text(statement))
    try:
        yield
    finally:
        with engine.begin() as connection:
            for statement in drop:
                connection.execute(sa.text(statement))


def test_record_runs_writes_all_rows_or_none(metrics_url):
    rows = [make_row(batch_size=1), make_row(batch_size=8)]
    # validation first: a bad second row writes nothing, not even the good first one
    with pytest.raises(MetricsError, match="throughput"):
        metrics.record_runs(metrics_url, [rows[0], make_row(batch_size=8, throughput=float("nan"))])
    assert count_rows(metrics_url) == 0

    # a row only the database refuses (it passes validation) rolls the earlier one back
    with refusing_batch_size(metrics_url, 8):
        with pytest.raises(MetricsError, match="refused to record run manual__2026-11-01"):
            metrics.record_runs(metrics_url, rows)
        assert count_rows(metrics_url) == 0

    ids = metrics.record_runs(metrics_url, rows)
    assert ids == [stored_run(metrics_url, "manual__2026-11-01", size, "onnxruntime")["id"] for size in (1, 8)]
    assert metrics.record_runs(metrics_url, rows) == ids  # a retry replaces the same rows
    assert count_rows(metrics_url) == 2


def test_failed_run_keeps_no_accuracy_and_datetimes_are_utc(metrics_url):
    import numpy as np

    tz = timezone(timedelta(hours=8))
    metrics.record_run(
        metrics_url,
        make_row(
            status="failed",
            top1=None,
            top5=None,
            throughput=np.float32(5.5),
            batch_size=np.int64(16),
            logical_date=datetime(2026, 11, 2, 16, 0, tzinfo=tz),
            started_at="2026-11-02T07:59:00Z",
            finished_at=datetime(2026, 11, 2, 8, 1),
        ),
    )  # naive = UTC
    row = stored_run(metrics_url, "manual__2026-11-01", 16, "onnxruntime")
    assert (row["status"], row["top1"], row["top5"], row["throughput"]) == ("failed", None, None, 5.5)
    assert row["logical_date"] == "2026-11-02T08:00:00+00:00"
    assert row["started_at"] == "2026-11-02T07:59:00+00:00"
    assert row["finished_at"] == "2026-11-02T08:01:00+00:00"


def test_update_status(metrics_url):
    metrics.record_run(metrics_url, make_row())
    metrics.update_status(
        metrics_url, "manual__2026-11-01", 4, "onnxruntime", "regressed", ["too slow"], baseline_throughput=150.0
    )
    row = stored_run(metrics_url, "manual__2026-11-01", 4, "onnxruntime")
    assert (row["status"], row["gate_reasons"], row["baseline_throughput"]) == ("regressed", ["too slow"], 150.0)

    with pytest.raises(MetricsError, match="record_run it"):
        metrics.update_status(metrics_url, "other-run", 4, "onnxruntime", "ok", [])
    with pytest.raises(MetricsError, match="not a known status"):
        metrics.update_status(metrics_url, "manual__2026-11-01", 4, "onnxruntime", "great", [])

    metrics.record_run(metrics_url, make_row(run_id="broken", status="failed", top1=None, top5=None))
    with pytest.raises(MetricsError, match="no accuracy"):
        metrics.update_status(metrics_url, "broken", 4, "onnxruntime", "ok", ["looks fine"])
    assert stored_run(metrics_url, "broken", 4, "onnxruntime")["status"] == "failed"


# --- queries --------------------------------------------------------------------------------------------------

SEED = [  # (run_id, day offset, model, backend, device, batch size, status, throughput)
    ("r0", 0, "convmixer_1536_20", "ascend", "Ascend310P3", 1, "ok", 50.0),
    ("r0", 0, "convmixer_1536_20", "ascend", "Ascend310P3", 8, "ok", 300.0),
    ("r1", 1, "convmixer_1536_20", "ascend", "Ascend310P3", 1, "regressed", 20.0),
    ("r1", 1, "convmixer_1536_20", "onnxruntime", "cpu-x86", 1, "ok", 2.0),
    ("r2", 2, "convmixer_demo", "onnxruntime", "cpu-x86", 4, "failed", None),
    ("r3", 3, "convmixer_1536_20", "ascend", "Ascend310P3", 1, "ok", 52.0),
    ("r5", 3, "convmixer_1536_20", "ascend", "Ascend910B", 1, "ok", 90.0),
    ("r4", 4, "convmixer_demo", "onnxruntime", "cpu-x86", 4, "ok", 400.0),
]


def seed(url: str) -> list[dict]:
    rows = []
    for run_id, day, model, backend, device, batch_size, status, throughput in SEED:
        accuracy = dict(top1=None, top5=None) if status == "failed" else dict(top1=80.0 + day, top5=95.0)
        row = make_row(
            run_id=run_id,
            logical_date=DAY0 + timedelta(days=day),
            model_variant=model,
            backend=backend,
            device=device,
            batch_size=batch_size,
            status=status,
            throughput=throughput,
            dag_id=f"dag_{day % 2}",
            **accuracy,
        )
        metrics.record_run(url, row)
        rows.append(row)
    return rows


def key_of(row: dict) -> tuple:
    return row["run_id"], row["batch_size"], row["backend"], row["device"]


def test_query_runs_newest_first_with_pagination(metrics_url):
    rows = seed(metrics_url)
    everything, total = metrics.query_runs(metrics_url, limit=500)
    assert total == len(rows) == len(everything)
    dates = [row["logical_date"] for row in everything]
    assert dates == sorted(dates, reverse=True)
    assert everything[0]["run_id"] == max(rows, key=lambda r: r["logical_date"])["run_id"]

    pages = []
    for offset in range(0, total, 3):
        page, page_total = metrics.query_runs(metrics_url, limit=3, offset=offset)
        assert page_total == total and len(page) <= 3
        pages.extend(page)
    assert [key_of(row) for row in pages] == [key_of(row) for row in everything]
    assert metrics.query_runs(metrics_url, offset=total)[0] == []


def test_since_inside_a_bare_until_day(metrics_url):
    """A date-time ``since`` on the very day a bare-date ``until`` names is a valid range, not 'since after until'."""
    rows = seed(metrics_url)
    day = DAY0 + timedelta(days=1)
    since = day.replace(hour=1)
    found, total = metrics.query_runs(metrics_url, since=since.isoformat(), until=day.date().isoformat())
    expected = [row for row in rows if since <= row["logical_date"] < day.replace(hour=0) + timedelta(days=1)]
    assert expected and total == len(expected) == len(found)


@pytest.mark.parametrize(
    "filters",
    [
        dict(model="convmixer_demo"),
        dict(backend="ascend"),
        dict(device="Ascend310P3", batch_size=1),
        dict(status="ok", backend="ascend"),
        dict(batch_size=8),
        dict(since="2026-11-02", until="2026-11-03"),  # bare dates: whole days, both ends included
        dict(since=DAY0 + timedelta(days=1, hours=1)),
        dict(until=(DAY0 + timedelta(days=1)).isoformat()),  # an exact instant: included
        dict(model="", backend=None),  # empty means any
    ],
)
def test_query_filters(metrics_url, filters):
    rows = seed(metrics_url)

    def matches(row: dict) -> bool:
        day = row["logical_date"].date()
        since, until = filters.get("since"), filters.get("until")
        return all(
            [
                filters.get("model") in (None, "", row["model_variant"]),
                filters.get("backend") in (None, "", row["backend"]),
                filters.get("device") in (None, row["device"]),
                filters.get("batch_size") in (None, row["batch_size"]),
                filters.get("status") in (None, row["status"]),
                since is None
                or (
                    day >= datetime.fromisoformat(since).date()
                    if isinstance(since, str)
                    else row["logical_date"] >= since
                ),
                until is None
                or (
                    day <= datetime.fromisoformat(until).date()
                    if len(str(until)) == 10
                    else row["logical_date"] <= datetime.fromisoformat(until)
                ),
            ]
        )

    expected = sorted(key_of(row) for row in rows if matches(row))
    found, total = metrics.query_runs(metrics_url, **filters)
    assert sorted(key_of(row) for row in found) == expected
    assert total == len(expected) > 0
    if any(value not in (None, "") for value in filters.values()):
        assert total < len(rows)  # the filter did narrow the seed


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        (dict(limit=0), "limit"),
        (dict(limit=501), "limit"),
        (dict(limit="10"), "limit"),
        (dict(offset=-1), "offset"),
        (dict(since="last week"), "since"),
        (dict(until="2026-13-01"), "until"),
        (dict(since="2026-11-05", until="2026-11-01"), "after until"),
        (dict(status="bad"), "status"),
        (dict(batch_size=-4), "batch_size"),
    ],
)
def test_query_input_validation_names_the_parameter(metrics_url, kwargs, named):
    with pytest.raises(MetricsError, match=named):
        metrics.query_runs(metrics_url, **kwargs)


def test_series_groups_oldest_first(metrics_url):
    rows = seed(metrics_url)
    found = metrics.series(metrics_url, model="convmixer_1536_20")
    groups = {(s["model_variant"], s["batch_size"], s["backend"], s["device"]): s["points"] for s in found}
    expected_groups = {
        (r["model_variant"], r["batch_size"], r["backend"], r["device"])
        for r in rows
        if r["model_variant"] == "convmixer_1536_20"
    }
    assert set(groups) == expected_groups
    assert list(groups) == sorted(groups)  # series come in a stable order
    points = groups[("convmixer_1536_20", 1, "ascend", "Ascend310P3")]
    assert [p["run_id"] for p in points] == ["r0", "r1", "r3"]
    assert [p["status"] for p in points] == ["ok", "regressed", "ok"]
    assert set(points[0]) == {
        "logical_date",
        "top1",
        "throughput",
        "status",
        "run_id",
        "dag_id",
        "baseline_top1",
        "baseline_throughput",
    }
    assert metrics.series(metrics_url, status="failed")[0]["points"][0]["throughput"] is None


def test_distinct_values(metrics_url):
    rows = seed(metrics_url)
    values = metrics.distinct_values(metrics_url)
    assert values["models"] == sorted({r["model_variant"] for r in rows})
    assert values["backends"] == sorted({r["backend"] for r in rows})
    assert values["devices"] == sorted({r["device"] for r in rows})
    assert values["batch_sizes"] == sorted({r["batch_size"] for r in rows})
    assert set(values["statuses"]) == {"ok", "regressed", "failed", "pending", "inconclusive"}


# --- URLs, engines, errors ------------------------------------------------------------------------------------


def test_unreachable_database_error_masks_the_password():
    url = "postgresql+psycopg2://reader:s3cr3t-pw@127.0.0.1:1/metrics"
    for call in (
        lambda: metrics.query_runs(url),
        lambda: metrics.record_run(url, make_row()),
        lambda: metrics.upgrade(url),
    ):
        with pytest.raises(MetricsError) as caught:
            call()
        message = str(caught.value)
        assert "s3cr3t-pw" not in message
        assert "reader:***@127.0.0.1:1/metrics" in message
        assert "convmixer_metrics" in message and "unreachable" in message


def test_unmigrated_database_says_how_to_create_the_table(tmp_path):
    url = f"sqlite:///{tmp_path / 'never-upgraded.db'}"
    with pytest.raises(MetricsError, match="metrics-upgrade"):
        metrics.query_runs(url)


@pytest.mark.parametrize(
    ("url", "named"), [("not a url", "not a SQLAlchemy URL"), ("mysql://u:pw@host/db", "supported")]
)
def test_unusable_urls(url, named):
    with pytest.raises(MetricsError, match=named) as caught:
        metrics.query_runs(url)
    assert ":pw@" not in str(caught.value)


def test_engines_are_cached_per_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    assert get_engine(url) is get_engine(url)
    assert get_engine(url) is not get_engine(f"sqlite:///{tmp_path / 'b.db'}")


def test_forked_child_does_not_reuse_the_parents_engine(tmp_path):
    url = f"sqlite:///{tmp_path / 'fork.db'}"
    metrics.upgrade(url)
    parent_engine = get_engine(url)
    pid = os.fork()
    if pid == 0:  # child: report through the exit code only
        fresh = get_engine(url) is not parent_engine and metrics.query_runs(url) == ([], 0)
        os._exit(0 if fresh else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert get_engine(url) is parent_engine  # the parent keeps its pool


def test_resolve_metrics_url_precedence(tmp_path):
    env = {"CONVMIXER_METRICS_DB_URL": "postgresql://u@h/db", "AIRFLOW_HOME": str(tmp_path / "af")}
    assert metrics.resolve_metrics_url("sqlite:////x.db", env=env) == "sqlite:////x.db"
    assert metrics.resolve_metrics_url(None, env=env) == "postgresql+psycopg2://u@h/db"
    without_env_url = {"AIRFLOW_HOME": str(tmp_path / "af")}
    assert metrics.resolve_metrics_url(env=without_env_url) == f"sqlite:///{tmp_path / 'af' / 'convmixer_metrics.db'}"
    assert (
        metrics.resolve_metrics_url(env=without_env_url, airflow_home=tmp_path / "other")
        == f"sqlite:///{tmp_path / 'other' / 'convmixer_metrics.db'}"
    )
    home_default = metrics.resolve_metrics_url(env={})
    assert home_default == f"sqlite:///{os.path.expanduser('~/airflow')}/convmixer_metrics.db"
    assert (make_url(home_default).database or "").startswith("/")  # absolute: tasks run from any working directory


def test_mask_url():
    assert metrics.mask_url("postgresql+psycopg2://u:p%40ss@db:5432/x") == "postgresql+psycopg2://u:***@db:5432/x"
    assert metrics.mask_url("sqlite:////tmp/m.db") == "sqlite:////tmp/m.db"
    assert "hunter2" not in metrics.mask_url("weird://u:hunter2@[bad")


def test_metrics_row_agrees_with_the_table_field_for_field():
    """MetricsRow restates the writable columns by hand, on purpose: mypy checks every MetricsRow(...) call against
    it, which a class generated from the ORM (make_dataclass) would not allow. This keeps the two from drifting:
    the same names, a default of None exactly for the nullable columns (and for the two NOT NULL ones record_run
    derives), and the ORM's declared types among the field's (datetimes also as ISO strings: rows cross XCom). The
    order differs on purpose: MetricsRow's is the CSV export's, the table's is the migrations'."""
    import types
    import typing

    from convmixer_tasks.metrics.schema import GENERATED_COLUMNS

    def members(hint) -> set:  # X | Y | None -> {X, Y, NoneType}; list[str] -> {list}
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        return {typing.get_origin(t) or t for t in (typing.get_args(hint) if union else (hint,))}

    derived = {"logical_date": "started_at, else now", "precision_mode": "the backend's effective mode"}
    columns = {c.key: c for c in ValidationRun.__table__.columns if c.key not in GENERATED_COLUMNS}
    fields = {f.name: f for f in dataclasses.fields(MetricsRow)}
    assert set(fields) == set(columns)
    row_hints, orm_hints = typing.get_type_hints(MetricsRow), typing.get_type_hints(ValidationRun)
    for name, column in columns.items():
        optional = fields[name].default is None
        assert optional == (column.nullable or name in derived), f"{name}: default vs nullable={column.nullable}"
        (declared,) = typing.get_args(orm_hints[name])  # Mapped[X]
        assert members(declared) <= members(row_hints[name]) | {type(None)}, f"{name}: {row_hints[name]} vs {declared}"
        assert (type(None) in members(declared)) == column.nullable, f"{name}: Mapped[{declared}] vs the column"
        assert (type(None) in members(row_hints[name])) == optional, f"{name}: {row_hints[name]}"


@pytest.mark.parametrize("given", ["postgres://u:p@db:5432/m", "postgresql://u:p@db:5432/m"])
def test_bare_postgres_urls_name_the_pinned_driver(given):
    """SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which is not installed; Airflow writes postgres://."""
    assert metrics.resolve_metrics_url(given) == "postgresql+psycopg2://u:p@db:5432/m"
    assert metrics.resolve_metrics_url(env={metrics.ENV_VAR: given}) == "postgresql+psycopg2://u:p@db:5432/m"
    assert metrics.normalize_url("sqlite:////x.db") == "sqlite:////x.db"


def test_connection_url_fixes_airflow_renderings():
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3 (not installed): the pinned driver is named
    assert (
        metrics.connection_url("postgres", "postgres://u:p%40ss@h:5432/db")
        == "postgresql+psycopg2://u:p%40ss@h:5432/db"
    )
    assert metrics.connection_url("postgres", "postgresql://u@h/db") == "postgresql+psycopg2://u@h/db"
    # Airflow renders a sqlite connection as sqlite:///%2Fpath; the path is in host (JSON form) or schema (URI form)
    assert metrics.connection_url("sqlite", "sqlite://%2Ftmp%2Fm.db", host="/tmp/m.db") == "sqlite:////tmp/m.db"
    assert metrics.connection_url("sqlite", "sqlite:///%2Ftmp", host="", schema="/tmp/m.db") == "sqlite:////tmp/m.db"
    assert metrics.connection_url("mysql", "mysql://u@h/db") == "mysql://u@h/db"
    with pytest.raises(ConfigError, match="host"):
        metrics.connection_url("sqlite", "sqlite://", host="", schema="")


def test_metrics_url_precedence_connection_env_setting_sqlite(tmp_path):
    """The one rule the DAG, the plugin, the CLI and the scripts follow (metrics/url.py)."""
    home = tmp_path / "af"
    resolve = metrics.resolve_metrics_url
    assert resolve(None, "", home, env={}) == f"sqlite:///{home / 'convmixer_metrics.db'}"
    assert resolve(None, "sqlite:////setting.db", home, env={}) == "sqlite:////setting.db"
    env = {metrics.ENV_VAR: "sqlite:////env.db"}
    assert resolve(None, "sqlite:////setting.db", home, env=env) == "sqlite:////env.db"
    assert resolve("postgresql://conn/db", "sqlite:////setting.db", home, env=env) == "postgresql+psycopg2://conn/db"


# --- the history views' reads ---------------------------------------------------------------------------------------


def test_rows_by_run_time_and_the_light_history_agree_on_when_a_run_ran(metrics_url):
    # A scheduled run that started a day after its logical date ran after the manual run of the day in between.
    late = make_row(run_id="scheduled__d0", logical_date=DAY0, started_at=DAY0 + timedelta(days=2))
    manual = make_row(
        run_id="manual__d1",
        logical_date=DAY0 + timedelta(days=1),
        started_at=None,
        finished_at=DAY0 + timedelta(days=1, hours=1),
    )
    other_size = {**manual, "batch_size": 16}  # the same run: batch sizes share its times
    metrics.record_runs(metrics_url, [late, manual, other_size])
    by_logical = [row["run_id"] for row in metrics.query_runs(metrics_url)[0]]
    by_run = [row["run_id"] for row in metrics.query_runs(metrics_url, by_run_time=True)[0]]
    assert by_logical[-1] == "scheduled__d0" and by_run[0] == "scheduled__d0"
    rows = metrics.query_runs(metrics_url, by_run_time=True)[0]
    assert rows[0]["ran_at"] == (DAY0 + timedelta(days=2)).isoformat()
    light = metrics.history_rows(metrics_url, ["run_id", "ran_at", "batch_size"])
    assert [(row["run_id"], row["ran_at"]) for row in light] == [(row["run_id"], row["ran_at"]) for row in rows]
    assert set(light[0]) == {"run_id", "ran_at", "batch_size"}
    # one row per run when the batch size is left out
    runs = metrics.history_rows(metrics_url, ["ran_at", "run_id"], distinct=True)
    assert [row["run_id"] for row in runs] == ["scheduled__d0", "manual__d1"]
    assert metrics.history_rows(metrics_url, ["run_id"], batch_size=16) == [{"run_id": "manual__d1"}]


def test_the_light_history_refuses_an_unknown_column(metrics_url):
    with pytest.raises(MetricsError, match=r"unknown metrics column.*top_one"):
        metrics.history_rows(metrics_url, ["run_id", "top_one"])


def test_a_rows_series_neighbours_by_run_time_never_mix_precision_or_device(metrics_url):
    """The run page reads a row by id and the runs of its series around it (model, backend, device, precision,
    batch size), by when they ran; two runs that started at the same moment are ordered by id."""
    times = [DAY0 + timedelta(hours=hour) for hour in (0, 1, 2, 2, 3)]
    ids = [
        metrics.record_run(metrics_url, make_row(run_id=f"run{i}", started_at=when, logical_date=DAY0))
        for i, when in enumerate(times)
    ]
    others = [
        make_row(run_id="run1", precision_mode="fp16", backend="ascend"),  # another precision and backend
        make_row(run_id="run9", device="cpu-arm", started_at=times[2]),  # another device
        make_row(run_id="run8", batch_size=1, started_at=times[2]),
    ]  # another batch size
    metrics.record_runs(metrics_url, others)
    middle = stored_row(metrics_url, ids[3])
    assert middle["run_id"] == "run3" and middle["ran_at"] == times[3].isoformat()
    earlier, following = metrics.series_neighbours(metrics_url, middle, ["id", "run_id", "ran_at"], earlier=2)
    assert [row["run_id"] for row in earlier] == ["run2", "run1"]  # newest first, the tie broken by id
    assert following is not None and following["run_id"] == "run4" and following["ran_at"] == times[4].isoformat()
    first = stored_row(metrics_url, ids[0])
    assert metrics.series_neighbours(metrics_url, first, ["id"], earlier=5) == ([], {"id": ids[1]})
    last = stored_row(metrics_url, ids[4])
    assert metrics.series_neighbours(metrics_url, last, ["run_id"], earlier=0) == ([], None)
    assert metrics.get_row(metrics_url, 10**6) is None
    assert metrics.count_runs(metrics_url) == 8 and metrics.count_runs(metrics_url, batch_size=1) == 1
    assert len(metrics.history_rows(metrics_url, ["id"], limit=3)) == 3
    with pytest.raises(MetricsError, match="row id must be"):
        metrics.get_row(metrics_url, "1 OR 1=1")  # type: ignore[arg-type]  # a string on purpose: it must be refused


def test_migration_0008_puts_the_chip_in_the_row_key_and_downgrades_only_without_two_chips(empty_url):
    from convmixer_tasks.metrics import get_run, record_runs, upgrade

    upgrade(empty_url)
    record_runs(empty_url, [make_row(run_id="no-chips", precision_mode="fp32")])
    before = get_run(empty_url, "no-chips", 4, "onnxruntime", "fp32")
    assert before is not None and before["chip"] == ""  # a run without chip types
    rows = [
        make_row(run_id="fleet", precision_mode="fp32", chip=chip, device=f"Ascend{chip}")
        for chip in ("310P3", "910B3")
    ]
    first = record_runs(empty_url, rows)
    assert len(set(first)) == 2  # one row per chip, not the second chip's over the first's
    assert record_runs(empty_url, rows) == first  # a retried task replaces its own chip's row
    second = get_run(empty_url, "fleet", 4, "onnxruntime", "fp32", "convmixer_demo", "910B3")
    assert second is not None and second["device"] == "Ascend910B3"
    with pytest.raises(RuntimeError, match=r"below 0008: 1 run .* more than one chip"):
        downgrade(empty_url, "0007")
