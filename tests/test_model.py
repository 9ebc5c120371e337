"""ConvMixer definition and checkpoint loading: the released key layout, every accepted format, every mismatch."""

from __future__ import annotations

import argparse
import pickle

import pytest
import torch

from convmixer_tasks.errors import CheckpointError, ConfigError
from convmixer_tasks.models.builders.convmixer import (
    VARIANTS,
    ConvMixerSpec,
    Residual,
    build_model,
    get_spec,
    infer_spec,
    load_checkpoint,
    map_timm_keys,
)

SMALL = ConvMixerSpec(dim=8, depth=2, kernel_size=3, patch_size=16, num_classes=5)


def released_layout(dim: int, depth: int, k: int, patch: int, classes: int) -> dict[str, tuple[int, ...]]:
    """The key → shape table of locuslab's released checkpoints, written out independently of build_model."""

    def bn(prefix: str) -> dict[str, tuple[int, ...]]:
        return {
            f"{prefix}.weight": (dim,),
            f"{prefix}.bias": (dim,),
            f"{prefix}.running_mean": (dim,),
            f"{prefix}.running_var": (dim,),
            f"{prefix}.num_batches_tracked": (),
        }

    layout = {"0.weight": (dim, 3, patch, patch), "0.bias": (dim,), **bn("2")}
    for block in range(3, 3 + depth):
        layout |= {
            f"{block}.0.fn.0.weight": (dim, 1, k, k),
            f"{block}.0.fn.0.bias": (dim,),
            **bn(f"{block}.0.fn.2"),
            f"{block}.1.weight": (dim, dim, 1, 1),
            f"{block}.1.bias": (dim,),
            **bn(f"{block}.3"),
        }
    layout |= {f"{depth + 5}.weight": (classes, dim), f"{depth + 5}.bias": (classes,)}
    return layout


def shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in state.items()}


def test_1536_20_key_layout_equals_the_release():
    with torch.device("meta"):  # names and shapes only: no 200 MB allocation
        model = build_model("convmixer_1536_20")
    state = model.state_dict()
    assert shapes(state) == released_layout(1536, 20, 9, 7, 1000)
    assert list(state)[-2:] == ["25.weight", "25.bias"]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_builds_with_its_published_shape(name):
    spec = VARIANTS[name]
    with torch.device("meta"):
        model = build_model(name)
    assert shapes(model.state_dict()) == released_layout(
        spec.dim, spec.depth, spec.kernel_size, spec.patch_size, spec.num_classes
    )


def depthwise_part(block: torch.nn.Module) -> torch.nn.Sequential:
    """The Sequential a ConvMixer block's ``Residual`` wraps (depthwise conv, activation, batch norm)."""
    assert isinstance(block, torch.nn.Sequential)
    residual = block[0]
    assert isinstance(residual, Residual) and isinstance(residual.fn, torch.nn.Sequential)
    return residual.fn


def test_activation_follows_the_variant():
    with torch.device("meta"):
        relu_model = build_model("convmixer_768_32")
        gelu_model = build_model("convmixer_1536_20")
    relu_block = relu_model[3]
    assert isinstance(relu_block, torch.nn.Sequential)
    assert isinstance(relu_model[1], torch.nn.ReLU) and isinstance(relu_block[2], torch.nn.ReLU)
    assert isinstance(gelu_model[1], torch.nn.GELU) and isinstance(depthwise_part(gelu_model[3])[1], torch.nn.GELU)


def test_forward_gives_logits_per_image_and_blocks_are_residual():
    torch.manual_seed(0)
    model = build_model(SMALL).eval()
    images = torch.randn(3, 3, 64, 64)
    assert model(images).shape == (3, 5)
    first_block = model[3]
    assert isinstance(first_block, torch.nn.Sequential)
    block, depthwise = first_block[0], depthwise_part(first_block)
    conv = depthwise[0]
    assert isinstance(conv, torch.nn.Conv2d)
    x = torch.randn(1, 8, 4, 4)
    assert torch.allclose(block(x), depthwise(x) + x)
    assert conv.padding == (1, 1) and conv.groups == 8


def test_unknown_variant_lists_the_known_ones():
    with pytest.raises(ConfigError) as caught:
        get_spec("convmixer_1536_21")
    for name in VARIANTS:
        assert name in str(caught.value)


def test_unknown_activation_is_refused():
    with pytest.raises(ConfigError, match="swish"):
        build_model(ConvMixerSpec(dim=8, depth=1, kernel_size=3, patch_size=8, activation="swish"))


# --- checkpoint formats ------------------------------------------------------------------------------------------


@pytest.fixture
def trained_state():
    """A state dict with non-default values everywhere (so a load that silently skips a key is caught)."""
    torch.manual_seed(1)
    model = build_model(SMALL)
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.uniform_(0.5, 1.5)
            else:
                value.fill_(7)
    return model.state_dict()


def to_timm(state: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """Rename the Sequential keys as timm's ConvMixer names them (stem / blocks.N / head)."""
    renamed = {}
    for key, value in state.items():
        index, rest = key.split(".", 1)
        if int(index) < 3:
            renamed[f"stem.{key}"] = value
        elif int(index) == depth + 5:
            renamed[f"head.{rest}"] = value
        else:
            renamed[f"blocks.{int(index) - 3}.{rest}"] = value
    return renamed


def assert_loaded(model, state):
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda s: s, id="plain"),
        pytest.param(lambda s: {f"module.{k}": v for k, v in s.items()}, id="module-prefix"),
        pytest.param(lambda s: {"state_dict": s, "epoch": 300, "arch": "convmixer"}, id="state_dict-wrapper"),
        pytest.param(lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}}, id="wrapper-and-prefix"),
        pytest.param(lambda s: {"model": s}, id="model-wrapper"),
        pytest.param(lambda s: {"state_dict_ema": s, "optimizer": {"lr": 0.1}}, id="ema-wrapper"),
        pytest.param(
            lambda s: {"state_dict": s, "args": argparse.Namespace(model="convmixer_1536_20", lr=0.01)},
            id="timm-train-args",
        ),
        pytest.param(lambda s: to_timm(s, SMALL.depth), id="timm-keys"),
        pytest.param(
            lambda s: {"state_dict": {f"module.{k}": v for k, v in to_timm(s, SMALL.depth).items()}},
            id="timm-keys-wrapped",
        ),
    ],
)
def test_accepted_checkpoint_formats_load_every_tensor(tmp_path, trained_state, wrap):
    path = tmp_path / "ckpt.pth.tar"
    torch.save(wrap(trained_state), path)
    model = build_model(SMALL)
    load_checkpoint(model, path)
    assert_loaded(model, trained_state)


def test_missing_num_batches_tracked_is_tolerated(tmp_path, trained_state):
    path = tmp_path / "ckpt.pth"
    torch.save({k: v for k, v in trained_state.items() if not k.endswith("num_batches_tracked")}, path)
    model = build_model(SMALL)
    load_checkpoint(model, path)
    assert torch.equal(model.state_dict()["3.0.fn.0.weight"], trained_state["3.0.fn.0.weight"])


def test_timm_mapping_puts_head_after_pool_and_flatten():
    mapped = map_timm_keys(
        {
            "stem.0.weight": torch.zeros(1),
            "blocks.19.0.fn.2.bias": torch.zeros(1),
            "head.weight": torch.zeros(1),
            "other.x": torch.zeros(1),
        },
        head_index=25,
    )
    assert set(mapped) == {"0.weight", "22.0.fn.2.bias", "25.weight", "other.x"}


def test_missing_and_unexpected_keys_are_named_and_counted(tmp_path, trained_state):
    state = dict(trained_state)
    del state["3.1.weight"], state["4.3.bias"]
    state["9.weight"] = torch.zeros(3)
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(build_model(SMALL), path)
    message = str(caught.value)
    assert str(path) in message
    assert "2 missing keys" in message and "3.1.weight" in message and "4.3.bias" in message
    assert "1 unexpected keys" in message and "9.weight" in message


def test_many_missing_keys_show_the_first_few_and_the_count(tmp_path, trained_state):
    path = tmp_path / "stem-only.pth"
    torch.save({k: v for k, v in trained_state.items() if k.startswith(("0.", "2."))}, path)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(build_model(SMALL), path)
    missing = [k for k in trained_state if not k.startswith(("0.", "2.")) and not k.endswith("num_batches_tracked")]
    assert f"{len(missing)} missing keys" in str(caught.value)
    assert f"+{len(missing) - 5} more" in str(caught.value)


def test_wrong_variant_names_shapes_and_suggests_the_matching_variant(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "demo.pth"
    torch.save(build_model("convmixer_demo").state_dict(), path)
    other = ConvMixerSpec(dim=32, depth=4, kernel_size=5, patch_size=14)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(build_model(other), path)
    message = str(caught.value)
    assert "shape mismatches" in message and "0.weight (64, 3, 14, 14) vs model (32, 3, 14, 14)" in message
    assert "convmixer_demo" in message
    assert "--model" in message  # the flag `export` and `run` really take


def test_infer_spec_reads_the_shape_back():
    assert infer_spec(build_model(SMALL).state_dict()) == SMALL
    assert infer_spec({"x": torch.zeros(1)}) is None


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"this is a text file, not a checkpoint\n", "is a text file .*not a file written by torch.save"),
        (b"", "is empty, not a file written by torch.save"),
    ],
)
def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path, content, reason):
    path = tmp_path / "notes.pth.tar"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=reason) as caught:
        load_checkpoint(build_model(SMALL), path)
    assert str(path) in str(caught.value)


class Payload:
    """Stands for a pickled object that would run code on load."""

    def __reduce__(self):
        return (print, ("unpickled arbitrary code",))


def test_a_checkpoint_needing_arbitrary_unpickling_is_refused(tmp_path, trained_state, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": trained_state, "hook": Payload()}, path, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="weights_only") as caught:
        load_checkpoint(build_model(SMALL), path)
    assert str(path) in str(caught.value)
    assert "unpickled arbitrary code" not in capsys.readouterr().out


def test_a_whole_pickled_model_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(build_model(SMALL), path)
    with pytest.raises(CheckpointError, match=r"refused by weights_only.*GLOBAL torch.nn.modules.container.Sequential"):
        load_checkpoint(build_model(SMALL), path)


def test_missing_file_and_non_state_dict_content_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(build_model(SMALL), tmp_path / "absent.pth")
    path = tmp_path / "list.pth"
    torch.save({"epoch": 3, "metric": 0.5}, path)
    with pytest.raises(CheckpointError, match="holds no state_dict: top-level keys are epoch, metric"):
        load_checkpoint(build_model(SMALL), path)
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="holds a list"):
        load_checkpoint(build_model(SMALL), path)
