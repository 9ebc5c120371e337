"""The Ascend backend: ATC compiles ONNX to an OM, ais_bench runs it, npu-smi names the chip.

Every tool runs as a subprocess (argv lists, never a shell string) inside the CANN environment captured once from
``set_env.sh`` (see ``backends/cann_env.py``). Success is decided the way the tools report it — ATC: exit status 0
AND its success line; ais_bench: exit status 0 AND the summary/output files — and every failure raises a
``BackendError`` that carries the tool's own error lines, with nothing half-written left behind. Nothing here falls
back to another runtime: without the tools this backend fails and says what to install.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from convmixer_tasks.backends import base
from convmixer_tasks.backends.aisbench_progress import AisBenchProgress
from convmixer_tasks.backends.ascend.aisbench import (
    AIS_BENCH_IDENTITY_PROBE,
    INSTALL_AIS_BENCH,
    PERF_DIRNAME,
    ais_bench_input_files,
    benchmark_argv,
    check_ais_bench_run,
    check_outputs,
    exit_0_failure,
    infer_argv,
    link_shard_folder,
    perf_from_stdout,
    perf_from_summary,
    prepare_output_parent,
    settle_summary,
    tighten_input_files,
)
from convmixer_tasks.backends.ascend.atc import (
    ATC_CODE_RE,
    INSTALL_ATC,
    aipp_config,
    atc_argv,
    check_atc_run,
    om_input_shape,
    read_onnx_input,
)
from convmixer_tasks.backends.ascend.npu_smi import (
    AICORE_USAGE,
    INSTALL_NPU_SMI,
    NPU_SMI_TIMEOUT_S,
    NpuChip,
    npu_smi_values,
    parse_chip_map,
    parse_driver_version,
    parse_npu_smi_info,
    parse_power,
    parse_processes,
    soc_from_chips,
    validate_soc_version,
)
from convmixer_tasks.backends.ascend.tools import ToolRun, kill_process_group, read_streaming
from convmixer_tasks.backends.cann_env import UNKNOWN_VERSION, CannEnv, file_identity, load_cann_env
from convmixer_tasks.device_state import DeviceState
from convmixer_tasks.errors import BackendError, ConfigError, ToolMissingError
from convmixer_tasks.measure.energy import KIND_POWER, PowerSource, PowerUnavailable
from convmixer_tasks.progress import working
from convmixer_tasks.stages.aisbench_format import (
    OLD_SUMMARY_NAME,
    PERCENTILE_KEY,
    THROUGHPUT_FORMULA,
    check_timing,
    clear_previous_outputs,
    natural_key,
    read_summary,
    staged_outputs,
    summary_path,
)
from convmixer_tasks.stages.prepfolder import manifest_identity

log = logging.getLogger(__name__)


class AscendBackend(base.Backend):
    """ATC + ais_bench + npu-smi on an Ascend host; settings come from get_backend("ascend", ...)."""

    name = "ascend"

    def __init__(
        self,
        device_id: int = 0,
        cann_set_env: str | os.PathLike | None = None,
        python: str = "python3",
        atc_log: str = "error",
        atc_timeout_s: float = 3 * 3600,
        ais_bench_timeout_s: float = 6 * 3600,
    ):
        if isinstance(device_id, bool) or not isinstance(device_id, int) or device_id < 0:
            raise ConfigError(f"NPU device id {device_id!r} is invalid; pass a non-negative integer (--device)")
        self.device_id = device_id
        self.cann_set_env = cann_set_env
        self.python = python
        self.atc_log = atc_log
        self.atc_timeout_s = atc_timeout_s
        self.ais_bench_timeout_s = ais_bench_timeout_s
        self._cann: CannEnv | None = None
        self._ais_bench_checked = False
        self._location: tuple[int, int] | None = None

    # -- environment and tools --

    @property
    def cann(self) -> CannEnv:
        """The CANN environment, sourced on first use (constructing the backend needs no Ascend host)."""
        if self._cann is None:
            self._cann = load_cann_env(self.cann_set_env)
        return self._cann

    def tool(self, name: str, install_hint: str) -> str:
        path = self.cann.which(name)
        if path is None:
            raise ToolMissingError(
                f"{name} not found on the PATH of the CANN environment ({self.cann.set_env}); {install_hint}"
            )
        return path

    def run_tool(
        self, argv: list[str], timeout_s: float, cwd: Path | None = None, on_output: Callable[[str], None] | None = None
    ) -> ToolRun:
        """Run ``argv`` in the CANN environment; ``on_output`` sees the output as it arrives (progress relays)."""
        try:
            # Own process group: a tool may be a wrapper that starts the real binary (atc → atc.bin); stopping only
            # the wrapper would leave the binary running and holding the pipe, so communicate() would never return.
            proc = subprocess.Popen(
                argv,
                env=self.cann.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise ToolMissingError(f"{argv[0]} cannot be started ({exc})") from exc
        try:
            if on_output is None:
                output, _ = proc.communicate(timeout=timeout_s)
            else:
                output = read_streaming(proc, timeout_s, on_output)
        except subprocess.TimeoutExpired as exc:
            kill_process_group(proc)
            proc.communicate()
            raise BackendError(
                f"{os.path.basename(argv[0])} did not finish in {timeout_s:.0f}s and was stopped: {' '.join(argv)}"
            ) from exc
        except BaseException:  # a killed task (Airflow's SIGTERM handler raises) must not leave the tool running
            kill_process_group(proc)
            proc.wait()
            raise
        return ToolRun(argv=argv, returncode=proc.returncode, output=output.decode(errors="replace"), pid=proc.pid)

    def ais_bench_command(self) -> list[str]:
        """``python3 -m ais_bench`` with the host interpreter that has ais_bench installed (checked once)."""
        python = self.python if os.path.isabs(self.python) else self.cann.which(self.python)
        if python is None:
            raise ToolMissingError(
                f"{self.python} not found on the PATH of the CANN environment "
                f"({self.cann.set_env}); {INSTALL_AIS_BENCH}"
            )
        if not self._ais_bench_checked:
            probe = self.run_tool(
                [
                    python,
                    "-c",
                    "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('ais_bench') else 3)",
                ],
                120,
            )
            if probe.returncode != 0:
                raise ToolMissingError(f"the ais_bench module is not importable by {python}: {INSTALL_AIS_BENCH}")
            self._ais_bench_checked = True
        return [python, "-m", "ais_bench"]

    def npu_smi(self, *args: str) -> str:
        """The output of ``npu-smi <args>``; BackendError naming the command when it fails."""
        run = self.run_tool([self.tool("npu-smi", INSTALL_NPU_SMI), *args], NPU_SMI_TIMEOUT_S)
        if run.returncode != 0:
            raise BackendError(
                f"`npu-smi {' '.join(args)}` failed with status {run.returncode}: {run.output.strip()[-500:]}; "
                "check the NPU driver (is the device visible in this container?)"
            )
        return run.output

    def npu_chips(self) -> list[NpuChip]:
        return parse_npu_smi_info(self.npu_smi("info"))

    def npu_location(self) -> tuple[int, int]:
        """(NPU id, chip id) of ``device_id``: npu-smi's -i/-c take those, not the device id (``npu-smi info -m``)."""
        if self._location is None:
            chips = parse_chip_map(self.npu_smi("info", "-m"))
            if self.device_id not in chips:
                raise BackendError(
                    f"device {self.device_id} is not in `npu-smi info -m` (devices {sorted(chips)}); pick one of "
                    "those (--device)"
                )
            self._location = chips[self.device_id]
        return self._location

    def device_state(self) -> DeviceState:
        """Busy when the chip's AI Core is in use or its process table lists a process; unknown (not busy, said so)
        when npu-smi cannot tell."""
        try:
            npu, chip = self.npu_location()
            processes = [row for row in parse_processes(self.npu_smi("info")) if row[:2] == (npu, chip)]
            usage = npu_smi_values(self.npu_smi("info", "-t", "usages", "-i", str(npu), "-c", str(chip)))
        except BackendError as exc:
            return DeviceState(
                busy=False, detail=f"npu-smi could not tell whether the device is idle: {exc}", known=False
            )
        aicore = usage.get(AICORE_USAGE)
        try:
            aicore_pct = float(aicore) if aicore is not None else None
        except ValueError:
            aicore_pct = None
        parts = [] if aicore_pct in (None, 0) else [f"AI Core {aicore_pct:g} %"]
        parts += [f"process {pid} {name} ({memory} MB)" for _, _, pid, name, memory in processes]
        busy = bool(processes) or bool(aicore_pct)
        if aicore_pct is None and not busy:  # no process, but the AI Core's use is unknown: not known to be idle
            detail = f"NPU {npu} chip {chip}: no process, but npu-smi showed no {AICORE_USAGE} ({aicore!r})"
            return DeviceState(busy=False, detail=detail, known=False)
        return DeviceState(busy=busy, detail=f"NPU {npu} chip {chip}: " + ("; ".join(parts) or "idle"))

    def power_source(self) -> PowerSource:
        """``npu-smi info -t power -i <npu>``: the card's real-time power, the reading ais_bench's
        --energy_consumption takes (on a 310P card the NPU chip itself has none, only the card's MCU)."""
        try:
            npu, _ = self.npu_location()
            argv = [self.tool("npu-smi", INSTALL_NPU_SMI), "info", "-t", "power", "-i", str(npu)]
        except BackendError as exc:
            raise PowerUnavailable(str(exc)) from exc

        def read() -> float:
            try:
                run = self.run_tool(argv, NPU_SMI_TIMEOUT_S)
            except BackendError as exc:  # a hung or vanished npu-smi ends the trace, not the benchmark
                raise PowerUnavailable(str(exc)) from exc
            if run.returncode != 0:
                raise PowerUnavailable(f"failed with status {run.returncode}: {run.output.strip()[-300:]}")
            return parse_power(run.output)

        return PowerSource(name=f"npu-smi info -t power -i {npu}", kind=KIND_POWER, read=read)

    def environment(self) -> dict[str, str | int | float | None]:
        """The NPU driver (npu-smi's header; None when npu-smi cannot say, e.g. a container without the driver
        tool, where the SoC was given by hand) and the ais_bench build (version + digest of its files)."""
        try:
            driver = parse_driver_version(self.npu_smi("info"))
        except BackendError as exc:
            log.warning("NPU driver version not recorded: %s", exc)
            driver = None
        return {"npu_driver_version": driver, "ais_bench": self.ais_bench_identity()}

    def ais_bench_identity(self) -> str:
        python = self.ais_bench_command()[0]
        run = self.run_tool([python, "-c", AIS_BENCH_IDENTITY_PROBE], 120)
        try:
            found = json.loads(run.output.strip().splitlines()[-1]) if run.returncode == 0 else None
        except (ValueError, IndexError):
            found = None
        if not isinstance(found, dict):
            raise BackendError(f"cannot identify the ais_bench build with {python}: {run.output.strip()[-300:]}")
        return f"{found.get('version') or 'unknown version'} sha256:{str(found.get('sha256'))[:16]}"

    def soc_version(self) -> str:
        return soc_from_chips(self.npu_chips())

    def runtime_identity(self, soc_version: str) -> str:
        """What makes an OM non-portable: the SoC and the toolkit (its version, else the atc binary itself)."""
        version = self.cann.toolkit_version
        if version == UNKNOWN_VERSION:
            version = f"atc {file_identity(self.tool('atc', INSTALL_ATC))}"
        return f"CANN {version}; {soc_version}"

    # -- the Backend interface --

    def describe(self) -> base.DeviceInfo:
        return base.DeviceInfo(backend=self.name, device=self.soc_version(), toolkit_version=self.cann.toolkit_version)

    def compile(
        self,
        onnx_path: str | os.PathLike,
        batch_size: int,
        cache_dir: str | os.PathLike,
        options: base.CompileOptions | None = None,
    ) -> base.Artifact:
        options = options or base.CompileOptions()
        soc = self.soc_version() if options.soc_version == "auto" else validate_soc_version(options.soc_version)
        options = dataclasses.replace(options, soc_version=soc)  # the cache key and record name the real chip
        atc = self.tool("atc", INSTALL_ATC)
        onnx_abs = Path(onnx_path).resolve()
        card = options.card()

        def build(tmp_artifact: Path) -> dict[str, Any]:
            input_name, rank = read_onnx_input(onnx_abs)  # only on a cache miss: the 1536/20 file is ~200 MB
            if rank != 4:
                raise ConfigError(f"ONNX model {onnx_path} input {input_name!r} has rank {rank}, not 4 (N,3,H,W)")
            aipp_cfg = None
            aipp_text = None
            if options.input_dtype == "uint8":
                aipp_text = aipp_config(card.uint8_aipp())
                aipp_cfg = tmp_artifact.parent / "aipp.cfg"
                aipp_cfg.write_text(aipp_text)
            output_base = tmp_artifact.with_name(tmp_artifact.name[: -len(".om")])
            argv = atc_argv(atc, onnx_abs, output_base, input_name, batch_size, soc, options, self.atc_log, aipp_cfg)
            # ATC drops fusion_result.json and kernel_meta/ into its working folder: keep them in the build folder.
            with working(f"ATC compile of {onnx_abs.name} at batch {batch_size} for {soc}"):
                run = self.run_tool(argv, self.atc_timeout_s, cwd=tmp_artifact.parent)
            check_atc_run(run, tmp_artifact, self.cann.env)
            return {
                "input_shape": om_input_shape(batch_size, options.input_dtype, card),
                "soc_version": soc,
                "toolkit_version": self.cann.toolkit_version,
                "onnx_input_name": input_name,
                "atc_argv": argv,
                "aipp_config": aipp_text,
                "atc_warnings": [line for line in ATC_CODE_RE.findall(run.output) if line.startswith("W")],
            }

        runtime = self.runtime_identity(soc)
        return base.compile_cached(
            onnx_path, batch_size, cache_dir, options, backend=self.name, runtime=runtime, suffix=".om", build=build
        )

    def infer(
        self,
        artifact: base.Artifact,
        prep_dir: str | os.PathLike,
        output_dir: str | os.PathLike,
        files: list[str] | None = None,
    ) -> base.InferResult:
        self._check_artifact(artifact)
        prep_dir = Path(prep_dir).resolve()  # newer ais_bench refuses symlinked paths: hand it real ones
        output_dir = Path(output_dir).absolute()
        output_dir = output_dir.parent.resolve() / output_dir.name
        clear_previous_outputs(output_dir)  # before any check: a refused run leaves no older result either
        # dtype/shape/size: ais_bench checks none
        manifest, selected = base.select_prep_files(artifact, prep_dir, files)
        names = [prep_file.name for prep_file in selected]
        command = self.ais_bench_command()
        tighten_input_files([prep_dir / name for name in names])  # hard links below share the mode
        prepare_output_parent(output_dir.parent)

        link_folder = None
        input_folder = prep_dir
        try:
            with staged_outputs(output_dir, manifest_identity(manifest)) as staging:
                if ais_bench_input_files(prep_dir) != sorted(names, key=natural_key):
                    link_folder = output_dir.parent / f".{output_dir.name}_inputs"
                    shutil.rmtree(link_folder, ignore_errors=True)
                    input_folder = link_shard_folder(prep_dir, names, link_folder)
                argv = infer_argv(command, artifact, input_folder, staging, self.device_id)
                relay = AisBenchProgress(f"ais_bench inference (batch {artifact.batch_size})")
                run = self.run_tool(argv, self.ais_bench_timeout_s, on_output=relay.feed)
                relay.close(finished=run.returncode == 0)
                check_ais_bench_run(run, "inference")
                settle_summary(staging, run)
                check_outputs(staging, names, run)
        finally:
            if link_folder is not None:
                shutil.rmtree(link_folder, ignore_errors=True)
        summary = summary_path(output_dir)
        return base.InferResult(output_dir=output_dir, summary_path=summary, file_count=len(names), outfmt="bin")

    def benchmark(self, artifact: base.Artifact, loop: int = 100, warmup: int = 5) -> base.BenchResult:
        self._check_artifact(artifact)
        if isinstance(loop, bool) or not isinstance(loop, int) or loop < 1:
            raise ConfigError(f"loop count {loop!r} is invalid; pass a positive integer (--loop)")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ConfigError(f"warm-up count {warmup!r} is invalid; pass 0 or more (--warmup)")
        command = self.ais_bench_command()
        with tempfile.TemporaryDirectory(prefix="ais_bench_perf_") as tmp:  # mode 0o700: fine for newer ais_bench
            argv = benchmark_argv(command, artifact, loop, warmup, Path(tmp), self.device_id)
            relay = AisBenchProgress(f"ais_bench benchmark (batch {artifact.batch_size})")
            run = self.run_tool(argv, self.ais_bench_timeout_s, on_output=relay.feed)
            relay.close(finished=run.returncode == 0)
            check_ais_bench_run(run, "benchmark")
            perf_dir = Path(tmp) / PERF_DIRNAME
            has_summary = summary_path(perf_dir).is_file() or (perf_dir / OLD_SUMMARY_NAME).is_file()
            try:
                if has_summary:
                    value, latency, samples = perf_from_summary(read_summary(perf_dir), artifact.batch_size)
                else:
                    value, latency, samples = perf_from_stdout(run.output)
            except BackendError as exc:
                raise BackendError(exit_0_failure(run, str(exc), "re-run the benchmark")) from exc
        check_timing(value, latency["mean"], f"benchmark of {artifact.path.name}")
        return base.BenchResult(
            backend=self.name,
            batch_size=artifact.batch_size,
            loop=loop,
            warmup=warmup,
            throughput=value,
            latency_mean_ms=latency["mean"],
            latency_p50_ms=latency["median"],
            latency_p99_ms=latency[PERCENTILE_KEY],
            samples=samples,
            formula=THROUGHPUT_FORMULA,
        )

    # -- helpers --

    def _check_artifact(self, artifact: base.Artifact) -> None:
        if artifact.backend != self.name:
            raise ConfigError(
                f"artifact {artifact.path} was compiled by the {artifact.backend} backend, not "
                f"{self.name}; compile it with --backend {self.name}"
            )
        base.verify_artifact(artifact)
