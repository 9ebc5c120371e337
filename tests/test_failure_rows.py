"""Failed rows say why: a failed task's callback keeps its error (an XCom of the failed task), record_failure reads
it back, and each failed row leads with the task and error that failed it, or "not run: " and the run's cause.

The callback is called here with the context Airflow 3's task runner passes it (``ti``, ``exception``, the task's
own context entries); tests/dags/test_dag_run.py proves the same through real DAG runs."""

from __future__ import annotations

from typing import Any

import pytest

from convmixer_tasks.errors import ConfigError
from convmixer_tasks.metrics import query_runs
from convmixer_tasks.run import steps
from convmixer_tasks.run.fleet import chip_group, chip_of_task_id, failed_run_chips
from convmixer_tasks.run.params import RunParams
from convmixer_tasks.run.records import TaskFailure
from convmixer_tasks.run.rows import failed_rows
from convmixer_tasks.run.runfacts import (
    ERROR_TEXT_LIMIT,
    FAILURE_XCOM_KEY,
    NO_ERROR_KEPT,
    error_line,
    failures_of,
    log_task_failure,
    note_scope,
    run_facts,
)

RUN = run_facts("manual__1", "convmixer_validation", "2026-01-01T00:00:00+00:00", None)
PARAMS = {
    "model_variant": "convmixer_demo",
    "backend": "onnxruntime",
    "input_dtype": "float32",
    "dataset_dir": "/data/val",
    "label_file": "/data/val_label.txt",
    "checkpoint": "/models/convmixer_demo.pth.tar",
}


class FakeTaskInstance:
    """What the callback uses of the Task SDK's RuntimeTaskInstance: its ids, its label and xcom_push."""

    def __init__(self, task_id: str, map_index: int = -1, label: str | None = None, refuse: bool = False):
        self.task_id, self.map_index, self.rendered_map_index, self.refuse = task_id, map_index, label, refuse
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        if self.refuse:
            raise ConnectionError("execution API unreachable")
        self.pushed[key] = value


def _fail(ti: FakeTaskInstance, exc: BaseException, **scope: Any) -> TaskFailure:
    """Run the callback as the task runner does after the task raised ``exc``; the failure it kept."""
    context: dict[str, Any] = {"ti": ti, "run_id": RUN.run_id}
    if scope:
        note_scope(context, **scope)
    context["exception"] = exc
    log_task_failure(context)
    (failure,) = failures_of([ti.pushed[FAILURE_XCOM_KEY]])
    return failure


def test_the_callback_keeps_the_task_its_label_its_rows_and_the_errors_line(caplog):
    ti = FakeTaskInstance(chip_group("910B3") + ".infer", 1, "convmixer_demo bs4 force_fp16 shard 1")
    failure = _fail(
        ti,
        RuntimeError("device lost\n  Traceback line\n\tmore"),
        model_variant="convmixer_demo",
        batch_size=4,
        precision="force_fp16",
    )
    assert failure == TaskFailure(
        task_id="chip_910B3.infer",
        map_index=1,
        label="convmixer_demo bs4 force_fp16 shard 1",
        error="RuntimeError: device lost Traceback line more",
        model_variant="convmixer_demo",
        batch_size=4,
        precision="force_fp16",
        chip="910B3",
    )
    assert failure.cause() == (
        "chip_910B3.infer [convmixer_demo bs4 force_fp16 shard 1] failed: RuntimeError: device lost Traceback line more"
    )
    assert "manual__1: chip_910B3.infer [convmixer_demo bs4 force_fp16 shard 1] failed" in caplog.text


def test_our_errors_are_kept_as_their_message_bounded_and_an_unkept_failure_does_not_raise(caplog):
    failure = _fail(
        FakeTaskInstance("check_inputs"), ConfigError("unknown param(s) batch_szie; did you mean batch_size?")
    )
    assert failure.cause() == "check_inputs failed: unknown param(s) batch_szie; did you mean batch_size?"
    assert failure.chip is None and failure.batch_size is None  # no scope: it concerns every row
    assert (
        error_line(OSError("cannot reach postgresql://bob:hunter2@db/m"))
        == "OSError: cannot reach postgresql://***@db/m"
    )
    long = error_line(ValueError("x" * 5000))
    assert len(long) == ERROR_TEXT_LIMIT and long.startswith("ValueError: xxx") and long.endswith("…")
    assert chip_of_task_id("chip_310P3.compile_model") == "310P3" and chip_of_task_id("chip_plans") is None
    # The execution API refusing the XCom: one warning, the callback itself does not fail.
    log_task_failure({"ti": FakeTaskInstance("export_onnx", refuse=True), "exception": OSError("disk full")})
    assert "the failure of export_onnx was not kept for record_failure" in caplog.text
    assert failures_of([None, {"record": "Verdict", "version": 1}]) == []  # unreadable: skipped, not raised


def test_rows_lead_with_their_own_failure_and_the_others_say_not_run():
    infer = TaskFailure("infer", 0, "convmixer_demo bs4 fp32 shard 0", "RuntimeError: injected", "convmixer_demo", 4)
    rows = failed_rows(RUN, {**PARAMS, "batch_sizes": [4, 16]}, [infer])
    reasons = {row.batch_size: row.gate_reasons for row in rows}
    assert reasons == {
        4: ["infer [convmixer_demo bs4 fp32 shard 0] failed: RuntimeError: injected"],
        16: ["not run: infer [convmixer_demo bs4 fp32 shard 0] failed: RuntimeError: injected"],
    }
    prep = TaskFailure("preprocess", 2, "bs16 shard 0", "PreprocessError x", batch_size=16)
    rows = failed_rows(RUN, {**PARAMS, "batch_sizes": [4, 16]}, [infer, prep])
    assert [row.gate_reasons[0] for row in rows if row.gate_reasons] == [
        infer.cause() + " (and 1 more failed task)",
        prep.cause() + " (and 1 more failed task)",
    ]
    (row,) = failed_rows(RUN, {**PARAMS, "batch_sizes": [4]}, [])
    assert row.gate_reasons and "no task kept its error" in row.gate_reasons[0] and "manual__1" in row.gate_reasons[0]


def test_a_refused_conf_gets_the_rows_it_asked_for_only_and_its_refusal_said_once():
    # Airflow merges the DAG's defaults (batch_sizes [1, 4]) into params; the user asked for none of them.
    params = {**PARAMS, "batch_sizes": [1, 4], "batch_szie": 4}
    with pytest.raises(ConfigError) as refused:  # what check_inputs raises, kept bounded by its callback
        RunParams.from_mapping(params)
    check = _fail(FakeTaskInstance("check_inputs"), refused.value)
    (row,) = failed_rows(RUN, params, [check], asked={"batch_szie": 4})
    assert row.batch_size == 1
    assert row.gate_reasons == [
        check.cause(),  # said once: RunParams' own refusal line would repeat it
        "recorded under batch size 1: the refused conf named no batch size (the DAG's first default)",
    ]
    assert row.gate_reasons[0].startswith("check_inputs failed: unknown param(s) batch_szie in the run's conf")
    # A refused conf that did name its batch size: that one, and the refusal is said by RunParams' own line.
    rows = failed_rows(RUN, {**PARAMS, "batch_sizes": [1, 4], "batch_size": 8.0}, [], asked={"batch_size": 8.0})
    assert [row.batch_size for row in rows] == [8]
    assert rows[0].gate_reasons and rows[0].gate_reasons[1].startswith("the run's params were refused: ")


def test_failed_rows_are_per_requested_chip_and_a_chips_failure_says_not_run_on_the_other(tmp_path):
    compile_failed = TaskFailure("chip_910B3.compile_model", 0, "convmixer_demo bs4 fp32", "atc exited 1", chip="910B3")
    chips = failed_run_chips(["310P3", "910B3"], ("310P3", "910B3", "310B1"))
    assert chips == ("310P3", "910B3")
    assert failed_run_chips(["nope"], ("310P3",)) == ("310P3",) and failed_run_chips(None, ()) == ()
    rows = failed_rows(RUN, {**PARAMS, "batch_sizes": [4]}, [compile_failed], chips=chips)
    assert [(row.chip, (row.gate_reasons or [""])[0].split(":")[0]) for row in rows] == [
        ("310P3", "not run"),
        ("910B3", "chip_910B3.compile_model [convmixer_demo bs4 fp32] failed"),
    ]
    url = f"sqlite:///{tmp_path / 'm.db'}"
    steps.record_rows(url, rows, keep_gated=True)
    stored, total = query_runs(url)
    assert total == 2 and sorted(row["chip"] for row in stored) == ["310P3", "910B3"]


@pytest.mark.parametrize("status", ["failed"])
def test_metrics_show_says_the_cause_in_its_why_column(status):
    from convmixer_tasks.verdict.gate import short_reason

    line = "check_inputs failed: unknown param(s) batch_szie; did you mean batch_size?"
    assert short_reason({"status": status, "gate_reasons": [line, "recorded under batch size 1: …"]}) == line
    assert short_reason({"status": status, "gate_reasons": None}) == "the run failed; see its task log"


def test_a_failed_task_that_kept_no_error_is_still_named_from_the_runs_task_instances(caplog):
    kept = TaskFailure("chip_910B3.infer", 0, "convmixer_demo bs4 fp32 shard 0", "RuntimeError: x", chip="910B3")
    crumbs = [
        {"task_id": "check_inputs", "map_index": -1, "state": "success"},
        {"task_id": "chip_910B3.infer", "map_index": 0, "state": "failed"},  # its callback kept why
        {"task_id": "chip_910B3.infer", "map_index": 1, "state": "failed"},  # killed: no callback ran
        {"task_id": "chip_910B3.evaluate", "map_index": 0, "state": "upstream_failed"},
    ]
    failures = failures_of([None, kept.to_dict()], lambda: crumbs)
    assert failures[0] == kept
    (killed,) = failures[1:]
    assert killed.cause() == f"chip_910B3.infer [map index 1] failed: {NO_ERROR_KEPT}" and killed.chip == "910B3"
    # Only the tasks record_failure pulled from: a failed gate (not upstream of it) kept its own error elsewhere.
    gate = {"task_id": "chip_910B3.regression_gate", "map_index": -1, "state": "failed"}
    assert failures_of([kept.to_dict()], lambda: [*crumbs, gate], among={"chip_910B3.infer"}) == failures

    def unreachable():
        raise ConnectionError("API server gone")

    assert failures_of([kept.to_dict()], unreachable) == [kept]  # the kept failure still says why
    assert "the run's failed tasks could not be listed: ConnectionError: API server gone" in caplog.text
