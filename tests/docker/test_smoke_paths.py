"""docker/smoke-test.sh reads files the run wrote on the host; their paths come from the library (issue 22: it read
``…/bs4/benchmark.json`` long after run folders became ``bs<N>-<precision>``). The script's own line is run here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from convmixer_tasks.backends.precision import effective_precision
from convmixer_tasks.models.variants import DEMO_VARIANT
from convmixer_tasks.run.fleet import chip_work_dir
from convmixer_tasks.run.workdir import WorkLayout

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "docker" / "smoke-test.sh"


def test_the_benchmark_json_the_smoke_test_reads_is_where_the_benchmark_step_writes(tmp_path):
    text = SCRIPT.read_text()
    # the chip's own folder under the work folder, then the benchmark.json in it
    lines = [line for line in text.splitlines() if line.startswith(("chip_work=", "bench_json="))]
    assert [line.split("=", 1)[0] for line in lines] == ["chip_work", "bench_json"]
    assert not re.search(r"/bs\d", text), "a run-folder name restated in the script"
    run_id = "manual__2026-12-07T12:00:00+00:00"
    shown = subprocess.run(
        ["bash", "-c", "\n".join(lines) + '\nprintf %s "$bench_json"'],
        env={**os.environ, "repo": str(REPO), "python": sys.executable, "smoke": str(tmp_path), "run2": run_id,
             "bench_chip": "310P3"},
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    # The DAG run the script triggers: chip 310P3, backend ascend, batch size 4, no precision mode (ATC's default).
    expected = WorkLayout(chip_work_dir(tmp_path / "work", "310P3")).benchmark_json(
        run_id,
        4,
        precision=effective_precision("ascend", None),
        model=DEMO_VARIANT,  # the DAG's default model
    )
    assert shown == str(expected) and expected.parent.name == "bs4-force_fp16"


def test_the_smoke_test_says_it_needs_the_checkouts_venv(tmp_path):
    text = SCRIPT.read_text()
    assert "run scripts/setup.sh first" in text and "python=$repo/.venv/bin/python" in text
    assert text.index("python=$repo/.venv/bin/python") < text.index('"$python"')
