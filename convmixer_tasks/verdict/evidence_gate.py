"""The gate's evidence rules for one recorded row: the artifact's fidelity to its ONNX, and the paired accuracy
test against (a) the previous ``ok`` run on the same model, backend, precision and batch size and (b) the reference
run (the ONNX in fp32 on ONNX Runtime, same checkpoint).

A top-1 drop beyond the tolerance is a regression only when McNemar's exact test on the paired images says it is
not noise (p below ``significance``); otherwise the reason says "within noise" with the p-value — reported, not
silently passed. Pairing runs of different images is refused (an error, so the row never becomes ``ok``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from convmixer_tasks.errors import MetricsError


@dataclass
class EvidenceDecision:
    regressed: bool = False
    reasons: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)  # for metrics.predictions.store_evidence


def paired_reason(
    label: str, other_run: str, flips: Any, top1_tolerance: float, significance: float
) -> tuple[bool, str]:
    """(regressed, reason) for one paired comparison; ``flips`` is an ``evidence.Flips``."""
    drop = -flips.top1_delta
    text = f"vs {label} {other_run}: {flips.summary()}"
    if drop > top1_tolerance and flips.p_value < significance:
        return True, f"top1 regressed {text}; drop {drop:.3f} > {top1_tolerance:g} pt and p < {significance:g}"
    if drop > top1_tolerance:
        return False, f"top1 drop within noise {text}; p >= {significance:g}, so not a regression"
    return False, f"top1 flips ok {text}"


def judge(url: str, row: dict[str, Any], *, top1_tolerance: float, significance: float) -> EvidenceDecision:
    from convmixer_tasks.evidence import predictions as evidence
    from convmixer_tasks.metrics.predictions import load_predictions, previous_ok_row, reference_row

    decision = EvidenceDecision()
    stored = row.get("evidence") or {}
    fidelity = stored.get("fidelity")
    if fidelity:
        if fidelity["breaches"]:
            decision.regressed = True
            decision.reasons.extend(fidelity["breaches"])
        else:
            decision.reasons.append(
                f"fidelity ok: min cosine {fidelity['min_cosine']:.5f}, max KL {fidelity['max_kl']:.2e}, top-1 "
                f"agreement {fidelity['top1_agreement']:.4f} on {fidelity['images']} images vs the ONNX in fp32"
            )
    blob = load_predictions(url, row["id"])
    if blob is None:
        decision.reasons.append("flips not computed: this row has no stored per-image predictions")
        return decision
    mine = evidence.decode(blob, f"predictions of run {row['run_id']}")
    merged = dict(stored)
    for label, other, column, key in (
        ("previous ok run", previous_ok_row(url, row), "flips_p_value", "flips_previous"),
        ("reference run (ONNX fp32 on ONNX Runtime)", reference_row(url, row), "reference_p_value", "flips_reference"),
    ):
        if other is None:
            decision.reasons.append(f"no {label} with predictions on these images to pair with")
            continue
        other_blob = load_predictions(url, other["id"])
        if other_blob is None:
            raise MetricsError(f"the predictions of run {other['run_id']} vanished while gating; rerun the gate")
        theirs = evidence.decode(other_blob, f"predictions of run {other['run_id']}")
        # a different image set under the same image count is a swapped dataset: EvalError, the row is not gated
        flips = evidence.flips(theirs, mine, f"run {other['run_id']}", f"run {row['run_id']}")
        regressed, reason = paired_reason(label, other["run_id"], flips, top1_tolerance, significance)
        decision.regressed |= regressed
        decision.reasons.append(reason)
        decision.values[column] = flips.p_value
        merged[key] = {
            "run_id": other["run_id"],
            "batch_size": other["batch_size"],
            "table": [[flips.both_right, flips.right_to_wrong], [flips.wrong_to_right, flips.both_wrong]],
            "right_to_wrong": flips.right_to_wrong,
            "wrong_to_right": flips.wrong_to_right,
            "p_value": flips.p_value,
            "top1_delta": flips.top1_delta,
            "right_to_wrong_names": list(flips.right_to_wrong_names),
            "wrong_to_right_names": list(flips.wrong_to_right_names),
            "class_deltas": evidence.class_deltas(theirs, mine),
        }
    decision.values["evidence"] = merged
    return decision
