"""`convmixer-tasks` output: a human summary by default (never JSON), the whole result with `--output json|yaml`
holding the same figures, and `metrics-show` as a compact table, CSV (the UI's columns) and with the UI's filters.
"""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # no stubs installed

from convmixer_tasks import cli
from convmixer_tasks.metrics import MetricsRow, record_runs, upgrade

# The compact metrics table's header cells (metrics-show, run, the demo's closing table), split on spaces.
COMPACT_HEADER = [
    "run",
    "batch",
    "backend",
    "precision",
    "top-1",
    "%",
    "top-5",
    "%",
    "img/s",
    "robust",
    "img/s",
    "e2e",
    "img/s",
    "J/img",
    "verdict",
    "why",
]


def call(capsys, *argv: str) -> str:
    assert cli.main(list(argv)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def human_and_json(capsys, *argv: str) -> tuple[str, dict]:
    human = call(capsys, *argv)
    assert human.strip() and not human.splitlines()[0].lstrip().startswith("{")
    assert "{" not in human.splitlines()[0]
    return human, json.loads(call(capsys, "--output", "json", *argv))


def value_line(human: str, key: str) -> str:
    """The value printed beside ``key`` in the aligned key/value summary."""
    line = next(line for line in human.splitlines() if line.split("  ")[0].strip() == key)
    return line[len(key) :].strip()


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A demo set, its prep folder, the demo model exported, compiled and run on ONNX Runtime (through the CLI)."""
    root = tmp_path_factory.mktemp("cli_output")
    run = lambda *argv: cli.main(["-o", "json", *argv])  # noqa: E731
    assert run("demo-dataset", "--output", str(root / "demo"), "--count", "8") == 0
    assert (
        run(
            "preprocess",
            "--image-path",
            str(root / "demo" / "images"),
            "--prep-image",
            str(root / "prep"),
            "--batch-size",
            "4",
            "--workers",
            "1",
        )
        == 0
    )
    from convmixer_tasks.run.demo import DEMO_CHECKPOINT

    assert (
        run(
            "export", "--source", str(DEMO_CHECKPOINT), "--target", str(root / "demo.onnx"), "--model", "convmixer_demo"
        )
        == 0
    )
    assert run("compile", "--onnx", str(root / "demo.onnx"), "--batch-size", "4", "--output", str(root / "cache")) == 0
    from convmixer_tasks.backends.base import get_backend

    # The same call again is a cache hit: it names the artifact the CLI just compiled.
    return root, get_backend("onnxruntime").compile(root / "demo.onnx", 4, root / "cache").path


def test_a_step_prints_aligned_figures_and_json_holds_the_same(chain, capsys):
    from convmixer_tasks.run.demo import DEMO_CHECKPOINT

    human, data = human_and_json(
        capsys,
        "export",
        "--source",
        str(DEMO_CHECKPOINT),
        "--target",
        str(chain[0] / "demo2.onnx"),
        "--model",
        "convmixer_demo",
    )
    assert value_line(human, "onnx_path") == data["onnx_path"]
    assert value_line(human, "onnx_sha256") == data["onnx_sha256"]
    assert value_line(human, "parity.passed") == ("yes" if data["parity"]["passed"] else "no")
    assert value_line(human, "parity.tolerance") == f"{data['parity']['tolerance']:.2e}"
    assert value_line(human, "opset") == str(data["opset"])


def test_infer_benchmark_and_eval_print_summaries_with_the_json_figures(chain, capsys):
    chain, artifact = chain
    model = str(artifact)
    human, data = human_and_json(capsys, "benchmark", "--model", model, "--loop", "6", "--warmup", "1")
    # Two runs time differently: the figures that must match are the deterministic ones; throughput is a number.
    assert re.fullmatch(r"[\d,]+\.\d\d", value_line(human, "throughput")) and data["throughput"] > 0
    assert value_line(human, "loop") == "6" == str(data["loop"]) and value_line(human, "batch_size") == "4"
    assert value_line(human, "samples") == "(6 items; --output json lists them)" and len(data["samples"]) == 6
    assert value_line(human, "formula") == data["formula"]

    out = chain / "outputs"
    human = call(capsys, "infer", "--model", model, "--input", str(chain / "prep"), "--output", str(out))
    assert value_line(human, "output_dir") == str(out) and value_line(human, "file_count") == "2"

    argv = [
        "eval",
        "--outputs",
        str(out),
        "--label-file",
        str(chain / "demo" / "val_label.txt"),
        "--result-json-path",
        str(chain),
        "--prep-image",
        str(chain / "prep"),
    ]
    human, data = human_and_json(capsys, *argv)
    assert value_line(human, "top1") == f"{data['top1']:,.2f}" and value_line(human, "top5") == f"{data['top5']:,.2f}"
    assert value_line(human, "image_count") == "8" == str(data["image_count"])
    assert yaml.safe_load(call(capsys, "-o", "yaml", *argv)) == data


def row(run_id: str, **overrides) -> MetricsRow:
    values: dict[str, Any]
    values = dict(
        run_id=run_id,
        model_variant="convmixer_1536_20",
        backend="onnxruntime",
        batch_size=16,
        status="ok",
        top1=81.37,
        top5=95.62,
        throughput=123.456,
        logical_date="2026-03-01T10:00:00+00:00",
        gate_reasons=["=cmd|' /C calc'!A0"],
    )
    values.update(overrides)
    return MetricsRow(**values)


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path}/metrics.db"
    upgrade(url)
    record_runs(
        url,
        [
            row("run_a", throughput_robust=125.0, e2e_throughput=40.5, baseline_throughput=120.0),
            row(
                "run_b",
                batch_size=1,
                backend="ascend",
                status="regressed",
                top1=80.0,
                throughput=9.5,
                logical_date="2026-03-05T10:00:00+00:00",
                energy_j_per_image=1.6,
                throughput_per_watt=0.625,
                energy={"source": "npu-smi info -t power -i 0", "samples": 9, "mean_w": 15.2},
            ),
        ],
    )
    return url


def test_metrics_show_is_a_compact_table_by_default(db, capsys):
    human, data = human_and_json(capsys, "metrics-show", "--url", db)
    lines = human.splitlines()
    assert "total" not in human and lines[-1] == "2 of 2 rows, newest first"  # issue 22: no bare "total  2" line
    table = lines
    assert table[0].split() == COMPACT_HEADER
    assert set(table[1]) <= {"-", " "}
    assert table[2].split() == [
        "run_b",
        "1",
        "ascend",
        "force_fp16",
        "80.00",
        "95.62",
        "9.50",
        "-",
        "-",
        "1.60",
        "regressed",
        "regressed;",
        "see",
        "gate_reasons",
    ]  # newest first
    assert table[3].split() == [
        "run_a",
        "16",
        "onnxruntime",
        "fp32",
        "81.37",
        "95.62",
        "123.46",
        "125.00",
        "40.50",
        "-",
        "ok",
        "ok:",
        "+4.2%",
        "vs",
        "history",
        "median",
    ]  # the robust figure vs the baseline
    assert [r["run_id"] for r in data["rows"]] == ["run_b", "run_a"] and data["total"] == 2
    assert data["rows"][1]["throughput"] == 123.456
    energy = data["rows"][0]
    assert (energy["energy_j_per_image"], energy["throughput_per_watt"]) == (1.6, 0.625)
    assert energy["energy"] == {"source": "npu-smi info -t power -i 0", "samples": 9, "mean_w": 15.2}
    plain = call(capsys, "metrics-show", "--url", db, "-o", "plain").splitlines()
    assert plain == [table[0], *table[2:]]  # the same table without the rule under the header


def test_metrics_show_csv_has_the_ui_columns_and_defuses_formulas(db, capsys):
    table = list(csv.reader(io.StringIO(call(capsys, "metrics-show", "--url", db, "--output", "csv"))))
    assert tuple(table[0]) == ("id", *MetricsRow.field_names())  # the id links a row to the page's run?id=
    assert [r[1] for r in table[1:]] == ["run_b", "run_a"]
    assert table[1][table[0].index("gate_reasons")] == "'=cmd|' /C calc'!A0"


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--backend", "ascend"], ["run_b"]),
        (["--batch-size", "16"], ["run_a"]),
        (["--status", "ok"], ["run_a"]),
        (["--model", "convmixer_demo"], []),
        (["--since", "2026-03-02"], ["run_b"]),
        (["--until", "2026-03-01"], ["run_a"]),
        (["--limit", "1", "--offset", "1"], ["run_a"]),
    ],
)
def test_metrics_show_takes_the_ui_filters(db, capsys, flags, expected):
    data = json.loads(call(capsys, "metrics-show", "--url", db, "-o", "json", *flags))
    assert [r["run_id"] for r in data["rows"]] == expected


def test_a_bad_filter_is_one_error_line(db, capsys):
    assert cli.main(["metrics-show", "--url", db, "--status", "great"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("convmixer-tasks metrics-show: error:") and "great" in err[0]


def test_csv_is_refused_for_a_step_result(tmp_path, capsys):
    argv = ["--output", "csv", "metrics-upgrade", "--url", f"sqlite:///{tmp_path}/m.db"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--output csv is for metrics rows" in err[0]


def test_the_format_choices_are_airflows(capsys):
    with pytest.raises(SystemExit):
        cli.main(["metrics-upgrade", "--output", "xml"])
    assert "invalid choice: 'xml'" in capsys.readouterr().err
    from airflow.cli.cli_config import ARG_OUTPUT

    from convmixer_tasks.cli_output import DEFAULT_FORMAT, OUTPUT_FORMATS

    assert ARG_OUTPUT.flags == ("-o", "--output") and tuple(ARG_OUTPUT.kwargs["choices"]) == OUTPUT_FORMATS
    assert ARG_OUTPUT.kwargs["default"] == DEFAULT_FORMAT


@pytest.mark.parametrize("step", ["compile", "infer", "demo-dataset"])
def test_steps_whose_output_flag_is_a_path_take_the_format_before_the_step(step, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main([step, "--help"])
    assert f"convmixer-tasks -o json {step}" in " ".join(capsys.readouterr().out.split())
    argv = ["-o", "json", "demo-dataset", "--output", str(tmp_path / "d"), "--count", "2"]
    assert json.loads(call(capsys, *argv))["count"] == 2


def test_help_names_every_status_and_the_run_flags_defaults(capsys):
    """Issue 22: --status help omitted inconclusive; run's --url/--limit/--annotation-file-path had no help."""
    from convmixer_tasks.status import STATUSES

    for argv in (["metrics-show", "--help"], ["run", "--help"]):
        with pytest.raises(SystemExit):
            cli.main(argv)
        text = " ".join(capsys.readouterr().out.split())
        if argv[0] == "metrics-show":
            assert all(status in text for status in STATUSES)
        else:
            assert "(default: work)" in text and "val_label.txt (default: the demo set's)" in text
            assert "only the first N images" in text and "with --record: the metrics DB" in text
