"""Build a card's model and load checkpoints into it: safe reading (a checkpoint is untrusted input), the card's
wrappers, prefixes, renames and mapper, then a strict key/shape check whose error names the card, the file, the
first mismatching keys, and — when the file fits another card — that card.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convmixer_tasks.errors import CheckpointError
from convmixer_tasks.models.card import CardError, CheckpointFormat, ModelCard
from convmixer_tasks.models.registry import all_cards, get_card, load_object

# What every card accepts unless it says otherwise: the wrappers seen around state dicts (timm's train.py, the
# reference scripts, EMA copies) and DataParallel's prefix.
DEFAULT_FORMAT = CheckpointFormat(library="PyTorch state_dict")
MODEL_PARAM_HINT = "--model, or the DAG param model_variant"


def build_model(card: ModelCard | str) -> nn.Module:
    """A fresh (randomly initialised) model of ``card``, from its builder and kwargs."""
    card = get_card(card)
    if card.architecture is None:
        raise CardError(
            f"model card {card.name!r} brings its own ONNX ({card.onnx}) and has no builder; "
            "export and checkpoint loading do not apply to it"
        )
    builder = load_object(card.architecture.builder)
    return builder(**card.architecture.kwargs)


def checkpoint_format(card: ModelCard) -> CheckpointFormat:
    architecture = card.architecture
    return architecture.checkpoint if architecture is not None and architecture.checkpoint else DEFAULT_FORMAT


# --- reading ------------------------------------------------------------------------------------------------------


def read_state_dict(path: str | os.PathLike, fmt: CheckpointFormat = DEFAULT_FORMAT) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped and with a wrapper prefix removed (keys not yet mapped).

    ``weights_only=True``: a checkpoint is untrusted input and must not run code when unpickled. Only
    ``argparse.Namespace`` is allowed beyond plain containers and tensors, because timm's training script stores
    its ``args`` in the checkpoint it writes.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file; pass the path of a .pth/.pth.tar")
    _check_container(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} was refused by weights_only loading ({_load_failure_reason(exc)}): it pickles objects that "
            "could run code when loaded; if it comes from a trusted source, re-save just its state_dict with "
            "torch.save"
        ) from exc
    except Exception as exc:
        raise CheckpointError(
            f"{path} is damaged ({_load_failure_reason(exc)}); copy or download the checkpoint again"
        ) from exc
    state = _unwrap(obj, path, fmt.wrappers)
    for prefix in fmt.strip_prefixes:
        state = _strip_prefix(state, prefix)
    return state


# torch.save writes a zip archive since torch 1.6; older files are a bare pickle (protocol 2 header).
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_PICKLE_MAGIC = b"\x80\x02"


def _check_container(path: Path) -> None:
    """Name what a file that is not a checkpoint is (text, truncated archive) before torch.load reports it as an
    IndexError or an unpickling problem that sends the user after the wrong fix."""
    with open(path, "rb") as handle:
        head = handle.read(64)
    if head.startswith(_ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            raise CheckpointError(
                f"{path} is a truncated or damaged torch.save archive (its zip directory is missing); copy or "
                "download the checkpoint again"
            )
        return
    if head.startswith(_LEGACY_PICKLE_MAGIC):
        return
    if not head:
        looks = "empty"
    elif all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        looks = f"a text file (starts {head[:16]!r})"
    else:
        looks = f"of an unknown format (starts {head[:8]!r})"
    raise CheckpointError(
        f"{path} is {looks}, not a file written by torch.save; pass the .pth/.pth.tar checkpoint itself"
    )


def _load_failure_reason(exc: Exception) -> str:
    """The one informative line of torch.load's multi-paragraph error: which global it refused, when it says so."""
    text = str(exc)
    refused = re.search(r"(?:Unsupported global|unsupported GLOBAL)[^\n]*", text)
    if refused:
        return refused.group(0).split(". Please use", 1)[0].strip().rstrip(".")
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = lines[0].split(". Please use", 1)[0].split(". This is an internal", 1)[0] if lines else ""
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _unwrap(obj: Any, path: Path, wrappers: tuple[str, ...]) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for key in wrappers:
            if key in obj and isinstance(obj[key], Mapping):
                return _unwrap(obj[key], path, wrappers)
        top = ", ".join(sorted(map(str, obj))[:8]) or "(empty)"
        raise CheckpointError(
            f"{path} holds no state_dict: top-level keys are {top}; expected tensors, or one of "
            f"{', '.join(wrappers)} wrapping them"
        )
    raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state_dict of tensors")


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


# --- mapping and checking -----------------------------------------------------------------------------------------


def map_keys(state: dict[str, torch.Tensor], fmt: CheckpointFormat, model: nn.Module) -> dict[str, torch.Tensor]:
    """The card's renames (in order), then its mapper: ``state`` in the builder's key layout."""
    for rename in fmt.renames:
        pattern = re.compile(rename.pattern)
        state = {pattern.sub(rename.replacement, key): value for key, value in state.items()}
    if fmt.mapper is not None:
        mapper: Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]] = load_object(fmt.mapper)
        state = mapper(state, model)
    return state


def _is_optional(key: str, fmt: CheckpointFormat) -> bool:
    return any(re.search(pattern, key) for pattern in fmt.optional_keys)


def _first(keys: list[str], count: int = 5) -> str:
    more = f", … (+{len(keys) - count} more)" if len(keys) > count else ""
    return ", ".join(keys[:count]) + more


def mismatches(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], fmt: CheckpointFormat
) -> list[str]:
    """What keeps ``state`` from loading strictly into a model whose state_dict is ``expected`` (empty: it fits)."""
    missing = [k for k in expected if k not in state and not _is_optional(k, fmt)]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({_first(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_first(unexpected)})")
    if mismatched:
        parts.append(f"{len(mismatched)} shape mismatches ({_first(mismatched, 3)})")
    return parts


@cache
def _meta_model(name: str) -> nn.Module:
    """Names and shapes only (no weights allocated): what another card's checkpoint would look like."""
    with torch.device("meta"):
        return build_model(name)


def cards_fitting(state: Mapping[str, torch.Tensor], exclude: str | None = None) -> list[str]:
    """The cards (other than ``exclude``) whose model ``state`` loads into strictly, after each card's own mapping."""
    found = []
    for card in all_cards():
        if card.architecture is None or card.name == exclude:
            continue
        fmt, model = checkpoint_format(card), _meta_model(card.name)
        if not mismatches(map_keys(dict(state), fmt, model), model.state_dict(), fmt):
            found.append(card.name)
    return found


def fit_state(
    state: dict[str, torch.Tensor], model: nn.Module, path: Path, fmt: CheckpointFormat, card: str | None
) -> dict[str, torch.Tensor]:
    """``state`` mapped into ``model``'s layout, or a CheckpointError naming what does not fit and the fix."""
    mapped = map_keys(state, fmt, model)
    parts = mismatches(mapped, model.state_dict(), fmt)
    if not parts:
        return mapped
    others = cards_fitting(state, exclude=card)
    of_card = f" {card}" if card else ""
    described = load_object(fmt.describe)(mapped) if fmt.describe else ""
    if others:
        looks = "" if all(n in described for n in others) else f"this looks like a {' or '.join(others)} checkpoint; "
        fix = f"{described}{looks}pass --model {others[0]} (or the DAG param model_variant)"
    else:
        fix = f"{described}pass the model the checkpoint was trained as ({MODEL_PARAM_HINT})"
    raise CheckpointError(f"checkpoint {path} does not fit the model{of_card}: {'; '.join(parts)}; {fix}")


def load_into(model: nn.Module, path: str | os.PathLike, fmt: CheckpointFormat, card: str | None) -> None:
    """Load ``path`` into ``model`` strictly; keys the format marks optional keep the model's own values."""
    path = Path(path)
    state = fit_state(read_state_dict(path, fmt), model, path, fmt, card)
    for key, value in model.state_dict().items():  # an absent num_batches_tracked keeps the model's own value
        state.setdefault(key, value)
    model.load_state_dict(state, strict=True)


def load_checkpoint(model: nn.Module, path: str | os.PathLike, card: ModelCard | str) -> None:
    """Load ``path`` (a checkpoint in the card's accepted formats) into ``model`` built from ``card``."""
    card = get_card(card)
    load_into(model, path, checkpoint_format(card), card.name)


def check_checkpoint(path: str | os.PathLike, card: ModelCard | str) -> None:
    """Read ``path`` and check its keys and shapes against ``card``'s model without building it (a meta-device
    copy gives the shapes), so a wrong file or model is refused before any long step."""
    card = get_card(card)
    fmt = checkpoint_format(card)
    fit_state(read_state_dict(path, fmt), _meta_model(card.name), Path(path), fmt, card.name)
