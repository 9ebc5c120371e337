"""Export + parity as one step: a valid single-file ONNX lands at the target only when ONNX Runtime agrees."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from convmixer_tasks.errors import CheckpointError, ConfigError, ExportError
from convmixer_tasks.fileio import read_json, sha256_file
from convmixer_tasks.run.demo import demo_checkpoint_path
from convmixer_tasks.stages import export as export_module
from convmixer_tasks.stages.export import export_and_validate, parity_report_path, prepare_model


def run_onnx(path, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["class"], {"image": images})[0]


def test_demo_checkpoint_exports_with_parity_and_a_matching_report(tmp_path):
    target = tmp_path / "demo.onnx"
    result = export_and_validate(demo_checkpoint_path(), target, variant="convmixer_demo")

    assert result.onnx_path == target and target.is_file()
    assert result.parity.max_abs_diff is not None  # parity ran (a card's own ONNX skips it)
    assert result.parity.passed and result.parity.max_abs_diff <= 1e-4 and result.parity.top1_agreement == 1.0
    assert result.parity.batch == 2 and result.opset == 17 and result.dynamo is False
    assert result.onnx_sha256 == sha256_file(target)
    assert result.checkpoint_sha256 == sha256_file(demo_checkpoint_path())
    report = read_json(parity_report_path(target))
    assert result.report_path == tmp_path / "demo.parity.json"
    assert report["onnx_sha256"] == result.onnx_sha256
    assert report["parity"]["max_abs_diff"] == result.parity.max_abs_diff
    # one file: no external-data side files, no leftovers of the temporary export
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.onnx", "demo.parity.json"]


def test_exported_graph_has_the_reference_names_a_dynamic_batch_and_the_trained_weights(tmp_path):
    target = tmp_path / "demo.onnx"
    export_and_validate(demo_checkpoint_path(), target, variant="convmixer_demo")
    proto = onnx.load(str(target))
    assert [i.name for i in proto.graph.input] == ["image"] and [o.name for o in proto.graph.output] == ["class"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert proto.opset_import[0].version == 17

    images = np.random.default_rng(5).standard_normal((3, 3, 224, 224)).astype(np.float32)  # not the export batch
    expected = prepare_model(demo_checkpoint_path(), "convmixer_demo")(torch.from_numpy(images)).detach().numpy()
    assert np.abs(run_onnx(target, images) - expected).max() < 1e-4


@pytest.mark.parametrize("opset", [19, 21, 10])
def test_opsets_atc_cannot_take_are_refused_before_any_work(tmp_path, opset):
    with pytest.raises(ConfigError, match=f"opset {opset}.*ATC accepts opset <= 18"):
        export_and_validate(None, tmp_path / "m.onnx", variant="convmixer_demo", opset=opset)
    assert list(tmp_path.iterdir()) == []


def test_opset_18_and_the_dynamo_exporter_are_selectable(tmp_path):
    result = export_and_validate(None, tmp_path / "dyn.onnx", variant="convmixer_demo", opset=18, dynamo=True)
    assert result.parity.passed and result.dynamo and result.opset == 18
    assert onnx.load(str(result.onnx_path)).opset_import[0].version == 18
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dyn.onnx", "dyn.parity.json"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tolerance": 0}, "tolerance"),
        ({"parity_batch": 0}, "parity batch"),
        ({"variant": "convmixer_9"}, "unknown model 'convmixer_9'"),
    ],
)
def test_bad_settings_are_config_errors(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        export_and_validate(None, tmp_path / "m.onnx", **{"variant": "convmixer_demo", **kwargs})


def test_target_must_be_an_onnx_file(tmp_path):
    with pytest.raises(ConfigError, match=r"must end in \.onnx"):
        export_and_validate(None, tmp_path / "model.om", variant="convmixer_demo")


def test_checkpoint_of_another_variant_fails_before_writing(tmp_path):
    with pytest.raises(CheckpointError, match="convmixer_demo"):
        export_and_validate(demo_checkpoint_path(), tmp_path / "m.onnx", variant="convmixer_768_32")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def perturbed_export(monkeypatch):
    """Export as usual, then shift one logit's bias in the ONNX file: the exporter 'got it wrong' by 0.01."""
    real_export = export_module._export_onnx

    def export_then_perturb(model, example, path, opset, dynamo, io):
        real_export(model, example, path, opset, dynamo, io)
        proto = onnx.load(str(path))
        head_bias = next(t for t in proto.graph.initializer if list(t.dims) == [1000])
        values = onnx.numpy_helper.to_array(head_bias).copy()
        values[3] += 0.01
        head_bias.CopyFrom(onnx.numpy_helper.from_array(values, head_bias.name))
        onnx.save(proto, str(path))

    monkeypatch.setattr(export_module, "_export_onnx", export_then_perturb)


def test_parity_failure_names_output_diff_and_tolerance_and_leaves_no_onnx(tmp_path, perturbed_export):
    target = tmp_path / "demo.onnx"
    with pytest.raises(ExportError) as caught:
        export_and_validate(None, target, variant="convmixer_demo")
    message = str(caught.value)
    assert "'class'" in message and "0.01" in message and "tolerance 0.0001" in message
    assert list(tmp_path.iterdir()) == []


def test_parity_failure_removes_an_older_export_at_the_target(tmp_path, perturbed_export):
    target = tmp_path / "demo.onnx"
    target.write_bytes(b"an older export")
    parity_report_path(target).write_text("{}")
    with pytest.raises(ExportError):
        export_and_validate(None, target, variant="convmixer_demo")
    assert list(tmp_path.iterdir()) == []


def test_a_loose_tolerance_accepts_the_same_difference(tmp_path, perturbed_export):
    result = export_and_validate(None, tmp_path / "demo.onnx", variant="convmixer_demo", tolerance=0.05)
    assert result.parity.max_abs_diff is not None
    assert result.parity.passed and 0.009 < result.parity.max_abs_diff < 0.011


def test_random_weights_are_seeded(tmp_path):
    first = export_and_validate(None, tmp_path / "a.onnx", variant="convmixer_demo", seed=3)
    second = export_and_validate(None, tmp_path / "b.onnx", variant="convmixer_demo", seed=3)
    other = export_and_validate(None, tmp_path / "c.onnx", variant="convmixer_demo", seed=4)
    images = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    a, b, c = (run_onnx(r.onnx_path, images) for r in (first, second, other))
    assert np.array_equal(a, b) and not np.allclose(a, c)
    assert first.checkpoint_sha256 is None


@pytest.mark.slow
def test_full_1536_20_architecture_exports_with_parity(tmp_path):
    """The real network's shape (~200 MB ONNX) with random weights: single file, ONNX Runtime agrees at batch 1."""
    target = tmp_path / "convmixer_1536_20.onnx"
    result = export_and_validate(None, target, variant="convmixer_1536_20", parity_batch=1)
    assert result.parity.max_abs_diff is not None
    assert result.parity.passed and result.parity.batch == 1 and result.parity.max_abs_diff <= 1e-4
    assert 150e6 < target.stat().st_size < 2e9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["convmixer_1536_20.onnx", "convmixer_1536_20.parity.json"]
    proto = onnx.load(str(target), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim][1:] == [1000]
