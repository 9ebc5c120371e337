"""Regression rules: a run's top-1 against its variant's published baseline, its throughput against the median of
the recent ``ok`` runs on the same model, backend, device and batch size (``pending`` rows, not gated yet, never
count).

``evaluate_gate`` is pure (numbers in, decision out); ``apply_gate`` reads the recorded row and its history from the
metrics store, stores the decision on the row, and only then raises ``RegressionError`` — so a regressed run is on
record (and shown in the UI) even though its DAG task fails.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import statistics
from dataclasses import dataclass
from pathlib import Path

from convmixer_tasks.defaults import (
    DEFAULT_HISTORY,
    DEFAULT_SIGNIFICANCE,
    DEFAULT_THROUGHPUT_DROP_PCT,
    DEFAULT_TOP1_TOLERANCE,
    THROUGHPUT_TOLERANCE_PARAM,
    TOP1_TOLERANCE_PARAM,
)
from convmixer_tasks.errors import ConfigError, MetricsError, RegressionError
from convmixer_tasks.fileio import read_json
from convmixer_tasks.measure import fingerprint as fp
from convmixer_tasks.measure import loopstats, quiet
from convmixer_tasks.metrics import STATUS_FAILED, STATUS_OK, STATUS_REGRESSED, get_run, mask_url, update_status
from convmixer_tasks.metrics.history import figure, throughput_history
from convmixer_tasks.metrics.queries import describe_key
from convmixer_tasks.metrics.schema import STATUS_INCONCLUSIVE
from convmixer_tasks.models import CardError, get_card, package_path
from convmixer_tasks.status import STATUSES
from convmixer_tasks.verdict import throughput as tp


@dataclass
class GateDecision:
    status: str  # "ok", "regressed" or "inconclusive" (throughput too noisy to judge)
    reasons: list[str]  # one line per rule, pass or fail, stored in the row's gate_reasons
    baseline_top1: float | None  # None: the variant has no known baseline, accuracy was not gated
    baseline_throughput: float | None  # median of the history; None: no history
    throughput_check: str | None = None  # the throughput rule's own outcome (metrics.schema.THROUGHPUT_CHECKS)
    throughput_p_value: float | None = None


def known_baseline_top1(variant: str) -> float | None:
    """The top-1 (percent) a model must reach, from its card: the published figure (ImageNet-1k, the guide's
    preprocessing) or, for the demo model, the expected score committed beside it by the demo step (read on
    demand). None when the card has none, or for a name that is no card: the accuracy rule is then skipped."""
    try:
        reference = get_card(variant).reference
    except CardError:
        return None
    if reference.expected_top1_file is not None:
        return _demo_expected_top1(package_path(reference.expected_top1_file))
    return reference.baseline_top1


def _demo_expected_top1(path: Path) -> float | None:
    if not path.is_file():
        return None  # demo model not trained/committed yet: nothing to compare with
    try:
        value = read_json(path)["expected_top1"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{path} has no readable 'expected_top1' ({exc!r}); regenerate the demo model "
            "(convmixer-tasks demo) or restore the committed file"
        ) from exc
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= float(value) <= 100:
        raise ConfigError(f"{path}: expected_top1 must be a percentage 0..100, got {value!r}; regenerate it")
    return float(value)


def _check_settings(top1_tolerance: float, throughput_drop_pct: float) -> None:
    """These come from DAG params; reject values that would make the gate meaningless."""
    if (
        isinstance(top1_tolerance, bool)
        or not isinstance(top1_tolerance, numbers.Real)
        or not math.isfinite(top1_tolerance)
        or not 0 <= top1_tolerance <= 100
    ):
        raise ConfigError(
            f"{TOP1_TOLERANCE_PARAM} must be 0..100 percentage points, got {top1_tolerance!r}; fix that param"
        )
    if (
        isinstance(throughput_drop_pct, bool)
        or not isinstance(throughput_drop_pct, numbers.Real)
        or not 0 <= throughput_drop_pct < 100
    ):
        raise ConfigError(
            f"{THROUGHPUT_TOLERANCE_PARAM} must be a percentage in [0, 100), got {throughput_drop_pct!r}; "
            "fix that param"
        )


def _below(value: float, floor: float) -> bool:
    """``value < floor`` that treats a value equal to the floor up to float rounding as passing (81.37 - 0.5)."""
    return value < floor and not math.isclose(value, floor, rel_tol=1e-9, abs_tol=1e-9)


def evaluate_gate(
    top1: float,
    throughput: float | None,
    baseline_top1: float | None,
    previous_throughputs: list[float],
    *,
    variant: str = "this variant",
    top1_tolerance: float = DEFAULT_TOP1_TOLERANCE,
    throughput_drop_pct: float = DEFAULT_THROUGHPUT_DROP_PCT,
) -> GateDecision:
    """Apply both rules. Regressed when top1 < baseline_top1 - tolerance, or throughput < median(previous) ×
    (1 - drop%); a value exactly at the limit passes. ``previous_throughputs`` are the recent ok runs only."""
    _check_settings(top1_tolerance, throughput_drop_pct)
    regressed = False
    reasons: list[str] = []

    if baseline_top1 is None:
        reasons.append(f"top1 not gated: no known top-1 baseline for {variant} (pass baseline_top1 to gate it)")
    else:
        floor = baseline_top1 - top1_tolerance
        if _below(top1, floor):
            regressed = True
            reasons.append(
                f"top1 regressed: {top1:.3f} < {floor:.3f} "
                f"(baseline {baseline_top1:.3f} - tolerance {top1_tolerance:g})"
            )
        else:
            reasons.append(
                f"top1 ok: {top1:.3f} >= {floor:.3f} (baseline {baseline_top1:.3f} - tolerance {top1_tolerance:g})"
            )

    median = statistics.median(previous_throughputs) if previous_throughputs else None
    if throughput is None:
        reasons.append("throughput not gated: this run measured none")
    elif median is None:
        reasons.append("throughput ok: no history (no earlier ok run on this model, backend, device and batch size)")
    else:
        floor = median * (1 - throughput_drop_pct / 100)
        verdict = f"(median of the last {len(previous_throughputs)} ok runs {median:.2f} - {throughput_drop_pct:g}%)"
        if _below(throughput, floor):
            regressed = True
            reasons.append(f"throughput regressed: {throughput:.2f} < {floor:.2f} {verdict}")
        else:
            reasons.append(f"throughput ok: {throughput:.2f} >= {floor:.2f} {verdict}")

    return GateDecision(
        status=STATUS_REGRESSED if regressed else STATUS_OK,
        reasons=reasons,
        baseline_top1=baseline_top1,
        baseline_throughput=median,
    )


def apply_gate(
    url: str,
    run_id: str,
    batch_size: int,
    backend: str,
    *,
    top1_tolerance: float = DEFAULT_TOP1_TOLERANCE,
    throughput_drop_pct: float = DEFAULT_THROUGHPUT_DROP_PCT,
    history: int = DEFAULT_HISTORY,
    baseline_top1: float | None = None,
    significance: float = DEFAULT_SIGNIFICANCE,
    max_cv_pct: float = tp.DEFAULT_MAX_CV_PCT,
    alpha: float = tp.DEFAULT_ALPHA,
    precision_mode: str | None = None,
    runs: int = tp.DEFAULT_RUNS,
    model_variant: str | None = None,
    chip: str | None = None,
) -> GateDecision:
    """Gate a recorded row: store the decision (status, reasons, baselines) on it, then raise RegressionError
    if it regressed. ``baseline_top1`` overrides the variant's known baseline. ``precision_mode`` and
    ``model_variant`` name the row of a run mapped over several modes or models (None: the run × batch size's only
    row).

    The row is normally ``pending`` (as recorded); an ``ok``/``regressed`` row (a retried gate task) is decided
    again. A ``failed`` row is refused.

    Hook point for the DAG: the RegressionError fails the gate task, so Airflow's notifications apply. Give that
    task an ``on_failure_callback`` (or a notifier) to alert; the row already says ``regressed``, so the callback
    only needs to notify, not write. A retry would reach the same decision, so the DAG turns a RegressionError
    into an AirflowFailException (no retry) and keeps retries for other failures (an unreachable DB).
    """
    row = get_run(url, run_id, batch_size, backend, precision_mode, model_variant, chip)
    # the model leads the messages below (``variant``); named here only for a row that is not there
    what = describe_key(
        run_id, batch_size, backend, precision_mode if row is None else row["precision_mode"], model_variant
    )
    if row is not None:
        what = describe_key(run_id, batch_size, backend, row["precision_mode"])
    if row is None:
        raise MetricsError(f"no metrics row for {what} in {mask_url(url)}; record_run it before gating")
    if row["status"] == STATUS_FAILED:  # the constraint guarantees pending/ok/regressed rows have top1
        raise MetricsError(
            f"{what} is recorded as {STATUS_FAILED!r}, so there is nothing to gate (gating would "
            "overwrite the failure); fix the failed step and rerun"
        )
    variant = row["model_variant"]
    if baseline_top1 is None:
        baseline_top1 = known_baseline_top1(variant)
    accuracy = evaluate_gate(
        row["top1"],
        None,
        baseline_top1,
        [],
        variant=variant,
        top1_tolerance=top1_tolerance,
        throughput_drop_pct=throughput_drop_pct,
    )
    verdict, lines = judge_throughput(
        url, row, throughput_drop_pct, history, max_cv_pct=max_cv_pct, alpha=alpha, runs=runs
    )
    reasons = [reason for reason in accuracy.reasons if reason.startswith("top1")] + lines
    if STATUS_REGRESSED in (accuracy.status, verdict.status):
        status = STATUS_REGRESSED
    else:
        status = STATUS_INCONCLUSIVE if verdict.status == STATUS_INCONCLUSIVE else STATUS_OK
    decision = GateDecision(
        status=status,
        reasons=reasons,
        baseline_top1=baseline_top1,
        baseline_throughput=verdict.baseline,
        throughput_check=verdict.check,
        throughput_p_value=verdict.p_value,
    )
    # The evidence rules (fidelity, paired flips + McNemar) see the stored predictions; see evidence_gate.
    from convmixer_tasks.metrics.predictions import store_evidence
    from convmixer_tasks.verdict.evidence_gate import judge

    if isinstance(significance, bool) or not isinstance(significance, numbers.Real) or not 0 < significance <= 1:
        raise ConfigError(f"top1_significance must be a p-value threshold in (0, 1], got {significance!r}")
    judged = judge(url, row, top1_tolerance=top1_tolerance, significance=significance)
    decision.reasons.extend(judged.reasons)
    if judged.regressed:
        decision.status = STATUS_REGRESSED
    store_evidence(
        url,
        run_id,
        batch_size,
        backend,
        judged.values,
        precision_mode=row["precision_mode"],
        model_variant=row["model_variant"],
        chip=row["chip"],
    )
    # Stored first: the row must say 'regressed' even though the task is about to fail.
    update_status(
        url,
        run_id,
        batch_size,
        backend,
        decision.status,
        decision.reasons,
        baseline_top1=decision.baseline_top1,
        baseline_throughput=decision.baseline_throughput,
        throughput_check=decision.throughput_check,
        throughput_p_value=decision.throughput_p_value,
        precision_mode=row["precision_mode"],
        model_variant=row["model_variant"],
        chip=row["chip"],
    )
    if decision.status == STATUS_REGRESSED:
        raise RegressionError(
            f"{variant} {what} on {row['device'] or 'unknown device'} regressed: {'; '.join(decision.reasons)}. "
            f"Stored as 'regressed' in {mask_url(url)}; find the cause (model, toolkit, device), or if the change "
            f"is intended, rerun with a larger DAG param {TOP1_TOLERANCE_PARAM} / {THROUGHPUT_TOLERANCE_PARAM}",
            decisions=[decision],
        )
    return decision


def judge_throughput(
    url: str,
    row: dict,
    tolerance_pct: float,
    history: int,
    *,
    max_cv_pct: float = tp.DEFAULT_MAX_CV_PCT,
    alpha: float = tp.DEFAULT_ALPHA,
    runs: int = tp.DEFAULT_RUNS,
) -> tuple[tp.Judgement, list[str]]:
    """The noise-aware throughput verdict for a stored row against its same-fingerprint history, plus a line naming
    an environment change since the series' last run, and one flagging a busy host."""
    # one more: the two-run rule leaves the previous run out; NOISE_RUNS: the noise is estimated over a longer stretch
    found = throughput_history(url, row, max(history + 1, tp.NOISE_RUNS))
    samples = loopstats.unpack_samples(row["samples_ms"]) if row.get("samples_ms") else None
    value = figure(row)  # the robust figure when the row kept samples (see throughput's docstring)
    spread = loopstats.sample_stats(samples, row["batch_size"], 0) if samples else None
    measured = tp.Measured(
        value,
        tuple(samples) if samples else None,
        row["batch_size"],
        spread.robust_cv if spread else row.get("latency_robust_cv"),
        row.get("measurements") or 1,
    )
    measured = dataclasses.replace(measured, confirmations=confirmations_of(row.get("fingerprint")))
    previous = None
    if found.previous is not None and found.previous["figure"]:
        previous = tp.Previous(
            found.previous["run_id"],
            found.previous["figure"],
            found.previous["check"],
            found.previous["status"] == STATUS_OK,
            confirmations_of(found.previous["fingerprint"]),
        )
    key = row.get("fingerprint_key")
    note = "same-fingerprint ok runs" if key else "ok runs without a fingerprint"
    judgement = tp.judge(
        measured,
        found.figures[:history],
        previous,
        tolerance_pct=tolerance_pct,
        max_cv_pct=max_cv_pct,
        alpha=alpha,
        runs=runs,
        history_note=note,
        pair_history=found.figures[1 : history + 1] if previous is not None and previous.in_history else None,
        noise_history=found.figures,
    )
    busy, share = quiet.host_contention(row.get("fingerprint"))
    # A host loaded to L on C cores gives the benchmark about C/L of its CPU: a drop that fair share explains is not
    # judged; a bigger one (an artifact 1000x slower) is still a regression, with the load noted.
    floor = judgement.baseline * (1 - tolerance_pct / 100) if judgement.baseline else None
    if busy and judgement.status == STATUS_REGRESSED and value and floor and value * share >= floor:
        judgement = tp.Judgement(
            STATUS_INCONCLUSIVE,
            tp.CHECK_NOISY,
            f"throughput inconclusive: {judgement.reason.split(': ', 1)[1]}, but {busy} explains a drop to "
            f"1/{share:.2f}",
            judgement.baseline,
            judgement.p_value,
        )
    judgement, steps = _change_points(url, row, judgement, tolerance_pct, alpha)
    lines = [judgement.reason, *steps]
    if not samples:
        lines.append("throughput samples: none kept (the tool reported no per-loop list); judged on its figure only")
    if busy:
        lines.append(f"throughput measured on a busy host: {busy}")
    device_busy = quiet.device_warning(row.get("fingerprint"))
    if device_busy:
        lines.append(device_busy)
    last = found.last_of_series
    if last is not None and last["fingerprint_key"] != key:
        changes = "; ".join(fp.differences(last["fingerprint"], row.get("fingerprint"))) or "fingerprint changed"
        delta = ""
        if found.last_fingerprint_figures and value:
            delta = f": throughput {(value / statistics.median(found.last_fingerprint_figures) - 1) * 100:+.1f}%"
            if found.last_fingerprint_top1 and row.get("top1") is not None:
                delta += f", top-1 {row['top1'] - statistics.median(found.last_fingerprint_top1):+.2f}"
            delta += f" vs the previous environment's {len(found.last_fingerprint_figures)} ok runs"
        lines.append(f"environment changed since run {last['run_id']}: {changes}{delta}")
    if found.other_fingerprints and len(found.figures) < history:
        lines.append(f"throughput history: {found.other_fingerprints} ok runs of other fingerprints not compared")
    return judgement, lines


def confirmations_of(fingerprint: dict | None) -> tuple[float, ...]:
    """The figures of the measurements a suspect run took to confirm itself (kept with its measurement record)."""
    values = (fingerprint or {}).get(fp.CONFIRMATIONS) or ()
    return tuple(float(value) for value in values if isinstance(value, (int, float)) and value > 0)


def _change_points(
    url: str, row: dict, judgement: tp.Judgement, tolerance_pct: float, alpha: float
) -> tuple[tp.Judgement, list[str]]:
    """Store the series' change points as of this row; lines for the ones found at it; and the verdict turned into
    a regression when the newest is a persistent drop beyond the tolerance that no run was flagged for."""
    from convmixer_tasks.measure import changepoints as cp
    from convmixer_tasks.metrics.changes import update_change_points

    if row.get("throughput") is None:
        return judgement, []
    detected = update_change_points(url, row)
    lines = [
        f"change point: throughput {point.magnitude_pct:+.1f}% from run {point.start_run_id} "
        f"({point.before_value:.2f} -> {point.after_value:.2f}, Welch p={point.p_value:.2g}"
        + (f"; {'; '.join(point.fingerprint_changes)})" if point.fingerprint_changes else ")")
        for point in detected.found
        if point.detected_row_id == row["id"]
    ]
    drop = cp.persistent_drop(detected.steps, detected.statuses, tolerance_pct, alpha)
    if drop is not None and judgement.status == STATUS_OK and judgement.check != tp.CHECK_UNJUDGED:
        start = detected.found[-1]  # found is aligned with steps: the newest step's stored point
        judgement = tp.Judgement(
            STATUS_REGRESSED,
            tp.CHECK_REGRESSED,
            f"throughput regressed: a persistent step since run {start.start_run_id}, {drop.before:.2f} -> "
            f"{drop.after:.2f} ({drop.magnitude_pct:+.1f}% beyond -{tolerance_pct:g}%; change point "
            f"p={drop.p_value:.2g} x {len(detected.statuses)} positions < {alpha:g}) though no single run was flagged",
            judgement.baseline,
            drop.p_value,
        )
    return judgement, lines


def short_reason(row: dict) -> str:
    """A row's verdict in a few words for the closing tables (``metrics-show``, ``run --record``, the demo): why it
    got its status, and for an inconclusive row what to do. The full lines stay in ``gate_reasons``."""
    import re

    status, check = row.get("status"), row.get("throughput_check")
    reasons = list(row.get("gate_reasons") or [])
    busy, _ = quiet.host_contention(row.get("fingerprint"))
    busy_note = f"busy host: {busy}" if busy else ""
    if status == "pending":
        return "not gated yet"
    if status not in STATUSES:  # a display status such as run's "not gated (--record)": no verdict to explain
        return ""
    if status == STATUS_FAILED:  # the first line says which task failed and why (rows.failure_reason)
        return str(reasons[0]) if reasons else "the run failed; see its task log"
    if status == STATUS_REGRESSED:
        heads = [line.split(":")[0] for line in reasons if "regressed" in line.split(":")[0]]
        text = "; ".join(heads) or "regressed; see gate_reasons"
    elif status == STATUS_INCONCLUSIVE:
        if busy:
            return f"not judged, {busy_note}; rerun when the host is quiet"
        cv = row.get("latency_robust_cv")
        spread = f" (robust per-loop CV {cv:.0%})" if isinstance(cv, (int, float)) else ""
        return f"too noisy to judge{spread}; {tp.NOISY_ADVICE}"
    elif check == tp.CHECK_UNJUDGED:
        lines = (line for line in reasons if "not judged" in line)
        found = next((re.search(r"only (\d+) .*\(need (\d+)\)", line) for line in lines), None)
        text = f"ok; throughput not judged yet ({found[1]} of {found[2]} runs of history)" if found else "ok"
    elif check == tp.CHECK_BELOW:
        text = "ok; below the floor, not yet clear (a second such run decides)"
    else:
        value, baseline = figure(row), row.get("baseline_throughput")
        text = f"ok: {(value / baseline - 1) * 100:+.1f}% vs history median" if value and baseline else "ok"
    return f"{text}; {busy_note}" if busy_note else text
