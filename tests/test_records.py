"""convmixer_tasks.run.records: every step record crosses Airflow tasks as plain JSON and comes back equal; a record of
another name or version is refused with a ConfigError that says what to do."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from convmixer_tasks.backends.base import Artifact
from convmixer_tasks.errors import ConfigError
from convmixer_tasks.run import records

ARTIFACT = Artifact(
    path=Path("/work/cache/artifacts/ascend/ab12/model_bs4.om"),
    backend="ascend",
    batch_size=4,
    input_dtype="uint8",
    sha256="a" * 64,
    onnx_sha256="e" * 64,
    options={"soc_version": "Ascend310P3", "precision_mode": None},
    cached=True,
    input_shape=[4, 224, 224, 3],
    cache_key="k" * 64,
    meta={"atc": ["atc", "--model=x.onnx"]},
)

SAMPLES: dict[type, records.Record] = {
    records.RunFacts: records.RunFacts(
        run_id="manual__2026-01-05T03:00:00+00:00",
        dag_id="convmixer_validation",
        logical_date="2026-01-05T03:00:00+00:00",
        started_at=None,
    ),
    records.RunPlan: records.RunPlan(
        run_id="r",
        batch_size=4,
        backend="ascend",
        input_dtype="uint8",
        model_variant="convmixer_demo",
        checkpoint="/m.pth.tar",
        dataset_dir="/val",
        label_file="/val_label.txt",
        image_limit=None,
        image_count=250,
        dataset_fingerprint="f" * 64,
        prep_dir="/work/cache/prep/0123",
        prep_key="0123" * 16,
        run_dir="/work/runs/r",
    ),
    records.PrepShard: records.PrepShard(
        batch_size=4,
        shard=1,
        shards=2,
        prep_dir="/p",
        files=("input_00002.bin", "input_00003.bin"),
        files_written=2,
        cached=False,
    ),
    records.ExportedModel: records.ExportedModel(
        onnx_path="/o/model.onnx",
        onnx_sha256="e" * 64,
        checkpoint_sha256="c" * 64,
        variant="convmixer_demo",
        opset=17,
        parity_max_abs_diff=3.5e-6,
        cache_key="k" * 64,
        cached=True,
    ),
    records.CompiledModel: records.CompiledModel(
        model_variant="convmixer_demo",
        run_id="r",
        batch_size=4,
        backend="ascend",
        precision="force_fp16",
        artifact=ARTIFACT,
        device="Ascend310P3",
        toolkit_version="8.0.RC1",
        cached=True,
        prep_dir="/p",
    ),
    records.ShardOutputs: records.ShardOutputs(
        model_variant="convmixer_demo",
        batch_size=4,
        precision="force_fp16",
        shard=0,
        prep_dir="/p",
        files=("input_00000.bin",),
        output_dir="/o/shard000/outputs",
        file_count=1,
        summary_path="/o/shard000/outputs_summary.json",
    ),
    records.Scores: records.Scores(
        model_variant="convmixer_demo",
        batch_size=4,
        precision="force_fp16",
        top1=61.2,
        top5=88.4,
        image_count=250,
        result_json="/r.json",
    ),
    records.BenchSummary: records.BenchSummary(
        model_variant="convmixer_demo",
        batch_size=4,
        backend="ascend",
        precision="force_fp16",
        loop=100,
        warmup=5,
        throughput=812.5,
        latency_mean_ms=4.92,
        latency_p50_ms=4.9,
        latency_p99_ms=5.3,
        formula="1000 * batch_size / latency_mean_ms",
        bench_json="/b.json",
    ),
    records.RecordedRow: records.RecordedRow(
        model_variant="convmixer_demo", id=7, run_id="r", batch_size=4, backend="ascend", precision="force_fp16"
    ),
    records.Verdict: records.Verdict(
        model_variant="convmixer_demo",
        batch_size=4,
        precision="force_fp16",
        status="regressed",
        reasons=("throughput regressed 30%",),
        baseline_top1=61.5,
        baseline_throughput=1200.0,
    ),
    records.TaskFailure: records.TaskFailure(
        task_id="chip_910B3.infer",
        map_index=2,
        label="convmixer_demo bs4 force_fp16 shard 0",
        error="RuntimeError: ais_bench exited 1",
        model_variant="convmixer_demo",
        batch_size=4,
        precision="force_fp16",
        chip="910B3",
    ),
}


def _all_records() -> set[type]:
    return {
        value
        for value in vars(records).values()
        if isinstance(value, type) and issubclass(value, records.Record) and value is not records.Record
    }


def test_every_record_has_a_sample_here():
    """A new record needs a sample above, so its round trip is tested too."""
    assert set(SAMPLES) == _all_records()


@pytest.mark.parametrize("record", list(SAMPLES.values()), ids=[cls.__name__ for cls in SAMPLES])
def test_a_record_survives_json_unchanged(record):
    data = record.to_dict()
    assert data["record"] == type(record).__name__ and data["version"] == type(record).VERSION
    text = json.dumps(data)  # XCom stores JSON: nothing in a record may need a custom encoder
    back = type(record).from_dict(json.loads(text))
    assert back == record and type(back) is type(record)
    assert back.to_dict() == data
    assert type(record).from_dicts([json.loads(text)] * 2) == [record, record]
    assert type(record).from_dict(record) is record  # a record passed where its dict is expected
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.batch_size = 99  # frozen: a step cannot change what it was handed


def test_values_are_the_fields_without_the_header():
    facts = SAMPLES[records.RunFacts]
    assert isinstance(facts, records.RunFacts)
    assert facts.values() == {
        "run_id": facts.run_id,
        "dag_id": "convmixer_validation",
        "logical_date": "2026-01-05T03:00:00+00:00",
        "started_at": None,
        "trigger": None,
    }


def test_a_compiled_models_artifact_comes_back_as_an_artifact():
    back = records.CompiledModel.from_dict(json.loads(json.dumps(SAMPLES[records.CompiledModel].to_dict())))
    assert isinstance(back.artifact, Artifact) and isinstance(back.artifact.path, Path)
    assert back.artifact.input_nbytes == 4 * 224 * 224 * 3


@pytest.mark.parametrize("cls", list(SAMPLES), ids=[cls.__name__ for cls in SAMPLES])
def test_a_record_of_another_name_is_refused_naming_both(cls):
    other = SAMPLES[records.Scores if cls is not records.Scores else records.RunPlan]
    with pytest.raises(
        ConfigError,
        match=f"expected a {cls.__name__} record version 1, got {type(other).__name__} "
        "version 1.*clear the upstream task",
    ):
        cls.from_dict(other.to_dict())


def test_a_record_of_another_version_or_without_a_header_is_refused():
    data = SAMPLES[records.RunPlan].to_dict()
    with pytest.raises(
        ConfigError,
        match="expected a RunPlan record version 1, got RunPlan version 2 "
        r"\(written by another version of convmixer-tasks\)",
    ):
        records.RunPlan.from_dict({**data, "version": 2})
    headless = {key: value for key, value in data.items() if key not in ("record", "version")}
    with pytest.raises(ConfigError, match="got None version None"):  # e.g. an XCom of the old dict shape
        records.RunPlan.from_dict(headless)


def test_a_record_missing_a_field_or_not_a_mapping_is_refused():
    data = SAMPLES[records.Scores].to_dict()
    del data["top5"]
    with pytest.raises(ConfigError, match="Scores record lacks top5"):
        records.Scores.from_dict(data)
    with pytest.raises(ConfigError, match="expected a Scores record, got list"):
        records.Scores.from_dict([1, 2])  # type: ignore[arg-type]
