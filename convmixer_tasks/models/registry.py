"""The registry of model cards: every module in ``models/cards/`` contributes its ``CARDS``, so adding a model adds
one card module (and, when the model needs new code, one builder module) and touches nothing else.

Imports no torch/numpy: the DAG file and the CLI's Param choices read it at parse time.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from types import MappingProxyType
from typing import Any

from convmixer_tasks.models import cards as _cards_package
from convmixer_tasks.models.card import CardError, ModelCard

# The flagship: what every step uses when no model is named.
DEFAULT_MODEL = "convmixer_1536_20"


@cache
def _registry() -> MappingProxyType[str, ModelCard]:
    found: dict[str, ModelCard] = {}
    for info in sorted(pkgutil.iter_modules(_cards_package.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{_cards_package.__name__}.{info.name}")
        for card in getattr(module, "CARDS", ()):
            register(card, found, origin=module.__name__)
    return MappingProxyType(found)


def register(card: object, into: dict[str, ModelCard], origin: str = "") -> None:
    """Add ``card`` to ``into``; a non-card or a second card of the same name is refused by name."""
    where = f" in {origin}" if origin else ""
    if not isinstance(card, ModelCard):
        raise CardError(f"{card!r}{where} is not a ModelCard; list only ModelCard(…) objects in CARDS")
    if card.name in into:
        raise CardError(f"model card {card.name!r}{where} is defined twice; rename one of them")
    into[card.name] = card


def card_names() -> tuple[str, ...]:
    """Every registered card's name, in registration order (card modules by name, then their CARDS order)."""
    return tuple(_registry())


def all_cards() -> tuple[ModelCard, ...]:
    return tuple(_registry().values())


def get_card(name: str | ModelCard) -> ModelCard:
    """The card called ``name`` (a card passes through), or CardError listing the known names."""
    if isinstance(name, ModelCard):
        return name
    try:
        return _registry()[name]
    except (KeyError, TypeError):
        known = ", ".join(card_names())
        raise CardError(f"unknown model {name!r}; choose one of: {known} (convmixer-tasks models lists them)") from None


def default_card() -> ModelCard:
    return get_card(DEFAULT_MODEL)


def load_object(dotted: str) -> Any:
    """``"package.module:attribute"`` → the attribute, imported on demand (builders import torch)."""
    module_name, _, attribute = dotted.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise CardError(f"cannot load {dotted!r} ({type(exc).__name__}: {exc}); fix the card's dotted path") from exc
