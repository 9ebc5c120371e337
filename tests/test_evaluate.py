"""evaluate.evaluate against a hand-built example: 7 images, batch 3 (last batch has 2 padded slots), 10 classes.

Each image's logits put its label at a chosen rank, so the expected accuracies are counted by hand below, not
computed by the code under test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from convmixer_tasks.errors import ConfigError, EvalError
from convmixer_tasks.fileio import atomic_write_json, to_jsonable
from convmixer_tasks.stages.evaluate import EvalResult, evaluate, label_ranks
from convmixer_tasks.stages.prepfolder import MANIFEST_NAME, PrepFile, PrepManifest, file_name, input_shape

NUM_CLASSES = 10
BATCH = 3
# image index -> (label, rank of the label among the logits; 0 = top-1)
HAND = {1: (3, 0), 2: (5, 1), 3: (0, 4), 4: (9, 5), 5: (2, 0), 6: (7, 9), 7: (1, 2)}
# By hand: top-1 hits {1, 5}; top-2 adds 2; top-3 adds 7; top-4 nothing; top-5 adds 3.
HAND_HITS = {1: 2, 2: 3, 3: 4, 4: 4, 5: 5}
PADDED_CLASS = 4  # padded slots' logits peak here: "correct" if anything labelled them 4


def _val_name(index: int) -> str:
    return f"ILSVRC2012_val_{index:08d}.JPEG"


def _row(label: int, rank: int, seed: int) -> np.ndarray:
    """10 distinct logits (exact in '%f' text) whose descending order puts ``label`` at position ``rank``."""
    others = [c for c in range(NUM_CLASSES) if c != label]
    np.random.default_rng(seed).shuffle(others)
    order = [*others[:rank], label, *others[rank:]]
    row = np.empty(NUM_CLASSES, dtype=np.float32)
    for position, cls in enumerate(order):
        row[cls] = 4.5 - 0.75 * position
    return row


def _batches() -> list[np.ndarray]:
    rows = [_row(*HAND[index], seed=index) for index in sorted(HAND)]
    padded = _row(PADDED_CLASS, 0, seed=99)
    rows += [padded, padded]
    return [np.stack(rows[i : i + BATCH]) for i in range(0, len(rows), BATCH)]


def _write_output(path: Path, logits: np.ndarray, fmt: str) -> None:
    if fmt == "bin":
        logits.astype(np.float32).tofile(path)
    elif fmt == "npy":
        np.save(path, logits.astype(np.float32))
    else:  # as ais_bench writes TXT: '%f', space-separated, trailing space
        np.savetxt(path, logits, fmt="%f", delimiter=" ", newline=" \n")


def _write_outputs(folder: Path, fmt: str = "bin", batches: list[np.ndarray] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for number, logits in enumerate(_batches() if batches is None else batches):
        _write_output(folder / f"input_{number:05d}_0.{fmt}", logits, fmt)
    return folder


def _write_labels(path: Path, labels: dict[int, int]) -> Path:
    path.write_text("".join(f"{_val_name(i)} {label}\n" for i, label in sorted(labels.items())))
    return path


def _write_manifest(prep_dir: Path, image_indices: list[int], batch_size: int = BATCH) -> Path:
    """A manifest as preprocess writes it (its own dataclasses); evaluation needs no input files beside it."""
    names = [_val_name(i) for i in image_indices]
    files = [
        PrepFile(
            name=file_name(position),
            images=names[start : start + batch_size],
            padded_slots=max(0, start + batch_size - len(names)),
        )
        for position, start in enumerate(range(0, len(names), batch_size))
    ]
    manifest = PrepManifest(
        batch_size=batch_size,
        dtype="float32",
        input_shape=input_shape(batch_size, "float32"),
        dataset_fingerprint="0" * 64,
        transform={},
        files=files,
        image_count=len(names),
    )
    atomic_write_json(prep_dir / MANIFEST_NAME, manifest)
    return prep_dir


@pytest.fixture()
def case(tmp_path):
    """Outputs (BIN), labels and manifest of the hand example."""
    labels = _write_labels(tmp_path / "val_label.txt", {i: label for i, (label, _) in HAND.items()})
    prep = _write_manifest(tmp_path / "prep", sorted(HAND))
    outputs = _write_outputs(tmp_path / "result" / "outputs_bs3")
    return {"tmp": tmp_path, "labels": labels, "prep": prep, "outputs": outputs, "json": tmp_path / "out" / "r.json"}


def _assert_hand_result(result: EvalResult) -> None:
    assert result.image_count == 7
    assert result.num_classes == NUM_CLASSES
    assert result.top1 == pytest.approx(100 * 2 / 7)
    assert result.top5 == pytest.approx(100 * 5 / 7)


# --- the hand example, every format and both row mappings ---------------------------------------------------------


@pytest.mark.parametrize("fmt", ["bin", "npy", "txt"])
def test_manifest_mapping_matches_hand_count(case, fmt):
    outputs = _write_outputs(case["tmp"] / f"outputs_{fmt}", fmt)
    result = evaluate(outputs, case["labels"], prep_dir=case["prep"], result_json=case["json"], num_classes=NUM_CLASSES)
    _assert_hand_result(result)
    assert result.result_json == case["json"]

    document = json.loads(case["json"].read_text())
    assert document["title"] == "Overall statistical evaluation"
    values = {item["key"]: item["value"] for item in document["value"]}
    assert [item["key"] for item in document["value"]] == [
        "Number of images",
        "Number of classes",
        "Top1 accuracy",
        "Top2 accuracy",
        "Top3 accuracy",
        "Top4 accuracy",
        "Top5 accuracy",
    ]
    assert values["Number of images"] == "7"
    assert values["Number of classes"] == "10"
    # reference formatting: str(round(percent, 2)) + "%"
    assert values["Top1 accuracy"] == "28.57%"
    assert values["Top2 accuracy"] == "42.86%"
    assert values["Top3 accuracy"] == "57.14%"
    assert values["Top4 accuracy"] == "57.14%"
    assert values["Top5 accuracy"] == "71.43%"
    metrics = document["metrics"]
    assert metrics["image_count"] == 7 and metrics["num_classes"] == 10
    assert metrics["top1"] == pytest.approx(100 * 2 / 7) and metrics["top5"] == pytest.approx(100 * 5 / 7)
    assert metrics["topk_correct"] == {str(k): hits for k, hits in HAND_HITS.items()}
    assert document["source"]["outfmt"] == fmt
    assert [p.name for p in case["json"].parent.iterdir()] == ["r.json"]  # no temp file left behind


@pytest.mark.parametrize("fmt", ["bin", "npy", "txt"])
@pytest.mark.parametrize("batch_size", [BATCH, None])
def test_reference_name_arithmetic_agrees_with_manifest(case, fmt, batch_size):
    outputs = _write_outputs(case["tmp"] / f"outputs_{fmt}", fmt)
    by_names = evaluate(outputs, case["labels"], batch_size=batch_size, num_classes=NUM_CLASSES)
    by_manifest = evaluate(outputs, case["labels"], prep_dir=case["prep"], num_classes=NUM_CLASSES)
    # The reference counted one padded slot in the denominator (8 images); we must not.
    _assert_hand_result(by_names)
    assert (by_names.top1, by_names.top5, by_names.image_count) == (
        by_manifest.top1,
        by_manifest.top5,
        by_manifest.image_count,
    )
    assert by_names.result_json is None


def test_padded_slot_is_ignored_even_when_its_logits_match_a_label(case):
    # The label file also covers image 8, labelled with the class the padded slots predict; the manifest says
    # the slot is padding, so it must not count (it would make top-1 3/8).
    labels = {i: label for i, (label, _) in HAND.items()} | {8: PADDED_CLASS}
    label_file = _write_labels(case["tmp"] / "val_label_8.txt", labels)
    result = evaluate(case["outputs"], label_file, prep_dir=case["prep"], num_classes=NUM_CLASSES)
    _assert_hand_result(result)


def test_manifest_picks_rows_by_image_name_not_position(case):
    # Images 2, 4 and 6 only (a subset prep): rows 0..2 of file 0 are images 2, 4, 6.
    subset = [2, 4, 6]
    prep = _write_manifest(case["tmp"] / "prep_subset", subset)
    batch = np.stack([_row(*HAND[i], seed=i) for i in subset])
    outputs = _write_outputs(case["tmp"] / "outputs_subset", batches=[batch])
    result = evaluate(outputs, case["labels"], prep_dir=prep, num_classes=NUM_CLASSES)
    assert result.image_count == 3
    assert result.top1 == pytest.approx(0.0)  # ranks 1, 5, 9
    assert result.top5 == pytest.approx(100 / 3)  # only image 2


def test_result_is_jsonable(case):
    result = evaluate(
        case["outputs"], case["labels"], prep_dir=case["prep"], result_json=case["json"], num_classes=NUM_CLASSES
    )
    data = json.loads(json.dumps(to_jsonable(result)))
    assert data["result_json"] == str(case["json"]) and data["image_count"] == 7


# --- the rank / tie rule -----------------------------------------------------------------------------------------


def test_label_ranks_equal_stable_descending_sort_with_ties():
    rng = np.random.default_rng(0)
    logits = rng.integers(0, 4, size=(500, 12)).astype(np.float32)  # many ties
    labels = rng.integers(0, 12, size=500)
    labels[::7] = -1  # rows to skip
    ranks = label_ranks(logits, labels)
    for row, label in enumerate(labels):
        if label < 0:
            assert ranks[row] == -1
        else:
            order = np.argsort(-logits[row], kind="stable")
            assert ranks[row] == int(np.flatnonzero(order == label)[0])
    valid = labels >= 0
    assert np.array_equal(ranks[valid] == 0, logits[valid].argmax(axis=1) == labels[valid])


def test_label_ranks_tie_goes_to_lower_class():
    logits = np.array([[1.0, 2.0, 2.0, 0.0]] * 2, dtype=np.float32)
    assert label_ranks(logits, np.array([1, 2])).tolist() == [0, 1]


# --- finding the output folder -----------------------------------------------------------------------------------


def test_sibling_summary_json_is_not_taken_for_the_output_folder(case):
    # Today's ais_bench writes <dir>_summary.json beside the folder; the reference's listdir()[0] could pick it.
    summary = case["outputs"].parent / "outputs_bs3_summary.json"
    summary.write_text("{}")
    (case["outputs"] / "sumary.json").write_text("{}")  # the old generation's summary inside the folder
    direct = evaluate(case["outputs"], case["labels"], prep_dir=case["prep"], num_classes=NUM_CLASSES)
    via_parent = evaluate(case["outputs"].parent, case["labels"], prep_dir=case["prep"], num_classes=NUM_CLASSES)
    _assert_hand_result(direct)
    _assert_hand_result(via_parent)


def test_parent_with_one_output_subfolder_is_accepted_and_logged(case, caplog):
    caplog.set_level("INFO", logger="convmixer_tasks.stages.evaluate")
    result = evaluate(case["outputs"].parent, case["labels"], batch_size=BATCH, num_classes=NUM_CLASSES)
    _assert_hand_result(result)
    assert "outputs_bs3" in caplog.text


def test_parent_with_several_output_subfolders_is_refused(case):
    _write_outputs(case["outputs"].parent / "outputs_bs3_again")
    with pytest.raises(EvalError, match=r"outputs_bs3, outputs_bs3_again"):
        evaluate(
            case["outputs"].parent,
            case["labels"],
            prep_dir=case["prep"],
            result_json=case["json"],
            num_classes=NUM_CLASSES,
        )
    assert not case["json"].exists()


# --- errors: each names the problem and writes no result JSON --------------------------------------------------


def _assert_refused(case, pattern: str, outputs: Path | None = None, labels: Path | None = None, **kwargs) -> None:
    kwargs.setdefault("num_classes", NUM_CLASSES)
    with pytest.raises(EvalError, match=pattern):
        evaluate(outputs or case["outputs"], labels or case["labels"], result_json=case["json"], **kwargs)
    assert not case["json"].exists()
    assert not case["json"].parent.exists() or not any(case["json"].parent.iterdir())


def test_missing_output_for_a_manifest_file(case):
    (case["outputs"] / "input_00001_0.bin").unlink()
    _assert_refused(case, r"1 of 3 manifest files have no output.*input_00001_0\.bin", prep_dir=case["prep"])


def test_output_not_in_manifest(case):
    _write_output(case["outputs"] / "input_00003_0.bin", _batches()[0], "bin")
    _assert_refused(case, r"not in the manifest.*input_00003_0\.bin", prep_dir=case["prep"])


def test_manifest_image_without_label(case):
    labels = _write_labels(case["tmp"] / "short.txt", {i: label for i, (label, _) in HAND.items() if i != 4})
    _assert_refused(case, r"no label.*ILSVRC2012_val_00000004", labels=labels, prep_dir=case["prep"])


def test_reference_mapping_row_without_label(case):
    labels = _write_labels(case["tmp"] / "gap.txt", {i: label for i, (label, _) in HAND.items() if i != 4})
    _assert_refused(case, r"input_00001_0\.bin row 0 → ILSVRC2012_val_00000004", labels=labels, batch_size=BATCH)


def test_reference_mapping_label_without_output(case):
    labels = _write_labels(case["tmp"] / "long.txt", {i: 0 for i in range(1, 11)})  # image 10 has no row
    _assert_refused(
        case, r"1 of 10 labelled images have no output row.*ILSVRC2012_val_00000010", labels=labels, batch_size=BATCH
    )


def test_reference_mapping_whole_file_past_the_labels(case):
    _write_output(case["outputs"] / "input_00003_0.bin", _batches()[0], "bin")  # images 10..12: no labels
    _assert_refused(
        case,
        r"1 output files lie past the last labelled image ILSVRC2012_val_00000007.*input_00003_0",
        batch_size=BATCH,
    )


def test_reference_mapping_needs_input_names(case):
    _write_output(case["outputs"] / "batch_a_0.bin", _batches()[0], "bin")
    _assert_refused(case, r"batch_a_0\.bin.*--prep-image", batch_size=BATCH)


def test_bin_size_not_a_whole_number_of_rows(case):
    with open(case["outputs"] / "input_00002_0.bin", "ab") as handle:
        handle.write(b"\0\0\0\0")
    _assert_refused(case, r"input_00002_0\.bin is 124 bytes.*10 float32", prep_dir=case["prep"])


def test_rows_differ_from_manifest_batch_size(case):
    _write_output(case["outputs"] / "input_00001_0.bin", _batches()[1][:2], "bin")
    _assert_refused(case, r"input_00001_0\.bin holds 2 rows.*expected 3", prep_dir=case["prep"])


def test_rows_differ_from_given_batch_size(case):
    _assert_refused(case, r"holds 3 rows.*expected 4", batch_size=4)


@pytest.mark.parametrize("bad", [0, -3])
def test_batch_size_flag_must_be_positive(case, bad):
    with pytest.raises(ConfigError, match=r"--batch-size"):
        evaluate(case["outputs"], case["labels"], batch_size=bad, result_json=case["json"], num_classes=NUM_CLASSES)
    assert not case["json"].exists()


def test_batch_size_flag_disagrees_with_manifest(case):
    _assert_refused(case, r"--batch-size 4 disagrees.*batch size 3", prep_dir=case["prep"], batch_size=4)


def test_wrong_class_count_in_npy(case):
    outputs = _write_outputs(case["tmp"] / "npy11", "npy", [np.zeros((3, 11), np.float32)] * 3)
    _assert_refused(
        case, r"input_0000\d_0\.npy holds 33 values.*10 class logits", outputs=outputs, prep_dir=case["prep"]
    )


def test_ragged_txt_row(case):
    outputs = _write_outputs(case["tmp"] / "txt", "txt")
    path = outputs / "input_00001_0.txt"
    lines = path.read_text().splitlines()
    lines[1] = lines[1].rsplit(" ", 2)[0]  # drop the last logit of row 1
    path.write_text("\n".join(lines) + "\n")
    _assert_refused(case, r"input_00001_0\.txt is unreadable", outputs=outputs, prep_dir=case["prep"])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_logits_name_the_file(case, bad):
    batches = _batches()
    batches[1][2, 6] = bad
    outputs = _write_outputs(case["tmp"] / "nan", batches=batches)
    _assert_refused(case, r"input_00001_0\.bin row 2 holds NaN/Inf", outputs=outputs, prep_dir=case["prep"])


def test_mixed_formats(case):
    _write_output(case["outputs"] / "input_00000_0.txt", _batches()[0], "txt")
    _assert_refused(case, r"mixes output formats \(3 \.bin, 1 \.txt\)", prep_dir=case["prep"])


def test_no_outputs(case):
    empty = case["tmp"] / "empty"
    empty.mkdir()
    _assert_refused(case, r"no ais_bench outputs", outputs=empty, prep_dir=case["prep"])


def test_empty_label_file(case):
    _assert_refused(case, r"lists no images", labels=_write_labels(case["tmp"] / "empty.txt", {}), batch_size=BATCH)


def test_missing_output_folder(case):
    _assert_refused(case, r"does not exist", outputs=case["tmp"] / "nowhere", prep_dir=case["prep"])
