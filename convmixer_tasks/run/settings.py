"""The ``[convmixer]`` settings (airflow.cfg, or ``AIRFLOW__CONVMIXER__<KEY>``), read and checked in one place.

Two groups, read where they apply:

* ``SchedulingSettings`` — what the DAG needs when it is parsed: schedule, queue, pool, retries, param defaults.
* ``WorkerSettings`` — what a task needs where it runs: the work folder, the NPU device, the CANN env script, the
  metrics database. A task loads these when it starts, so a worker's own environment (its device, its CANN path)
  wins over the scheduler's.
* ``AlertSettings`` — who is told what (``alerts``), the review step and the digest (see
``convmixer_tasks.run.alerts``).

Both loaders take ``read(key) -> str | None`` (the DAG passes Airflow's ``conf``), so this module imports no Airflow.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from convmixer_tasks.backends.catalog import BACKENDS
from convmixer_tasks.checks import BATCH_SIZE_CHOICES
from convmixer_tasks.errors import ConfigError
from convmixer_tasks.models.names import names_in
from convmixer_tasks.models.paths import CONVMIXER_CARD_MODULE, DEMO_CHECKPOINT, DEMO_VARIANT
from convmixer_tasks.run.fleet import (
    DEFAULT_POOL_TEMPLATE,
    DEFAULT_QUEUE_TEMPLATE,
    check_template,
    named_for_chip,
    parse_chips,
)
from convmixer_tasks.run.workdir import WorkLayout

Reader = Callable[[str], "str | None"]
SECTION = "convmixer"


def airflow_conf_reader(conf: object) -> Reader:
    """``read`` over Airflow's ``conf`` (cfg file and env vars, as Airflow resolves them)."""
    return lambda key: conf.get(SECTION, key, fallback=None)  # type: ignore[attr-defined]


def env_reader(environ: os._Environ[str] | dict[str, str] = os.environ) -> Reader:
    """``read`` over ``AIRFLOW__CONVMIXER__<KEY>`` only (for code that runs without Airflow's config)."""
    return lambda key: environ.get(f"AIRFLOW__{SECTION.upper()}__{key.upper()}")


def airflow_home(environ: os._Environ[str] | dict[str, str] = os.environ) -> Path:
    return Path(environ.get("AIRFLOW_HOME") or "~/airflow").expanduser()


class _Settings:
    """Typed reads with one error format: the key, the bad value, where to fix it."""

    def __init__(self, read: Reader) -> None:
        self._read = read

    def text(self, key: str, default: str) -> str:
        value = self._read(key)
        return default if value is None else value

    def number(self, key: str, default: str, kind: type[int] | type[float], minimum: float) -> int | float:
        raw = self.text(key, default)
        try:
            value = kind(raw)
        except ValueError:
            raise self.error(key, raw, f"a number >= {minimum:g}") from None
        if value < minimum:
            raise self.error(key, raw, f"a number >= {minimum:g}")
        return value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(key, default)
        if value not in choices:
            raise self.error(key, value, f"one of {list(choices)}")
        return value

    @staticmethod
    def error(key: str, value: str, wanted: str) -> ConfigError:
        return ConfigError(
            f"[{SECTION}] {key} = {value!r} must be {wanted}; fix airflow.cfg or "
            f"AIRFLOW__{SECTION.upper()}__{key.upper()}"
        )


@dataclass(frozen=True)
class SchedulingSettings:
    schedule: str | None  # cron; None = manual runs only
    npu_queue: str
    npu_pool: str
    npu_pool_slots: int  # = devices; the scripts create the pool with this size
    # Chip types (npu-smi Names) a run maps over; () = one untyped `npu_queue`/`npu_pool` (convmixer_tasks.run.fleet)
    chips: tuple[str, ...]
    npu_queue_template: str  # "{queue}.{chip}": chip X's queue
    npu_pool_template: str  # "{pool}.{chip}": chip X's pool
    shards: int  # preprocess and infer are mapped over this many shards per batch size
    retries: int
    retry_delay: timedelta
    npu_task_timeout: timedelta  # a hung ATC/ais_bench must not hold the device's pool slot forever
    # Param defaults
    default_backend: str
    dataset_dir: str
    label_file: str
    checkpoint: str
    model_variant: str
    batch_sizes: tuple[int, ...]

    def default_args(self, default_queue: str) -> dict[str, Any]:
        """The DAG's ``default_args``: no retries unless a step asks, a log line when a task fails for good."""
        from convmixer_tasks.run.runfacts import log_task_failure

        return {"owner": "convmixer", "retries": 0, "on_failure_callback": [log_task_failure], "queue": default_queue}

    def retrying(self) -> dict[str, Any]:
        """Task arguments for steps where trying again can help: device/tool hiccups, a lost worker (the scheduler
        fails its try at the heartbeat timeout; the next try runs on another worker) and a busy metrics DB."""
        return {
            "retries": self.retries,
            "retry_delay": self.retry_delay,
            "retry_exponential_backoff": True,
            "max_retry_delay": timedelta(minutes=10),
        }

    def queue_for(self, chip: str | None) -> str:
        """The queue of ``chip``'s NPU workers; None (no chips configured) = ``npu_queue``."""
        return named_for_chip(self.npu_queue_template, chip, key="npu_queue_template", queue=self.npu_queue)

    def pool_for(self, chip: str | None) -> str:
        """The pool of ``chip``'s devices; None = ``npu_pool``."""
        return named_for_chip(self.npu_pool_template, chip, key="npu_pool_template", pool=self.npu_pool)

    def on_npu(self, chip: str | None = None) -> dict[str, Any]:
        """Task arguments for compile/infer/benchmark: the chip's NPU queue, one slot of its pool per device."""
        return {
            "queue": self.queue_for(chip),
            "pool": self.pool_for(chip),
            "pool_slots": 1,
            "execution_timeout": self.npu_task_timeout,
            **self.retrying(),
        }


@dataclass(frozen=True)
class WorkerSettings:
    work_dir: Path
    npu_device_id: int
    cann_set_env: str
    # Processes per preprocess shard. 1: the parallelism comes from the mapped shards, and a forked pool inside a
    # task process can deadlock on locks held by Airflow's threads.
    prep_workers: int
    metrics_conn_id: str
    metrics_db_url: str
    airflow_home: Path

    def backend_settings(self, backend: str) -> dict[str, object]:
        """Constructor settings for ``get_backend(backend, ...)``: each backend names the ones it takes."""
        available = {"device_id": self.npu_device_id, "cann_set_env": self.cann_set_env}
        return {name: available[name] for name in BACKENDS[backend].settings if name in available}

    def metrics_url(self, connection: Any = None) -> str:
        """The metrics DB by ``metrics.url``'s rule, given the Airflow Connection (None when it does not exist)."""
        # imported here: the metrics package loads SQLAlchemy's ORM, which the DAG file must not pay for at parse time
        from convmixer_tasks.metrics.url import connection_url, resolve_metrics_url

        url = None
        if connection is not None:
            url = connection_url(connection.conn_type, connection.get_uri(), connection.host, connection.schema)
        return resolve_metrics_url(url, self.metrics_db_url or None, self.airflow_home)


def _work_dir(settings: _Settings, home: Path) -> Path:
    return Path(settings.text("work_dir", str(home / "convmixer-work"))).expanduser()


def load_scheduling_settings(read: Reader, home: Path | None = None) -> SchedulingSettings:
    settings, home = _Settings(read), home or airflow_home()
    layout = WorkLayout(_work_dir(settings, home))
    raw_sizes = settings.text("batch_sizes", "1,4")
    try:
        batch_sizes = tuple(int(size) for size in raw_sizes.split(",") if size.strip())
    except ValueError:
        batch_sizes = ()
    if not batch_sizes or not set(batch_sizes) <= set(BATCH_SIZE_CHOICES):
        raise settings.error("batch_sizes", raw_sizes, f"a comma list of {list(BATCH_SIZE_CHOICES)}")
    npu_queue, npu_pool = settings.text("npu_queue", "npu"), settings.text("npu_pool", "npu")
    return SchedulingSettings(
        schedule=settings.text("schedule", "0 3 * * 1") or None,
        npu_queue=npu_queue,
        npu_pool=npu_pool,
        npu_pool_slots=int(settings.number("npu_pool_slots", "1", int, 1)),
        chips=parse_chips(
            settings.text("chips", ""), where="[convmixer] chips (airflow.cfg or AIRFLOW__CONVMIXER__CHIPS) lists"
        ),
        npu_queue_template=check_template(
            settings.text("npu_queue_template", "") or DEFAULT_QUEUE_TEMPLATE, key="npu_queue_template", queue=npu_queue
        ),
        npu_pool_template=check_template(
            settings.text("npu_pool_template", "") or DEFAULT_POOL_TEMPLATE, key="npu_pool_template", pool=npu_pool
        ),
        shards=int(settings.number("shards", "2", int, 1)),
        retries=int(settings.number("retries", "2", int, 0)),
        retry_delay=timedelta(seconds=settings.number("retry_delay_seconds", "60", float, 0)),
        npu_task_timeout=timedelta(hours=settings.number("npu_task_timeout_hours", "8", float, 0.001)),
        default_backend=settings.choice("default_backend", "onnxruntime", tuple(BACKENDS)),
        dataset_dir=settings.text("dataset_dir", str(layout.demo_image_dir)),
        label_file=settings.text("label_file", str(layout.demo_label_file)),
        checkpoint=settings.text("checkpoint", str(DEMO_CHECKPOINT)),
        # a ConvMixer variant: the names its card module gives them (variants.VARIANTS, without building the cards)
        model_variant=settings.choice("model_variant", DEMO_VARIANT, names_in(CONVMIXER_CARD_MODULE)),
        batch_sizes=batch_sizes,
    )


def load_worker_settings(read: Reader, home: Path | None = None) -> WorkerSettings:
    from convmixer_tasks.metrics.url import AIRFLOW_CONNECTION_ID

    settings, home = _Settings(read), home or airflow_home()
    return WorkerSettings(
        work_dir=_work_dir(settings, home),
        npu_device_id=int(settings.number("npu_device_id", "0", int, 0)),
        cann_set_env=settings.text("cann_set_env", "/usr/local/Ascend/ascend-toolkit/set_env.sh"),
        prep_workers=int(settings.number("prep_workers", "1", int, 1)),
        metrics_conn_id=settings.text("metrics_conn_id", AIRFLOW_CONNECTION_ID) or AIRFLOW_CONNECTION_ID,
        metrics_db_url=settings.text("metrics_db_url", ""),
        airflow_home=home,
    )


# Alert events (``[convmixer] alert_events``): ``regressed`` (every rule) or ``regressed:<rule>``, ``failed``,
# ``inconclusive:<N>`` (a series' N-th inconclusive run in a row), ``fingerprint`` (environment changed),
# ``baseline_accepted``.
REGRESSION_RULES = ("accuracy", "throughput", "fidelity", "change_point")
ALERT_EVENTS = ("regressed", "failed", "inconclusive", "fingerprint", "baseline_accepted")
DEFAULT_ALERT_EVENTS = "regressed,failed,inconclusive:3,fingerprint,baseline_accepted"


@dataclass(frozen=True)
class AlertSettings:
    target: str  # "" = no alerts; an Airflow Connection id (smtp/email or apprise type), or an Apprise URL
    email_to: tuple[str, ...]  # recipients of an SMTP connection; () = the connection's extra "to"
    regressed_rules: frozenset[str]  # the rules whose regressions are sent; empty = none
    failed: bool
    inconclusive_streak: int  # 0 = never
    fingerprint: bool
    baseline_accepted: bool
    base_url: str  # where people open Airflow (links in the messages); "" = Airflow's [api] base_url
    review: bool  # the DAG asks a person to accept or keep a regression / fingerprint change (HITL)
    review_timeout: timedelta  # unanswered: the regression is kept and the run ends
    digest_schedule: str | None  # cron of the weekly digest DAG; None = manual only
    digest_days: int

    @property
    def target_is_url(self) -> bool:
        return "://" in self.target


def _alert_events(settings: _Settings) -> dict[str, Any]:
    raw = settings.text("alert_events", DEFAULT_ALERT_EVENTS)
    wanted = f"a comma list of {list(ALERT_EVENTS)}, regressed:<{'|'.join(REGRESSION_RULES)}>, inconclusive:<N>"
    events: dict[str, Any] = {"regressed_rules": set(), "failed": False, "inconclusive_streak": 0,
                              "fingerprint": False, "baseline_accepted": False}  # fmt: skip
    for item in (part.strip() for part in raw.split(",")):
        name, _, arg = item.partition(":")
        if not item:
            continue
        if name == "regressed" and (not arg or arg in REGRESSION_RULES):
            events["regressed_rules"] |= {arg} if arg else set(REGRESSION_RULES)
        elif name == "inconclusive" and (arg or "1").isdigit() and int(arg or "1") >= 1:
            events["inconclusive_streak"] = int(arg or "1")
        elif name in ("failed", "fingerprint", "baseline_accepted") and not arg:
            events[name] = True
        else:
            raise settings.error("alert_events", raw, wanted)
    events["regressed_rules"] = frozenset(events["regressed_rules"])
    return events


def _flag(settings: _Settings, key: str, default: str) -> bool:
    value = settings.text(key, default).strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise settings.error(key, value, "true or false")
    return value in ("true", "1", "yes", "on")


def load_alert_settings(read: Reader) -> AlertSettings:
    settings = _Settings(read)
    return AlertSettings(
        target=settings.text("alerts", "").strip(),
        email_to=tuple(part.strip() for part in settings.text("alert_email_to", "").split(",") if part.strip()),
        base_url=settings.text("alert_base_url", "").strip().rstrip("/"),
        review=_flag(settings, "review", "false"),
        review_timeout=timedelta(hours=settings.number("review_timeout_hours", "24", float, 0.0001)),
        digest_schedule=settings.text("digest_schedule", "0 8 * * 1") or None,
        digest_days=int(settings.number("digest_days", "7", int, 1)),
        **_alert_events(settings),
    )
