"""Quiet device and energy per image: the integration against hand-computed values, RAPL on a fake sysfs tree, the
idle wait, host load/steal flags, and the Ascend backend's npu-smi readings through the tool doubles."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from convmixer_tasks.errors import ConfigError
from convmixer_tasks.measure import energy, fingerprint, quiet
from tests.ascend_doubles import write_tiny_onnx


def scripted_clock(*times: float):
    ticks = iter(times)
    return lambda: next(ticks)


class Constant:
    """A power source read in a test: each read returns the next scripted value (a test double)."""

    def __init__(self, *values):
        self.values = itertools.chain(values, itertools.repeat(values[-1]))

    def __call__(self):
        value = next(self.values)
        if isinstance(value, Exception):
            raise value
        return value


# --- integration ---------------------------------------------------------------------------------------------------


def test_power_is_integrated_over_the_window_with_interpolated_edges():
    # Samples (s, W): (0,10) (1,20) (2,20) (4,40); window [0.5, 3]: the power is 15 at 0.5 and 30 at 3, so
    # 0.5*(15+20)/2 + 1*(20+20)/2 + 1*(20+30)/2 = 8.75 + 20 + 25 = 53.75 J.
    assert energy.integrate_power([0, 1, 2, 4], [10, 20, 20, 40], 0.5, 3.0) == pytest.approx(53.75, abs=1e-12)
    assert energy.integrate_power([0, 4], [10, 10], 0.0, 4.0) == pytest.approx(40.0, abs=1e-12)
    with pytest.raises(ValueError, match="positive length"):
        energy.integrate_power([0, 1], [1, 1], 1.0, 1.0)
    with pytest.raises(ValueError, match="at least two"):
        energy.integrate_power([0], [1], 0.0, 1.0)


def test_counter_deltas_sum_across_a_wrap():
    # zone 0: +100, then 200 → 50 wraps at 1000: +850; zone 1: +5 +10. 965 µJ in all.
    assert energy.counter_joules([(100, 5), (200, 10), (50, 20)], (1000, 1000)) == pytest.approx(965e-6, abs=1e-15)


def test_sampler_figures_from_a_scripted_trace():
    source = energy.PowerSource("scripted", energy.KIND_POWER, Constant(10.0, 20.0, 20.0, 40.0))
    sampler = energy.PowerSampler(source, period_s=60, clock=scripted_clock(0.0, 0.5, 1.0, 2.0, 3.0, 4.0))
    sampler.start()  # reads at 0, window opens at 0.5; the thread's first tick is 60 s away
    sampler.sample_once()  # 1.0
    sampler.sample_once()  # 2.0
    sampler.stop()  # window closes at 3.0, last read at 4.0
    figures = sampler.figures(throughput=1000.0)
    assert figures.record["energy_j"] == pytest.approx(53.75) and figures.record["samples"] == 4
    assert figures.record["window_s"] == pytest.approx(2.5) and figures.record["mean_w"] == pytest.approx(21.5)
    assert figures.j_per_image == pytest.approx(21.5 / 1000.0)
    assert figures.per_watt == pytest.approx(1000.0 / 21.5)


def test_a_failed_read_discards_the_trace_and_says_why():
    source = energy.PowerSource("scripted", energy.KIND_POWER, Constant(10.0, energy.PowerUnavailable("device gone")))
    sampler = energy.PowerSampler(source, period_s=60, clock=scripted_clock(0.0, 0.5, 1.0, 2.0))
    sampler.start()
    sampler.stop()
    figures = sampler.figures(throughput=100.0)
    assert figures.j_per_image is None and figures.per_watt is None
    assert figures.record == {"source": "scripted", "reason": "scripted: device gone"}


def test_sampler_really_samples_in_the_background():
    source = energy.PowerSource("steady", energy.KIND_POWER, Constant(5.0))
    sampler = energy.PowerSampler(source, period_s=0.01)
    sampler.start()
    import time

    time.sleep(0.2)
    sampler.stop()
    figures = sampler.figures(throughput=50.0)
    assert figures.record["samples"] > 3 and figures.record["mean_w"] == pytest.approx(5.0)
    assert figures.per_watt == pytest.approx(10.0)


# --- RAPL ----------------------------------------------------------------------------------------------------------


def fake_powercap(root: Path, zones: dict[str, tuple[int, int]]) -> Path:
    for name, (energy_uj, wraps) in zones.items():
        zone = root / name
        zone.mkdir(parents=True)
        (zone / "energy_uj").write_text(f"{energy_uj}\n")
        (zone / "max_energy_range_uj").write_text(f"{wraps}\n")
        (zone / "name").write_text("core\n" if name.count(":") == 2 else f"package-{name[-1]}\n")
    return root


def test_rapl_reads_the_packages_and_handles_a_wrap(tmp_path):
    root = fake_powercap(
        tmp_path,
        {
            "intel-rapl:0": (999_000_000, 1_000_000_000),
            "intel-rapl:0:0": (5, 10),
            "intel-rapl:1": (10_000_000, 2_000_000_000),
        },
    )
    source = energy.rapl_source(root)
    assert source.kind == energy.KIND_COUNTER and source.wraps_at == (1_000_000_000, 2_000_000_000)
    assert source.name == "RAPL intel-rapl:0 (package-0), intel-rapl:1 (package-1)"  # the core sub-zone is inside
    sampler = energy.PowerSampler(source, period_s=60, clock=scripted_clock(0.0, 0.0, 2.0, 2.0))
    sampler.start()
    (root / "intel-rapl:0" / "energy_uj").write_text("3000000\n")  # wrapped: +1 J +3 J
    (root / "intel-rapl:1" / "energy_uj").write_text("16000000\n")  # +6 J
    sampler.stop()
    figures = sampler.figures(throughput=20.0)
    assert figures.record["energy_j"] == pytest.approx(10.0) and figures.record["mean_w"] == pytest.approx(5.0)
    assert figures.j_per_image == pytest.approx(0.25) and "other processes" in figures.record["note"]


def test_rapl_unreadable_or_absent_says_why(tmp_path, monkeypatch):
    with pytest.raises(energy.PowerUnavailable, match="no RAPL package zone under"):
        energy.rapl_source(tmp_path)
    root = fake_powercap(tmp_path / "pc", {"intel-rapl:0": (1, 10)})
    real_read = Path.read_text

    def root_only(self, *args, **kwargs):
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", root_only)
    with pytest.raises(energy.PowerUnavailable, match=r"not readable by this user .*energy_uj; root-only"):
        energy.rapl_source(root)


# --- quiet: idle wait, load, steal -----------------------------------------------------------------------------------


def test_a_busy_device_is_waited_for_then_timed_anyway():
    busy, idle = quiet.DeviceState(True, "AI Core 87 %"), quiet.DeviceState(False, "idle")
    slept: list[float] = []
    states = iter([busy, idle])
    state, waited = quiet.wait_until_idle(
        busy, lambda: next(states), 10, poll_s=2, clock=scripted_clock(0, 0, 2, 4, 4), sleep=slept.append
    )
    assert state == idle and waited == 4 and slept == [2, 2]
    state, waited = quiet.wait_until_idle(
        busy, lambda: busy, 3, poll_s=2, clock=scripted_clock(0, 0, 2, 3, 3), sleep=slept.append
    )
    assert state.busy and waited == 3 and slept[2:] == [2, 1]  # bounded: the last sleep is what was left
    with pytest.raises(ConfigError, match="benchmark_idle_wait_s"):
        quiet.wait_until_idle(busy, lambda: busy, -1)


def test_cpu_steal_from_proc_stat_deltas(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 800 10 0 0 40 7 0\ncpu0 50 0 25 400 5 0 0 20 0 0\n")
    before = quiet.cpu_times(stat)
    stat.write_text("cpu  200 0 100 1500 10 0 0 190 9 0\n")
    after = quiet.cpu_times(stat)
    assert before == (40, 810, 1000) and after == (190, 1510, 2000)  # guest (7, 9) is inside user already
    assert quiet.steal_pct(before, after) == 15.0
    # 1000 jiffies passed: 700 idle, 150 stolen, so 150 busy = 0.3 of 2 cores
    assert quiet.busy_cores(before, after, 2) == 0.3 and quiet.busy_cores(after, before, 2) is None
    assert quiet.cpu_times(tmp_path / "none") is None and quiet.steal_pct(None, after) is None


class HostOnly:
    """A CPU-bound backend for the window (a test double): no device to check, no power reader, two cores."""

    def device_state(self):
        return None

    def power_source(self):
        raise energy.PowerUnavailable("no RAPL here")

    def host_cores_used(self):
        return 2


def test_window_flags_other_work_beside_the_benchmark_and_keeps_it_out_of_the_key(tmp_path, monkeypatch):
    """Over a 2 s window on 4 cores, 3.5 cores were busy and this process used 2 CPU-seconds (1 core): 2.5 cores
    of other work beside the benchmark's 2, 4.5 wanted of 4: flagged, though the 1-minute load average (slow to
    move) stayed below the cores."""
    loads = iter([1.5, 1.75])
    monkeypatch.setattr(quiet, "load_average", lambda: next(loads))
    clock, cpu = iter([100.0, 102.0]), iter([10.0, 12.0])
    stat = tmp_path / "stat"
    stat.write_text("cpu 10 0 0 90 0 0 0 0\n")
    window = quiet.BenchmarkWindow(
        HostOnly(), proc_stat=stat, clock=lambda: next(clock), own_cpu=lambda: next(cpu), host_cores=4
    )
    with window:
        stat.write_text("cpu 360 0 0 130 0 0 0 10\n")  # 400 jiffies: 350 busy, 40 idle, 10 stolen
    facts = window.facts()
    assert facts == {
        "load_before": 1.5,
        "load_after": 1.75,
        "load_max": 1.75,
        "cpu_steal_pct": 2.5,
        "host_busy_cores": 3.5,
        "other_cores": 2.5,
        "cores_used": 2,
        "host_overloaded": "other work kept 2.50 of 4 cores busy beside the benchmark's 2",
        "device_busy": None,
        "device_wait_s": None,
    }
    assert quiet.device_warning(facts) is None
    assert quiet.host_contention({**facts, "host_cores": 4}) == (facts["host_overloaded"], 1.125)  # the gate's share
    assert quiet.host_contention({**facts, "host_cores": 4, "other_cores": 1.5}) == (None, 1.0)  # 3.5 of 4 wanted
    assert quiet.host_contention({**facts, "host_cores": 2, "other_cores": 0.4}) == (None, 1.0)  # within the margin
    # A call shorter than the counters' resolution is not counted: the load average decides (here: not above 2).
    short = quiet.BenchmarkWindow(
        HostOnly(), proc_stat=stat, clock=iter([0.0, 0.5]).__next__, own_cpu=iter([0.0, 0.0]).__next__, host_cores=2
    )
    loads = iter([1.0, 1.5])
    with short:
        stat.write_text("cpu 460 0 0 130 0 0 0 10\n")
    assert short.facts()["other_cores"] is None and short.facts()["host_overloaded"] is None
    assert window.energy(100.0) == energy.none("no RAPL here")
    base = {"backend": "onnxruntime", "toolkit_version": "onnxruntime 1.22.0"}
    assert fingerprint.key({**base, **facts}) == fingerprint.key(base)


# --- Ascend: npu-smi readings through the doubles -------------------------------------------------------------------


def test_ascend_power_trace_is_integrated_exactly(ascend_doubles, tmp_path):
    trace = tmp_path / "power.txt"
    trace.write_text("10\n20\n20\n40\n")
    ascend_doubles.mode(NPU_SMI_DOUBLE_POWER_TRACE=str(trace))
    source = ascend_doubles.backend(device_id=1).power_source()
    assert source.name == "npu-smi info -t power -i 1" and source.kind == energy.KIND_POWER
    sampler = energy.PowerSampler(source, period_s=60, clock=scripted_clock(0.0, 0.5, 1.0, 2.0, 3.0, 4.0))
    sampler.start()
    sampler.sample_once()
    sampler.sample_once()
    sampler.stop()
    assert [watts for _, watts in sampler.samples] == [10.0, 20.0, 20.0, 40.0]
    figures = sampler.figures(throughput=500.0)
    assert figures.record["energy_j"] == pytest.approx(53.75) and figures.j_per_image == pytest.approx(21.5 / 500)


@pytest.mark.parametrize(
    "chip, power, reason",
    [
        ("310P3", "unsupported", r"failed with status 193: Failed to execute npu-smi info\. ret is -8255\."),
        ("910B3", "na", r"npu-smi shows NPU Real-time Power\(W\) = 'NA', not a number"),
    ],
)
def test_ascend_power_that_cannot_be_read_leaves_energy_empty_with_the_reason(ascend_doubles, chip, power, reason):
    ascend_doubles.mode(NPU_SMI_DOUBLE_CHIP=chip, NPU_SMI_DOUBLE_POWER=power)
    sampler = energy.PowerSampler(ascend_doubles.backend().power_source(), period_s=60)
    sampler.start()
    sampler.stop()
    figures = sampler.figures(throughput=500.0)
    assert figures.j_per_image is None and figures.per_watt is None
    assert figures.record["source"] == "npu-smi info -t power -i 0"
    assert figures.record["reason"].startswith("npu-smi info -t power -i 0: ")
    import re

    assert re.search(reason, figures.record["reason"])


def test_ascend_rated_power_is_not_a_reading():
    from convmixer_tasks.backends import ascend

    assert ascend.parse_power("\tNPU Real-time Power(W)         : 93.6\n") == 93.6
    with pytest.raises(energy.PowerUnavailable, match=r"no real-time power \(Rated Power Dissipation\(W\)\)"):
        ascend.parse_power("\tRated Power Dissipation(W)     : 8.0\n")


@pytest.mark.parametrize(
    "mode, busy, detail",
    [
        ("ok", False, "NPU 0 chip 0: idle"),
        ("busy", True, "NPU 0 chip 0: AI Core 87 %; process 48213 python3 (2048 MB)"),
    ],
)
def test_ascend_device_state_from_usages_and_process_table(ascend_doubles, mode, busy, detail):
    ascend_doubles.mode(NPU_SMI_DOUBLE_MODE=mode)
    assert ascend_doubles.backend().device_state() == quiet.DeviceState(busy, detail)
    assert ascend_doubles.backend(device_id=1).device_state() == quiet.DeviceState(False, "NPU 1 chip 0: idle")


def test_ascend_device_state_unknown_when_npu_smi_fails_or_hides_the_ai_core(ascend_doubles):
    ascend_doubles.mode(NPU_SMI_DOUBLE_MODE="driver_error")
    state = ascend_doubles.backend().device_state()
    assert not state.busy and not state.known and "dcmi model initialized failed" in state.detail
    ascend_doubles.mode(NPU_SMI_DOUBLE_MODE="vnpu")
    assert ascend_doubles.backend().device_state() == quiet.DeviceState(
        False, "NPU 0 chip 0: no process, but npu-smi showed no Aicore Usage Rate(%) (None)", known=False
    )
    window = quiet.BenchmarkWindow(ascend_doubles.backend(), idle_wait_s=0)
    with window:
        pass
    assert window.facts()["device_busy"].startswith("not checked: NPU 0 chip 0: no process, but npu-smi showed no")


def test_ascend_without_npu_smi_records_no_driver_and_no_energy_but_says_why(ascend_doubles):
    ascend_doubles.remove("npu-smi")
    backend = ascend_doubles.backend()
    assert backend.environment()["npu_driver_version"] is None
    with pytest.raises(energy.PowerUnavailable, match="npu-smi not found"):
        backend.power_source()


def test_ascend_environment_names_driver_and_ais_bench_build(ascend_doubles):
    import hashlib

    ascend_doubles.mode(NPU_SMI_DOUBLE_DRIVER_VERSION="24.1.rc2")
    found = ascend_doubles.backend().environment()
    package = Path(__file__).parent / "doubles" / "ais_bench"
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    # The double is not an installed distribution: no version, but its files still tell the build apart.
    assert found == {"npu_driver_version": "24.1.rc2", "ais_bench": f"unknown version sha256:{digest.hexdigest()[:16]}"}


def ascend_compiled(doubles, tmp_path):
    from convmixer_tasks.run.records import CompiledModel

    backend = doubles.backend()
    artifact = backend.compile(write_tiny_onnx(tmp_path / "tiny.onnx"), 2, tmp_path / "cache")
    info = backend.describe()
    return CompiledModel(
        model_variant="convmixer_demo",
        run_id="r1",
        batch_size=2,
        backend="ascend",
        precision="force_fp16",
        artifact=artifact,
        device=info.device,
        toolkit_version=info.toolkit_version,
        cached=False,
        prep_dir=str(tmp_path / "prep"),
    )


def test_benchmark_step_records_energy_fingerprint_and_busy_device(ascend_doubles, tmp_path):
    from convmixer_tasks.run import benchmark_step
    from convmixer_tasks.run.run_options import BenchmarkOptions

    # Constant 12.5 W and 4 ms per batch of 2 (500 images/s): 0.025 J per image and 40 images/s/W, exactly.
    ascend_doubles.mode(NPU_SMI_DOUBLE_POWER="12.5", AIS_BENCH_DOUBLE_FIXED_MS="4.0", NPU_SMI_DOUBLE_MODE="busy")
    compiled = ascend_compiled(ascend_doubles, tmp_path)
    settings = {"cann_set_env": str(ascend_doubles.set_env)}
    options = BenchmarkOptions(loop=3, remeasure=0, idle_wait_s=0, confirm=0)
    summary = benchmark_step.benchmark_artifact(compiled, options, tmp_path / "work", settings, power_period_s=0.05)
    assert summary.throughput == pytest.approx(500.0)
    assert summary.energy is not None and summary.fingerprint is not None
    assert summary.energy["source"] == "npu-smi info -t power -i 0" and summary.energy["samples"] >= 2
    assert summary.energy["mean_w"] == pytest.approx(12.5)
    assert summary.energy_j_per_image == pytest.approx(0.025) and summary.throughput_per_watt == pytest.approx(40.0)
    env = summary.fingerprint
    assert env["npu_driver_version"] == "23.0.6" and env["ais_bench"].startswith("unknown version sha256:")
    assert env["device_busy"] == (
        "NPU 0 chip 0: AI Core 87 %; process 48213 python3 (2048 MB) (still busy after waiting 0 s; timed anyway)"
    )
    assert env["cores_used"] == 1 and "cpu_steal_pct" in env
    warning = quiet.device_warning(env)
    assert warning and warning.startswith("throughput measured on a busy device: NPU 0 chip 0: AI Core 87 %")


def test_the_gate_names_a_busy_device_in_the_verdict_and_keeps_its_history(metrics_url):
    from convmixer_tasks.verdict import gate
    from tests.test_gate import BACKEND, BS, STEADY, record

    env = {"backend": BACKEND, "npu_driver_version": "23.0.6"}
    for day, value in enumerate(STEADY):
        record(metrics_url, f"h{day}", day, value, fingerprint=env, fingerprint_key=fingerprint.key(env))
    busy = {**env, "device_busy": "NPU 0 chip 0: AI Core 87 % (still busy after waiting 60 s; timed anyway)"}
    assert fingerprint.key(busy) == fingerprint.key(env)  # a busy device is a condition, not another environment
    record(metrics_url, "today", 9, 100.3, status="pending", fingerprint=busy, fingerprint_key=fingerprint.key(busy))
    decision = gate.apply_gate(metrics_url, "today", BS, BACKEND, history=20)
    assert decision.status == "ok"
    assert (
        "throughput measured on a busy device: NPU 0 chip 0: AI Core 87 % (still busy after waiting 60 s; timed anyway)"
    ) in decision.reasons
