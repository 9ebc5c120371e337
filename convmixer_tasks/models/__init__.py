"""Model cards (one per ImageNet classifier) and the builders that need code of our own.

``from convmixer_tasks.models import get_card`` imports no torch/numpy; the builders (``models/builders/``) are
loaded only through a card's dotted path. ``card_names`` and ``CardError`` load nothing more than ``names``: the cards
themselves (``card``, ``registry``) are imported on first use of the other names (the DAG file lists the names only).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from convmixer_tasks.models.names import CardError, card_names

if TYPE_CHECKING:
    from convmixer_tasks.models.card import ModelCard
    from convmixer_tasks.models.paths import package_path
    from convmixer_tasks.models.registry import DEFAULT_MODEL, default_card, get_card, load_object

__all__ = [
    "DEFAULT_MODEL",
    "CardError",
    "ModelCard",
    "card_names",
    "default_card",
    "get_card",
    "load_object",
    "package_path",
]
_LAZY = {"ModelCard": "card", **dict.fromkeys(("DEFAULT_MODEL", "default_card", "get_card", "load_object"), "registry")}
_LAZY["package_path"] = "paths"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
