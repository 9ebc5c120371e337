"""How `convmixer-tasks` prints a result: for people by default, for programs on request.

The choices and default are Airflow CLI's ``--output`` (table, json, yaml, plain) so both CLIs answer to the same
habit; ``metrics-show`` adds csv (the UI's export, same columns). ``table``/``plain`` are summaries — a result's
scalar figures as aligned ``key  value`` lines and metrics rows as a compact table — while ``json``/``yaml`` carry
the whole result. Scripts, tests and the DAG read json only; the human forms may change.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from convmixer_tasks.errors import ConfigError
from convmixer_tasks.fileio import to_jsonable

OUTPUT_FORMATS = ("table", "json", "yaml", "plain")  # Airflow CLI's ARG_OUTPUT choices; "table" is its default
ROWS_FORMATS = (*OUTPUT_FORMATS, "csv")
DEFAULT_FORMAT = "table"
# The metrics row in one line: what a person compares between runs (the rest is in json / the UI).
COMPACT_COLUMNS = (
    ("run", "run_id"),
    ("batch", "batch_size"),
    ("backend", "backend"),
    ("precision", "precision_mode"),  # a run may map over several: without it two rows look alike
    ("top-1 %", "top1"),
    ("top-5 %", "top5"),
    ("img/s", "throughput"),  # ais_bench's figure: 1000 * batch / mean per-loop time, pure inference
    ("robust img/s", "throughput_robust"),  # 1000 * batch / median per-loop time: the figure the verdict judges
    ("e2e img/s", "e2e_throughput"),  # images over preprocess + infer + evaluate wall time
    ("J/img", "energy_j_per_image"),
    ("verdict", "status"),
    ("why", "reason"),  # gate.short_reason: computed from the row, not a column
)
_MAX_INLINE_ITEMS = 4  # longer lists (latency samples, tool argv) are counted, not printed


def check_format(output: str, gives_rows: bool) -> None:
    """CSV is a table of metrics rows: refuse it (before any work) for a command whose result is not one."""
    if output == "csv" and not gives_rows:
        raise ConfigError("--output csv is for metrics rows (metrics-show); use json, yaml, table or plain here")


def render(result: Any, output: str = DEFAULT_FORMAT) -> str:
    """``result`` (a step's dataclass, or a dict of them) as text in the ``--output`` format ``output``.

    A result with a ``summary_table()`` (header, rows) shows as that table in the human formats.
    """
    if output in ("table", "plain") and hasattr(result, "summary_table"):
        header, body = result.summary_table()
        return text_table(header, body, ruled=output == "table")
    data = to_jsonable(result)
    if output == "json":
        return json.dumps(data, indent=2, sort_keys=True)
    if output == "yaml":
        import yaml  # type: ignore[import-untyped]  # no stubs installed; only safe_dump is used

        return yaml.safe_dump(data, sort_keys=True, allow_unicode=True).rstrip("\n")
    if output == "csv":
        rows = data.get("rows") if isinstance(data, dict) else None
        if not isinstance(rows, list):
            check_format(output, gives_rows=False)
            raise AssertionError("check_format refuses csv without rows")  # unreachable; narrows the type
        return rows_to_csv(rows).rstrip("\n")
    if output in ("table", "plain"):
        return _human(data, ruled=output == "table")
    raise ConfigError(f"--output {output!r} is not a format; use one of {', '.join(ROWS_FORMATS)}")


# --- the human forms ----------------------------------------------------------------------------------------------


def _human(data: Any, ruled: bool) -> str:
    if not isinstance(data, dict):
        return _cell(data)
    rows = data.get("rows")
    scalars = {key: value for key, value in data.items() if key != "rows"}
    # A page of rows says how much of the whole it is, under the table: a bare "total  2" above it read as a row.
    total = scalars.pop("total", None) if isinstance(rows, list) else None
    parts = []
    if scalars:
        parts.append(key_values(scalars))
    if isinstance(rows, list):
        parts.append(rows_table(rows, ruled=ruled) if rows else "(no rows)")
        if rows and total is not None:
            more = "" if total <= len(rows) else " (--limit/--offset show the others)"
            parts[-1] += f"\n{len(rows)} of {total} rows, newest first{more}"
    return "\n\n".join(parts)


def key_values(data: Mapping[str, Any]) -> str:
    """Aligned ``key  value`` lines; nested records flattened to dotted keys (``parity.max_abs_diff``)."""
    pairs = list(_flatten(data))
    width = max((len(key) for key, _ in pairs), default=0)
    return "\n".join(f"{key.ljust(width)}  {value}" for key, value in pairs)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, str]]:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{name}.")
        else:
            yield name, _cell(value)


def rows_table(rows: Sequence[Mapping[str, Any]], ruled: bool = True) -> str:
    """Metrics rows as the compact table (run, batch size, backend, top-1, top-5, the three throughput figures,
    J/image, verdict and a short reason)."""
    from convmixer_tasks.verdict.gate import short_reason

    rows = [{**row, "reason": short_reason(dict(row))} for row in rows]
    header = [title for title, _ in COMPACT_COLUMNS]
    return text_table(header, [[row.get(field) for _, field in COMPACT_COLUMNS] for row in rows], ruled)


def text_table(header: Sequence[str], values: Sequence[Sequence[Any]], ruled: bool = True) -> str:
    """Aligned columns, numbers right-aligned; ``values`` are raw cells (formatted here)."""
    body = [[_cell(value) for value in row] for row in values]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    numeric = [all(_is_number(row[i]) for row in values) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = (c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric, strict=True))
        return "  ".join(padded).rstrip()

    lines = [line(header)]
    if ruled:
        lines.append("  ".join("-" * w for w in widths))
    lines.extend(line(cells) for cells in body)
    return "\n".join(lines)


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.2f}" if value == 0 or abs(value) >= 0.01 else f"{value:.2e}"
    if isinstance(value, list):
        if len(value) <= _MAX_INLINE_ITEMS and all(not isinstance(v, (dict, list)) for v in value):
            return ", ".join(_cell(v) for v in value) or "(none)"
        return f"({len(value)} items; --output json lists them)"
    if isinstance(value, dict):
        return "(empty)" if not value else json.dumps(value, sort_keys=True)
    return str(value)


# --- csv ----------------------------------------------------------------------------------------------------------


def _csv_cell(value: Any) -> Any:
    # Reasons read best one after another; any other structure (energy, fingerprint, evidence) is JSON, which a
    # program reading the CSV can parse back.
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        value = "; ".join(value)
    elif isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True, default=str)
    # A cell starting with = + - @ is run as a formula by spreadsheet apps; quote it so it stays text.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def csv_columns() -> tuple[str, ...]:
    """The CSV's columns: the row's id (the page links a run as run?id=<id>), then the metrics row's fields."""
    from convmixer_tasks.metrics import MetricsRow

    return ("id", *MetricsRow.field_names())


def rows_to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Metrics rows as CSV in ``csv_columns`` order (the UI's export gives the same columns)."""
    columns = csv_columns()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(column)) for column in columns])
    return buffer.getvalue()
