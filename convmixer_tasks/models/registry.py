"""The registry of model cards: every module in ``models/cards/`` contributes its ``CARDS``, so adding a model adds
one card module (and, when the model needs new code, one builder module) and touches nothing else.

Imports no torch/numpy. The names alone (the DAG's Param choices, read whenever the DAG file is parsed) come from
``names``, which reads them off the card modules' source; building the cards checks that they agree.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from convmixer_tasks.models import cards as _cards_package
from convmixer_tasks.models.card import CardError, ModelCard
from convmixer_tasks.models.names import card_modules, card_names, names_in

# The flagship: what every step uses when no model is named.
DEFAULT_MODEL = "convmixer_1536_20"


@cache
def _registry() -> dict[str, ModelCard]:
    """Every card, by name (built once; the public functions below hand out copies, never this dict)."""
    found: dict[str, ModelCard] = {}
    for name in card_modules():
        module = importlib.import_module(f"{_cards_package.__name__}.{name}")
        cards = getattr(module, "CARDS", ())
        for card in cards:
            register(card, found, origin=module.__name__)
        built, read = tuple(card.name for card in cards), names_in(name)
        if built != read:  # what the DAG offers (names read off the source) must be what the cards are
            raise CardError(
                f"model card module {module.__name__} builds the cards {list(built)} but its source names "
                f"{list(read)}; write each card's name as a plain string in its CARDS entry (first argument or "
                'name="…")'
            )
    return found


def register(card: object, into: dict[str, ModelCard], origin: str = "") -> None:
    """Add ``card`` to ``into``; a non-card or a second card of the same name is refused by name."""
    where = f" in {origin}" if origin else ""
    if not isinstance(card, ModelCard):
        raise CardError(f"{card!r}{where} is not a ModelCard; list only ModelCard(…) objects in CARDS")
    if card.name in into:
        raise CardError(f"model card {card.name!r}{where} is defined twice; rename one of them")
    into[card.name] = card


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
