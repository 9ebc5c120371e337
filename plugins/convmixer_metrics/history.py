"""What the page derives from stored rows: when a run ran, which gate rule fired, what changed in its environment.

Pure functions over the store's row dicts (``ValidationRun.to_dict()`` or ``metrics.history_rows``), so the
table, the charts and the tests share one reading of the data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from convmixer_tasks import metrics
from convmixer_tasks.metrics.rules import RULE_THROUGHPUT, RULE_TOP1, fired_rules, line_outcome
from convmixer_tasks.status import STATUS_OK

# The fields that describe where a run ran, with the label the page shows. A change in any of them between two
# consecutive runs of one model on one backend is marked on the charts and in the table. One line per field.
ENV_FIELDS = {"device": "device", "toolkit_version": "toolkit"}
# The charted metrics, named as the gate's rules for them are (metrics.rules).
GATED_METRICS = (RULE_TOP1, RULE_THROUGHPUT)


def ran_at(row: Mapping[str, Any]) -> str | None:
    """When the run actually ran (ISO-8601), as the store computes it (``ValidationRun.ran_at``)."""
    return row.get("ran_at")


def regressed_on(row: Mapping[str, Any]) -> list[str]:
    """The charted metrics whose gate rule fired for this row (``metrics.rules.fired_rules``); [] unless it is
    ``regressed``. A row that regressed on fidelity alone is marked on neither chart."""
    fired = fired_rules(row)
    return [metric for metric in GATED_METRICS if metric in fired]


def deciding(row: Mapping[str, Any]) -> list[str]:
    """The reason lines that decided the row's status, for the table and the tooltip: the rules that fired, or
    (none fired: an inconclusive, failed or ok row) the notes that say why, never the rules that held. An operator's
    acceptance is shown apart (its own columns), so its line is left out."""
    lines = [str(line) for line in row.get("gate_reasons") or [] if not str(line).startswith("rebaselined by ")]
    fired = [line for line in lines if line_outcome(line) == "fired"]
    if fired or row.get("status") == STATUS_OK:
        return fired
    return [line for line in lines if line_outcome(line) == "note"]


def _lineage(row: Mapping[str, Any]) -> tuple:
    """Runs compared for environment changes: the same model on the same backend, any batch size."""
    return row.get("model_variant"), row.get("backend")


def environment_changes(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every run whose environment differs from the previous run (by ``ran_at``) of its model on its backend.

    One entry per run (not per batch size): ``{"run_id", "model_variant", "backend", "ran_at", "fields":
    {field: [before, after]}}``, oldest first. A run that does not know a field (None) is skipped for that field:
    the next run that knows it is compared with the last run that did.
    """
    runs: dict[tuple, dict[str, Any]] = {}
    for row in rows:  # one entry per run × lineage; batch sizes of one run share their environment
        runs.setdefault((*_lineage(row), row.get("run_id")), dict(row))
    known: dict[tuple, dict[str, Any]] = {}  # per lineage, the last known value of each field
    changes = []
    for run in sorted(runs.values(), key=lambda r: (ran_at(r) or "", r.get("run_id") or "")):
        before = known.setdefault(_lineage(run), {})
        fields = {
            name: [before[name], run[name]]
            for name in ENV_FIELDS
            if run.get(name) is not None and before.get(name) is not None and before[name] != run[name]
        }
        before.update({name: run[name] for name in ENV_FIELDS if run.get(name) is not None})
        if fields:
            changes.append(
                {
                    "run_id": run.get("run_id"),
                    "model_variant": run.get("model_variant"),
                    "backend": run.get("backend"),
                    "ran_at": ran_at(run),
                    "fields": fields,
                }
            )
    return changes


def _change_key(row: Mapping[str, Any]) -> tuple:
    return row.get("run_id"), row.get("model_variant"), row.get("backend")


def annotate_all(rows: Iterable[Mapping[str, Any]], changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row plus what the page shows about it: ``ran_at``, ``regressed_on`` and ``env_changed`` ({field:
    value before}) when its run changed the environment."""
    changed = {
        _change_key(change): {name: before for name, (before, _after) in change["fields"].items()} for change in changes
    }
    return [
        {
            **row,
            "ran_at": ran_at(row),
            "regressed_on": regressed_on(row),
            "deciding": deciding(row),
            "env_changed": changed.get(_change_key(row), {}),
        }
        for row in rows
    ]


def annotate(row: Mapping[str, Any], changes: list[dict[str, Any]]) -> dict[str, Any]:
    """``annotate_all`` for one row."""
    return annotate_all([row], changes)[0]


# What a chart point carries: the page's tooltip, markers and links need no more.
POINT_FIELDS = (
    "id",
    "run_id",
    "dag_id",
    "ran_at",
    "status",
    "top1",
    "throughput",
    "baseline_top1",
    "baseline_throughput",
    "gate_reasons",
    "regressed_on",
    "deciding",
)


# One series: a model at one batch size on one backend, device and precision (never two precisions in one line), as
# the store defines it for a row's neighbours.
SERIES_KEY = metrics.SERIES_KEY


def _series_key(row: Mapping[str, Any]) -> tuple:
    return tuple(row.get(name) for name in SERIES_KEY)


def _sortable(key: tuple) -> tuple:
    return tuple("" if part is None else str(part) for part in key)


def chart_series(rows: Iterable[Mapping[str, Any]], every_row: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One series per model × batch size × backend × device × precision, points oldest first by ``ran_at``.

    Each series gets a ``slot``: its place among all the series in ``every_row`` (the unfiltered history), so the
    page can give a series the same colour whatever the filters.
    """
    slots = {key: slot for slot, key in enumerate(sorted({_series_key(row) for row in every_row}, key=_sortable))}
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(_series_key(row), []).append(row)
    series = []
    for key, points in sorted(groups.items(), key=lambda item: _sortable(item[0])):
        series.append(
            {
                **dict(zip(SERIES_KEY, key, strict=True)),
                "slot": slots.get(key, len(slots)),
                "points": [
                    {name: point.get(name) for name in POINT_FIELDS}
                    for point in sorted(points, key=lambda p: (p["ran_at"] or "", p.get("run_id") or ""))
                ],
            }
        )
    return series
