"""The throughput verdict on real demo runs: quiet history, then back-to-back runs beside a CPU hog, then a genuinely
slower artifact (ONNX Runtime limited to one thread), each recorded and gated as `convmixer-tasks run --record`
does (``local_run.run_chain``) in a fresh SQLite metrics DB; the old gate's verdict computed beside it.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_gate_demo.py [--quiet 20] [--hogged 20] [--slow 2] [--loop 2000]
        [--work /tmp/x]

The hog is one busy-looping Python process started by this script and ended by its pid. Each row is printed with the
closing table's short reason (``gate.short_reason``); the tallies count judged rows (not ``inconclusive``), rows whose
reason names the busy host, and ``regressed`` rows.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from convmixer_tasks.errors import RegressionError
from convmixer_tasks.measure import fingerprint
from convmixer_tasks.run.local_run import local_params, run_chain
from convmixer_tasks.verdict import gate

OLD_HISTORY, TOLERANCE_PCT = 5, gate.DEFAULT_THROUGHPUT_DROP_PCT


def one_run(work: Path, url: str, threads: int | None, loop: int) -> dict:
    settings = {"provider": "cpu", "threads": threads} if threads else {"provider": "cpu"}
    try:
        run = local_params(work, batch_sizes=[4], benchmark_loop=loop)
        summary = run_chain(run, work, backend_settings=settings, metrics_url=url)
        verdict = summary["verdicts"][0]
        row = summary["rows"][0]
    except RegressionError as exc:
        decision = exc.decisions[0]
        verdict = {"status": decision.status, "reasons": decision.reasons}
        row = {"throughput": None}
    from convmixer_tasks.metrics import query_runs

    newest = query_runs(url, limit=1)[0][0]
    return {"status": verdict["status"], "row": newest, "reasons": verdict["reasons"], "figure": row["throughput"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quiet", type=int, default=20)
    parser.add_argument("--hogged", type=int, default=20)
    parser.add_argument("--slow", type=int, default=2)
    parser.add_argument("--work", default="/tmp/convmixer_gate_demo")
    # 20 loops take a few ms: too short for the busy-host CPU counts (quiet.MIN_COUNTED_WINDOW_S); 2000 take ~1 s
    parser.add_argument("--loop", type=int, default=2000)
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    db = work / "metrics.db"
    db.unlink(missing_ok=True)
    url = f"sqlite:///{db}"
    print(f"CPU: {fingerprint.cpu_model()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} at start")
    old_ok: list[float] = []
    counts: dict[str, dict[str, int]] = {}
    started = time.perf_counter()

    def run(phase: str, threads: int | None = None) -> None:
        result = one_run(work, url, threads, args.loop)
        row = result["row"]
        figure = row["throughput"]
        window = old_ok[-OLD_HISTORY:]
        old_flag = bool(window) and figure < statistics.median(window) * (1 - TOLERANCE_PCT / 100)
        if not old_flag:
            old_ok.append(figure)
        tally = counts.setdefault(phase, {"runs": 0, "judged": 0, "reason names the busy host": 0, "old regressed": 0})
        tally["runs"] += 1
        tally[row["status"]] = tally.get(row["status"], 0) + 1
        tally["judged"] += row["status"] != "inconclusive"
        reason = gate.short_reason(row)
        tally["reason names the busy host"] += "busy host" in reason
        tally["old regressed"] += old_flag
        fingerprint = row["fingerprint"] or {}
        confirmations = fingerprint.get("suspect_confirmations") or []
        cv = row.get("latency_robust_cv")
        print(
            f"{phase:7s} {figure:9.1f} img/s (robust {row.get('throughput_robust') or 0:9.1f}, robust CV "
            f"{cv * 100 if cv is not None else float('nan'):5.1f}%)  load {fingerprint.get('load_after') or 0:5.2f}  "
            f"other cores {fingerprint.get('other_cores') if fingerprint.get('other_cores') is not None else '-'!s:5}  "
            f"{row['status']:12s} old {'REGRESSED' if old_flag else 'ok':9s} confirm {len(confirmations)}  | {reason}",
            flush=True,
        )

    for _ in range(args.quiet):
        run("quiet")
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        for _ in range(args.hogged):
            run("hogged")
    finally:
        hog.kill()
        hog.wait()
    for _ in range(args.slow):
        run("slow", threads=1)
    print(f"\n{time.perf_counter() - started:.0f} s")
    for phase, tally in counts.items():
        print(phase, tally)


if __name__ == "__main__":
    main()
