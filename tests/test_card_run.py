"""`convmixer-tasks run --model <card>` on the demo set for every card, with seeded random weights (no checkpoint):
the whole chain runs through the card's preprocessing (the guide's uint8 files for AIPP cards, the float path
otherwise), compile, infer and eval, and the output says the top-1 is expected at chance."""

from __future__ import annotations

import json

import pytest

from convmixer_tasks import cli
from convmixer_tasks.models.registry import all_cards, get_card

GUIDE_CARDS = [card.name for card in all_cards() if card.family != "convmixer"]
IMAGES = 8


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("work")


@pytest.mark.slow
@pytest.mark.parametrize("name", GUIDE_CARDS)
def test_run_model_with_random_weights_says_top1_is_at_chance(work_dir, capsys, name):
    card = get_card(name)
    dtype = card.preprocess.dtype  # AIPP cards: the guide's uint8 files (ResNet-50: 256×256, cropped by AIPP)
    argv = ["run", "--work-dir", str(work_dir), "--model", name, "--dtype", dtype, "--limit", str(IMAGES)]
    assert cli.main([*argv, "--batch-size", "4", "--loop", "2", "--output", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["note"] == f"{name}: random weights: top-1 at chance (0.1 %) expected"
    (row,) = summary["rows"]
    assert row["model_variant"] == name and row["input_dtype"] == dtype and row["image_count"] == IMAGES
    assert row["checkpoint_sha256"] is None  # no checkpoint to hash (the ONNX cache keys it as RANDOM_WEIGHTS)
    # 8 images of 10 demo classes against 1000 outputs: a random model hits at most one or two by luck.
    assert row["top1"] <= 25.0
