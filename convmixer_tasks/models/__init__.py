"""Model cards (one per ImageNet classifier) and the builders that need code of our own.

``from convmixer_tasks.models import get_card`` imports no torch/numpy; the builders (``models/builders/``) are
loaded only through a card's dotted path.
"""

from convmixer_tasks.models.card import CardError, ModelCard
from convmixer_tasks.models.registry import DEFAULT_MODEL, card_names, default_card, get_card, load_object

__all__ = ["DEFAULT_MODEL", "CardError", "ModelCard", "card_names", "default_card", "get_card", "load_object"]
