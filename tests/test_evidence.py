"""Per-image predictions, per-class top-1, flips + exact McNemar, fidelity metrics — against hand-computed values —
and the Ascend doubles' model of reduced precision."""

from __future__ import annotations

import math

import numpy as np
import pytest

from convmixer_tasks.errors import ConfigError, EvalError
from convmixer_tasks.evidence import predictions as evidence
from convmixer_tasks.evidence.fidelity import check_thresholds, fidelity_metrics, subset_positions, summarise


def preds(labels, top1, indices=None, classes=4) -> evidence.Predictions:
    """Predictions whose top-1 is ``top1`` (the other four columns are irrelevant here)."""
    labels, top1 = np.asarray(labels, np.int16), np.asarray(top1, np.int16)
    n = labels.size
    top5 = np.zeros((n, 5), np.int16)
    top5[:, 0] = top1
    idx = np.arange(1, n + 1, dtype=np.int32) if indices is None else np.asarray(indices, np.int32)
    return evidence.Predictions(idx, labels, top5, np.ones(n, np.float16), classes)


# --- McNemar, hand-computed: exact p = min(1, 2 * P(X <= min(b, c))), X ~ Binomial(b + c, 1/2) --------------------


@pytest.mark.parametrize(
    "table, expected",
    [
        ([[10, 5], [1, 4]], 2 * (1 + 6) / 64),  # b=5, c=1: 2 * (C(6,0) + C(6,1)) / 2^6 = 0.21875
        ([[3, 8], [0, 1]], 2 / 256),  # b=8, c=0: 2 * 1/2^8
        ([[7, 0], [0, 3]], 1.0),  # nothing flipped
        ([[0, 2], [2, 0]], 1.0),  # b = c: min(1, 2 * 11/16)
    ],
)
def test_mcnemar_exact_matches_hand_computed_values(table, expected):
    assert evidence.mcnemar_exact(np.array(table)) == pytest.approx(expected, rel=1e-12)


def test_flips_count_both_directions_and_name_the_images():
    labels = [0, 1, 2, 3, 0, 1, 2, 3]
    before = preds(labels, [0, 1, 2, 3, 0, 0, 0, 0])  # 4 right
    after = preds(labels, [0, 1, 0, 0, 0, 1, 2, 0])  # right→wrong: images 3, 4; wrong→right: 6, 7
    flips = evidence.flips(before, after)
    assert (flips.both_right, flips.right_to_wrong, flips.wrong_to_right, flips.both_wrong) == (3, 2, 2, 1)
    assert flips.right_to_wrong_names == ("ILSVRC2012_val_00000003.JPEG", "ILSVRC2012_val_00000004.JPEG")
    assert flips.wrong_to_right_names == ("ILSVRC2012_val_00000006.JPEG", "ILSVRC2012_val_00000007.JPEG")
    assert flips.p_value == pytest.approx(1.0) and flips.top1_delta == 0.0
    worse = evidence.flips(before, preds(labels, [1, 0, 0, 0, 0, 0, 0, 0]))
    assert (worse.right_to_wrong, worse.wrong_to_right) == (4, 0) and worse.top1_delta == -50.0
    assert worse.p_value == pytest.approx(2 / 16)


def test_pairing_other_images_or_labels_is_one_clear_error():
    base = preds([0, 1, 2], [0, 1, 2])
    with pytest.raises(EvalError, match=r"covers other images than run A.*same image set"):
        evidence.flips(base, preds([0, 1, 2], [0, 1, 2], indices=[1, 2, 4]), "run A", "run B")
    with pytest.raises(EvalError, match="covers other images"):
        evidence.flips(base, preds([0, 1], [0, 1]), "run A", "run B")
    with pytest.raises(EvalError, match="label 1 images differently"):
        evidence.flips(base, preds([0, 1, 3], [0, 1, 2]), "run A", "run B")


def test_predictions_from_logits_follow_evaluates_tie_rule_and_skip_padding():
    logits = np.array(
        [[0.0, 5.0, 5.0, 1.0, 2.0, 3.0], [9.0, 1.0, 2.0, 3.0, 4.0, 5.0], [7.0, 7.0, 7.0, 7.0, 7.0, 7.0]], np.float32
    )
    got = evidence.predictions_from_logits(logits, np.array([2, 0, -1]), np.array([11, 10, 0]), num_classes=6)
    assert got.indices.tolist() == [10, 11]  # sorted by image index; the padded row (label -1) dropped
    assert got.top5.tolist() == [[0, 5, 4, 3, 2], [1, 2, 5, 4, 3]]  # tie 5.0/5.0: lower class first
    assert got.margin.tolist() == [4.0, 0.0] and got.correct.tolist() == [True, False]
    again = evidence.decode(evidence.encode(got))
    assert again.indices.tolist() == [10, 11] and np.array_equal(again.top5, got.top5)


def test_per_class_top1_and_worst_classes():
    p = preds([0, 0, 1, 1, 1, 3], [0, 2, 1, 1, 0, 3], classes=4)
    per_class = evidence.per_class_top1(p)
    assert per_class[0] == 50.0 and per_class[1] == pytest.approx(200 / 3) and per_class[3] == 100.0
    assert math.isnan(per_class[2])  # no image of class 2
    assert [w["class"] for w in evidence.worst_classes(p, 2)] == [0, 1]


def test_decode_refuses_garbage():
    with pytest.raises(EvalError, match="unreadable"):
        evidence.decode(b"not an npz")


# --- fidelity metrics, hand-computed ---------------------------------------------------------------------------


def test_fidelity_metrics_hand_computed():
    reference = np.array([[1.0, 0.0, 0.0], [1.0, 2.0, 3.0], [3.0, 4.0, 0.0]])
    actual = np.array([[0.0, 1.0, 0.0], [2.0, 4.0, 6.0], [3.0, 4.0, 0.0]])
    m = fidelity_metrics(reference, actual)
    assert m.cosine == pytest.approx([0.0, 1.0, 1.0])
    assert m.rel_euclidean == pytest.approx([math.sqrt(2), 1.0, 0.0])
    assert m.max_abs == pytest.approx([1.0, 3.0, 0.0])
    assert m.top1_agree.tolist() == [False, True, True]
    assert m.kl[2] == pytest.approx(0.0, abs=1e-15)
    # two classes: p = softmax([0, 0]) = (1/2, 1/2), q = softmax([0, ln 3]) = (1/4, 3/4): KL = 1/2 ln(4/3)
    two = fidelity_metrics(np.array([[0.0, 0.0]]), np.array([[0.0, math.log(3)]]))
    assert two.kl[0] == pytest.approx(0.5 * math.log(4 / 3), rel=1e-12)


def test_fidelity_summary_names_each_breach():
    m = fidelity_metrics(np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[0.9, 0.1], [1.0, 1.0]]))
    summary = summarise(m, check_thresholds({}))
    # cosine of (1,0)·(0.9,0.1) = 0.9/sqrt(0.82)
    assert summary["min_cosine"] == pytest.approx(0.9 / math.sqrt(0.82))
    assert summary["images"] == 2 and summary["top1_agreement"] == 1.0
    assert not any("cosine" in b for b in summary["breaches"])  # 0.9939 >= 0.99
    assert any("relative Euclidean distance 0.1414 > 0.05 on 1 of 2 images" in b for b in summary["breaches"])
    assert summarise(m, check_thresholds({"max_rel_euclidean": 0.2, "max_kl": 1.0}))["breaches"] == []


def test_output_width_mismatch_and_bad_thresholds_are_refused():
    with pytest.raises(EvalError, match=r"artifact outputs are .*10.* the ONNX gives .*1000.*compile the artifact"):
        fidelity_metrics(np.zeros((2, 1000)), np.zeros((2, 10)))
    with pytest.raises(ConfigError, match=r"unknown fidelity threshold.*min_cosin"):
        check_thresholds({"min_cosin": 0.9})
    with pytest.raises(ConfigError, match="max_kl must be a finite number >= 0"):
        check_thresholds({"max_kl": -1})


def test_subset_is_fixed_seeded_and_bounded():
    first, again = subset_positions(1000, 256), subset_positions(1000, 256)
    assert np.array_equal(first, again) and first.size == 256 and np.all(np.diff(first) > 0)
    assert subset_positions(100, None).size == 100  # default 256, capped at a smaller set
    with pytest.raises(ConfigError, match=r"subset of 300 images is larger than the 250 evaluated.*at most 250"):
        subset_positions(250, 300)


# --- the Ascend doubles' model of reduced precision --------------------------------------------------------------


def om_outputs(doubles, onnx_path, tmp_path, mode, batch):
    """Compile ``onnx_path`` with the ATC double in ``mode`` and run its double OM on ``batch``."""
    import onnxruntime as ort

    from convmixer_tasks.backends.base import CompileOptions
    from tests.doubles.ais_bench.infer_double import load_om

    artifact = doubles.backend().compile(onnx_path, 2, tmp_path / "cache", CompileOptions(precision_mode=mode))
    meta, onnx_bytes = load_om(str(artifact.path))
    assert meta["precision_mode"] == (mode or "force_fp16")  # ATC's default when none is given
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, {"input1": batch})[0]


def test_doubles_fp16_modes_compute_in_reduced_precision_and_keep_origin_matches_fp32(ascend_doubles, tmp_path):
    import onnxruntime as ort

    from tests.ascend_doubles import write_tiny_onnx

    onnx_path = write_tiny_onnx(tmp_path / "tiny.onnx", input_name="input1", classes=10)
    batch = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    fp32 = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input1": batch})[0]
    kept = om_outputs(ascend_doubles, onnx_path, tmp_path, "must_keep_origin_dtype", batch)
    assert np.array_equal(kept, fp32)
    default = om_outputs(ascend_doubles, onnx_path, tmp_path, None, batch)
    forced = om_outputs(ascend_doubles, onnx_path, tmp_path, "force_fp16", batch)
    assert np.array_equal(default, forced)  # deterministic; no mode = force_fp16
    weights_only = om_outputs(ascend_doubles, onnx_path, tmp_path, "allow_fp32_to_fp16", batch)
    err_forced, err_weights = np.abs(forced - fp32).max(), np.abs(weights_only - fp32).max()
    assert 0 < err_weights <= err_forced < 0.05  # fp16-sized errors, less where the mode rounds less
    assert np.array_equal(forced, forced.astype(np.float16).astype(np.float32))  # outputs went through fp16
    m = fidelity_metrics(fp32, forced)
    assert 0.999 < m.cosine.min() < 1.0


# --- CLI: eval writes predictions; compare two result folders ----------------------------------------------------


def write_eval_case(folder, labels, top1):
    """ais_bench-named outputs (batch 3, 1000 classes) whose argmax per image is ``top1``; val_label.txt."""
    folder.mkdir(parents=True)
    logits = np.zeros((len(top1), 1000), np.float32)
    logits[np.arange(len(top1)), top1] = 1.0
    for number in range(0, len(top1), 3):
        logits[number : number + 3].tofile(folder / f"input_{number // 3:05d}_0.bin")
    label_file = folder.parent / "val_label.txt"
    label_file.write_text("".join(f"ILSVRC2012_val_{i + 1:08d}.JPEG {label}\n" for i, label in enumerate(labels)))
    return folder, label_file


def test_cli_eval_writes_predictions_and_compare_prints_flips_and_p(tmp_path, capsys):
    import json

    from convmixer_tasks import cli

    labels = [5, 6, 7, 8, 9, 10]
    results = {}
    for name, top1 in (("a", [5, 6, 7, 8, 0, 0]), ("b", [5, 0, 0, 0, 9, 10])):
        outputs, label_file = write_eval_case(tmp_path / name / "outputs", labels, top1)
        argv = [
            "eval",
            "--outputs",
            str(outputs),
            "--label-file",
            str(label_file),
            "--batch-size",
            "3",
            "--result-json-path",
            str(tmp_path / name / "result"),
        ]
        assert cli.main(argv) == 0
        results[name] = tmp_path / name / "result"
        assert (results[name] / "predictions.npz").is_file()
    capsys.readouterr()
    assert cli.main(["-o", "json", "compare", str(results["a"]), str(results["b"])]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["right_to_wrong"], report["wrong_to_right"]) == (3, 2)
    assert report["right_to_wrong_names"][0] == "ILSVRC2012_val_00000002.JPEG"
    assert report["mcnemar_exact_p"] == pytest.approx(1.0)  # b=3, c=2: min(1, 2 * 26/32)
    assert report["top1_a"] == pytest.approx(400 / 6) and report["top1_delta_pt"] == pytest.approx(-100 / 6)

    other, other_labels = write_eval_case(tmp_path / "c" / "outputs", labels[:3], [5, 6, 7])
    argv = [
        "eval",
        "--outputs",
        str(other),
        "--label-file",
        str(other_labels),
        "--batch-size",
        "3",
        "--result-json-path",
        str(tmp_path / "c" / "result"),
    ]
    assert cli.main(argv) == 0
    capsys.readouterr()
    assert cli.main(["compare", str(results["a"]), str(tmp_path / "c" / "result")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "covers other images" in err and "same image set" in err


# --- re-validation on a new checkpoint: the triggering asset event names it -----------------------------------------


def test_the_newest_triggering_asset_event_names_the_checkpoint(tmp_path):
    from types import SimpleNamespace

    from convmixer_tasks.run.triggers import checkpoint_from_events, with_triggered_checkpoint

    asset = SimpleNamespace(uri="convmixer_checkpoint")
    new = tmp_path / "new.pth.tar"
    new.write_bytes(b"weights")
    events = {
        "convmixer_checkpoint": [
            SimpleNamespace(asset=asset, extra={"checkpoint": "/ckpt/old.pth.tar"}),
            SimpleNamespace(asset=asset, extra={"checkpoint": str(new)}),
        ]
    }
    assert checkpoint_from_events(events) == str(new)
    params = {"checkpoint": "/default.pth.tar", "batch_sizes": [4]}
    assert with_triggered_checkpoint(params, events) == {"checkpoint": str(new), "batch_sizes": [4]}
    assert with_triggered_checkpoint(params, {}) == params and checkpoint_from_events(None) is None
    with pytest.raises(ConfigError, match=r"asset event from convmixer_checkpoint .* has no extra.checkpoint; emit"):
        checkpoint_from_events({"convmixer_checkpoint": [SimpleNamespace(asset=asset, extra={})]})


def test_cli_fidelity_runs_the_artifact_and_the_onnx_on_the_subset(tmp_path, capsys):
    import json

    from convmixer_tasks import cli
    from convmixer_tasks.run.demo import make_demo_dataset
    from tests.ascend_doubles import write_tiny_onnx

    demo = make_demo_dataset(tmp_path / "demo", count=6)
    onnx_path = write_tiny_onnx(tmp_path / "tiny.onnx", classes=1000)
    compile_argv = [
        "-o",
        "json",
        "compile",
        "--onnx",
        str(onnx_path),
        "--batch-size",
        "2",
        "--output",
        str(tmp_path / "c"),
    ]
    assert cli.main(compile_argv) == 0
    artifact = json.loads(capsys.readouterr().out)["path"]
    argv = [
        "-o",
        "json",
        "fidelity",
        "--onnx",
        str(onnx_path),
        "--artifact",
        artifact,
        "--image-path",
        str(demo.image_dir),
        "--label-file",
        str(demo.label_file),
        "--work-dir",
        str(tmp_path / "w"),
    ]
    assert cli.main([*argv, "--subset", "5"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 5 and summary["breaches"] == [] and not summary["reference_cached"]
    assert summary["min_cosine"] == pytest.approx(1.0, abs=1e-6) and summary["top1_agreement"] == 1.0
    assert cli.main([*argv, "--subset", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["reference_cached"]  # one ONNX pass per ONNX + subset
    assert cli.main([*argv, "--subset", "7"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "subset of 7 images is larger than the 6" in err


def test_the_evidence_param_keeps_defaults_for_left_out_keys_and_refuses_typos():
    from convmixer_tasks.run.local_run import local_params
    from convmixer_tasks.run.run_options import EvidenceOptions

    options = local_params("work", evidence={"fidelity_subset": 64}).evidence
    assert options == EvidenceOptions(
        fidelity_subset=64, min_cosine=0.99, max_rel_euclidean=0.05, max_kl=0.005, top1_significance=0.01
    )
    with pytest.raises(ConfigError, match=r"param evidence: .*'fidelity_subsett' was unexpected"):
        local_params("work", evidence={"fidelity_subsett": 64})
    with pytest.raises(ConfigError, match=r"param evidence.top1_significance: 0 is less than or equal to the minimum"):
        local_params("work", evidence={"top1_significance": 0})
