"""The zoo's digest over a period (weekly by ``[convmixer] digest_days``): per model × chip × batch size × precision,
the latest verdict, the change over the period, open regressions and who accepted which run as a baseline.

``build`` reads the metrics store; ``render`` makes the message (sent by the digest DAG through the same notifier
as the alerts); the metrics page shows ``build``'s records as its "Digest" section.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from convmixer_tasks.run.alerts import (
    HoldsRecords,
    Message,
    change_line,
    compare_url,
    masked,
    reason_line,
    run_page_url,
)
from convmixer_tasks.run.records import Record
from convmixer_tasks.status import STATUS_REGRESSED


@dataclass(frozen=True)
class Acceptance(Record):
    row_id: int
    run_id: str
    by: str | None
    at: str | None
    reason: str | None


@dataclass(frozen=True)
class DigestLine(HoldsRecords):
    """One series (model, backend, chip, precision, batch size) over the period."""

    NESTED: ClassVar[dict[str, type[Record]]] = {"accepted": Acceptance}

    model: str
    backend: str
    chip: str | None
    precision: str | None
    batch_size: int
    runs: int
    latest_row_id: int
    latest_status: str
    latest_reason: str
    first_throughput: float | None  # the series' last run before the period (else its first in it)
    latest_throughput: float | None
    first_top1: float | None
    latest_top1: float | None
    open_regression: bool  # its latest run is regressed
    regressions: int  # regressed runs in the period
    accepted: tuple[Acceptance, ...]
    first_row_id: int | None = None


@dataclass(frozen=True)
class Digest(HoldsRecords):
    NESTED: ClassVar[dict[str, type[Record]]] = {"lines": DigestLine}

    since: str
    until: str
    lines: tuple[DigestLine, ...]


def _series(row: dict[str, Any]) -> tuple:
    return row["model_variant"], row["backend"], row.get("device"), row.get("precision_mode"), row["batch_size"]


def build(url: str, until: datetime, days: int) -> Digest:
    """The digest of the ``days`` before ``until``."""
    from convmixer_tasks.metrics.reports import period_rows, row_before

    since = until - timedelta(days=days)
    grouped: dict[tuple, list[dict[str, Any]]] = {}
    for row in period_rows(url, since, until):  # latest run first
        grouped.setdefault(_series(row), []).append(row)
    lines = []
    for key, rows in sorted(grouped.items(), key=lambda item: (*(str(part or "") for part in item[0][:4]), item[0][4])):
        latest, oldest = rows[0], rows[-1]
        before = row_before(url, oldest) or oldest  # the change is measured from the run before the period
        lines.append(
            DigestLine(
                model=key[0],
                backend=key[1],
                chip=key[2],
                precision=key[3],
                batch_size=key[4],
                runs=len(rows),
                latest_row_id=latest["id"],
                latest_status=latest["status"],
                latest_reason=reason_line(latest),
                first_throughput=before.get("throughput"),
                latest_throughput=latest.get("throughput"),
                first_top1=before.get("top1"),
                latest_top1=latest.get("top1"),
                open_regression=latest["status"] == STATUS_REGRESSED,
                regressions=sum(row["status"] == STATUS_REGRESSED for row in rows),
                accepted=tuple(
                    Acceptance(
                        row["id"],
                        row["run_id"],
                        row["rebaselined_by"],
                        row["rebaselined_at"],
                        masked(row["rebaseline_reason"] or ""),
                    )
                    for row in rows
                    if row.get("rebaselined_at")
                ),
                first_row_id=before["id"] if before["id"] != latest["id"] else None,
            )
        )
    return Digest(since=since.isoformat(), until=until.isoformat(), lines=tuple(lines))


def _change(line: DigestLine) -> str:
    from convmixer_tasks.run.alerts import AlertRow

    as_row = AlertRow(
        row_id=line.latest_row_id, model=line.model, backend=line.backend, chip=line.chip,
        batch_size=line.batch_size, precision=line.precision, status=line.latest_status, events=(),
        reason=line.latest_reason, top1=line.latest_top1, baseline_top1=line.first_top1,
        throughput=line.latest_throughput, baseline_throughput=line.first_throughput, baseline_row_id=None,
    )  # fmt: skip
    return change_line(as_row).replace("no baseline to compare with", "no earlier run to compare with")


def _name(line: DigestLine) -> str:
    return f"{line.model} · chip {line.chip or 'unknown'} · bs {line.batch_size} · {line.precision or 'default'}"


def render(digest: Digest, base_url: str) -> Message:
    open_count = sum(line.open_regression for line in digest.lines)
    subject = (
        f"[convmixer] digest {digest.since[:10]} – {digest.until[:10]}: {len(digest.lines)} series, "
        f"{open_count} open regression{'s' if open_count != 1 else ''}"
    )
    text = [f"ConvMixer validation digest, {digest.since[:16]} to {digest.until[:16]} UTC.", ""]
    cells = []
    if not digest.lines:
        text.append("No runs in this period.")
    for line in digest.lines:
        page = run_page_url(base_url, line.latest_row_id)
        compare = compare_url(base_url, line.first_row_id, line.latest_row_id) if line.first_row_id else None
        accepted = [
            f"row {one.row_id} (run {one.run_id}) by {one.by} at {(one.at or '')[:16]}: {one.reason}"
            for one in line.accepted
        ]
        text += [
            f"* {_name(line)} — latest {line.latest_status} ({line.runs} run{'s' if line.runs != 1 else ''})",
            f"  latest reason: {line.latest_reason}",
            f"  change over the period: {_change(line)}",
            f"  regressions: {line.regressions}{' (open)' if line.open_regression else ''}",
            *(f"  accepted: {entry}" for entry in accepted),
            f"  run page: {page}",
            *([f"  compare over the period: {compare}"] if compare else []),
            "",
        ]
        cells.append(
            "<tr>"
            + "".join(
                f"<td>{value}</td>"
                for value in (
                    html.escape(_name(line)),
                    f'<a href="{html.escape(page)}">{html.escape(line.latest_status)}</a>',
                    html.escape(_change(line)),
                    f"{line.regressions}{' (open)' if line.open_regression else ''}",
                    "<br>".join(html.escape(entry) for entry in accepted) or "—",
                )
            )
            + "</tr>"
        )
    header = "".join(f"<th>{name}</th>" for name in ("series", "latest", "change", "regressions", "accepted"))
    body = f"<p>{html.escape(text[0])}</p>" + (
        f"<table><tr>{header}</tr>{''.join(cells)}</table>" if cells else "<p>No runs in this period.</p>"
    )
    return Message(subject=subject, text="\n".join(text).rstrip() + "\n", html=f"<html><body>{body}</body></html>")
