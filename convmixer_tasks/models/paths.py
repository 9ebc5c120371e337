"""Where a card's files live (paths relative to the convmixer_tasks package), the demo model's name and committed
checkpoint, and the card module of the ConvMixer variants: what the settings read when the DAG file is parsed,
without building the cards."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
# The demo model (convmixer-tasks demo-train): the DAG's default model and checkpoint. Its card names this file.
DEMO_VARIANT = "convmixer_demo"
DEMO_CHECKPOINT_FILE = f"demo_assets/{DEMO_VARIANT}.pth.tar"
# The module (models/cards/<it>.py) of the ConvMixer cards, every one and only they (variants.py checks it): the
# [convmixer] model_variant setting is checked against the names it gives them.
CONVMIXER_CARD_MODULE = "convmixer"


def package_path(relative: str) -> Path:
    """A card's file path: relative ones under the convmixer_tasks package, absolute ones as they are."""
    return PACKAGE_DIR / relative


DEMO_CHECKPOINT = package_path(DEMO_CHECKPOINT_FILE)
