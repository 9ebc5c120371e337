"""The backend registry: each backend's name, where its class lives and the constructor settings it takes.

A leaf (imports nothing of ours): the DAG file's Params, the settings and the CLI's choices read it at parse time;
``backends.base.get_backend`` imports a backend's module only when it is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackendEntry:
    module: str
    class_name: str
    settings: tuple[str, ...] = ()  # constructor settings it takes (CLI flags; workers set those they know)


# Adding a backend is its module plus one line here. Param enums and CLI choices derive from it.
BACKENDS: dict[str, BackendEntry] = {
    "onnxruntime": BackendEntry("convmixer_tasks.backends.onnxruntime", "OnnxRuntimeBackend"),
    "ascend": BackendEntry(
        "convmixer_tasks.backends.ascend", "AscendBackend", ("device_id", "cann_set_env", "python", "atc_log")
    ),
}
BACKEND_NAMES: tuple[str, ...] = tuple(BACKENDS)
