"""Shared pieces of the docker/ tests: recording doubles of the commands the container scripts exec (airflow,
convmixer-tasks, celery), fake Ascend device files, and runners for docker/ascend-entrypoint.sh and
docker/airflow-init.sh."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from tests.docker.compose_model import DOCKER_DIR

ENTRYPOINT = DOCKER_DIR / "ascend-entrypoint.sh"
AIRFLOW_INIT = DOCKER_DIR / "airflow-init.sh"
ASCEND_SHARED_DEVICES = ("davinci_manager", "devmm_svm", "hisi_hdc")

_RECORDER = """#!{python}
# Recording double of `{name}` (tests/docker/helpers.py): appends its argv and chosen variables as one JSON line.
import json, os, sys
with open({record!r}, "a") as out:
    out.write(json.dumps({{"tool": {name!r}, "argv": sys.argv[1:],
                          "env": {{k: os.environ.get(k) for k in {env_keys!r}}}}}) + "\\n")
sys.exit({exit_codes!r}.get(" ".join(sys.argv[1:3]), 0))
"""


def install_recorders(
    bin_dir: Path,
    record: Path,
    names: Iterable[str],
    env_keys: Iterable[str] = (),
    exit_codes: Mapping[str, int] | None = None,
) -> Path:
    """Write a recording double for each name into ``bin_dir``; ``exit_codes`` maps "arg1 arg2" to a status."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        script = bin_dir / name
        script.write_text(
            _RECORDER.format(
                python=sys.executable,
                name=name,
                record=str(record),
                env_keys=list(env_keys),
                exit_codes=dict(exit_codes or {}),
            )
        )
        script.chmod(0o755)
    return bin_dir


def read_records(record: Path) -> list[dict]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines() if line.strip()]


def fake_devices(dev_root: Path, numbers: Iterable[int] = (0,), missing: Iterable[str] = ()) -> Path:
    """Plain files named like the Ascend device nodes (the entrypoint only checks that they exist)."""
    dev_root.mkdir(parents=True, exist_ok=True)
    names = [f"davinci{number}" for number in numbers] + list(ASCEND_SHARED_DEVICES)
    for name in names:
        if name not in set(missing):
            (dev_root / name).touch()
    return dev_root


def fake_driver(root: Path, with_hal: bool = True) -> Path:
    """A fake /usr/local/Ascend/driver: lib64/{driver,common}, with libascend_hal.so in lib64/driver unless told not
    (the preflight only looks for the file; nothing loads it)."""
    for folder in ("lib64/driver", "lib64/common"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    if with_hal:
        (root / "lib64" / "driver" / "libascend_hal.so").write_bytes(b"\x7fELF test stand-in, not a library")
    return root


def run_script(script: Path, env: Mapping[str, str], *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(script), *args], env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )


def prepend_path(env: Mapping[str, str], *folders: Path) -> dict[str, str]:
    result = dict(env)
    result["PATH"] = os.pathsep.join([*map(str, folders), result.get("PATH", os.environ.get("PATH", ""))])
    return result
