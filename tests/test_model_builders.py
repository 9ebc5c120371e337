"""Our builders against torchvision's state_dict layout (the spec's key tables), and card-driven checkpoint loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from convmixer_tasks.errors import CheckpointError
from convmixer_tasks.models.builders.inception import inception_v3
from convmixer_tasks.models.builders.vit import SelfAttention
from convmixer_tasks.models.checkpoints import build_model, check_checkpoint, load_checkpoint

KEY_TABLES = Path(__file__).resolve().parents[2] / "shared" / "spec" / "model-keys"  # shared/ sits beside the clone
TORCHVISION_CARDS = ("resnet50", "inception_v3", "mobilenet_v2", "vit_b_16")


def torchvision_layout(name: str) -> list[tuple[str, str, str]]:
    """(key, dtype, shape) rows of torchvision's state_dict for ``name``, in order, as the spec lists them."""
    table = KEY_TABLES / f"torchvision-{name}.tsv"
    if not table.is_file():
        pytest.fail(f"{table} is missing: the spec's key tables are the reference this test compares with")
    rows = [line.rstrip("\n").split("\t") for line in table.read_text().splitlines() if not line.startswith("#")]
    return [(key, dtype, shape) for key, dtype, shape in rows]


def layout(model: nn.Module) -> list[tuple[str, str, str]]:
    return [
        (key, str(value.dtype).removeprefix("torch."), "x".join(map(str, value.shape)) or "scalar")
        for key, value in model.state_dict().items()
    ]


@pytest.mark.parametrize("name", TORCHVISION_CARDS)
def test_builder_state_dict_is_torchvisions_key_for_key(name):
    with torch.device("meta"):
        model = build_model(name)
    assert layout(model) == torchvision_layout(name)


def test_inception_runs_its_aux_head_only_in_training_and_remaps_the_input():
    torch.manual_seed(0)
    model = inception_v3(num_classes=7).train()
    logits, aux = model(torch.randn(2, 3, 299, 299))
    assert logits.shape == aux.shape == (2, 7)
    x = torch.rand(1, 3, 4, 4)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    normalised = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    # transform_input turns ImageNet-normalised pixels back into (x - 0.5) / 0.5 of the same pixels.
    assert torch.allclose(model._transform_input(normalised), (x - 0.5) / 0.5, atol=1e-6)


def test_vit_attention_equals_torch_multihead_attention_with_the_same_weights():
    torch.manual_seed(0)
    ours = SelfAttention(dim=32, heads=4).eval()
    reference = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    reference.load_state_dict(ours.state_dict(), strict=True)  # the same keys: in_proj_*, out_proj.*
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        expected, _ = reference(x, x, x, need_weights=False)
        assert torch.allclose(ours(x), expected, atol=1e-5)


@pytest.fixture(scope="module")
def mobilenet_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return build_model("mobilenet_v2").state_dict()


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "module_prefix"])
def test_checkpoint_in_every_accepted_format_loads(tmp_path, mobilenet_state, wrap):
    state: object = mobilenet_state
    if wrap == "state_dict":
        state = {"state_dict": mobilenet_state, "epoch": 90}
    elif wrap == "module_prefix":
        state = {f"module.{k}": v for k, v in mobilenet_state.items()}
    path = tmp_path / ("ckpt.pth.tar" if wrap == "state_dict" else "ckpt.pth")
    torch.save(state, path)
    model = build_model("mobilenet_v2")
    load_checkpoint(model, path, "mobilenet_v2")
    assert torch.equal(model.state_dict()["classifier.1.weight"], mobilenet_state["classifier.1.weight"])


def test_another_cards_checkpoint_names_the_card_the_file_the_keys_and_the_fix(tmp_path, mobilenet_state):
    path = tmp_path / "mobilenet_v2-b0353104.pth"
    torch.save(mobilenet_state, path)
    with pytest.raises(CheckpointError) as caught:
        check_checkpoint(path, "resnet50")
    message = str(caught.value)
    assert "\n" not in message
    assert f"checkpoint {path} does not fit the model resnet50" in message
    assert "missing keys (conv1.weight, bn1.weight" in message and "unexpected keys (features.0.0.weight" in message
    assert message.endswith(
        "this looks like a mobilenet_v2 checkpoint; pass --model mobilenet_v2 (or the DAG param model_variant)"
    )


def test_a_checkpoint_of_no_card_asks_for_the_right_model(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match=r"does not fit the model resnet50: .*pass the model the checkpoint"):
        check_checkpoint(path, "resnet50")


def test_renames_apply_before_the_check(tmp_path):
    import dataclasses

    from convmixer_tasks.models.card import CheckpointFormat, KeyRename
    from convmixer_tasks.models.checkpoints import load_into

    torch.manual_seed(0)
    layer = nn.Linear(2, 2)
    model = nn.Sequential(layer)
    legacy = {k.replace("0.", "fc."): v for k, v in model.state_dict().items()}
    path = tmp_path / "legacy.pth"
    torch.save(legacy, path)
    fmt = CheckpointFormat(library="test", renames=(KeyRename(r"^fc\.", "0."),))
    fresh_layer = nn.Linear(2, 2)
    fresh = nn.Sequential(fresh_layer)
    load_into(fresh, path, fmt, "toy")
    assert torch.equal(fresh_layer.weight, layer.weight)
    with pytest.raises(CheckpointError, match="does not fit the model toy"):
        load_into(fresh, path, dataclasses.replace(fmt, renames=()), "toy")
