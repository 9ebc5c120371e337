"""Which of the gate's rules fired on a stored row, read from what the gate stored for each rule.

The gate judges a row by three kinds of rule and leaves a record of each on the row:

- ``throughput``: the noise-aware throughput verdict; its outcome is the ``throughput_check`` column (``regressed``
  when it fired). Rows gated before that column existed carry only the reason line the rule wrote, which starts
  ``throughput regressed``.
- ``top1``: top-1 against the variant's published baseline, and the paired flips (McNemar) against the previous ok
  run and the reference run; no column of their own, each writes a reason line starting ``top1 regressed``.
- ``fidelity``: the compiled artifact against its own ONNX; the breaches are stored in ``evidence["fidelity"]``
  (each also a reason line starting ``OM diverges from ONNX``).

Pure functions over a row dict (``ValidationRun.to_dict()``, ``get_row``, ``history_rows`` with these columns); the
metrics page marks regressions by them and ``rebaseline`` decides what accepting a row means by them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from convmixer_tasks.status import CHECK_REGRESSED, STATUS_REGRESSED

RULE_THROUGHPUT = "throughput"
RULE_TOP1 = "top1"
RULE_FIDELITY = "fidelity"
RULES = (RULE_TOP1, RULE_THROUGHPUT, RULE_FIDELITY)
# The first words of the reason line each rule writes when it fires (gate.evaluate_gate, throughput.judge,
# evidence_gate.paired_reason, fidelity.summarise): a line's start, never a word anywhere in it.
FIRED_PREFIX = {
    RULE_TOP1: "top1 regressed",
    RULE_THROUGHPUT: "throughput regressed",
    RULE_FIDELITY: "OM diverges from ONNX",
}
# What a row must carry for ``fired_rules`` (the columns a query selects).
COLUMNS = ("status", "gate_reasons", "throughput_check", "evidence")


def _reasons(row: Mapping[str, Any]) -> list[str]:
    return [str(reason) for reason in row.get("gate_reasons") or []]


def fired_rules(row: Mapping[str, Any]) -> tuple[str, ...]:
    """The rules that made this row ``regressed``, in ``RULES`` order; () for any other status.

    A regressed row whose record names no rule (written by a gate older than these records) gives (): the page
    then marks no chart rather than guessing.
    """
    if row.get("status") != STATUS_REGRESSED:
        return ()
    reasons = _reasons(row)
    written = {rule for rule, prefix in FIRED_PREFIX.items() if any(line.startswith(prefix) for line in reasons)}
    fired = set()
    if RULE_TOP1 in written:
        fired.add(RULE_TOP1)
    check = row.get("throughput_check")
    if check == CHECK_REGRESSED or (check is None and RULE_THROUGHPUT in written):
        fired.add(RULE_THROUGHPUT)
    fidelity = (row.get("evidence") or {}).get("fidelity") or {}
    if fidelity.get("breaches") or RULE_FIDELITY in written:
        fired.add(RULE_FIDELITY)
    return tuple(rule for rule in RULES if rule in fired)


def line_outcome(line: str) -> str:
    """One reason line's part in the verdict: ``fired`` (a rule that failed), ``held`` (a rule that passed:
    "top1 ok: …", "fidelity ok: …", "top1 flips ok vs …") or ``note`` (context: not gated, inconclusive, an
    environment change, a busy host)."""
    if any(line.startswith(prefix) for prefix in FIRED_PREFIX.values()):
        return "fired"
    words = line.split(":", 1)[0].split()
    if (len(words) in (2, 3) and words[-1] == "ok") or line.startswith(("top1 flips ok", "throughput ok")):
        return "held"
    return "note"
