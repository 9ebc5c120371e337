"""Tests of the Airflow UI plugin in plugins/convmixer_metrics; ``demo_rows`` seeds both the API and browser tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

DAG_ID = "convmixer_validation"
DEVICE = "Intel(R) Xeon(R) CPU @ 2.90GHz"
NPU = "Ascend310P3"
NEW_NPU = "Ascend910B4"
# The last scheduled run started 31 h after its logical date, after the Ascend runs of 2026-11-04 (which started
# at their logical dates, four minutes apart): by logical date it would sit before them.
LATE_START = timedelta(hours=31)
TOP1_OK = "top1 ok: {:.3f} >= 80.870 (baseline 81.370 - tolerance 0.5)"
DAYS = 4
BATCH_SIZES = (1, 4)
# Per batch size: (top1, throughput) of an ok run; the last bs-4 run is the regressed one.
HEALTHY = {1: (81.32, 30.5), 4: (81.30, 94.0)}


def run_id_for(day: int) -> str:
    return f"scheduled__2026-11-{day + 1:02d}T00:00:00+00:00"


def demo_rows() -> list[dict]:
    """Several ONNX Runtime runs at two batch sizes, one regressed on throughput only, plus Ascend runs: one that
    failed before evaluation, one that passed, one on a new toolkit that regressed on top-1 only and, four minutes
    later, one on a new device (a series of one point). As ``record_run`` rows; values vary a little so the charts
    have shape. Reasons are worded as ``gate.evaluate_gate`` words them."""
    rows = []
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for day in range(DAYS):
        for batch_size in BATCH_SIZES:
            top1, throughput = HEALTHY[batch_size]
            regressed = batch_size == 4 and day == DAYS - 1
            rows.append(
                {
                    "run_id": run_id_for(day),
                    "dag_id": DAG_ID,
                    "logical_date": start + timedelta(days=day),
                    "started_at": start
                    + timedelta(days=day)
                    + (LATE_START if day == DAYS - 1 else timedelta(minutes=1)),
                    "finished_at": start
                    + timedelta(days=day)
                    + (LATE_START if day == DAYS - 1 else timedelta())
                    + timedelta(minutes=9),
                    "model_variant": "convmixer_1536_20",
                    "backend": "onnxruntime",
                    "device": DEVICE,
                    "toolkit_version": "onnxruntime 1.31.1",
                    "batch_size": batch_size,
                    "input_dtype": "float32",
                    "image_count": 500,
                    "top1": top1 + 0.02 * day,
                    "top5": 95.5 + 0.01 * day,
                    "throughput": 61.2 if regressed else throughput + 0.7 * day,
                    "latency_mean_ms": 1000.0 * batch_size / throughput,
                    "latency_p50_ms": 1000.0 * batch_size / throughput,
                    "latency_p99_ms": 1.2 * 1000.0 * batch_size / throughput,
                    "status": "regressed" if regressed else "ok",
                    "baseline_top1": 81.3,
                    "baseline_throughput": throughput,
                    "gate_reasons": [TOP1_OK.format(top1 + 0.02 * day)]
                    + (
                        ["throughput regressed: 61.20 < 84.60 (median of the last 3 ok runs 94.00 - 10%)"]
                        if regressed
                        else [
                            "throughput ok: no history (no earlier ok run on this model, backend, device "
                            "and batch size)"
                        ]
                    ),
                }
            )
    rows.append(
        {
            "run_id": "manual__2026-11-03T12:00:00+00:00",
            "dag_id": DAG_ID,
            "logical_date": datetime(2026, 11, 3, 12, tzinfo=UTC),
            "model_variant": "convmixer_1536_20",
            "backend": "ascend",
            "started_at": datetime(2026, 11, 3, 12, tzinfo=UTC),
            "device": NPU,
            "toolkit_version": "CANN 8.0.RC1",
            "batch_size": 4,
            "input_dtype": "uint8",
            "image_count": 500,
            "top1": 81.35,
            "top5": 95.52,
            "throughput": 412.0,
            "latency_p99_ms": 10.4,
            "status": "ok",
            "baseline_top1": 81.3,
            "baseline_throughput": 405.0,
            "gate_reasons": [],
        }
    )
    rows.append(
        {
            "run_id": "manual__2026-11-02T09:30:00+00:00",
            "dag_id": DAG_ID,
            "logical_date": datetime(2026, 11, 2, 9, 30, tzinfo=UTC),
            "model_variant": "convmixer_1536_20",
            "backend": "ascend",
            "device": NPU,
            "toolkit_version": "CANN 8.0.RC1",
            "batch_size": 1,
            "input_dtype": "uint8",
            "status": "failed",
            "gate_reasons": ["compile failed: atc exited with code 1"],
        }
    )
    for minute, device, top1, throughput, status, reasons in (
        (
            0,
            NPU,
            80.41,
            409.0,
            "regressed",
            [
                "top1 regressed: 80.410 < 80.870 (baseline 81.370 - tolerance 0.5)",
                "throughput ok: 409.00 >= 364.50 (median of the last 1 ok runs 405.00 - 10%)",
            ],
        ),
        (
            4,
            NEW_NPU,
            81.36,
            1650.0,
            "ok",
            [
                TOP1_OK.format(81.36),
                "throughput ok: no history (no earlier ok run on this model, backend, device and batch size)",
            ],
        ),
    ):
        when = datetime(2026, 11, 4, 10, minute, tzinfo=UTC)
        rows.append(
            {
                "run_id": f"manual__{when.isoformat()}",
                "dag_id": DAG_ID,
                "logical_date": when,
                "started_at": when,
                "finished_at": when + timedelta(minutes=3),
                "model_variant": "convmixer_1536_20",
                "backend": "ascend",
                "device": device,
                "toolkit_version": "CANN 8.0.RC2",
                "batch_size": 4,
                "input_dtype": "uint8",
                "image_count": 500,
                "top1": top1,
                "top5": 95.5,
                "throughput": throughput,
                "latency_p99_ms": 10.1,
                "status": status,
                "baseline_top1": 81.37,
                "baseline_throughput": 405.0 if device == NPU else None,
                "gate_reasons": reasons,
            }
        )
    return rows


CHECKPOINT_SHA256 = "c" * 64
IMAGES = 500
CLASSES = 10
# The ONNX Runtime run that regressed on throughput only.
THROUGHPUT_REGRESSED_RUN = run_id_for(DAYS - 1)
# The run page's example: the Ascend run on the new toolkit that regressed on top-1 (a changed fingerprint too).
REGRESSED_ASCEND_RUN = "manual__2026-11-04T10:00:00+00:00"


def _samples(row: dict) -> str | None:
    """Per-loop times (ms) around the row's mean, packed as the benchmark step packs them."""
    from convmixer_tasks.measure.loopstats import pack_samples

    if row.get("throughput") is None:
        return None
    mean = 1000.0 * row["batch_size"] / row["throughput"]
    return pack_samples([mean * (1 + 0.04 * ((loop * 37) % 11 - 5) / 5) for loop in range(40)])


def _fingerprint(row: dict) -> dict:
    return {
        "backend": row["backend"],
        "device": row.get("device"),
        "toolkit_version": row.get("toolkit_version"),
        "host_cores": 2,
        "load_before": 0.4,
    }


def evidence_rows() -> list[dict]:
    """``demo_rows`` with what the evidence and throughput work store beside them: per-loop samples, a fingerprint
    and one checkpoint; the Ascend rows also with a fidelity summary against the ONNX (one of them breaching)."""
    import numpy as np

    from convmixer_tasks.evidence.fidelity import DEFAULT_THRESHOLDS, FidelityMetrics, summarise

    rows = []
    for row in demo_rows():
        extra: dict[str, Any] = {
            "checkpoint_sha256": CHECKPOINT_SHA256,
            "fingerprint": _fingerprint(row),
            "samples_ms": _samples(row),
            "image_count": IMAGES if row.get("top1") is not None else None,
        }
        if row["run_id"] in (REGRESSED_ASCEND_RUN, THROUGHPUT_REGRESSED_RUN) and row.get("throughput"):
            # What migration 0006 added: the robust figure and spread, the end-to-end rate and its stages, and
            # where the checkpoint came from (the runs before them predate these columns: "not measured").
            extra.update(
                throughput_robust=round(row["throughput"] * 1.01, 2),
                latency_robust_cv=0.0213,
                latency_cv=2.348,
                e2e_throughput=round(row["throughput"] * 0.31, 2),
            )
        if row["backend"] == "ascend" and row.get("top1") is not None:
            worse = row["run_id"] == REGRESSED_ASCEND_RUN
            cosine = np.full(64, 0.9995) - (np.linspace(0, 0.02, 64) if worse else 0)
            metrics = FidelityMetrics(
                cosine=cosine,
                max_abs=np.full(64, 0.01),
                rel_euclidean=np.full(64, 0.01),
                kl=np.full(64, 1e-4),
                top1_agree=np.arange(64) % 50 != 0,
            )
            summary = summarise(metrics, DEFAULT_THRESHOLDS)
            extra["evidence"] = {"fidelity": summary}
            extra["fidelity_min_cosine"] = summary["min_cosine"]
            extra["fidelity_top1_agreement"] = summary["top1_agreement"]
        rows.append({**row, **extra})
    return rows


def _predictions(row: dict, seed: int):
    """The same images and labels for every row; each row flips a few images of a shared base, and the regressed
    Ascend run turns many right images wrong (a significant McNemar test against the runs before it)."""
    import numpy as np

    from convmixer_tasks.evidence.predictions import Predictions

    labels = (np.arange(IMAGES) % CLASSES).astype(np.int16)
    right = np.random.default_rng(0).random(IMAGES) < 0.813
    rng = np.random.default_rng(seed + 1)
    to_wrong = 25 if row["run_id"] == REGRESSED_ASCEND_RUN else 3
    right[rng.choice(np.flatnonzero(right), to_wrong, replace=False)] = False
    right[rng.choice(np.flatnonzero(~right), 2, replace=False)] = True
    top1 = np.where(right, labels, (labels + 1) % CLASSES).astype(np.int16)
    top5 = np.stack([(top1 + shift) % CLASSES for shift in range(5)], axis=1).astype(np.int16)
    return Predictions(
        indices=np.arange(1, IMAGES + 1, dtype=np.int32),
        labels=labels,
        top5=top5,
        margin=np.ones(IMAGES, np.float16),
        num_classes=CLASSES,
    )


def seed_with_evidence(url: str) -> None:
    """Record ``evidence_rows``, store each evaluated row's predictions, then let the gate's evidence rules pair
    them (flips and McNemar vs the previous and the reference run) and store what they found, oldest first."""
    from convmixer_tasks import metrics
    from convmixer_tasks.evidence import predictions as evidence
    from convmixer_tasks.metrics.predictions import store_evidence, store_predictions
    from convmixer_tasks.verdict.evidence_gate import judge
    from tests.stored import stored_run

    metrics.upgrade(url)
    rows = evidence_rows()
    for row in rows:
        metrics.record_run(url, row)
    _set_stage_seconds_and_checkpoint(url)
    evaluated = sorted(
        (row for row in rows if row.get("top1") is not None), key=lambda r: r.get("started_at") or r["logical_date"]
    )
    for seed, row in enumerate(evaluated):
        blob = evidence.encode(_predictions(row, seed))
        store_predictions(url, row["run_id"], row["batch_size"], row["backend"], blob, IMAGES)
    for row in evaluated:
        stored = stored_run(url, row["run_id"], row["batch_size"], row["backend"])
        judged = judge(url, stored, top1_tolerance=0.5, significance=0.05)
        store_evidence(url, row["run_id"], row["batch_size"], row["backend"], judged.values)


# Migration 0006's JSON and text columns, written straight to the table: record_run learns them with the work that
# measures them (issue 20); the page only has to show them.
STAGE_SECONDS = {"preprocess": 4.2, "infer": 1.21, "evaluate": 0.35}
CHECKPOINT_PATH = "/data/checkpoints/convmixer_1536_20_ks9_p7.pth.tar"


def _set_stage_seconds_and_checkpoint(url: str) -> None:
    from sqlalchemy import update
    from sqlalchemy.orm import Session

    from convmixer_tasks.metrics.engine import get_engine
    from convmixer_tasks.metrics.schema import ValidationRun

    with Session(get_engine(url)) as session, session.begin():
        session.execute(
            update(ValidationRun)
            .where(
                ValidationRun.run_id.in_((REGRESSED_ASCEND_RUN, THROUGHPUT_REGRESSED_RUN)),
                ValidationRun.throughput.is_not(None),
            )
            .values(stage_seconds=STAGE_SECONDS, checkpoint_path=CHECKPOINT_PATH)
        )
