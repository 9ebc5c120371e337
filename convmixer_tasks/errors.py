"""User-facing errors. Each message names the thing that is wrong and how to fix it; the CLI prints it as one line."""

import re
from collections.abc import Sequence
from typing import Any

_CREDENTIALS = re.compile(r"(\w[\w+.-]*://)[^/@\s]+@")


def masked(text: str) -> str:
    """``text`` without credentials in URLs (``scheme://user:secret@host`` -> ``scheme://***@host``): for what an
    error's message may carry into a stored row, an alert or a page."""
    return _CREDENTIALS.sub(r"\1***@", text)


class ConvMixerError(Exception):
    """Base of every error a user can act on (bad input, missing tool, failed check)."""


class ConfigError(ConvMixerError):
    """A flag, DAG param or setting has a value we cannot use."""


class DatasetError(ConvMixerError):
    """The image folder or label file is malformed or inconsistent."""


class PreprocessError(ConvMixerError):
    """An image could not be turned into model input, or a prep folder is unusable."""


class CheckpointError(ConvMixerError):
    """A checkpoint is unreadable or does not fit the model definition."""


class ExportError(ConvMixerError):
    """ONNX export failed, or the exported model disagrees with PyTorch beyond tolerance."""


class EvalError(ConvMixerError):
    """Model outputs cannot be scored against the labels."""


class BackendError(ConvMixerError):
    """An inference backend failed to describe, compile, infer or benchmark."""


class ToolMissingError(BackendError):
    """A required external tool (atc, npu-smi, ais_bench, a CANN env script) is not installed."""


class CompileError(BackendError):
    """A compiler (ATC) did not produce an artifact: it failed, or exited 0 without its success line."""


class MetricsError(ConvMixerError):
    """The metrics database is unreachable or a row cannot be written."""


class MetricsTableMissing(MetricsError):
    """The database has no metrics table yet: nothing was recorded there (the first run creates it)."""


class RegressionError(ConvMixerError):
    """A run's accuracy or throughput fell below its baseline minus the tolerance.

    ``decisions`` holds the gate's decision for each regressed row (``gate.GateDecision``), for failure callbacks.
    """

    def __init__(self, message: str, decisions: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.decisions: list[Any] = list(decisions)

    @property
    def decision(self) -> Any:
        """The decision when one row regressed (what ``gate.apply_gate`` raises)."""
        return self.decisions[0] if self.decisions else None
