"""RunParams: one record parsed the same way from a DAG run's params, `convmixer-tasks run`'s flags and local_run;
the DAG's Params derived from it; schemas that refuse what cannot be true; zoo runs over several models."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle

import jsonschema
import pytest

from convmixer_tasks import cli, cli_steps, defaults
from convmixer_tasks.errors import ConfigError
from convmixer_tasks.run.local_run import local_params, run_chain, settings_for
from convmixer_tasks.run.params import RANDOM_CHECKPOINT, RunParams, model_names, param_specs
from convmixer_tasks.run.run_options import BenchmarkOptions, EvidenceOptions, GateOptions


def dag_run_params(work_dir) -> dict:
    """What a DAG task's ``params`` hold for a run with an empty conf: every Param at its default."""
    return {name: spec.default for name, spec in param_specs(settings_for(work_dir)).items()}


def test_an_empty_conf_parses_to_the_record_local_run_gets(tmp_path):
    from_dag = RunParams.from_mapping(dag_run_params(tmp_path))
    assert from_dag == local_params(tmp_path)
    # what local_run used to lack: the SoC, the idle wait, the fidelity limits — and the gate's own defaults
    assert from_dag.soc_version == "auto" and from_dag.benchmark.idle_wait_s == defaults.DEFAULT_IDLE_WAIT_S
    assert from_dag.evidence.thresholds() == defaults.DEFAULT_THRESHOLDS
    assert from_dag.gate == GateOptions() and from_dag.benchmark == BenchmarkOptions()
    assert from_dag.gate_arguments()["max_cv_pct"] == defaults.DEFAULT_MAX_CV_PCT


def test_the_run_commands_flags_are_the_dags_params(tmp_path):
    argv = [
        "run",
        "--work-dir",
        str(tmp_path),
        "--batch-size",
        "8",
        "1",
        "--loop",
        "7",
        "--limit",
        "16",
        "--backend",
        "ascend",
        "--soc-version",
        "Ascend310P3",
        "--precision-mode",
        "force_fp16",
        "--gelu-implmode",
        "none",
        "--confirm",
        "0",
        "--model",
        "convmixer_demo",
        "convmixer_768_32",
        "--random-weights",
    ]
    flags = cli_steps._run_params(cli.build_parser().parse_args(argv))
    conf = {
        "batch_sizes": [8, 1],
        "benchmark_loop": 7,
        "image_limit": 16,
        "backend": "ascend",
        "soc_version": "Ascend310P3",
        "precision_modes": ["force_fp16"],
        "gelu_implmode": None,
        "benchmark_confirm": 0,
        "model_variant": "convmixer_demo",
        "model_variants": ["convmixer_demo", "convmixer_768_32"],
        "checkpoint": RANDOM_CHECKPOINT,
        "checkpoints": {"convmixer_768_32": RANDOM_CHECKPOINT},
    }
    assert flags == conf
    run = RunParams.from_mapping({**dag_run_params(tmp_path), **conf})
    assert run == local_params(tmp_path, **flags)
    assert run.models == ("convmixer_demo", "convmixer_768_32") and run.batch_sizes == (8, 1)
    assert run.benchmark == BenchmarkOptions(loop=7, confirm=0) and run.gelu_implmode is None


def test_every_param_comes_from_one_field_with_its_default_and_schema(tmp_path):
    specs = param_specs(settings_for(tmp_path))
    for spec in specs.values():  # each default passes its own schema, as Airflow checks at parse time
        jsonschema.validate(spec.default, spec.schema)
    record = RunParams.from_mapping({name: spec.default for name, spec in specs.items()})
    assert specs["benchmark_loop"].default == record.benchmark.loop == defaults.BENCHMARK_LOOP
    assert specs["top1_tolerance"].default == record.gate.top1_tolerance == defaults.DEFAULT_TOP1_TOLERANCE
    assert specs["evidence"].default == dataclasses.asdict(record.evidence) == dataclasses.asdict(EvidenceOptions())
    assert specs["model_variant"].schema["enum"] == list(model_names())


def test_param_schemas_are_read_only_so_copies_share_them_and_read_as_the_plain_json(tmp_path):
    """Airflow deep-copies the DAG's Params into every task when it parses the DAG file: a read-only schema is
    shared by those copies instead of copied; whatever reads it sees the same JSON."""
    schema = param_specs(settings_for(tmp_path))["model_variants"].schema
    plain = json.loads(json.dumps(schema))
    assert schema == plain and plain["items"]["enum"] == list(model_names())
    assert copy.deepcopy(schema) is schema and copy.copy(schema) is schema
    assert copy.deepcopy(schema["items"]["enum"]) is schema["items"]["enum"]
    assert pickle.loads(pickle.dumps(schema)) == plain
    changes = [
        lambda: schema.update(type="string"),
        lambda: schema.__setitem__("minItems", 2),
        lambda: schema.pop("type"),
        lambda: schema["items"]["enum"].append("resnet"),
        lambda: schema["items"]["enum"].sort(),
    ]
    for change in changes:
        with pytest.raises(TypeError, match="read-only"):
            change()
    assert schema == plain


def test_the_vocabulary_params_keep_their_enums_and_defaults(tmp_path):
    """The backend and dtype names now live in leaf modules (backends/catalog.py, dtypes.py, read at DAG parse time
    without backends.base or prepfolder): the Params built from them keep the same choices, order and defaults."""
    specs = param_specs(settings_for(tmp_path))
    assert specs["backend"].schema["enum"] == ["onnxruntime", "ascend"] and specs["backend"].default == "onnxruntime"
    assert specs["input_dtype"].schema["enum"] == ["float32", "uint8"]
    assert specs["batch_sizes"].schema["items"]["enum"] == [1, 4, 8, 16, 32, 64]


IMPOSSIBLE = [
    ({"evidence": {"min_cosine": 1.5}}, "param evidence.min_cosine: 1.5 is greater than the maximum of 1"),
    ({"evidence": {"min_cosine": -1.5}}, "param evidence.min_cosine: -1.5 is less than the minimum of -1"),
    ({"evidence": {"max_rel_euclidean": -0.01}}, "param evidence.max_rel_euclidean: -0.01 is less than the minimum"),
    ({"evidence": {"top1_significance": 1.5}}, "param evidence.top1_significance: 1.5 is greater than the maximum"),
    ({"evidence": {"fidelity_subset": 0}}, "param evidence.fidelity_subset: 0 is less than the minimum of 1"),
    ({"evidence": {"min_cosine": float("nan")}}, "param evidence.min_cosine = nan must be a finite number"),
    ({"throughput_tolerance_pct": -5}, "param throughput_tolerance_pct: -5 is less than the minimum of 0"),
    ({"benchmark_loop": 0}, "param benchmark_loop: 0 is less than the minimum of 1"),
    ({"benchmark_idle_wait_s": -1}, "param benchmark_idle_wait_s: -1 is less than the minimum of 0"),
    ({"image_limit": 0}, "param image_limit: 0 is less than the minimum of 1"),
    ({"batch_size": 4.0}, "batch size 4.0 is not one of [1, 4, 8, 16, 32, 64] (a whole number); fix param batch_size"),
    ({"batch_sizes": [4.0]}, "fix param batch_sizes"),
    ({"model_variants": ["resnet"]}, "param model_variants.0: 'resnet' is not one of"),
    ({"checkpoints": {"convmixer_demo": ""}}, "param checkpoints.convmixer_demo: '' should be non-empty"),
]


@pytest.mark.parametrize("conf, message", IMPOSSIBLE, ids=[str(conf) for conf, _ in IMPOSSIBLE])
def test_values_that_cannot_be_true_are_refused_in_one_line_naming_the_param(tmp_path, conf, message):
    with pytest.raises(ConfigError) as refused:
        local_params(tmp_path, **conf)
    assert message in str(refused.value) and "\n" not in str(refused.value)


# The schema's own refusals: JSON has no NaN (a trigger conf cannot carry one), and JSON Schema counts 4.0 as an
# integer (RunParams refuses it, naming the param).
SCHEMA_REFUSED = [conf for conf, message in IMPOSSIBLE if message.startswith("param ") and " = nan " not in message]


@pytest.mark.parametrize("conf", SCHEMA_REFUSED, ids=[str(conf) for conf in SCHEMA_REFUSED])
def test_the_dags_param_schemas_refuse_them_when_the_run_is_triggered(tmp_path, conf):
    """What Airflow checks when a run is triggered (its Param validates the value against the spec's schema)."""
    ((name, value),) = conf.items()
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(value, param_specs(settings_for(tmp_path))[name].schema)


def test_a_zoo_model_without_a_checkpoint_is_refused_naming_it_and_the_fix(tmp_path):
    from convmixer_tasks.run import steps

    run = local_params(tmp_path, model_variants=["convmixer_demo", "convmixer_768_32"])
    assert run.checkpoint_of("convmixer_demo") == run.checkpoint  # model_variant's own
    with pytest.raises(ConfigError, match=r"no checkpoint for model convmixer_768_32; set param checkpoints"):
        steps.check_inputs(run, "r", tmp_path)


def test_records_are_replaced_not_patched(tmp_path):
    run = local_params(tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.benchmark.loop = 3  # type: ignore[misc]
    quick = dataclasses.replace(run, benchmark=dataclasses.replace(run.benchmark, loop=3))
    assert quick.benchmark.loop == 3 and run.benchmark.loop == defaults.BENCHMARK_LOOP


@pytest.mark.slow
def test_a_zoo_run_of_two_models_records_a_row_per_model(tmp_path):
    """The demo model beside ConvMixer-1024/20 (patch 14: the smallest full-size card) with seeded random weights,
    on 8 images: each model is exported once, both share the prep folder, and the run records both models' rows."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    run = local_params(
        tmp_path,
        model_variants=["convmixer_demo", "convmixer_1024_20_ks9_p14"],
        checkpoints={"convmixer_1024_20_ks9_p14": RANDOM_CHECKPOINT},
        batch_sizes=[4],
        image_limit=8,
        benchmark_loop=2,
        benchmark_remeasure=0,
        benchmark_confirm=0,
    )
    summary = run_chain(run, tmp_path, metrics_url=url)
    rows = {row["model_variant"]: row for row in summary["rows"]}
    assert set(rows) == {"convmixer_demo", "convmixer_1024_20_ks9_p14"}
    assert rows["convmixer_demo"]["onnx_sha256"] != rows["convmixer_1024_20_ks9_p14"]["onnx_sha256"]
    assert rows["convmixer_1024_20_ks9_p14"]["checkpoint_sha256"] is None  # random weights: no checkpoint to hash
    assert summary["note"] == "convmixer_1024_20_ks9_p14: random weights: top-1 at chance (0.1 %) expected"
    assert all(row["status"] != "pending" and row["image_count"] == 8 for row in rows.values())  # recorded, gated
    assert len(list((tmp_path / "cache" / "prep").iterdir())) == 1  # one input transform: one prep folder
    from tests.stored import stored_run

    for model in rows:  # the row key names the model: two rows of one run × batch size × backend × precision
        assert stored_run(url, summary["run_id"], 4, "onnxruntime", "fp32", model)["model_variant"] == model
