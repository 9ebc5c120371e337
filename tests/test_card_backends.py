"""The model card at the backends: ATC's argv and AIPP config from the card (against the tool doubles), ais_bench fed
the guide's per-image files at the AIPP source size, ONNX Runtime emulating the card's AIPP (crop included) so the
uint8 guide path gives the float path's logits, and eval matching per-image outputs by image name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convmixer_tasks.backends import ascend
from convmixer_tasks.backends.base import CompileOptions, get_backend
from convmixer_tasks.errors import CompileError
from convmixer_tasks.models.registry import all_cards, get_card
from convmixer_tasks.stages.evaluate import evaluate
from convmixer_tasks.stages.preprocess import preprocess
from tests.ascend_doubles import ascend_doubles, write_tiny_onnx  # noqa: F401 (fixture)

GUIDE_CARDS = [card.name for card in all_cards() if card.family != "convmixer"]
AIPP_CARDS = [card.name for card in all_cards() if card.aipp is not None]
BATCH = 4
IMAGES = 6  # one full batch of per-image files and one padded by ais_bench


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from convmixer_tasks.run.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo"), count=IMAGES)


def tiny_model(card_name: str, folder: Path) -> Path:
    """A small classifier with the card's ONNX interface and input size (ATC's double checks the name and rank)."""
    card = get_card(card_name)
    return write_tiny_onnx(
        folder / f"{card.name}.onnx",
        input_name=card.io.input_name,
        output_name=card.io.output_name,
        size=card.input_size,
        classes=1000,
    )


def read_argvs(path: Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- ATC -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GUIDE_CARDS)
def test_atc_argv_and_aipp_config_come_from_the_card(ascend_doubles, tmp_path, name):  # noqa: F811
    card = get_card(name)
    log = tmp_path / "atc.argv.jsonl"
    ascend_doubles.mode(ATC_DOUBLE_ARGV_LOG=str(log))
    backend = ascend_doubles.backend()
    options = CompileOptions(input_dtype="uint8", model=name, op_select_implmode=None, optypelist_for_implmode=None)
    artifact = backend.compile(tiny_model(name, tmp_path), BATCH, tmp_path / "cache", options)

    (argv,) = read_argvs(log)
    size = card.input_size  # the tensor after AIPP: 224 / 299, never the uint8 file's size
    assert argv[:4] == [
        "--framework=5",
        f"--model={(tmp_path / f'{name}.onnx').resolve()}",
        argv[2],
        "--input_format=NCHW",
    ]
    assert argv[4:6] == [f"--input_shape={card.io.input_name}:{BATCH},3,{size},{size}", "--soc_version=Ascend310P3"]
    assert ("--enable_small_channel=1" in argv) == card.atc.enable_small_channel
    assert not any(arg.startswith(("--op_select_implmode", "--optypelist_for_implmode")) for arg in argv)
    assert argv[-1].startswith("--insert_op_conf=")

    aipp = card.uint8_aipp()
    text = artifact.meta["aipp_config"]
    assert f"src_image_size_w: {aipp.src_size}\n" in text and f"src_image_size_h: {aipp.src_size}\n" in text
    assert ("crop: true" in text) == aipp.crop
    if aipp.crop:
        top, left = aipp.crop_start
        for line in (f"load_start_pos_h: {top}", f"load_start_pos_w: {left}", f"crop_size_w: {aipp.crop_size}"):
            assert f"  {line}\n" in text
    values = dict(line.strip().split(": ") for line in text.splitlines()[1:-1])
    # 16 significant digits, as the config has always been written: the guides' own numbers (15 digits) round-trip
    assert [float(values[f"min_chn_{c}"]) for c in range(3)] == pytest.approx(aipp.min_chn, rel=1e-15)
    assert [float(values[f"var_reci_chn_{c}"]) for c in range(3)] == pytest.approx(aipp.var_reci, rel=1e-15)
    # The OM takes what the uint8 files hold: NHWC at the AIPP source size (ResNet-50: 256×256×3 per image).
    assert artifact.input_shape == [BATCH, aipp.src_size, aipp.src_size, 3]


def test_resnet50_aipp_config_is_the_guides(tmp_path):
    """The guide's aipp_resnet50.aippconfig values, written out (static, RGB888_U8, 256 source, 224 crop at 16,16)."""
    text = ascend.aipp_config(get_card("resnet50").uint8_aipp())
    assert text == (
        "aipp_op {\n  aipp_mode: static\n  related_input_rank: 0\n  input_format: RGB888_U8\n"
        "  src_image_size_w: 256\n  src_image_size_h: 256\n  crop: true\n  load_start_pos_h: 16\n"
        "  load_start_pos_w: 16\n  crop_size_w: 224\n  crop_size_h: 224\n  csc_switch: false\n"
        "  min_chn_0: 123.675\n  min_chn_1: 116.28\n  min_chn_2: 103.53\n"
        "  var_reci_chn_0: 0.0171247538316637\n  var_reci_chn_1: 0.0175070028011204\n"
        "  var_reci_chn_2: 0.0174291938997821\n}\n"
    )


@pytest.mark.parametrize(
    "edit, match",
    [
        (("crop_size_w: 224", "crop_size_w: 200"), r"crop_size\] is invalid"),  # not the --input_shape H,W
        (("load_start_pos_w: 16", "load_start_pos_w: 40"), r"exceeds the source image 256x256"),
        (("  crop: true\n", ""), r"src_image_size\] is invalid"),  # without crop, 256 is not the model's 224
    ],
)
def test_atc_double_refuses_an_aipp_crop_that_does_not_fit(ascend_doubles, tmp_path, monkeypatch, edit, match):  # noqa: F811
    """What the double checks of an AIPP config (the spec is silent on ATC's own checks, so only these): the tensor
    AIPP hands the model is the --input_shape H,W, and the crop window lies inside the source."""
    real = ascend.backend.aipp_config
    monkeypatch.setattr(ascend.backend, "aipp_config", lambda aipp: real(aipp).replace(*edit))
    options = CompileOptions(input_dtype="uint8", model="resnet50")
    with pytest.raises(CompileError, match=match):
        ascend_doubles.backend().compile(tiny_model("resnet50", tmp_path), BATCH, tmp_path / "cache", options)


def test_convmixer_atc_argv_is_unchanged(ascend_doubles, tmp_path):  # noqa: F811
    """The default model with no card named and with its card named: the same argv as before cards existed."""
    log = tmp_path / "atc.argv.jsonl"
    ascend_doubles.mode(ATC_DOUBLE_ARGV_LOG=str(log))
    onnx_path = write_tiny_onnx(tmp_path / "cm.onnx")
    backend = ascend_doubles.backend()
    backend.compile(onnx_path, 2, tmp_path / "a", CompileOptions())
    backend.compile(onnx_path, 2, tmp_path / "b", CompileOptions(model="convmixer_1536_20"))
    first, second = read_argvs(log)
    expected_tail = [
        "--input_format=NCHW",
        "--input_shape=image:2,3,224,224",
        "--soc_version=Ascend310P3",
        "--op_select_implmode=high_performance",
        "--optypelist_for_implmode=Gelu",
        "--log=error",
    ]
    assert first[3:] == expected_tail and second[3:] == expected_tail


# --- ais_bench and eval on the guide's files ---------------------------------------------------------------------


@pytest.mark.parametrize("name", AIPP_CARDS)
def test_ais_bench_runs_the_guides_per_image_files_and_eval_matches_them_by_name(ascend_doubles, demo, tmp_path, name):  # noqa: F811
    backend = ascend_doubles.backend()
    options = CompileOptions(input_dtype="uint8", model=name)
    artifact = backend.compile(tiny_model(name, tmp_path), BATCH, tmp_path / "cache", options)
    prep = preprocess(demo.image_dir, tmp_path / "prep", batch_size=BATCH, workers=1, model=name).out_dir
    result = backend.infer(artifact, prep, tmp_path / "out" / "result")
    assert result.file_count == IMAGES  # one file per image; ais_bench packed them 4 to a batch
    names = sorted(p.name for p in result.output_dir.iterdir())
    assert names == [f"ILSVRC2012_val_{i:08d}_0.bin" for i in range(1, IMAGES + 1)]
    assert all((result.output_dir / n).stat().st_size == 1000 * 4 for n in names)  # padded slots are not saved
    by_manifest = evaluate(result.output_dir, demo.label_file, prep_dir=prep)
    by_name = evaluate(result.output_dir, demo.label_file)  # the guides' scripts: output stem minus _0 = image
    assert by_manifest.image_count == by_name.image_count == IMAGES
    assert by_manifest.top1 == by_name.top1 and by_manifest.top5 == by_name.top5


# --- ONNX Runtime: the card's AIPP in the graph ------------------------------------------------------------------


def float_and_uint8_logits(onnx_path: Path, name: str, image_dir: Path, work: Path) -> tuple[np.ndarray, np.ndarray]:
    """Logits of the same images through the float path (float32 batches) and the guide's uint8 files (the
    OM-equivalent ORT artifact with the card's AIPP prologue), each as (images, classes) in image order."""
    backend = get_backend("onnxruntime", provider="cpu", threads=1)
    logits = []
    for dtype, prep_dtype in (("float32", "float32"), ("uint8", None)):
        artifact = backend.compile(onnx_path, BATCH, work / "cache", CompileOptions(input_dtype=dtype, model=name))
        prep = preprocess(image_dir, work / f"prep_{dtype}", BATCH, dtype=prep_dtype, workers=1, model=name)
        out = backend.infer(artifact, prep.out_dir, work / f"out_{dtype}" / "result").output_dir
        evaluation = evaluate(out, image_dir.parent / "val_label.txt", prep_dir=prep.out_dir)
        assert evaluation.image_count == IMAGES
        from convmixer_tasks.stages.evaluate import evaluate_with_evidence

        logits.append(evaluate_with_evidence(out, image_dir.parent / "val_label.txt", prep_dir=prep.out_dir).logits)
    return logits[0], logits[1]


@pytest.mark.parametrize("name", AIPP_CARDS)
def test_ort_aipp_prologue_gives_the_float_paths_logits(demo, tmp_path, name):
    float_logits, uint8_logits = float_and_uint8_logits(tiny_model(name, tmp_path), name, demo.image_dir, tmp_path)
    assert np.allclose(uint8_logits, float_logits, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_resnet50_random_weights_uint8_guide_path_matches_the_float_path(demo, tmp_path):
    """ResNet-50 itself (random weights): the 256×256 uint8 files through the OM-equivalent ORT artifact (crop 224
    at 16,16 then normalise, in the graph) against the float path's Resize(256) + CenterCrop(224) + norm."""
    import torch

    from convmixer_tasks.models.registry import load_object

    card = get_card("resnet50")
    assert card.architecture is not None
    torch.manual_seed(0)
    model = load_object(card.architecture.builder)(**card.architecture.kwargs).eval()
    onnx_path = tmp_path / "resnet50.onnx"
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, 224, 224),),
        str(onnx_path),
        input_names=[card.io.input_name],
        output_names=[card.io.output_name],
        dynamic_axes={card.io.input_name: {0: "batch"}, card.io.output_name: {0: "batch"}},
        opset_version=card.io.opset,
        dynamo=False,
    )
    float_logits, uint8_logits = float_and_uint8_logits(onnx_path, "resnet50", demo.image_dir, tmp_path)
    scale = np.abs(float_logits).max()
    assert np.abs(uint8_logits - float_logits).max() <= 1e-4 * scale


# --- eval conventions ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("classes, offset", [(1000, 0), (1001, 1)])
def test_eval_matches_per_image_outputs_by_name_and_shifts_labels_for_1001_outputs(tmp_path, classes, offset):
    """The guides' scripts: output stem minus ``_0`` is the image; label + 1 when the output has 1001 values (a
    background class first). Each image's logits peak at its label + offset, so only the right rule scores 100 %."""
    labels = {1: 3, 2: 997, 3: 0}
    label_file = tmp_path / "val_label.txt"
    label_file.write_text("".join(f"ILSVRC2012_val_{i:08d}.JPEG {label}\n" for i, label in labels.items()))
    out = tmp_path / "result"
    out.mkdir()
    for index, label in labels.items():
        logits = np.zeros(classes, dtype=np.float32)
        logits[label + offset] = 1.0
        logits.tofile(out / f"ILSVRC2012_val_{index:08d}_0.bin")
    result = evaluate(out, label_file, num_classes=classes)
    assert (result.top1, result.image_count) == (100.0, 3)
    shifted = evaluate(out, label_file, num_classes=classes, label_offset=1 - offset)
    assert shifted.top1 == 0.0
