"""The metrics table: one row per DAG run × batch size × backend (SQLAlchemy 2 typed declarative model).

The Alembic migrations in ``migrations/versions`` create exactly this table; ``tests/test_metrics.py`` compares the
two so they cannot drift apart. ``MetricsRow`` is the JSON-able input record that ``writes.record_run`` writes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
)
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

# The status and throughput-check names live in the vocabulary module; re-exported for the metrics package's readers.
from convmixer_tasks.status import (  # noqa: F401
    CHECK_BELOW,
    CHECK_NOISY,
    CHECK_OK,
    CHECK_REGRESSED,
    CHECK_UNJUDGED,
    GATED_STATUSES,
    STATUS_FAILED,
    STATUS_INCONCLUSIVE,
    STATUS_OK,
    STATUS_PENDING,
    STATUS_REGRESSED,
    STATUSES,
    THROUGHPUT_CHECKS,
)

TABLE_NAME = "convmixer_validation_runs"
# Our own Alembic version table: the metrics URL may point at a database that already has an ``alembic_version``
# (Airflow's metadata DB, for one); sharing it would make either migration history overwrite the other.
VERSION_TABLE = "convmixer_metrics_alembic_version"


# Named constraints so later migrations (SQLite batch mode included) can refer to them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every dialect.

    PostgreSQL keeps the offset (timestamptz) but SQLite would silently drop it, so values are normalised to UTC
    on the way in (naive ones are taken as UTC) and given back as aware UTC datetimes.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else as_utc(value)


def as_utc(value: datetime) -> datetime:
    """Aware UTC datetime; a naive one is taken to be UTC already (Airflow's dates are UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ValidationRun(Base):
    """One validation of one model artifact at one batch size on one backend, within one DAG run."""

    __tablename__ = TABLE_NAME
    __table_args__ = (
        UniqueConstraint(
            "run_id",
            "batch_size",
            "backend",
            "precision_mode",
            "model_variant",
            "chip",
            name="uq_convmixer_validation_runs_key",
        ),
        CheckConstraint(f"status IN {STATUSES!r}", name="status_known"),
        # Accuracy comes as a pair or not at all, and only an evaluated run can be pending, ok or regressed.
        CheckConstraint("(top1 IS NULL) = (top5 IS NULL)", name="accuracy_pair"),
        CheckConstraint(f"status = '{STATUS_FAILED}' OR top1 IS NOT NULL", name="evaluated_unless_failed"),
        CheckConstraint("batch_size >= 1", name="batch_size_positive"),
        # The gate's history query: same model/backend/device/batch size, newest first.
        Index(
            "ix_convmixer_validation_runs_series", "model_variant", "backend", "device", "batch_size", "logical_date"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(250))  # Airflow's run_id limit
    dag_id: Mapped[str | None] = mapped_column(String(250))
    # The run's place on the time axis: Airflow's logical_date, or run_after/start time for runs that have none.
    logical_date: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    model_variant: Mapped[str] = mapped_column(String(100))
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64))
    onnx_sha256: Mapped[str | None] = mapped_column(String(64))
    artifact_sha256: Mapped[str | None] = mapped_column(String(64))
    backend: Mapped[str] = mapped_column(String(32))
    device: Mapped[str | None] = mapped_column(String(200))
    toolkit_version: Mapped[str | None] = mapped_column(String(200))
    batch_size: Mapped[int] = mapped_column(Integer)
    input_dtype: Mapped[str | None] = mapped_column(String(16))
    image_count: Mapped[int | None] = mapped_column(Integer)
    top1: Mapped[float | None] = mapped_column(Float)  # percent, 0..100
    top5: Mapped[float | None] = mapped_column(Float)  # percent, 0..100
    throughput: Mapped[float | None] = mapped_column(Float)  # images per second
    latency_mean_ms: Mapped[float | None] = mapped_column(Float)
    latency_p50_ms: Mapped[float | None] = mapped_column(Float)
    latency_p99_ms: Mapped[float | None] = mapped_column(Float)
    parity_max_abs_diff: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))
    baseline_top1: Mapped[float | None] = mapped_column(Float)
    baseline_throughput: Mapped[float | None] = mapped_column(Float)
    gate_reasons: Mapped[list[str] | None] = mapped_column(JSON)
    # Throughput evidence (migration 0004): the kept per-loop times and their dispersion, the re-measurements, the
    # throughput rule's own outcome, and the environment the figures depend on.
    samples_ms: Mapped[str | None] = mapped_column(Text)  # loopstats.pack_samples: float32, zlib, base64
    sample_count: Mapped[int | None] = mapped_column(Integer)  # timed loops kept (warm-up excluded)
    warmup_count: Mapped[int | None] = mapped_column(Integer)  # warm-up loops run and left out
    latency_cv: Mapped[float | None] = mapped_column(Float)  # per-loop CV (0.05 = 5 %)
    latency_iqr_ms: Mapped[float | None] = mapped_column(Float)
    measurements: Mapped[int | None] = mapped_column(Integer)  # 1 + re-measurements for a too high CV
    throughput_check: Mapped[str | None] = mapped_column(String(16))
    throughput_p_value: Mapped[float | None] = mapped_column(Float)
    fingerprint: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    fingerprint_key: Mapped[str | None] = mapped_column(String(64))
    # Set by `convmixer-tasks metrics-rebaseline`: this run starts its fingerprint's throughput baseline (older runs
    # of the fingerprint no longer count), on purpose, by someone, for a reason.
    rebaselined_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    rebaselined_by: Mapped[str | None] = mapped_column(String(200))
    rebaseline_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # Migration 0003: the accuracy evidence (see convmixer_tasks.evidence.predictions / fidelity).
    # The effective mode (ATC's, or "fp32" on ONNX Runtime; precision.effective_precision); part of the key: one run
    # maps over precision modes as over batch sizes (migration 0005).
    precision_mode: Mapped[str] = mapped_column(String(64))
    # The chip type the run was routed to ([convmixer] chips, e.g. 910B3); "" without chip types (a NULL in the
    # unique key would never conflict, so a rerun would add a row instead of replacing it).
    chip: Mapped[str] = mapped_column(String(32), server_default="")
    fidelity_min_cosine: Mapped[float | None] = mapped_column(Float)  # artifact vs source ONNX, fixed subset
    fidelity_top1_agreement: Mapped[float | None] = mapped_column(Float)  # fraction 0..1
    flips_p_value: Mapped[float | None] = mapped_column(Float)  # McNemar exact vs the previous ok run
    reference_p_value: Mapped[float | None] = mapped_column(Float)  # ... vs the ONNX fp32 reference run
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # fidelity summary, flips, worst classes
    trigger: Mapped[str | None] = mapped_column(String(32))  # scheduled / manual / asset_triggered / backfill / cli
    energy_j_per_image: Mapped[float | None] = mapped_column(Float)  # over the timed window (migration 0005)
    throughput_per_watt: Mapped[float | None] = mapped_column(Float)  # images/s/W
    energy: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # source, samples, window, mean W, or why none
    # Migration 0006: the robust figure beside ais_bench's mean-based one, the end-to-end rate, the checkpoint's path.
    throughput_robust: Mapped[float | None] = mapped_column(Float)  # images/s from the median per-loop time
    latency_robust_cv: Mapped[float | None] = mapped_column(Float)  # 1.4826 × MAD / median (0.05 = 5 %)
    e2e_throughput: Mapped[float | None] = mapped_column(Float)  # images/s over preprocess + infer + evaluate
    stage_seconds: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # each stage's wall seconds
    checkpoint_path: Mapped[str | None] = mapped_column(Text)

    @hybrid_property
    def ran_at(self) -> datetime:
        """When the run actually ran: its start, else its end, else its logical date (a scheduled run's logical
        date can be a day before it ran). The same rule in SQL below, for ordering in the database."""
        return self.started_at or self.finished_at or self.logical_date

    @ran_at.inplace.expression
    @classmethod
    def _ran_at_sql(cls) -> ColumnElement[datetime]:
        return func.coalesce(cls.started_at, cls.finished_at, cls.logical_date)

    def to_dict(self) -> dict[str, Any]:
        """All columns, and ``ran_at``, as JSON-ready values (datetimes as ISO-8601 UTC strings)."""
        values = {column.key: _jsonable(getattr(self, column.key)) for column in self.__table__.columns}
        return {**values, "ran_at": _jsonable(self.ran_at)}


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


# Columns the database fills in itself; everything else in the table is a MetricsRow field.
GENERATED_COLUMNS = ("id", "created_at", "updated_at")
KEY_COLUMNS = ("run_id", "batch_size", "backend", "precision_mode", "model_variant", "chip")


@dataclass(kw_only=True)
class MetricsRow:
    """What a DAG task (or the CLI) knows about one run × batch size × backend, ready for ``record_run``.

    A run that failed before evaluation leaves ``top1``/``top5`` as None. Datetimes may be ISO-8601 strings
    (rows travel through XCom as JSON); naive ones are taken as UTC. The field order is the CSV export's column order.
    """

    run_id: str
    dag_id: str | None = None
    logical_date: datetime | str | None = None  # None → started_at, else now (Airflow 3 manual runs may have none)
    started_at: datetime | str | None = None
    finished_at: datetime | str | None = None
    model_variant: str
    checkpoint_sha256: str | None = None
    onnx_sha256: str | None = None
    artifact_sha256: str | None = None
    backend: str
    device: str | None = None
    toolkit_version: str | None = None
    batch_size: int
    input_dtype: str | None = None
    image_count: int | None = None
    top1: float | None = None
    top5: float | None = None
    throughput: float | None = None
    latency_mean_ms: float | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    parity_max_abs_diff: float | None = None
    status: str
    baseline_top1: float | None = None
    baseline_throughput: float | None = None
    gate_reasons: list[str] | None = None
    precision_mode: str | None = None
    chip: str = ""  # the chip type of a run mapped over chips ([convmixer] chips); part of the row key
    fidelity_min_cosine: float | None = None
    fidelity_top1_agreement: float | None = None
    flips_p_value: float | None = None
    reference_p_value: float | None = None
    evidence: dict[str, Any] | None = None
    trigger: str | None = None
    samples_ms: str | None = None
    sample_count: int | None = None
    warmup_count: int | None = None
    latency_cv: float | None = None
    latency_iqr_ms: float | None = None
    measurements: int | None = None
    throughput_check: str | None = None
    throughput_p_value: float | None = None
    fingerprint: dict[str, Any] | None = None
    fingerprint_key: str | None = None
    rebaselined_at: datetime | str | None = None
    rebaselined_by: str | None = None
    rebaseline_reason: str | None = None
    energy_j_per_image: float | None = None
    throughput_per_watt: float | None = None
    energy: dict[str, Any] | None = None
    throughput_robust: float | None = None
    latency_robust_cv: float | None = None
    e2e_throughput: float | None = None
    stage_seconds: dict[str, Any] | None = None
    checkpoint_path: str | None = None

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


PREDICTIONS_TABLE = "convmixer_validation_predictions"


class RunPredictions(Base):
    """One row's per-image predictions (``evidence.encode``: compressed NPZ), kept beside it so the UI and later
    runs on any host can pair it; deleted with its row."""

    __tablename__ = PREDICTIONS_TABLE

    run_row_id: Mapped[int] = mapped_column(
        Integer, ForeignKey(f"{TABLE_NAME}.id", ondelete="CASCADE"), primary_key=True
    )
    image_count: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


CHANGE_POINTS_TABLE = "convmixer_change_points"


class ChangePoint(Base):
    """A persistent step change found in one series (model × backend × device × precision × batch size) of one
    metric, starting at run row ``start_row_id``; ``detected_row_id`` is the run after which it was found."""

    __tablename__ = CHANGE_POINTS_TABLE
    __table_args__ = (UniqueConstraint("series_key", "metric", "start_row_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    series_key: Mapped[str] = mapped_column(String(64))
    series: Mapped[dict[str, Any]] = mapped_column(JSON)
    metric: Mapped[str] = mapped_column(String(32))  # "throughput", "top1", ...
    start_row_id: Mapped[int] = mapped_column(Integer, ForeignKey(f"{TABLE_NAME}.id", ondelete="CASCADE"))
    detected_row_id: Mapped[int | None] = mapped_column(Integer, ForeignKey(f"{TABLE_NAME}.id", ondelete="SET NULL"))
    before_value: Mapped[float | None] = mapped_column(Float)
    after_value: Mapped[float | None] = mapped_column(Float)
    magnitude_pct: Mapped[float | None] = mapped_column(Float)  # (after - before) / before × 100
    fingerprint_changes: Mapped[list[str] | None] = mapped_column(JSON)  # fingerprint.differences at the step
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the detector, its settings, p-value, ...
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
