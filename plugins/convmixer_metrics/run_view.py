"""What the run page and the compare view show, built from stored rows through the store's query API and the
evidence library (``convmixer_tasks.evidence.compare``, ``fingerprint``, ``throughput``); ``app.py`` routes and checks
access.

Every function returns JSON-ready dicts; nothing here writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from convmixer_tasks import metrics as store
from convmixer_tasks.errors import ConfigError, EvalError
from convmixer_tasks.measure import fingerprint as fp
from convmixer_tasks.metrics.rebaseline import acceptance
from convmixer_tasks.metrics.rules import line_outcome

from . import history

# The latency chart: this run and up to this many runs of its series before it, each as a box of its per-loop times.
LATENCY_RUNS_BEFORE = 9
HISTOGRAM_BINS = 30
# What the page reads of the runs around this one (the per-loop samples only for the latency chart).
NEIGHBOUR_COLUMNS = (
    "id", "run_id", "dag_id", "ran_at", "status", "top1", "throughput", "samples_ms", "fingerprint",
    "rebaselined_at", "rebaselined_by", "rebaseline_reason",
)  # fmt: skip
# Summarised instead of sent: the packed samples are bytes, not something a person reads.
NOT_SENT = ("samples_ms",)
# The Airflow tasks whose logs explain a row: the gate wrote its verdict; benchmark and evaluate are mapped per
# batch size (the UI lists their instances).
AIRFLOW_TASKS = {
    "regression_gate": "gate (the verdict)",
    "benchmark": "benchmark (per batch size)",
    "evaluate": "evaluate (per batch size)",
}
MAPPED_TASKS = ("benchmark", "evaluate")
# Metrics compared side by side: (field, label, unit, higher is better, scale: a fraction is shown in percent).
COMPARED_METRICS = (
    ("top1", "Top-1", "%", True, 1),
    ("top5", "Top-5", "%", True, 1),
    ("throughput", "Throughput (ais_bench: mean per loop)", "img/s", True, 1),
    ("throughput_robust", "Throughput (robust: median per loop)", "img/s", True, 1),
    ("e2e_throughput", "End-to-end throughput", "img/s", True, 1),
    ("latency_p50_ms", "p50 latency", "ms", False, 1),
    ("latency_p99_ms", "p99 latency", "ms", False, 1),
    ("latency_cv", "Per-loop CV (standard deviation / mean)", "%", False, 100),
    ("latency_robust_cv", "Per-loop CV (robust: 1.4826 × MAD / median)", "%", False, 100),
    ("energy_j_per_image", "Energy", "J/image", False, 1),
    ("throughput_per_watt", "Throughput per watt", "img/s/W", True, 1),
)


def summary(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Enough of a row to name and link it."""
    if row is None:
        return None
    names = ("id", "run_id", "dag_id", "ran_at", "status", "top1", "throughput", "batch_size", "backend")
    return {name: row.get(name) for name in names if name in row}


def reasons(row: Mapping[str, Any]) -> list[dict[str, str]]:
    """Each gate reason with its outcome (``rules.line_outcome``: ``fired``, ``held`` or ``note``), the deciding
    lines first: the rules that fired, then the notes (why a row is inconclusive), then the rules that held."""
    order = {"fired": 0, "note": 1, "held": 2}
    lines = [{"text": str(text), "outcome": line_outcome(str(text))} for text in row.get("gate_reasons") or []]
    return sorted(lines, key=lambda line: order[line["outcome"]])


def _samples(row: Mapping[str, Any]) -> list[float] | None:
    if not row.get("samples_ms"):
        return None
    from convmixer_tasks.measure.loopstats import unpack_samples

    try:
        return unpack_samples(row["samples_ms"])
    except ConfigError:
        return None  # reported as "not readable" by the caller


def latency_box(samples: Sequence[float]) -> dict[str, float | int]:
    """Quantiles of one run's per-loop times (ms), for a box (q1–q3, median) with p5–p95 whiskers and p99."""
    import numpy as np

    times = np.asarray(samples, dtype=np.float64)
    names = ("min", "p5", "q1", "median", "q3", "p95", "p99", "max")
    values = np.percentile(times, [0, 5, 25, 50, 75, 95, 99, 100])
    return {"count": int(times.size), **{name: float(value) for name, value in zip(names, values, strict=True)}}


def latency(row: Mapping[str, Any], earlier: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One box per run (this one and the runs of its series before it, oldest first) and this run's histogram."""
    import numpy as np

    runs = []
    for one in [*reversed(earlier[:LATENCY_RUNS_BEFORE]), row]:
        samples = _samples(one)
        entry: dict[str, Any] = {**(summary(one) or {}), "this": one["id"] == row["id"]}
        if samples:
            entry["box"] = latency_box(samples)
        else:
            entry["why"] = "unreadable samples" if one.get("samples_ms") else "no per-loop samples kept"
        runs.append(entry)
    own = _samples(row)
    histogram = None
    if own:
        counts, edges = np.histogram(np.asarray(own, dtype=np.float64), bins=HISTOGRAM_BINS)
        histogram = {"counts": counts.tolist(), "edges": edges.tolist()}
    why = None
    if not own:
        why = (
            "this run kept no per-loop times (the benchmark tool reported only its mean, e.g. multi-thread "
            "ais_bench, or the row predates kept samples)"
        )
    return {"runs": runs, "histogram": histogram, "why": why}


def energy(row: Mapping[str, Any]) -> dict[str, Any]:
    """The energy figures, or why there are none (the ``energy`` JSON says what was read, or why nothing was)."""
    details = dict(row.get("energy") or {})
    measured = row.get("energy_j_per_image") is not None or row.get("throughput_per_watt") is not None
    why = None
    if not measured:
        stated = next((details[key] for key in ("reason", "why", "error", "skipped") if details.get(key)), None)
        why = str(stated) if stated else "no power reading was recorded for this run"
    return {
        "measured": measured,
        "j_per_image": row.get("energy_j_per_image"),
        "throughput_per_watt": row.get("throughput_per_watt"),
        "details": details,
        "why": why,
    }


def evidence(row: Mapping[str, Any]) -> dict[str, Any]:
    """The accuracy evidence the gate stored: fidelity vs the ONNX, flips vs the previous and the reference run."""
    stored = dict(row.get("evidence") or {})
    return {
        "fidelity": stored.get("fidelity"),
        "flips_previous": stored.get("flips_previous"),
        "flips_reference": stored.get("flips_reference"),
        "worst_classes": stored.get("worst_classes") or [],
        "flips_p_value": row.get("flips_p_value"),
        "reference_p_value": row.get("reference_p_value"),
    }


def _acceptance(row: Mapping[str, Any]) -> dict[str, Any] | None:
    if not row.get("rebaselined_at"):
        return None
    return {"at": row["rebaselined_at"], "by": row.get("rebaselined_by"), "reason": row.get("rebaseline_reason")}


def accept_offer(row: Mapping[str, Any], changed_since_previous: Sequence[str]) -> dict[str, Any]:
    """Whether the page offers "accept as baseline" for this row, whether it can be accepted and what accepting
    does: ``metrics.rebaseline.acceptance``, the rule the API and the CLI apply too."""
    rule = acceptance(row, changed_since_previous)
    return {
        "offered": rule.offered,
        "why_not": rule.why_not,
        "status_after": rule.status_after,
        "kept": list(rule.kept),
        "effect": rule.effect,
        "accepted": _acceptance(row),
    }


def run_detail(url: str, row_id: int) -> dict[str, Any] | None:
    """Everything the run page shows about one row, or None when there is no such row."""
    row = store.get_row(url, row_id)
    if row is None:
        return None
    earlier, following = store.series_neighbours(url, row, NEIGHBOUR_COLUMNS, LATENCY_RUNS_BEFORE)
    previous = earlier[0] if earlier else None
    baseline = next((one for one in earlier if one["status"] == store.STATUS_OK), None)
    vs_previous = fp.differences(previous.get("fingerprint"), row.get("fingerprint")) if previous else []
    vs_baseline = fp.differences(baseline.get("fingerprint"), row.get("fingerprint")) if baseline else []
    shown = {name: value for name, value in row.items() if name not in NOT_SENT}
    shown["sample_kept"] = bool(row.get("samples_ms"))
    return {
        "row": {**shown, "regressed_on": history.regressed_on(row)},
        "series": {name: row.get(name) for name in store.SERIES_KEY},
        "reasons": reasons(row),
        "previous": summary(previous),
        "next": summary(following),
        "baseline": summary(baseline),
        "fingerprint": {
            "values": row.get("fingerprint") or {},
            "not_keyed": list(fp.NOT_KEYED),
            "vs_previous": vs_previous,
            "vs_baseline": vs_baseline,
        },
        "latency": latency(row, earlier),
        "energy": energy(row),
        "evidence": evidence(row),
        "accept": accept_offer(row, vs_previous),
        "airflow_tasks": AIRFLOW_TASKS,
        "mapped_tasks": list(MAPPED_TASKS),
    }


def _delta(
    field: str, label: str, unit: str, better_up: bool, scale: float, a: Mapping[str, Any], b: Mapping[str, Any]
) -> dict:
    first, second = (None if side.get(field) is None else side[field] * scale for side in (a, b))
    entry: dict[str, Any] = {"field": field, "label": label, "unit": unit, "a": first, "b": second}
    if isinstance(first, (int, float)) and isinstance(second, (int, float)):
        entry["delta"] = second - first
        entry["delta_pct"] = (second / first - 1) * 100 if first else None
        entry["better"] = second == first or (second > first) == better_up
    return entry


def throughput_significance(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Each run's bootstrap interval of its figure and Welch's t-test on the per-loop times (scipy), when both
    runs kept their samples."""
    first, second = _samples(a), _samples(b)
    if not first or not second or len(first) < 2 or len(second) < 2:
        return {"why": "both runs need kept per-loop times; at least one has none"}
    from scipy import stats  # type: ignore[import-untyped]

    from convmixer_tasks.measure.loopstats import figure_interval

    interval_a = figure_interval(first, a["batch_size"])
    interval_b = figure_interval(second, b["batch_size"])
    welch = stats.ttest_ind(first, second, equal_var=False)
    return {
        "interval_a": list(interval_a),
        "interval_b": list(interval_b),
        "intervals_overlap": interval_a[0] <= interval_b[1] and interval_b[0] <= interval_a[1],
        "welch_p": float(welch.pvalue),
        "samples": [len(first), len(second)],
    }


def compare_view(url: str, a_id: int, b_id: int) -> dict[str, Any] | str:
    """Two rows side by side, or a message naming the row that does not exist."""
    from convmixer_tasks.evidence.compare import ROW_PREFIX, compare

    rows = {}
    for name, row_id in (("a", a_id), ("b", b_id)):
        row = store.get_row(url, row_id)
        if row is None:
            return f"there is no metrics row {row_id} ({name}); pick rows from the history table"
        rows[name] = row
    a, b = rows["a"], rows["b"]
    try:
        flips: dict[str, Any] = compare(f"{ROW_PREFIX}{a_id}", f"{ROW_PREFIX}{b_id}", url)
    except (ConfigError, EvalError) as exc:  # no stored predictions, or predictions of other images
        flips = {"why": str(exc)}
    return {
        "a": {**(summary(a) or {}), **{name: a.get(name) for name in store.SERIES_KEY}},
        "b": {**(summary(b) or {}), **{name: b.get(name) for name in store.SERIES_KEY}},
        "fingerprint": {
            "a": a.get("fingerprint") or {},
            "b": b.get("fingerprint") or {},
            "differences": fp.differences(a.get("fingerprint"), b.get("fingerprint")),
        },
        "same_series": all(a.get(name) == b.get(name) for name in store.SERIES_KEY),
        "metrics": [_delta(*spec, a, b) for spec in COMPARED_METRICS],
        "throughput": throughput_significance(a, b),
        "flips": flips,
    }
