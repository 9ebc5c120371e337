"""What `convmixer-tasks models` prints: one line per card for people, every card whole for programs (-o json)."""

from __future__ import annotations

from dataclasses import dataclass

from convmixer_tasks.models.card import ModelCard
from convmixer_tasks.models.registry import all_cards

SUMMARY_COLUMNS = ("name", "family", "input", "AIPP", "top-1 %", "source")


def input_text(card: ModelCard) -> str:
    """The model's input and the file the guide's host step writes, e.g. ``224 (uint8 HWC 256)``."""
    host = card.preprocess
    return f"{card.input_size} ({host.dtype} {host.layout} {host.transform.crop})"


def source_text(card: ModelCard) -> str:
    """The guide folder and commit, e.g. ``Resnet50_Pytorch_Infer@6a2804a``."""
    reference = card.reference
    folder = reference.source.rsplit("/", 1)[-1]
    return f"{folder}@{reference.commit}" if reference.commit else folder


@dataclass(frozen=True)
class CardListing:
    cards: tuple[ModelCard, ...]

    def summary_table(self) -> tuple[tuple[str, ...], list[list[object]]]:
        """Header and one row per card for the human output formats."""
        body: list[list[object]] = [
            [card.name, card.family, input_text(card), card.has_aipp, card.reference.top1, source_text(card)]
            for card in self.cards
        ]
        return SUMMARY_COLUMNS, body


def list_cards() -> CardListing:
    return CardListing(cards=all_cards())
