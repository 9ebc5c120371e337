"""convmixer_tasks.run.settings: the [convmixer] settings read once, typed and checked, from Airflow's conf or the
AIRFLOW__CONVMIXER__* environment — defaults, overrides, and errors that name the key, the value and the fix."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from convmixer_tasks.backends.catalog import BACKEND_NAMES
from convmixer_tasks.errors import ConfigError
from convmixer_tasks.models.variants import DEMO_CHECKPOINT, DEMO_VARIANT, VARIANT_NAMES
from convmixer_tasks.run.settings import (
    BATCH_SIZE_CHOICES,
    airflow_conf_reader,
    airflow_home,
    env_reader,
    load_scheduling_settings,
    load_worker_settings,
)
from convmixer_tasks.run.workdir import WorkLayout


def env(**settings: str) -> dict[str, str]:
    return {f"AIRFLOW__CONVMIXER__{key.upper()}": value for key, value in settings.items()}


def scheduling(home: Path, **settings: str):
    return load_scheduling_settings(env_reader(env(**settings)), home)


def worker(home: Path, **settings: str):
    return load_worker_settings(env_reader(env(**settings)), home)


# --- defaults -------------------------------------------------------------------------------------------------------


def test_scheduling_defaults(tmp_path):
    settings = scheduling(tmp_path)
    assert settings.schedule == "0 3 * * 1"  # Mondays 03:00
    assert (settings.npu_queue, settings.npu_pool, settings.npu_pool_slots) == ("npu", "npu", 1)
    assert settings.shards == 2 and settings.retries == 2
    assert settings.retry_delay == timedelta(seconds=60) and settings.npu_task_timeout == timedelta(hours=8)
    assert settings.default_backend == "onnxruntime"
    layout = WorkLayout(tmp_path / "convmixer-work")  # the demo set, inside the default work folder
    assert settings.dataset_dir == str(layout.demo_image_dir) and settings.label_file == str(layout.demo_label_file)
    assert settings.checkpoint == str(DEMO_CHECKPOINT) and settings.model_variant == DEMO_VARIANT
    assert settings.batch_sizes == (1, 4)


def test_worker_defaults(tmp_path):
    settings = worker(tmp_path)
    assert settings.work_dir == tmp_path / "convmixer-work"
    assert settings.npu_device_id == 0 and settings.prep_workers == 1
    assert settings.cann_set_env == "/usr/local/Ascend/ascend-toolkit/set_env.sh"
    assert settings.metrics_conn_id == "convmixer_metrics" and settings.metrics_db_url == ""
    assert settings.airflow_home == tmp_path


def test_airflow_home_defaults_to_the_users_airflow_folder(tmp_path):
    assert airflow_home({"AIRFLOW_HOME": str(tmp_path)}) == tmp_path
    assert airflow_home({}) == Path("~/airflow").expanduser()
    assert airflow_home({"AIRFLOW_HOME": ""}) == Path("~/airflow").expanduser()


# --- overrides ------------------------------------------------------------------------------------------------------


def test_every_scheduling_setting_can_be_overridden(tmp_path):
    settings = scheduling(
        tmp_path,
        schedule="0 5 * * *",
        npu_queue="ascend-q",
        npu_pool="ascend-pool",
        npu_pool_slots="4",
        shards="3",
        retries="0",
        retry_delay_seconds="2.5",
        npu_task_timeout_hours="0.5",
        default_backend="ascend",
        dataset_dir="/val",
        label_file="/val_label.txt",
        checkpoint="/m.pth.tar",
        model_variant="convmixer_1536_20",
        batch_sizes="8, 16,",
    )
    assert settings.schedule == "0 5 * * *"
    assert (settings.npu_queue, settings.npu_pool, settings.npu_pool_slots) == ("ascend-q", "ascend-pool", 4)
    assert settings.shards == 3 and settings.retries == 0
    assert settings.retry_delay == timedelta(seconds=2.5) and settings.npu_task_timeout == timedelta(minutes=30)
    assert settings.default_backend == "ascend"
    assert (settings.dataset_dir, settings.label_file, settings.checkpoint) == ("/val", "/val_label.txt", "/m.pth.tar")
    assert settings.model_variant == "convmixer_1536_20" and settings.batch_sizes == (8, 16)


def test_an_empty_schedule_means_manual_runs_only(tmp_path):
    assert scheduling(tmp_path, schedule="").schedule is None


def test_the_work_dir_moves_the_default_demo_set_with_it(tmp_path):
    settings = scheduling(tmp_path, work_dir=str(tmp_path / "w"))
    assert settings.dataset_dir == str(tmp_path / "w" / "demo" / "images")
    assert worker(tmp_path, work_dir=str(tmp_path / "w")).work_dir == tmp_path / "w"
    assert worker(tmp_path, work_dir="~/cw").work_dir == Path("~/cw").expanduser()


def test_every_worker_setting_can_be_overridden(tmp_path):
    settings = worker(
        tmp_path,
        npu_device_id="3",
        cann_set_env="/opt/cann/set_env.sh",
        prep_workers="4",
        metrics_conn_id="metrics_pg",
        metrics_db_url="sqlite:////m.db",
    )
    assert settings.npu_device_id == 3 and settings.cann_set_env == "/opt/cann/set_env.sh"
    assert settings.prep_workers == 4
    assert settings.metrics_conn_id == "metrics_pg" and settings.metrics_db_url == "sqlite:////m.db"
    assert worker(tmp_path, metrics_conn_id="").metrics_conn_id == "convmixer_metrics"


def test_env_reader_reads_only_the_convmixer_section():
    read = env_reader({"AIRFLOW__CONVMIXER__NPU_QUEUE": "q", "AIRFLOW__CORE__NPU_QUEUE": "other", "NPU_QUEUE": "x"})
    assert read("npu_queue") == "q" and read("npu_pool") is None


def test_airflow_conf_reader_asks_the_convmixer_section_with_no_fallback(tmp_path):
    asked = []

    class Conf:  # the slice of airflow.configuration.conf the reader uses
        def get(self, section, key, fallback="no fallback given"):
            asked.append((section, key, fallback))
            return {"npu_queue": "from-cfg"}.get(key, fallback)

    settings = load_scheduling_settings(airflow_conf_reader(Conf()), tmp_path)
    assert settings.npu_queue == "from-cfg" and settings.npu_pool == "npu"  # unset keys take the library default
    assert {section for section, _, _ in asked} == {"convmixer"} and {f for _, _, f in asked} == {None}


# --- bad values -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, value, wanted",
    [
        ("npu_pool_slots", "two", "a number >= 1"),
        ("npu_pool_slots", "0", "a number >= 1"),
        ("shards", "0", "a number >= 1"),
        ("shards", "1.5", "a number >= 1"),
        ("retries", "-1", "a number >= 0"),
        ("retry_delay_seconds", "soon", "a number >= 0"),
        ("npu_task_timeout_hours", "0", "a number >= 0.001"),
        ("default_backend", "tpu", f"one of {list(BACKEND_NAMES)}"),
        ("model_variant", "resnet50", f"one of {list(VARIANT_NAMES)}"),
        ("batch_sizes", "3", f"a comma list of {list(BATCH_SIZE_CHOICES)}"),
        ("batch_sizes", "4,x", f"a comma list of {list(BATCH_SIZE_CHOICES)}"),
        ("batch_sizes", " , ", f"a comma list of {list(BATCH_SIZE_CHOICES)}"),
    ],
)
def test_a_bad_scheduling_setting_is_named_with_its_value_and_fix(tmp_path, key, value, wanted):
    with pytest.raises(ConfigError) as error:
        scheduling(tmp_path, **{key: value})
    message = str(error.value)
    assert f"[convmixer] {key} = {value!r} must be {wanted}" in message
    assert f"AIRFLOW__CONVMIXER__{key.upper()}" in message and "airflow.cfg" in message


@pytest.mark.parametrize("key, value", [("npu_device_id", "-1"), ("npu_device_id", "npu0"), ("prep_workers", "0")])
def test_a_bad_worker_setting_is_named_with_its_value_and_fix(tmp_path, key, value):
    with pytest.raises(
        ConfigError,
        match=rf"\[convmixer\] {key} = '{value}' must be a number >= \d.*"
        f"AIRFLOW__CONVMIXER__{key.upper()}",
    ):
        worker(tmp_path, **{key: value})


def test_worker_settings_do_not_check_scheduling_ones(tmp_path):
    """A task loads only its own settings: a scheduler-side typo does not break it (the DAG would not parse)."""
    assert worker(tmp_path, default_backend="tpu", shards="0").npu_device_id == 0


# --- what the DAG and the tasks take from them ----------------------------------------------------------------------


def test_task_arguments_for_the_npu_steps_and_the_retrying_steps(tmp_path):
    settings = scheduling(tmp_path, npu_queue="q", npu_pool="p", retries="3", retry_delay_seconds="5")
    retrying = settings.retrying()
    assert retrying["retries"] == 3 and retrying["retry_delay"] == timedelta(seconds=5)
    assert retrying["retry_exponential_backoff"] is True and retrying["max_retry_delay"] > timedelta(0)
    on_npu = settings.on_npu()
    assert (on_npu["queue"], on_npu["pool"], on_npu["pool_slots"]) == ("q", "p", 1)  # one slot = one device
    assert on_npu["execution_timeout"] == timedelta(hours=8) and on_npu["retries"] == 3
    defaults = settings.default_args("cpu")
    assert defaults["queue"] == "cpu" and defaults["retries"] == 0 and defaults["on_failure_callback"]


def test_backend_settings_give_each_backend_only_what_it_takes(tmp_path):
    settings = worker(tmp_path, npu_device_id="2", cann_set_env="/opt/cann/set_env.sh")
    assert settings.backend_settings("onnxruntime") == {}
    assert settings.backend_settings("ascend") == {"device_id": 2, "cann_set_env": "/opt/cann/set_env.sh"}


def test_worker_metrics_url_follows_the_metrics_rule(tmp_path, monkeypatch):
    monkeypatch.delenv("CONVMIXER_METRICS_DB_URL", raising=False)
    assert worker(tmp_path).metrics_url(None) == f"sqlite:///{tmp_path / 'convmixer_metrics.db'}"
    configured = worker(tmp_path, metrics_db_url="sqlite:////setting.db")
    assert configured.metrics_url(None) == "sqlite:////setting.db"
    monkeypatch.setenv("CONVMIXER_METRICS_DB_URL", "sqlite:////env.db")
    assert configured.metrics_url(None) == "sqlite:////env.db"
    # an existing Airflow Connection wins, rendered as Airflow renders it
    connection = SimpleNamespace(
        conn_type="postgres", host="db", schema="m", get_uri=lambda: "postgres://u:p@db:5432/m"
    )
    assert configured.metrics_url(connection) == "postgresql+psycopg2://u:p@db:5432/m"
