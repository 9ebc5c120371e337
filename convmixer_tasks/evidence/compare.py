"""``convmixer-tasks compare A B``: which images changed between two evaluations, and is the change significant?

A side is a result folder written by ``convmixer-tasks eval`` (its ``predictions.npz``) or ``row:<id>``, a metrics
row whose predictions the DAG stored in the metrics database.
"""

from __future__ import annotations

from typing import Any

from convmixer_tasks.errors import ConfigError

ROW_PREFIX = "row:"


def load_side(source: str, url: str | None) -> Any:
    """``evidence.Predictions`` of one side (a result folder / predictions file, or ``row:<id>``)."""
    from convmixer_tasks.evidence import predictions as evidence

    if not source.startswith(ROW_PREFIX):
        return evidence.read_predictions(source)
    from convmixer_tasks.metrics import resolve_metrics_url
    from convmixer_tasks.metrics.predictions import load_predictions
    from convmixer_tasks.metrics.url import require_existing_database

    text = source[len(ROW_PREFIX) :]
    if not text.isdigit():
        raise ConfigError(f"{source!r} is not row:<id> with a numeric metrics row id (see metrics-show's 'id')")
    resolved = resolve_metrics_url(url)
    require_existing_database(resolved)
    blob = load_predictions(resolved, int(text))
    if blob is None:
        raise ConfigError(
            f"metrics row {text} has no stored predictions (a row from before evidence was kept, or a failed run); "
            "pick a row whose run was evaluated"
        )
    return evidence.decode(blob, f"predictions of metrics row {text}")


def compare(a: str, b: str, url: str | None = None, classes: int = 10) -> dict[str, Any]:
    """Flips from A to B (right→wrong, wrong→right, first names), McNemar's exact p and the per-class deltas."""
    from convmixer_tasks.evidence import predictions as evidence

    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 0:
        raise ConfigError(f"--classes {classes!r} must be 0 or more: how many per-class deltas to list (default 10)")
    before, after = load_side(a, url), load_side(b, url)
    flips = evidence.flips(before, after, a, b)
    return {
        "a": a,
        "b": b,
        "images": flips.images,
        "top1_a": 100.0 * float(before.correct.mean()),
        "top1_b": 100.0 * float(after.correct.mean()),
        "top1_delta_pt": flips.top1_delta,
        "table": [[flips.both_right, flips.right_to_wrong], [flips.wrong_to_right, flips.both_wrong]],
        "right_to_wrong": flips.right_to_wrong,
        "wrong_to_right": flips.wrong_to_right,
        "right_to_wrong_names": list(flips.right_to_wrong_names),
        "wrong_to_right_names": list(flips.wrong_to_right_names),
        "mcnemar_exact_p": flips.p_value,
        "class_deltas": evidence.class_deltas(before, after, classes),
        "summary": flips.summary(),
    }
