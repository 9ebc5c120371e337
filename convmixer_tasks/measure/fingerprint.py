"""The environment a throughput figure depends on, as a flat dict stored on the row, and its key.

Rows with the same key form a throughput baseline; a changed key is named in the verdict ("toolkit_version:
onnxruntime 1.22.0 → 1.23.0") instead of a bare 'regressed'. Load during the benchmark is recorded beside it but is
not part of the key: it describes the measurement, not the environment.

Stdlib only: the benchmark step builds it on the worker that timed the run (that host's CPU, not the scheduler's).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Mapping
from typing import Any

from convmixer_tasks.measure.quiet import WINDOW_FACTS

# Artifact options and facts that change what is timed (ATC's precision/implmode/AIPP, ORT's provider and threads).
_ARTIFACT_KEYS = (
    "input_dtype",
    "soc_version",
    "precision_mode",
    "op_select_implmode",
    "optypelist_for_implmode",
    "aipp",
    "provider",
    "intra_op_threads",
    "graph_optimization_level",
    "runtime",
)
# The figures of the measurements a suspect run took to confirm itself (loopstats.confirm_if_suspect): part of the
# measurement's record, read by the verdict, never part of the key.
CONFIRMATIONS = "suspect_confirmations"
# Measurement conditions kept on the fingerprint dict for the record, but outside the key (quiet.BenchmarkWindow's).
NOT_KEYED = ("cores_online", *WINDOW_FACTS, CONFIRMATIONS)


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return platform.processor() or None


def build(
    backend: str,
    device: str | None,
    toolkit_version: str | None,
    options: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
    environment: Mapping[str, str | int | float | None] | None = None,
) -> dict[str, Any]:
    """The fingerprint of a benchmark about to run on this host; ``environment``: what the backend reports of its
    tools beyond the toolkit (``Backend.environment``: NPU driver, ais_bench build), taken as is."""
    found: dict[str, Any] = {"backend": backend, "device": device, "toolkit_version": toolkit_version}
    found.update(environment or {})
    for source in (options or {}, meta or {}):
        for key in _ARTIFACT_KEYS:
            value = source.get(key)
            if value is not None and key not in found:
                found[key] = value if isinstance(value, (str, int, float)) else json.dumps(value, sort_keys=True)
    found["host_cpu"] = cpu_model()
    found["host_cores"] = os.cpu_count()
    return found


def key(fingerprint: Mapping[str, Any] | None) -> str | None:
    """sha256 of the keyed part (sorted JSON); None for a row that has no fingerprint."""
    if not fingerprint:
        return None
    keyed = {name: value for name, value in fingerprint.items() if name not in NOT_KEYED}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()


def differences(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[str]:
    """``name: old → new`` for each keyed entry that differs (an entry missing on one side shows as None)."""
    if not before or not after:
        return [] if before == after else ["fingerprint: none recorded → recorded" if after else "fingerprint lost"]
    names = sorted((set(before) | set(after)) - set(NOT_KEYED))
    return [f"{name}: {before.get(name)} → {after.get(name)}" for name in names if before.get(name) != after.get(name)]
