"""The CANN environment an Ascend tool runs in: ``set_env.sh`` sourced once, its variables captured, the version read.

ATC, ais_bench and the ACL runtime need the variables CANN's ``set_env.sh`` exports (PATH, LD_LIBRARY_PATH,
PYTHONPATH, ASCEND_*). We source the script once in a throw-away bash, capture ``env -0`` and hand that dict to every
subprocess, so the worker itself never needs a login shell or a hand-written environment.
"""

from __future__ import annotations

import glob
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from convmixer_tasks.errors import BackendError, ToolMissingError

# CANN < 8.5 installs under ascend-toolkit/, CANN >= 8.5 under cann/ (first existing one wins when none is configured).
DEFAULT_SET_ENV_PATHS = (Path("/usr/local/Ascend/ascend-toolkit/set_env.sh"), Path("/usr/local/Ascend/cann/set_env.sh"))
SET_ENV_SETTING = "--cann-set-env (CLI) / cann_set_env (backend setting, DAG param)"
INSTALL_INFO_NAME = "ascend_toolkit_install.info"
UNKNOWN_VERSION = "unknown"
SOURCE_TIMEOUT_S = 120

_VERSION_LINE = re.compile(r"^\s*version\s*=\s*(\S+)\s*$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class CannEnv:
    set_env: Path
    env: dict[str, str]  # the complete environment for tool subprocesses
    toolkit_home: Path | None  # ASCEND_TOOLKIT_HOME (or ASCEND_HOME_PATH) after sourcing
    toolkit_version: str  # e.g. "8.0.RC3"; "unknown" when no version file was found

    def which(self, tool: str) -> str | None:
        """``tool`` resolved on the CANN environment's PATH (not the worker's own)."""
        return shutil.which(tool, path=self.env.get("PATH", ""))


def resolve_set_env(configured: str | os.PathLike | None) -> Path:
    """The set_env.sh to source: the configured one, else the first default that exists."""
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise ToolMissingError(
                f"CANN environment script {path} does not exist; install the CANN toolkit there or set "
                f"{SET_ENV_SETTING} to your set_env.sh (e.g. /usr/local/Ascend/ascend-toolkit/set_env.sh, "
                "or /usr/local/Ascend/cann/set_env.sh for CANN >= 8.5)"
            )
        return path
    for path in DEFAULT_SET_ENV_PATHS:
        if path.is_file():
            return path
    raise ToolMissingError(
        f"no CANN environment script at {' or '.join(map(str, DEFAULT_SET_ENV_PATHS))}; install the CANN toolkit "
        f"(Ascend-cann-toolkit_<version>_linux-<arch>.run --install) or set {SET_ENV_SETTING} to its set_env.sh"
    )


def source_set_env(set_env: Path, base_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment after ``source set_env.sh``, captured with ``env -0`` (values may hold newlines)."""
    bash = shutil.which("bash")
    if bash is None:
        raise ToolMissingError(f"bash is needed to source {set_env} but is not on PATH; install bash")
    # The script path travels as $1, never spliced into the command string. --norc and a closed stdin: an Airflow 3
    # task's stdin is a socket to its supervisor, and bash at shell level 1 takes a socket on stdin for a remote
    # shell and reads ~/.bashrc even for -c; a .bashrc that puts pyenv's or conda's shims first would hand the CANN
    # tools another python3. The environment is set_env.sh's and the worker's, nothing else.
    argv = [bash, "--noprofile", "--norc", "-c", 'source "$1" >/dev/null && env -0', "cann_set_env", str(set_env)]
    try:
        proc = subprocess.run(
            argv,
            env=dict(base_env if base_env is not None else os.environ),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=SOURCE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BackendError(f"sourcing {set_env} did not finish in {SOURCE_TIMEOUT_S}s; check the script") from exc
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip()[-2000:]
        raise BackendError(
            f"sourcing {set_env} failed with exit status {proc.returncode}: {detail or 'no message'}; fix the "
            f"script or set {SET_ENV_SETTING} to a working one"
        )
    return parse_env0(proc.stdout)


def parse_env0(data: bytes) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in data.split(b"\0"):
        name, sep, value = entry.decode(errors="surrogateescape").partition("=")
        if sep and name and name != "_":  # "_" is bash's last-argument variable, not part of the environment
            env[name] = value
    return env


def install_info_candidates(set_env: Path, env: Mapping[str, str]) -> list[Path]:
    """Where a toolkit's ``ascend_toolkit_install.info`` lives, most specific first.

    ``<home>/<arch>-linux/`` under ASCEND_TOOLKIT_HOME / ASCEND_HOME_PATH (``…/ascend-toolkit/latest`` before
    CANN 8.5, ``…/cann`` after), then the same under the folder holding set_env.sh.
    """
    arch = f"{platform.machine()}-linux"
    roots: list[Path] = []
    for key in ("ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH"):
        if env.get(key):
            roots.append(Path(env[key]))
    roots += [set_env.parent / "latest", set_env.parent]
    candidates: list[Path] = []
    for root in dict.fromkeys(roots):
        candidates.append(root / arch / INSTALL_INFO_NAME)
        candidates += sorted(Path(p) for p in glob.glob(str(root / "*-linux" / INSTALL_INFO_NAME)))
        candidates.append(root / INSTALL_INFO_NAME)
    return list(dict.fromkeys(candidates))


def read_version_file(path: Path) -> str | None:
    """The ``version=`` value of an install-info / version.info file (either case of "version")."""
    try:
        match = _VERSION_LINE.search(path.read_text(errors="replace"))
    except OSError:
        return None
    return match.group(1) if match else None


def read_toolkit_version(set_env: Path, env: Mapping[str, str]) -> str:
    """The CANN version from the install info; the compiler's version.info as a fallback; else "unknown"."""
    fallbacks = [
        Path(env[key]) / "compiler" / "version.info"
        for key in ("ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH")
        if env.get(key)
    ]
    for path in install_info_candidates(set_env, env) + fallbacks:
        if path.is_file():
            version = read_version_file(path)
            if version:
                return version
    return UNKNOWN_VERSION


def load_cann_env(configured: str | os.PathLike | None = None, base_env: Mapping[str, str] | None = None) -> CannEnv:
    set_env = resolve_set_env(configured)
    env = source_set_env(set_env, base_env)
    home = env.get("ASCEND_TOOLKIT_HOME") or env.get("ASCEND_HOME_PATH")
    return CannEnv(
        set_env=set_env,
        env=env,
        toolkit_home=Path(home) if home else None,
        toolkit_version=read_toolkit_version(set_env, env),
    )


def file_identity(path: str) -> str:
    """size+mtime of a tool binary: what identifies a toolkit when no version file can be read."""
    info = os.stat(path)
    return f"{path}:{info.st_size}:{info.st_mtime_ns}"
