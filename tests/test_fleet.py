"""Chip types as queues and pools (convmixer_tasks.run.fleet) and the settings that name them."""

from __future__ import annotations

from typing import Any

import pytest

from convmixer_tasks.errors import ConfigError
from convmixer_tasks.run.fleet import (
    check_chip_workers,
    chip_work_dir,
    chip_workers_missing,
    parse_chips,
    requested_chips,
    served_queues,
    soc_version_of,
)
from convmixer_tasks.run.settings import load_scheduling_settings


def scheduling(tmp_path, **values):
    return load_scheduling_settings(lambda key: values.get(key), home=tmp_path)


def test_no_chips_configured_keeps_the_single_npu_queue_and_pool(tmp_path):
    settings = scheduling(tmp_path)
    assert settings.chips == ()
    assert (settings.on_npu()["queue"], settings.on_npu()["pool"]) == ("npu", "npu")


def test_each_chip_gets_its_queue_and_pool_from_the_templates(tmp_path):
    settings = scheduling(tmp_path, chips="310P3, 910B3,310P3", npu_queue="ascend")
    assert settings.chips == ("310P3", "910B3")  # in order, without repeats
    assert (settings.on_npu("910B3")["queue"], settings.on_npu("910B3")["pool"]) == ("ascend.910B3", "npu.910B3")
    other = scheduling(tmp_path, chips="310P3", npu_queue_template="{chip}-{queue}", npu_pool_template="p{chip}")
    assert (other.queue_for("310P3"), other.pool_for("310P3")) == ("310P3-npu", "p310P3")


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"chips": "Ascend310P3"}, "drop the 'Ascend' prefix: 310P3"),
        ({"chips": "310P3,gpu"}, "'gpu' is not a chip name"),
        ({"npu_queue_template": "{queue}"}, "must contain {chip}"),
        ({"npu_pool_template": "{pool}.{chip}.{host}"}, "npu_pool_template = '{pool}.{chip}.{host}' is not a template"),
    ],
)
def test_a_bad_chip_setting_fails_with_one_line_naming_it(tmp_path, values, named):
    with pytest.raises(ConfigError) as failure:
        scheduling(tmp_path, **values)
    assert named in str(failure.value) and "\n" not in str(failure.value)
    assert "AIRFLOW__CONVMIXER__" in str(failure.value)


def test_soc_version_is_ascend_plus_the_chip_as_the_npu_smi_reading_builds_it():
    assert soc_version_of("910B3") == "Ascend910B3"
    with pytest.raises(ConfigError, match="not a chip name"):
        soc_version_of("Ascend910B3")


def test_param_chips_are_checked_like_the_setting():
    assert parse_chips(["910B3"], where="param chips") == ("910B3",)
    with pytest.raises(ConfigError, match="param chips 3 is not a chip name"):
        parse_chips([3], where="param chips")  # type: ignore[list-item]


ANSWER: dict[str, list[dict[str, Any]]] = {
    "npu310@a": [{"name": "npu.310P3", "exchange": {"name": "npu.310P3"}}],
    "npu310@b": [{"name": "npu.310P3"}],
    "default@c": [{"name": "default"}],
}


def recording(asked: list[float]):
    """An active_queues double answering ANSWER and noting each timeout it was given."""

    def active_queues(timeout: float) -> dict[str, list[dict[str, Any]]]:
        asked.append(timeout)
        return ANSWER

    return active_queues


def test_served_queues_lists_the_workers_of_each_queue():
    assert served_queues(ANSWER) == {"npu.310P3": ["npu310@a", "npu310@b"], "default": ["default@c"]}
    assert served_queues(None) == {}  # no worker replied in time


def test_a_served_chip_passes_and_the_inspect_call_gets_the_timeout():
    asked: list[float] = []
    chip_workers_missing({"310P3": "npu.310P3"}, recording(asked), timeout=1.5)
    assert asked == [1.5]


def test_a_chip_nobody_serves_fails_with_one_line_naming_the_chip_and_how_to_add_a_worker():
    with pytest.raises(ConfigError) as failure:
        chip_workers_missing({"310P3": "npu.310P3", "910B3": "npu.910B3"}, lambda timeout: ANSWER)
    message = str(failure.value)
    assert "chip 910B3 (queue 'npu.910B3')" in message and "310P3" not in message.split(";")[0].replace("910B3", "")
    assert "airflow celery worker --queues npu.910B3" in message and "\n" not in message
    with pytest.raises(ConfigError, match="chip 310P3"):
        chip_workers_missing({"310P3": "npu.310P3"}, lambda timeout: None)  # no worker answered at all


def test_no_chips_asks_nobody():
    chip_workers_missing({}, lambda timeout: pytest.fail("asked Celery with no chip queue to check"))


def test_a_run_asks_for_configured_chips_only():
    assert requested_chips(None, ("310P3", "910B3")) == ("310P3", "910B3")  # no param: every configured chip
    assert requested_chips(["910B3"], ("310P3", "910B3")) == ("910B3",)
    with pytest.raises(ConfigError, match=r"must name one or more of .*\['310P3'\].*AIRFLOW__CONVMIXER__CHIPS"):
        requested_chips(["910B3"], ("310P3",))
    with pytest.raises(ConfigError, match="must name one or more"):
        requested_chips([], ("310P3",))


@pytest.mark.parametrize(
    ("executor", "celery"),
    [("CeleryExecutor", True), ("LocalExecutor,CeleryExecutor", True),
     ("airflow.providers.celery.executors.celery_executor.CeleryExecutor", True), ("LocalExecutor", False),
     ("airflow.providers.edge3.executors.EdgeExecutor", False)],
)  # fmt: skip
def test_only_a_celery_executor_is_asked_about_workers(executor, celery):
    asked: list[float] = []
    line = check_chip_workers({"310P3": "npu.310P3"}, executor, recording(asked))
    assert bool(asked) is celery
    assert ("not checking" in line) is not celery


def test_each_chip_works_in_its_own_folder(tmp_path):
    assert chip_work_dir(tmp_path, None) == tmp_path
    assert chip_work_dir(tmp_path, "910B3") == tmp_path / "chips" / "910B3"
