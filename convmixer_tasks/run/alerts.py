"""What a run tells people: which of its rows raise an alert event (``[convmixer] alert_events``), and the one
message per run about them — subject, plain text and HTML — with each row's one-line reason, its change against
the baseline, and links to its run page, the compare view (this run vs its baseline) and the Airflow run.

Typed records in, ``Message`` out; no Airflow import (the DAG hands the message to Airflow's notifiers). The rows
are read from the metrics store (``metrics.reports``), so a gate that failed the task still has its verdicts told.
Messages carry no secret: a URL with credentials in a reason line is masked, and no database URL is written.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote, urlencode

from convmixer_tasks.errors import masked
from convmixer_tasks.run.records import Record
from convmixer_tasks.run.settings import AlertSettings
from convmixer_tasks.status import STATUS_FAILED, STATUS_INCONCLUSIVE, STATUS_REGRESSED

# The metrics page as the Airflow UI embeds it (plugins/convmixer_metrics/plugin.py: URL_ROUTE and URL_PREFIX):
# /plugin/<route> + the page's own path, which the UI hands on to the embedded page.
PAGE_IN_UI = "/plugin/convmixer-metrics/convmixer-metrics"

EVENT_REGRESSED = "regressed"
EVENT_FAILED = "failed"
EVENT_INCONCLUSIVE = "inconclusive"
EVENT_FINGERPRINT = "fingerprint"
EVENT_ACCEPTED = "baseline_accepted"
# The gate's reason lines (gate.py, throughput.py, evidence_gate.py, fidelity.py) by the rule that wrote them.
_RULE_PREFIXES = (
    ("top1 regressed", "accuracy"),
    ("OM diverges from ONNX", "fidelity"),
    ("throughput regressed: a persistent step", "change_point"),
    ("throughput regressed", "throughput"),
)
ENVIRONMENT_CHANGED = "environment changed since run"
R = TypeVar("R", bound=Record)
REASON_LIMIT = 300


def nested(kind: type[R], value: Any) -> R:
    """A record held inside another: ``to_dict`` writes it as plain fields, without its own header."""
    if isinstance(value, dict) and "record" not in value:
        value = {"record": kind.__name__, "version": kind.VERSION, **value}
    return kind.from_dict(value)


class HoldsRecords(Record):
    """A record with tuples of records in it: ``NESTED`` maps such a field to the type of its items."""

    NESTED: ClassVar[dict[str, type[Record]]] = {}

    @classmethod
    def _decode(cls, name: str, value: Any) -> Any:
        if name in cls.NESTED:
            return tuple(nested(cls.NESTED[name], item) for item in value)
        return super()._decode(name, value)


@dataclass(frozen=True)
class AlertRow(Record):
    """One metrics row that raised an event, with what the message says about it."""

    row_id: int
    model: str
    backend: str
    chip: str | None
    batch_size: int
    precision: str | None
    status: str
    events: tuple[str, ...]  # "regressed:<rule>", "failed", "inconclusive", "fingerprint", "baseline_accepted"
    reason: str  # the one line that explains the verdict
    top1: float | None
    baseline_top1: float | None
    throughput: float | None
    baseline_throughput: float | None
    baseline_row_id: int | None  # the series' latest ok row before it: the compare view's other side
    inconclusive_streak: int = 0
    accepted_by: str | None = None


@dataclass(frozen=True)
class RunAlert(HoldsRecords):
    """Everything one message about one DAG run says."""

    NESTED: ClassVar[dict[str, type[Record]]] = {"rows": AlertRow}

    dag_id: str
    run_id: str
    base_url: str  # where people open Airflow; links are absolute under it
    rows: tuple[AlertRow, ...]
    note: str | None = None  # e.g. the outcome of the review


@dataclass(frozen=True)
class Message:
    subject: str
    text: str
    html: str


def rule_of(reason: str) -> str | None:
    """The regression rule a gate reason line reports as fired, or None for a passing/other line."""
    return next((rule for prefix, rule in _RULE_PREFIXES if reason.startswith(prefix)), None)


def _one_line(text: str) -> str:
    text = masked(" ".join(str(text).split()))
    return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 1] + "…"


def reason_line(row: dict[str, Any]) -> str:
    """The line that explains a row's verdict: the fired rule, the failure, the inconclusive judgement, the
    environment change — in that order — else the first reason."""
    reasons = [str(reason) for reason in row.get("gate_reasons") or []]
    status = row.get("status")
    fired = [reason for reason in reasons if rule_of(reason)] if status == STATUS_REGRESSED else []
    unsure = [reason for reason in reasons if "inconclusive" in reason] if status == STATUS_INCONCLUSIVE else []
    changed = [reason for reason in reasons if reason.startswith(ENVIRONMENT_CHANGED)]
    return _one_line(next(iter(fired + unsure + changed + reasons), f"status {status}"))


def row_events(row: dict[str, Any], streak: int, settings: AlertSettings, accepted: bool = False) -> tuple[str, ...]:
    """The events the settings ask to be told that this row raises."""
    reasons = [str(reason) for reason in row.get("gate_reasons") or []]
    events = []
    if row.get("status") == STATUS_REGRESSED:
        rules = {rule for rule in map(rule_of, reasons) if rule} or {"throughput"}  # an unnamed rule: the gate's
        events += [f"{EVENT_REGRESSED}:{rule}" for rule in sorted(rules & settings.regressed_rules)]
    if row.get("status") == STATUS_FAILED and settings.failed:
        events.append(EVENT_FAILED)
    if settings.inconclusive_streak and streak >= settings.inconclusive_streak:
        events.append(EVENT_INCONCLUSIVE)
    if settings.fingerprint and any(reason.startswith(ENVIRONMENT_CHANGED) for reason in reasons):
        events.append(EVENT_FINGERPRINT)
    if accepted and settings.baseline_accepted:
        events.append(EVENT_ACCEPTED)
    return tuple(events)


def alert_row(row: dict[str, Any], baseline: dict[str, Any] | None, streak: int, events: Sequence[str]) -> AlertRow:
    return AlertRow(
        row_id=int(row["id"]),
        model=str(row.get("model_variant")),
        backend=str(row.get("backend")),
        chip=row.get("device"),
        batch_size=int(row["batch_size"]),
        precision=row.get("precision_mode"),
        status=str(row.get("status")),
        events=tuple(events),
        reason=reason_line(row),
        top1=row.get("top1"),
        baseline_top1=row.get("baseline_top1"),
        throughput=row.get("throughput"),
        baseline_throughput=row.get("baseline_throughput"),
        baseline_row_id=None if baseline is None else int(baseline["id"]),
        inconclusive_streak=streak,
        accepted_by=row.get("rebaselined_by"),
    )


def collect(
    url: str, run_id: str, dag_id: str, settings: AlertSettings, base_url: str, accepted: Iterable[int] = ()
) -> RunAlert:
    """The run's rows that raise an event the settings ask for (``accepted``: ids just accepted as baselines)."""
    from convmixer_tasks.metrics.reports import run_rows, series_context

    chosen = set(accepted)
    rows = []
    for row in run_rows(url, run_id):
        baseline, streak = series_context(url, row)
        events = row_events(row, streak, settings, accepted=row["id"] in chosen)
        if events:
            rows.append(alert_row(row, baseline, streak, events))
    return RunAlert(dag_id=dag_id, run_id=run_id, base_url=settings.base_url or base_url, rows=tuple(rows))


# --- links ----------------------------------------------------------------------------------------------------------


def run_page_url(base_url: str, row_id: int) -> str:
    return f"{base_url.rstrip('/')}{PAGE_IN_UI}/run?{urlencode({'id': row_id})}"


def compare_url(base_url: str, baseline_row_id: int, row_id: int) -> str:
    return f"{base_url.rstrip('/')}{PAGE_IN_UI}/compare?{urlencode({'a': baseline_row_id, 'b': row_id})}"


def dag_run_url(base_url: str, dag_id: str, run_id: str) -> str:
    return f"{base_url.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


# --- the message ----------------------------------------------------------------------------------------------------


def _signed(value: float | None, baseline: float | None, unit: str, percent: bool) -> str | None:
    if value is None or baseline is None:
        return None
    if percent:
        return f"{(value / baseline - 1) * 100:+.1f}% ({value:.2f} vs {baseline:.2f} {unit})" if baseline else None
    return f"{value - baseline:+.2f} {unit} ({value:.2f} vs {baseline:.2f})"


def change_line(row: AlertRow) -> str:
    """The row's change against its baseline: throughput in percent, top-1 in points."""
    parts = [
        f"throughput {change}"
        for change in [_signed(row.throughput, row.baseline_throughput, "img/s", percent=True)]
        if change
    ] + [f"top-1 {change}" for change in [_signed(row.top1, row.baseline_top1, "pt", percent=False)] if change]
    return "; ".join(parts) or "no baseline to compare with"


def describe(row: AlertRow) -> str:
    """'convmixer_demo · chip Ascend310P3 · bs 4 · fp16' — what the row is."""
    return f"{row.model} · chip {row.chip or 'unknown'} · bs {row.batch_size} · {row.precision or 'default precision'}"


def _headline(alert: RunAlert) -> str:
    events = sorted({event.split(":")[0] for row in alert.rows for event in row.events})
    return ", ".join(event.replace("_", " ") for event in events)


def subject(alert: RunAlert) -> str:
    models = sorted({row.model for row in alert.rows})
    chips = sorted({row.chip or "unknown chip" for row in alert.rows})
    sizes = sorted({row.batch_size for row in alert.rows})
    return (
        f"[convmixer] {_headline(alert)}: {', '.join(models)} on {', '.join(chips)} "
        f"(bs {', '.join(map(str, sizes))}) in run {alert.run_id}"
    )


def _links(alert: RunAlert, row: AlertRow) -> list[tuple[str, str]]:
    links = [("run page", run_page_url(alert.base_url, row.row_id))]
    if row.baseline_row_id is not None:
        links.append(("compare with baseline", compare_url(alert.base_url, row.baseline_row_id, row.row_id)))
    return links


def render(alert: RunAlert) -> Message:
    """One message about the whole run: a block per affected row, the Airflow run's link once."""
    run_link = dag_run_url(alert.base_url, alert.dag_id, alert.run_id)
    intro = f"ConvMixer validation run {alert.run_id} (DAG {alert.dag_id}): {_headline(alert)}."
    text = [intro, f"Airflow run: {run_link}", ""]
    items = []
    for row in alert.rows:
        events = ", ".join(row.events)
        text += [
            f"* {describe(row)} — {row.status} [{events}]",
            f"  reason: {row.reason}",
            f"  change vs baseline: {change_line(row)}",
            *([f"  accepted by: {row.accepted_by}"] if row.accepted_by else []),
            *(f"  {name}: {url}" for name, url in _links(alert, row)),
            *([] if row.baseline_row_id is not None else ["  compare: no earlier ok run in this series"]),
            "",
        ]
        links = " · ".join(f'<a href="{html.escape(url)}">{html.escape(name)}</a>' for name, url in _links(alert, row))
        items.append(
            f"<li><b>{html.escape(describe(row))}</b> — {html.escape(row.status)} ({html.escape(events)})<br>"
            f"reason: {html.escape(row.reason)}<br>change vs baseline: {html.escape(change_line(row))}<br>"
            + (f"accepted by: {html.escape(row.accepted_by)}<br>" if row.accepted_by else "")
            + f"{links}</li>"
        )
    if alert.note:
        text.append(alert.note)
    body = (
        f"<p>{html.escape(intro)}</p><ul>{''.join(items)}</ul>"
        + (f"<p>{html.escape(alert.note)}</p>" if alert.note else "")
        + f'<p><a href="{html.escape(run_link)}">Airflow run {html.escape(alert.run_id)}</a></p>'
    )
    return Message(
        subject=subject(alert), text="\n".join(text).rstrip() + "\n", html=f"<html><body>{body}</body></html>"
    )


def review_body(alert: RunAlert) -> str:
    """The review request's body (Markdown, as the Required Actions page shows it): the verdicts and links."""
    lines = [f"Run **{alert.run_id}**: {_headline(alert)}.", ""]
    for row in alert.rows:
        page = run_page_url(alert.base_url, row.row_id)
        lines.append(f"- {describe(row)} — **{row.status}**: {row.reason} ([run page]({page}))")
    lines += [
        "",
        "*Accept as the new baseline* records you (and the reason given) on the rows and makes this run the "
        "start of their throughput baseline; *Keep as regression* leaves the verdict as it is.",
    ]
    return "\n".join(lines)
