"""Export per card: the card's I/O names, opset and dynamic batch; parity with a checkpoint saved in torchvision's
format; bring-your-own ONNX checked against the card."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from convmixer_tasks.errors import ConfigError
from convmixer_tasks.fileio import read_json, sha256_file
from convmixer_tasks.models import get_card
from convmixer_tasks.stages.export import BRING_YOUR_OWN, export_and_validate, image_shape, prepare_model


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize(
    "name",
    [
        "mobilenet_v2",
        "resnet50",
        pytest.param("inception_v3", marks=pytest.mark.slow),
        pytest.param("vit_b_16", marks=pytest.mark.slow),
    ],
)
def test_a_torchvision_format_checkpoint_exports_with_the_cards_interface_and_parity(tmp_path, name):
    card = get_card(name)
    original = prepare_model(None, name, seed=7)  # random weights, BatchNorm statistics calibrated
    checkpoint = tmp_path / f"{name}.pth"
    torch.save(original.state_dict(), checkpoint)  # what torchvision's own save gives: a plain state_dict

    result = export_and_validate(checkpoint, tmp_path / f"{name}.onnx", variant=name, parity_batch=1)

    assert result.parity.passed and result.parity.max_rel_diff is not None and result.parity.max_rel_diff <= 1e-4
    assert result.opset == card.io.opset == 11 and result.checkpoint_sha256 == sha256_file(checkpoint)
    proto = onnx.load(str(result.onnx_path), load_external_data=False)
    assert [i.name for i in proto.graph.input] == [card.io.input_name]
    assert [o.name for o in proto.graph.output] == [card.io.output_name]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    # The ONNX answers for the model that saved the checkpoint, at another batch size than the export's.
    images = np.random.default_rng(3).standard_normal((2, *image_shape(name))).astype(np.float32)
    with torch.no_grad():
        expected = original(torch.from_numpy(images)).numpy()
    session = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    (actual,) = session.run([card.io.output_name], {card.io.input_name: images})
    assert actual.shape == (2, 1000) and relative_error(actual, expected) <= 1e-4


def test_the_guides_opset_can_be_overridden_and_random_weights_export(tmp_path):
    result = export_and_validate(None, tmp_path / "m.onnx", variant="mobilenet_v2", opset=13, parity_batch=1)
    assert result.opset == 13 and result.parity.passed and result.checkpoint_sha256 is None
    assert onnx.load(str(result.onnx_path)).opset_import[0].version == 13


def write_classifier_onnx(path, input_name: str, output_name: str, size: int):
    """A small float32 classifier graph: [batch,3,size,size] → global mean → [batch,1000] logits."""
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.random.default_rng(0).standard_normal((3, 1000)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", [input_name], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], [output_name]),
        ],
        "byo",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", 1000])],
        initializer=[weights],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), str(path))
    return path


@pytest.fixture
def byo_card(tmp_path, monkeypatch):
    """mobilenet_v2's card made into a bring-your-own-ONNX card "mine" (registered for the test only)."""
    from convmixer_tasks.models import registry

    onnx_file = write_classifier_onnx(tmp_path / "mine.onnx", "actual_input_1", "output1", size=224)
    card = dataclasses.replace(get_card("mobilenet_v2"), name="mine", onnx=str(onnx_file), architecture=None)
    monkeypatch.setitem(registry._registry(), "mine", card)
    return card


def test_bring_your_own_onnx_is_checked_hashed_copied_and_parity_says_skipped(tmp_path, byo_card):
    target = tmp_path / "out" / "model.onnx"
    target.parent.mkdir()
    result = export_and_validate(None, target, variant="mine")
    assert result.parity.skipped == BRING_YOUR_OWN and result.parity.max_abs_diff is None
    assert result.onnx_sha256 == sha256_file(byo_card.onnx) == sha256_file(target)
    assert result.checkpoint_sha256 == sha256_file(byo_card.onnx)
    assert read_json(result.report_path)["parity"]["skipped"] == "skipped: bring-your-own ONNX"


def test_an_onnx_whose_input_contradicts_the_card_is_refused_in_one_line(tmp_path, byo_card, monkeypatch):
    from convmixer_tasks.models import registry

    inception = get_card("inception_v3")  # a 299 input: the 224 ONNX contradicts it
    wrong = dataclasses.replace(
        byo_card, float_transform=inception.float_transform, preprocess=inception.preprocess, aipp=inception.aipp
    )
    monkeypatch.setitem(registry._registry(), "mine", wrong)
    with pytest.raises(ConfigError) as caught:
        export_and_validate(None, tmp_path / "m.onnx", variant="mine")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        f"model card 'mine': {byo_card.onnx} input 'actual_input_1' has shape ['batch', 3, 224, 224]"
    )
    assert "expected [N,3,299,299]" in message and message.endswith("or fix the card")
    assert list(tmp_path.glob("m.*")) == []
