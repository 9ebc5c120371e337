"""The model cards' names, read from the card modules' source without running them.

The DAG's Params offer every card's name, and the DAG file is parsed again and again by Airflow's dag-processor: it
lists the names without building the cards (``card.py``'s dataclasses alone cost ~12 ms an import). So each entry of a
card module's ``CARDS`` names its card with a plain string (the first argument or ``name="…"``); the registry checks,
whenever it builds the cards, that they carry exactly these names.
"""

from __future__ import annotations

import ast
import pkgutil
from functools import cache
from pathlib import Path

from convmixer_tasks.errors import ConfigError

CARDS_DIR = Path(__file__).resolve().with_name("cards")  # the package convmixer_tasks.models.cards


class CardError(ConfigError):
    """A model card is missing a field, holds a contradictory one, or is not registered."""


def card_modules() -> tuple[str, ...]:
    """The card modules (``convmixer_tasks.models.cards.<name>``), by name: the registry's order."""
    return tuple(sorted(info.name for info in pkgutil.iter_modules([str(CARDS_DIR)])))


@cache
def card_names() -> tuple[str, ...]:
    """Every card's name, in registration order (card modules by name, then their ``CARDS`` order)."""
    return tuple(name for module in card_modules() for name in names_in(module))


def names_in(module: str) -> tuple[str, ...]:
    """The names the entries of ``module``'s ``CARDS`` give their cards, read from its source; () without ``CARDS``
    (a module of shared helpers)."""
    path = CARDS_DIR / module / "__init__.py" if (CARDS_DIR / module).is_dir() else CARDS_DIR / f"{module}.py"
    where = f"model card module {module} ({path})"
    for node in ast.parse(path.read_bytes(), filename=str(path)).body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if not any(isinstance(target, ast.Name) and target.id == "CARDS" for target in targets):
            continue
        value = getattr(node, "value", None)
        if not isinstance(value, ast.Tuple | ast.List):
            raise CardError(f"{where}: CARDS is not a tuple written out; list the cards as CARDS = (card(…), …)")
        return tuple(_literal_name(entry, index, where) for index, entry in enumerate(value.elts, start=1))
    return ()


def _literal_name(entry: ast.expr, index: int, where: str) -> str:
    """The card's name in one ``CARDS`` entry: its call's ``name=`` keyword, else its first argument."""
    if isinstance(entry, ast.Call):
        named = [keyword.value for keyword in entry.keywords if keyword.arg == "name"]
        for value in named or entry.args[:1]:
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                return value.value
    raise CardError(
        f"{where}: CARDS entry {index} does not name its card with a plain string; write the name as the call's "
        'first argument or name="…" (the DAG lists the names without building the cards)'
    )
