"""The model-card registry: light import, lookups, and each card's checks at registration."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from typing import Any

import pytest

from convmixer_tasks.models import CardError, ModelCard, card_names, get_card, names, paths, registry
from convmixer_tasks.models.card import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Aipp,
    Architecture,
    HostPreprocess,
    Labels,
    OnnxIO,
    Reference,
    Transform,
)
from convmixer_tasks.models.registry import all_cards, register
from convmixer_tasks.models.variants import VARIANT_NAMES

_TRANSFORM = Transform(resize=256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
_TOY = ModelCard(
    name="toy",
    family="toy",
    io=OnnxIO(input_name="x", output_name="y", opset=11),
    preprocess=HostPreprocess(transform=_TRANSFORM, dtype="float32", layout="NCHW"),
    float_transform=_TRANSFORM,
    labels=Labels(),
    reference=Reference(source="none"),
    architecture=Architecture(builder="pkg.mod:build"),
)


def _minimal(**overrides: Any) -> ModelCard:
    """The toy card with ``overrides`` (dataclasses.replace re-runs the card's checks)."""
    return dataclasses.replace(_TOY, **overrides)


def test_registry_imports_without_torch_numpy_or_pil():
    code = (
        "import sys; from convmixer_tasks.models import card_names, get_card; "
        "[get_card(n) for n in card_names()]; import convmixer_tasks.models.variants; "
        "heavy = [m for m in ('torch', 'numpy', 'PIL', 'onnx') if m in sys.modules]; "
        "print(','.join(heavy)); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"registry import pulled in {result.stdout.strip()} {result.stderr}"


def test_card_names_are_read_without_building_the_cards():
    """The DAG's Params list every card at parse time; the names come off the card modules' source, and they are
    the names of the cards the registry builds."""
    code = (
        "import sys; from convmixer_tasks.models import card_names; names = card_names(); "
        "built = [m for m in sys.modules if m.startswith(('convmixer_tasks.models.card', "
        "'convmixer_tasks.models.registry'))]; "
        "print(','.join(built)); sys.exit(1 if built or len(names) < 5 else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"card_names() built the cards: {result.stdout.strip()} {result.stderr}"
    assert card_names() == tuple(card.name for card in all_cards())


def test_a_card_name_that_is_not_a_plain_string_is_refused_by_module_and_entry(tmp_path, monkeypatch):
    monkeypatch.setattr(names, "CARDS_DIR", tmp_path)
    (tmp_path / "plain.py").write_text(
        'CARDS = (make("alpha", depth=1), make(depth=2, name="beta"))\nOTHER = (make("gamma"),)\n'
    )
    (tmp_path / "helpers.py").write_text("def make(name, **kwargs): ...\n")
    (tmp_path / "computed.py").write_text('PREFIX = "x"\nCARDS = (make("one"), make(PREFIX + "_two"))\n')
    (tmp_path / "generated.py").write_text("CARDS = tuple(make(name) for name in ('a', 'b'))\n")
    assert names.card_modules() == ("computed", "generated", "helpers", "plain")
    assert names.names_in("plain") == ("alpha", "beta") and names.names_in("helpers") == ()
    with pytest.raises(CardError) as info:
        names.names_in("computed")
    message = str(info.value)
    assert "model card module computed" in message and "CARDS entry 2" in message and "plain string" in message
    with pytest.raises(CardError, match=r"generated .*CARDS is not a tuple written out"):
        names.names_in("generated")


def test_the_registry_refuses_cards_whose_source_names_others(monkeypatch):
    read = names.names_in
    monkeypatch.setattr(registry, "names_in", lambda module: ("renamed",) if module == "resnet" else read(module))
    registry._registry.cache_clear()
    try:
        with pytest.raises(CardError) as info:
            get_card("resnet50")
    finally:
        registry._registry.cache_clear()
    message = str(info.value)
    assert "convmixer_tasks.models.cards.resnet builds the cards ['resnet50']" in message and "['renamed']" in message


def test_the_convmixer_variants_are_the_cards_their_module_names():
    """The settings check [convmixer] model_variant against the names models/cards/convmixer.py gives its cards
    (read off the source at parse time); variants.py refuses a layout where they are not the ConvMixer cards."""
    assert names.names_in(paths.CONVMIXER_CARD_MODULE) == VARIANT_NAMES
    code = (
        "import convmixer_tasks.models.paths as p; p.CONVMIXER_CARD_MODULE = 'resnet'; "
        "import convmixer_tasks.models.variants"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode != 0, "variants.py accepted ConvMixer cards that models/cards/resnet.py does not name"
    (last,) = result.stderr.strip().splitlines()[-1:]
    assert last.startswith("convmixer_tasks.models.names.CardError: the ConvMixer cards ['convmixer_1536_20'") and (
        "models/cards/resnet.py names (['resnet50'])" in last
    )


def test_convmixer_cards_keep_todays_numbers():
    names = card_names()
    assert names[:4] == ("convmixer_1536_20", "convmixer_768_32", "convmixer_1024_20_ks9_p14", "convmixer_demo")
    card = get_card("convmixer_1536_20")
    assert card.float_transform == Transform(
        resize=233, crop=224, interpolation="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD
    )
    assert (card.io.input_name, card.io.output_name, card.io.opset, card.io.dynamic_batch) == (
        "image",
        "class",
        17,
        True,
    )
    assert card.reference.top1 == 81.37 and card.aipp is None and card.preprocess.file_unit == "batch"


def test_unknown_card_lists_the_known_ones():
    with pytest.raises(CardError) as info:
        get_card("resnet5O")
    message = str(info.value)
    assert "unknown model 'resnet5O'" in message and "convmixer_1536_20" in message and "\n" not in message


@pytest.mark.parametrize("missing", ["family", "io", "preprocess", "float_transform", "labels", "reference"])
def test_missing_field_names_card_field_and_fix(missing):
    with pytest.raises(CardError) as info:
        _minimal(**{missing: None})
    message = str(info.value)
    assert message.startswith("model card 'toy':") and f"{missing!r}" in message and "add " in message


def test_card_needs_a_builder_or_an_onnx():
    with pytest.raises(CardError, match="neither 'architecture' nor 'onnx'"):
        _minimal(architecture=None)
    assert _minimal(architecture=None, onnx="model.onnx").onnx == "model.onnx"


def test_bad_values_are_refused_by_field():
    squash_typo: Any = "fit"
    with pytest.raises(CardError, match=r"float_transform.resize_rule is 'fit'"):
        _minimal(float_transform=dataclasses.replace(_TRANSFORM, resize_rule=squash_typo))
    with pytest.raises(CardError, match="not a dotted path"):
        _minimal(architecture=Architecture(builder="torchvision.models.resnet50"))


def test_aipp_must_compute_the_float_path():
    card = _minimal()
    good = card.uint8_aipp()
    assert good.min_chn == (255.0 * 0.485, 255.0 * 0.456, 255.0 * 0.406) and good.output_size == 224
    with pytest.raises(CardError, match="aipp channel 0"):
        _minimal(aipp=dataclasses.replace(good, min_chn=(120.0, *good.min_chn[1:])))
    crop_wrong = Aipp(
        src_size=256,
        min_chn=good.min_chn,
        var_reci=good.var_reci,
        float_equivalent=good.float_equivalent,
        crop=True,
        crop_start=(16, 16),
        crop_size=200,
    )
    with pytest.raises(CardError, match="aipp gives 200x200"):
        _minimal(aipp=crop_wrong)


def test_duplicate_and_foreign_registrations_are_refused():
    into: dict[str, ModelCard] = {}
    register(_minimal(), into)
    with pytest.raises(CardError, match="defined twice"):
        register(_minimal(), into)
    with pytest.raises(CardError, match="is not a ModelCard"):
        register({"name": "x"}, into)


def test_card_built_without_a_required_field_says_which():
    with pytest.raises(CardError, match=r"^model card 'bare': required field 'family' is missing; add a family name"):
        ModelCard(name="bare")


def test_models_command_lists_every_card_and_json_gives_each_whole(capsys):
    from convmixer_tasks import cli
    from convmixer_tasks.fileio import to_jsonable

    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "family", "input", "AIPP", "top-1", "%", "source"]
    by_name = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(by_name) == set(card_names())
    assert by_name["resnet50"][1:] == [
        "resnet",
        "224",
        "(uint8",
        "HWC",
        "256)",
        "yes",
        "76.14",
        "Resnet50_Pytorch_Infer@6a2804a",
    ]
    assert by_name["convmixer_1536_20"][6:8] == ["no", "81.37"]

    assert cli.main(["models", "-o", "json"]) == 0
    cards = json.loads(capsys.readouterr().out)["cards"]
    assert [card["name"] for card in cards] == list(card_names())
    assert cards[card_names().index("inception_v3")] == to_jsonable(get_card("inception_v3"))
