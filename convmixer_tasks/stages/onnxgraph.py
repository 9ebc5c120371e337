"""Facts read off an ONNX graph that export and both backends need (no onnx import: it works on the loaded proto)."""

from __future__ import annotations

from typing import Any


def graph_inputs(model: Any) -> list[Any]:
    """The graph's real inputs: ``graph.input`` minus initialisers (older exporters list weights as inputs too)."""
    initialisers = {init.name for init in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initialisers]
