"""The NPU fleet: chip types as a run dimension, each chip type served by its own queue and pool.

A chip type is the Name column of ``npu-smi info`` (``310P3``, ``910B3``). An OM compiled for one SoC does not run on
another, so compile, infer and benchmark for chip X go to the queue and pool named by the ``[convmixer]
npu_queue_template`` / ``npu_pool_template`` settings (``{queue}.{chip}`` → ``npu.310P3``), and ATC's
``--soc_version`` is ``Ascend`` + X. No chips configured (the default) is today's single ``npu`` queue and pool.

``check_chip_workers`` asks the executor which of those queues have a live worker, so a run for a chip nobody
serves fails at once instead of waiting for a worker that never comes. The question itself (Celery's
``inspect().active_queues()``; the Edge executor's worker registry, ``edge_registry``) is passed in: this module
imports neither Airflow nor Celery.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from convmixer_tasks.errors import ConfigError

# As npu-smi prints a chip's Name: a 3-digit family and an optional model suffix (310P3, 910B4-1, 910_9391).
CHIP_RE = re.compile(r"^\d{3}[A-Za-z0-9_-]*$")
CHIP_EXAMPLES = "310P3, 910B3, 310B1"
DEFAULT_QUEUE_TEMPLATE = "{queue}.{chip}"
DEFAULT_POOL_TEMPLATE = "{pool}.{chip}"
ACTIVE_QUEUES_TIMEOUT_S = 3.0
# Answer of Celery's inspect().active_queues(): {worker name: [{"name": queue, ...}, ...]}, None when none replied.
ActiveQueues = Callable[[float], "Mapping[str, Sequence[Mapping[str, Any]]] | None"]
# {queue: [live workers serving it]}; workers that serve every queue (an Edge worker without queues) under ANY_QUEUE
ServedQueues = Mapping[str, Sequence[str]]
ANY_QUEUE = "*"
# The Airflow Connection (api-server URL, a user allowed to view Jobs) the Edge executor's registry is asked with
EDGE_API_CONN_ID = "convmixer_airflow_api"
HOW_TO_ADD = {
    "celery": "start an NPU worker on a host with that chip (the Ascend image's ascend-entrypoint.sh serves its own "
    "chip's queue; or `airflow celery worker --queues {queue}`)",
    "edge": "start an Edge worker on a host with that chip (the Ascend image's `ascend-entrypoint.sh edge` serves its "
    "own chip's queue; or `airflow edge worker --queues {queue}`; one in maintenance takes none: "
    "`airflow edge remote-edge-worker-exit-maintenance`)",
}


def check_chip(chip: object, where: str = "chip") -> str:
    """``chip`` if it is a chip Name as ``npu-smi info`` prints it; else a ConfigError naming it and the fix."""
    if isinstance(chip, str) and CHIP_RE.match(chip):
        return chip
    hint = ""
    if isinstance(chip, str) and chip.startswith("Ascend"):
        hint = f" (drop the 'Ascend' prefix: {chip.removeprefix('Ascend').strip()})"
    raise ConfigError(
        f"{where} {chip!r} is not a chip name; expected the Name column of `npu-smi info`, e.g. {CHIP_EXAMPLES}{hint}"
    )


def parse_chips(raw: str | Iterable[str] | None, where: str = "chips") -> tuple[str, ...]:
    """Chip names from a comma list (a setting) or a list (a param), checked, in order, without repeats."""
    if raw is None:
        return ()
    items = [item for item in raw.split(",") if item.strip()] if isinstance(raw, str) else list(raw)
    chips: list[str] = []
    for item in items:
        chip = check_chip(item.strip() if isinstance(item, str) else item, where)
        if chip not in chips:
            chips.append(chip)
    return tuple(chips)


def soc_version_of(chip: str) -> str:
    """ATC's --soc_version for ``chip``, built as the backend builds it from npu-smi (``NpuChip.soc_version``)."""
    from convmixer_tasks.backends.ascend.npu_smi import NpuChip

    return NpuChip(npu_id=0, name=check_chip(chip), health="OK").soc_version


def named_for_chip(template: str, chip: str | None, *, key: str, **names: str) -> str:
    """The queue or pool of ``chip`` from its template; ``chip`` None = the plain name (no chips configured)."""
    base = next(iter(names.values()))
    if chip is None:
        return base
    try:
        return template.format(chip=chip, **names)
    except (KeyError, IndexError, ValueError) as exc:
        fields = ", ".join("{" + name + "}" for name in (*names, "chip"))
        raise ConfigError(
            f"[convmixer] {key} = {template!r} is not a template of {fields} ({exc}); "
            f"fix airflow.cfg or AIRFLOW__CONVMIXER__{key.upper()}"
        ) from None


def check_template(template: str, *, key: str, **names: str) -> str:
    """``template`` if it formats and names each chip apart (it must contain ``{chip}``)."""
    if "{chip}" not in template:
        raise ConfigError(
            f"[convmixer] {key} = {template!r} must contain {{chip}} (e.g. {DEFAULT_QUEUE_TEMPLATE!r}), or every "
            f"chip would share one queue; fix airflow.cfg or AIRFLOW__CONVMIXER__{key.upper()}"
        )
    named_for_chip(template, "310P3", key=key, **names)
    return template


def served_queues(active: Mapping[str, Sequence[Mapping[str, Any]]] | None) -> dict[str, list[str]]:
    """{queue: [workers serving it]} from an ``active_queues()`` answer (None: no worker replied)."""
    served: dict[str, list[str]] = {}
    for worker, queues in (active or {}).items():
        for queue in queues or ():
            served.setdefault(str(queue.get("name")), []).append(worker)
    return served


def chip_workers_missing(
    chip_queues: Mapping[str, str], active_queues: ActiveQueues, timeout: float = ACTIVE_QUEUES_TIMEOUT_S
) -> None:
    """Fail with one line when a requested chip's queue has no live Celery worker.

    ``chip_queues`` is {chip: its queue}; ``active_queues(timeout)`` asks the workers which queues they consume
    (a worker that does not answer within ``timeout`` counts as absent: it would not take the task either).
    """
    if chip_queues:
        fail_unserved(chip_queues, served_queues(active_queues(timeout)), "celery")


def fail_unserved(chip_queues: Mapping[str, str], served: ServedQueues, executor_kind: str) -> None:
    """One line naming each requested chip whose queue no live worker serves, and how to add one (``HOW_TO_ADD``)."""
    missing = [(chip, queue) for chip, queue in chip_queues.items() if not (served.get(queue) or served.get(ANY_QUEUE))]
    if missing:
        names = ", ".join(f"chip {chip} (queue {queue!r})" for chip, queue in missing)
        worker = "Edge worker" if executor_kind == "edge" else "worker"
        raise ConfigError(
            f"no live {worker} serves {names}; {HOW_TO_ADD[executor_kind].format(queue=missing[0][1])}, "
            "or leave the chip out of param chips"
        )


def requested_chips(param: object, configured: Sequence[str]) -> tuple[str, ...]:
    """The chips a run asks for (param ``chips``; None = every configured chip), each one the DAG has tasks for."""
    chips = configured if param is None else parse_chips(param, where="param chips:")  # type: ignore[arg-type]
    unknown = [chip for chip in chips if chip not in configured]
    if unknown or not chips:
        raise ConfigError(
            f"param chips {list(chips)} must name one or more of the chip types this DAG has tasks for "
            f"({list(configured)}); add a chip to [convmixer] chips (AIRFLOW__CONVMIXER__CHIPS) to run on it"
        )
    return tuple(chips)


def failed_run_chips(param: object, configured: Sequence[str]) -> tuple[str, ...]:
    """The chips a failed run's rows are recorded for: those it asked for, or every configured chip when its
    ``chips`` param is itself what was wrong (the rows must still exist); () without chip types."""
    if not configured:
        return ()
    try:
        return requested_chips(param, configured)
    except ConfigError:
        return tuple(configured)


def remote_executor(executor: str) -> str | None:
    """``"celery"`` or ``"edge"``: the first of the two in ``[core] executor`` (one name, a class path or a comma
    list), the one whose workers the chip queues are served by; None when it names neither."""
    kinds = {"CeleryExecutor": "celery", "EdgeExecutor": "edge"}
    for name in executor.split(","):
        kind = kinds.get(name.strip().rsplit(".", 1)[-1])
        if kind:
            return kind
    return None


def check_chip_workers(
    chip_queues: Mapping[str, str],
    executor: str,
    active_queues: ActiveQueues,
    timeout: float = ACTIVE_QUEUES_TIMEOUT_S,
    edge_queues: Callable[[float], ServedQueues] | None = None,
) -> str:
    """Fail at once when a requested chip has no live worker; the line to log when it passes or is not checked.

    Celery's workers are asked through ``active_queues``; the Edge executor's registry through ``edge_queues``
    (``edge_registry.registry_queues``; None when there is no Connection ``EDGE_API_CONN_ID`` to ask it with).
    """
    kind = remote_executor(executor)
    if kind is None:
        return (
            f"executor {executor!r} is neither Celery nor Edge: not checking that chips {sorted(chip_queues)} have "
            "a live worker (the LocalExecutor runs every task on this machine)"
        )
    if kind == "edge":
        if edge_queues is None:
            return (
                f"Edge executor: not checking that chips {sorted(chip_queues)} have a live worker: no Airflow "
                f"Connection {EDGE_API_CONN_ID!r} (the api-server's URL and a user allowed to view Jobs) to ask its "
                "worker registry with; add one, or a run for a chip nobody serves waits for a worker"
            )
        if chip_queues:
            fail_unserved(chip_queues, edge_queues(timeout), "edge")
        return f"live Edge workers serve every requested chip: {dict(chip_queues)}"
    chip_workers_missing(chip_queues, active_queues, timeout)
    return f"live workers serve every requested chip: {dict(chip_queues)}"


def chip_work_dir(work_dir: str | os.PathLike[str], chip: str | None) -> Path:
    """Where chip X's run outputs and compile cache live: its own folder under the work folder, so two chips'
    outputs for the same batch size and mode never meet; None (no chips configured) = the work folder itself."""
    return Path(work_dir) if chip is None else Path(work_dir) / "chips" / check_chip(chip)


CHIP_GROUP_PREFIX = "chip_"  # the DAG's TaskGroup of chip X's tasks: "chip_910B3" (task ids "chip_910B3.infer")


def chip_group(chip: str) -> str:
    """The id of the DAG's TaskGroup that holds chip ``chip``'s compile-to-gate tasks."""
    return CHIP_GROUP_PREFIX + chip


def chip_of_task_id(task_id: str) -> str | None:
    """The chip whose group a task id is in ("chip_910B3.infer" → 910B3); None for a task every chip shares."""
    group, dot, _ = task_id.partition(".")
    return group.removeprefix(CHIP_GROUP_PREFIX) if dot and group.startswith(CHIP_GROUP_PREFIX) else None


CHIPS_PARAM = "chips"  # the DAG's own Param (its choices come from the settings), not one of RunParams'


def without_chips(params: Mapping[str, Any]) -> dict[str, Any]:
    """A run's params less ``chips``, for ``RunParams.from_mapping`` (which refuses names it does not declare)."""
    return {name: value for name, value in params.items() if name != CHIPS_PARAM}
