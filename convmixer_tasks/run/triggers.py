"""Re-validation when a new checkpoint lands: the Airflow Asset a training pipeline updates, and what a run takes
from the asset event that triggered it. No Airflow import: the DAG passes in its context's events, read by duck
typing (``AssetEvent.extra`` / ``.asset.uri``) or as plain dicts in tests.

A producer (a training DAG's last task) emits the event with the checkpoint path in ``extra``::

    @task(outlets=[Asset(CHECKPOINT_ASSET)])
    def publish(path, *, outlet_events=None):
        outlet_events[Asset(CHECKPOINT_ASSET)].extra = {"checkpoint": path}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from convmixer_tasks.errors import ConfigError

CHECKPOINT_ASSET = "convmixer_checkpoint"  # the Asset's name (and URI)
EXTRA_KEY = "checkpoint"  # the event's extra key holding the .pth.tar path the run validates


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)


def checkpoint_from_events(triggering_asset_events: Any) -> str | None:
    """The checkpoint named by the newest triggering asset event, or None for a run no asset event started.

    ``triggering_asset_events`` is the task context's mapping {asset: [events, oldest first]} (or any iterable of
    event lists). An event without ``extra.checkpoint`` is refused: the run would silently validate the default.
    """
    if not triggering_asset_events:
        return None
    groups: Iterable[Any] = (
        triggering_asset_events.values() if isinstance(triggering_asset_events, Mapping) else triggering_asset_events
    )
    events = [event for group in groups for event in group]
    if not events:
        return None
    newest = events[-1]
    extra = _field(newest, "extra") or {}
    checkpoint = extra.get(EXTRA_KEY) if isinstance(extra, Mapping) else None
    if not isinstance(checkpoint, str) or not checkpoint.strip():
        asset = _field(newest, "asset")
        uri = _field(asset, "uri") if asset is not None else _field(newest, "uri")
        raise ConfigError(
            f"the asset event from {uri or CHECKPOINT_ASSET} that triggered this run has no extra.{EXTRA_KEY}; "
            f'emit it with extra={{"{EXTRA_KEY}": "/path/to/model.pth.tar"}} (see the README)'
        )
    return checkpoint


def with_triggered_checkpoint(params: Mapping[str, Any], triggering_asset_events: Any) -> dict[str, Any]:
    """The run's params, with ``checkpoint`` replaced by the triggering event's (when an asset event started it).

    A path the event names that is no file here is refused with the event as its source: the param's advice
    ("set param checkpoint") would send the user to the wrong place."""
    checkpoint = checkpoint_from_events(triggering_asset_events)
    if checkpoint and not Path(checkpoint).is_file():
        raise ConfigError(
            f"checkpoint {checkpoint} named by the triggering asset event ({CHECKPOINT_ASSET}, extra.{EXTRA_KEY}) "
            "does not exist on this worker; emit the event again with the path of a .pth.tar that every worker can "
            "read (a shared folder) — param checkpoint is not used for an asset-triggered run"
        )
    return {**params, "checkpoint": checkpoint} if checkpoint else dict(params)


def recorded_checkpoint(params: Mapping[str, Any], triggering_asset_events: Any) -> dict[str, Any]:
    """``with_triggered_checkpoint`` for the failure path: never raises (the failure row must be written whatever
    the event held); the event's path when it has one, else the params as they are."""
    try:
        checkpoint = checkpoint_from_events(triggering_asset_events)
    except ConfigError:
        checkpoint = None
    return {**params, "checkpoint": checkpoint} if checkpoint else dict(params)
