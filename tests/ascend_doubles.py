"""Pytest fixture that installs the Ascend tool DOUBLES (tests/doubles) as a fake CANN host in tmp_path.

Layout it writes (nothing here is a real CANN install):
  <root>/Ascend/ascend-toolkit/set_env.sh            exports ASCEND_* and puts the toolkit bin (atc) on PATH and
                                                     tests/doubles on PYTHONPATH (so `python3 -m ais_bench` works)
  <root>/Ascend/ascend-toolkit/latest/<arch>-linux/ascend_toolkit_install.info   version=<version>
  (layout="cann": <root>/Ascend/cann/set_env.sh and <root>/Ascend/cann/<arch>-linux/..., as CANN >= 8.5)
  <root>/host-bin/{python3,npu-smi}                  prepended to the test's PATH (npu-smi is a driver tool, not a
                                                     toolkit one; python3 runs this venv's interpreter)
  <root>/log                                         ASCEND_PROCESS_LOG_PATH (plog files of the atc double)

Failure modes are chosen with the doubles' environment variables (see tests/doubles/README.md) through
``doubles.mode(ATC_DOUBLE_MODE="fail")`` BEFORE the backend is created (the backend captures its environment once).
Usage: take the ``ascend_doubles`` fixture (``tests/conftest.py`` registers this module as a pytest plugin).
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DOUBLES_DIR = Path(__file__).resolve().parent / "doubles"
DOUBLES_BIN = DOUBLES_DIR / "bin"
TOOLS = ("atc", "npu-smi", "ais_bench")
DEFAULT_VERSION = "8.0.RC3"


@dataclass
class AscendDoubles:
    root: Path
    monkeypatch: pytest.MonkeyPatch
    layout: str = "toolkit"  # "toolkit" (ascend-toolkit/, CANN < 8.5) or "cann" (cann/, CANN >= 8.5)
    version: str | None = DEFAULT_VERSION  # None: no version file at all
    missing: set[str] = field(default_factory=set)
    set_env_noise: bool = True

    @property
    def install_dir(self) -> Path:
        return self.root / "Ascend" / ("cann" if self.layout == "cann" else "ascend-toolkit")

    @property
    def toolkit_home(self) -> Path:
        return self.install_dir if self.layout == "cann" else self.install_dir / "latest"

    @property
    def set_env(self) -> Path:
        return self.install_dir / "set_env.sh"

    @property
    def host_bin(self) -> Path:
        return self.root / "host-bin"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def install_info(self) -> Path:
        return self.toolkit_home / f"{platform.machine()}-linux" / "ascend_toolkit_install.info"

    def build(self) -> AscendDoubles:
        """(Re)write the fake install for the current layout/version/missing settings."""
        bin_dir = self.toolkit_home / "bin"
        for folder in (bin_dir, self.host_bin, self.log_dir, self.install_info.parent):
            folder.mkdir(parents=True, exist_ok=True)
        for link in (bin_dir / "atc", self.host_bin / "npu-smi"):
            if link.is_symlink() or link.exists():
                link.unlink()
        if "atc" not in self.missing:
            (bin_dir / "atc").symlink_to(DOUBLES_BIN / "atc")
        if "npu-smi" not in self.missing:
            (self.host_bin / "npu-smi").symlink_to(DOUBLES_BIN / "npu-smi")
        shim = self.host_bin / "python3"
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        shim.chmod(0o755)

        if self.install_info.exists():
            self.install_info.unlink()
        if self.version is not None:
            self.install_info.write_text(
                f"package_name=Ascend-cann-toolkit\nversion={self.version}\ninnerversion=V100R001C19SPC001B175\n"
                f"arch={platform.machine()}\nos=linux\npath={self.toolkit_home}\n"
            )
        pythonpath = "" if "ais_bench" in self.missing else f"{DOUBLES_DIR}:"
        noise = 'echo "CANN environment configured (test double set_env.sh)"\n' if self.set_env_noise else ""
        self.set_env.write_text(
            "# FAKE set_env.sh written by tests/ascend_doubles.py: points at the Ascend tool test doubles\n"
            f"export ASCEND_TOOLKIT_HOME={self.toolkit_home}\n"
            "export ASCEND_HOME_PATH=${ASCEND_TOOLKIT_HOME}\n"
            "export ASCEND_OPP_PATH=${ASCEND_TOOLKIT_HOME}/opp\n"
            "export ASCEND_AICPU_PATH=${ASCEND_TOOLKIT_HOME}\n"
            "export TOOLCHAIN_HOME=${ASCEND_TOOLKIT_HOME}/toolkit\n"
            "export LD_LIBRARY_PATH=${ASCEND_TOOLKIT_HOME}/lib64:${ASCEND_TOOLKIT_HOME}/lib64/plugin/opskernel:"
            "${LD_LIBRARY_PATH}\n"
            f"export PYTHONPATH={pythonpath}${{ASCEND_TOOLKIT_HOME}}/python/site-packages:${{PYTHONPATH}}\n"
            "export PATH=${ASCEND_TOOLKIT_HOME}/bin:${ASCEND_TOOLKIT_HOME}/compiler/ccec_compiler/bin:${PATH}\n" + noise
        )
        return self

    def remove(self, *tools: str) -> AscendDoubles:
        unknown = set(tools) - set(TOOLS)
        assert not unknown, f"unknown tools {unknown}; choose from {TOOLS}"
        self.missing |= set(tools)
        return self.build()

    def use_layout(self, layout: str, version: str | None = DEFAULT_VERSION) -> AscendDoubles:
        self.layout, self.version = layout, version
        return self.build()

    def mode(self, **variables: str) -> AscendDoubles:
        """Set the doubles' environment variables (e.g. ATC_DOUBLE_MODE="fail") for this test."""
        for name, value in variables.items():
            self.monkeypatch.setenv(name, str(value))
        return self

    def backend(self, **settings):
        from convmixer_tasks.backends.base import get_backend

        settings.setdefault("cann_set_env", str(self.set_env))
        return get_backend("ascend", **settings)


@pytest.fixture
def ascend_doubles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AscendDoubles:
    """A fake Ascend host: doubles of atc / npu-smi / ais_bench behind a fake CANN set_env.sh."""
    doubles = AscendDoubles(root=tmp_path / "npu-host", monkeypatch=monkeypatch).build()
    monkeypatch.setenv("PATH", f"{doubles.host_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("ASCEND_PROCESS_LOG_PATH", str(doubles.log_dir))
    for name in list(os.environ):  # start every test from the doubles' defaults
        if name.startswith(("ATC_DOUBLE_", "AIS_BENCH_DOUBLE_", "NPU_SMI_DOUBLE_")):
            monkeypatch.delenv(name)
    return doubles


# --- helpers shared by the Ascend test modules ----------------------------------------------------------------------


def run_double(tool: str, *args: str, env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None):
    """Run one double directly (not through the backend); stdout/stderr decoded with their "\r" kept."""
    import subprocess

    argv = [sys.executable, "-m", "ais_bench"] if tool == "ais_bench" else [sys.executable, str(DOUBLES_BIN / tool)]
    full_env = {**os.environ, "PYTHONPATH": str(DOUBLES_DIR), **(env or {})}
    proc = subprocess.run(argv + list(args), capture_output=True, env=full_env, cwd=cwd, timeout=120)
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    )


def write_tiny_onnx(
    path: str | os.PathLike,
    input_name: str = "image",
    classes: int = 10,
    seed: int = 0,
    size: int = 224,
    output_name: str = "class",
) -> Path:
    """A small classifier with a real model's interface: float32 [batch,3,size,size] in, [batch,classes] out.

    Per-channel means and a coarse 4x4 pooling feed a linear layer, so outputs depend on the pixels.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.standard_normal((classes, 48)).astype(np.float32), "fc.weight")
    bias = numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), "fc.bias")
    nodes = [
        helper.make_node(
            "AveragePool", [input_name], ["pooled"], kernel_shape=[size // 4] * 2, strides=[size // 4] * 2
        ),
        helper.make_node("Flatten", ["pooled"], ["features"]),
        helper.make_node("Gemm", ["features", "fc.weight", "fc.bias"], [output_name], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_classifier",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", classes])],
        [weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return Path(path)
