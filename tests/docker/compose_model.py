"""What Docker Compose would make of docker/*.yaml, for tests on a machine with no Compose: .env parsing,
${VAR} interpolation, override merging and the environment each container gets.

Only the parts of the Compose specification these files use are modelled, following its rules:
interpolation (``$$``, ``${V}``, ``${V:-d}``, ``${V-d}``, ``${V:?e}``, ``${V?e}``, ``${V:+a}``, ``${V+a}``, nested
defaults), merging (mappings merge, ``environment`` by key, ``volumes``/``devices`` by container path, ``ports``
appended, other sequences replaced) and ``environment`` entries without a value (taken from the .env/shell
environment when set there, else left out).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # no stubs installed

DOCKER_DIR = Path(__file__).resolve().parents[2] / "docker"
BASE_FILE = DOCKER_DIR / "docker-compose.yaml"
NPU_HOST_FILE = DOCKER_DIR / "docker-compose.npu-host.yaml"
EDGE_FILE = DOCKER_DIR / "docker-compose.edge.yaml"
ASCEND_BUILD_FILE = DOCKER_DIR / "docker-compose.ascend-build.yaml"
ENV_EXAMPLE = DOCKER_DIR / ".env.example"
COMPOSE_FILES = (BASE_FILE, NPU_HOST_FILE, EDGE_FILE, ASCEND_BUILD_FILE)

# What an operator fills in before the first `up` (.env.example leaves the secrets empty on purpose).
TEST_SECRETS = {
    "POSTGRES_PASSWORD": "pg-secret",
    "REDIS_PASSWORD": "redis-secret",
    "AIRFLOW_FERNET_KEY": "Gx1ZcCj9v3Qf1sHn6r0o3Yk2Ww8cV0p2x4y6z8A0B2E=",
    "AIRFLOW_JWT_SECRET": "jwt-secret",
    "AIRFLOW_API_SECRET_KEY": "api-secret",
    "_AIRFLOW_WWW_USER_PASSWORD": "admin-secret",
}
# What else .env.example leaves to the operator (not secret, but required).
OPERATOR_VALUES = {"CONVMIXER_REVISION": "0123456789ab"}

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_BRACED_OP = re.compile(rf"^({_NAME})(?:(:?[-?+])(.*))?$", re.S)


class InterpolationError(ValueError):
    """A required variable (``${V:?message}``) is missing, or a ``${`` is not closed."""


def parse_dotenv(path: str | Path) -> dict[str, str]:
    """KEY=VALUE lines; ``#`` comments; ``export`` prefix; one level of matching quotes stripped."""
    values: dict[str, str] = {}
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def example_env(**overrides: str) -> dict[str, str]:
    """.env.example with the secrets filled in, plus ``overrides`` (a value None removes the variable)."""
    env = {**parse_dotenv(ENV_EXAMPLE), **TEST_SECRETS, **OPERATOR_VALUES}
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _closing_brace(text: str, start: int) -> int:
    depth = 0
    for index in range(start, len(text)):
        if text.startswith("${", index):
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    raise InterpolationError(f"unclosed '${{' in {text!r}")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char != "$":
            out.append(char)
            index += 1
            continue
        if text.startswith("$$", index):
            out.append("$")
            index += 2
        elif text.startswith("${", index):
            end = _closing_brace(text, index)
            out.append(_resolve(text[index + 2 : end], env))
            index = end + 1
        else:
            match = re.match(_NAME, text[index + 1 :])
            if match:
                out.append(env.get(match.group(0), ""))
                index += 1 + match.end()
            else:
                out.append("$")
                index += 1
    return "".join(out)


def _resolve(expr: str, env: Mapping[str, str]) -> str:
    match = _BRACED_OP.match(expr)
    if not match:
        raise InterpolationError(f"invalid interpolation ${{{expr}}}")
    name, op, arg = match.groups()
    value = env.get(name)
    is_set = value is not None
    is_full = bool(value)
    if op is None:
        return value or ""
    check = is_full if op.startswith(":") else is_set
    kind = op[-1]
    if kind == "-":
        return value if check and value is not None else interpolate(arg, env)  # check implies set
    if kind == "?":
        if not check or value is None:  # check implies set
            raise InterpolationError(f"required variable {name} is missing a value: {interpolate(arg, env)}")
        return value
    return interpolate(arg, env) if check else ""  # "+"


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    """Interpolate every string value (not mapping keys), as Compose does after reading the YAML."""
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(value, env) for value in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def load_raw(path: str | Path) -> dict[str, Any]:
    """The YAML with anchors and ``<<`` merge keys resolved (PyYAML does both), before interpolation."""
    return yaml.safe_load(Path(path).read_text())


def load(path: str | Path, env: Mapping[str, str]) -> dict[str, Any]:
    return interpolate_tree(load_raw(path), env)


# --- merging override files -------------------------------------------------------------------------------------


def _env_dict(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return dict(value)
    result: dict[str, Any] = {}
    for item in value:
        key, sep, val = str(item).partition("=")
        result[key] = val if sep else None
    return result


def mount_target(entry: Any) -> str:
    """The container path of a short-syntax volume/device (``src:dst[:mode]``) or a long-syntax volume."""
    if isinstance(entry, dict):
        return entry["target"]
    parts = str(entry).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def _merge_by_target(base: list, override: list) -> list:
    merged = {mount_target(entry): entry for entry in base}
    for entry in override:
        merged[mount_target(entry)] = entry
    return list(merged.values())


def merge_service(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for key, value in override.items():
        if key == "environment":
            result[key] = {**_env_dict(result.get(key)), **_env_dict(value)}
        elif key in ("volumes", "devices"):
            result[key] = _merge_by_target(result.get(key, []), value)
        elif key == "ports":
            result[key] = result.get(key, []) + [port for port in value if port not in result.get(key, [])]
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = {**result[key], **copy.deepcopy(value)}
        else:
            result[key] = copy.deepcopy(value)
    return result


def merge(base: dict[str, Any], *overrides: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for override in overrides:
        for key, value in override.items():
            if key == "services":
                services = result.setdefault("services", {})
                for name, service in value.items():
                    services[name] = merge_service(services.get(name, {}), service)
            elif isinstance(value, dict) and isinstance(result.get(key), dict):
                result[key] = {**result[key], **value}
            else:
                result[key] = value
    return result


def project(env: Mapping[str, str], *files: Path) -> dict[str, Any]:
    """The merged project of ``files`` (default: the base file alone), interpolated with ``env``."""
    paths = files or (BASE_FILE,)
    return merge(*(load(path, env) for path in paths))


def container_env(service: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """The environment a container of ``service`` starts with (entries without a value come from ``env``)."""
    result: dict[str, str] = {}
    for key, value in _env_dict(service.get("environment")).items():
        if value is None:
            if key in env:
                result[key] = env[key]
        else:
            result[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return result


def _strings(node: Any):
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def variables_used(path: str | Path) -> set[str]:
    """Every variable name a compose file interpolates in its values (comments and ``$$`` escapes excluded)."""
    names: set[str] = set()
    for text in _strings(load_raw(path)):
        text = text.replace("$$", "")
        names |= set(re.findall(rf"\$\{{({_NAME})", text)) | set(re.findall(rf"\$({_NAME})", text))
    return names
