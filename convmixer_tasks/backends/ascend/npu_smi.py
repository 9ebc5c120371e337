"""npu-smi: its calls' output parsed (chips, process table, usage, power, driver version) and the SoC name ATC takes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from convmixer_tasks.errors import BackendError, ConfigError
from convmixer_tasks.measure.energy import PowerUnavailable

# "Ascend" + a 3-digit family + an optional model suffix (310P3, 910B4-1, 910ProA) or "_dddd" (910_9391).
# A suffix may not start with a digit, which is what rejects the seed guide's "Ascend310310P3".
SOC_RE = re.compile(r"^Ascend\d{3}(?:[A-Za-z][A-Za-z0-9]*(?:-\d+)?|_\d{4})?$")
SOC_EXAMPLES = "Ascend310P3, Ascend910B3, Ascend310B1, Ascend910A, Ascend910_9391"
# First row after each "+===" separator of `npu-smi info`: NPU id, Name, Health.
NPU_ROW_RE = re.compile(r"^\|\s*(\d+)\s+(\S+)\s+\|\s*(\w+)")
NPU_NAME_RE = re.compile(r"^\d{3}[A-Za-z0-9_-]*$")
HEALTHY = "OK"
# `npu-smi info -t <type> -i <npu>` prints "\t<name padded to 30> : <value>" lines.
NPU_SMI_VALUE_RE = re.compile(r"^\s*(\S[^:]*?)\s*:\s*(.*?)\s*$")
# Real-time readings only: 310/310B print "Rated Power Dissipation(W)", a rating, not a measurement.
POWER_LABELS = ("NPU Real-time Power(W)", "Power Dissipation(W)")
AICORE_USAGE = "Aicore Usage Rate(%)"
# Header of `npu-smi info`: "| npu-smi 23.0.6   Version: 23.0.6 |" — the second is the driver's version.
DRIVER_VERSION_RE = re.compile(r"\bVersion:\s*(\S+)")
# Process table rows of `npu-smi info`: | NPU  Chip | Process id | Process name | Process memory(MB) |
PROCESS_ROW_RE = re.compile(r"^\|\s*(\d+)\s+(\d+)\s*\|\s*(\d+)\s*\|\s*(.*?)\s*\|\s*(\d+)")
# `npu-smi info -m` rows: NPU ID, Chip ID, Chip Logic ID (the device id ACL and ais_bench use, "-" for the MCU), Name.
CHIP_MAP_RE = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\d+|-)\s+(\S.*?)\s*$")
NPU_SMI_TIMEOUT_S = 30
INSTALL_NPU_SMI = (
    "npu-smi comes with the Ascend NPU driver (Ascend-hdk-<chip>-npu-driver); install it, or in a "
    "container mount /usr/local/bin/npu-smi and /usr/local/Ascend/driver"
)


@dataclass(frozen=True)
class NpuChip:
    npu_id: int
    name: str  # e.g. "310P3", as npu-smi prints it
    health: str  # "OK", "Warning", "Alarm", "Critical", ...

    @property
    def soc_version(self) -> str:
        return f"Ascend{self.name}"


def validate_soc_version(value: str) -> str:
    """``value`` if it is an Ascend SoC name as ATC's --soc_version takes it; else a ConfigError naming it."""
    if isinstance(value, str) and SOC_RE.match(value):
        return value
    hint = ""
    if isinstance(value, str) and re.match(r"^\d{3}", value):
        hint = f" (did you mean Ascend{value}? --soc_version needs the 'Ascend' prefix)"
    elif isinstance(value, str) and value.startswith("Ascend "):
        hint = f" (drop the space: {value.replace(' ', '')})"
    raise ConfigError(
        f"SoC version {value!r} is not an Ascend chip name{hint}; expected 'Ascend' + the Name column of "
        f"`npu-smi info`, e.g. {SOC_EXAMPLES} (--soc-version, or 'auto' to read it from npu-smi)"
    )


def parse_npu_smi_info(text: str) -> list[NpuChip]:
    """NPU rows of ``npu-smi info``: the first row after each ``+===`` separator of the device table.

    Parsing stops at the process table, whose rows (``| 0  0 | 48213 | python3 …``) would otherwise match too.
    """
    chips: list[NpuChip] = []
    after_separator = False
    for line in text.splitlines():
        if "Process id" in line or "Process name" in line:
            break
        if line.startswith("+="):
            after_separator = True
            continue
        if after_separator:
            match = NPU_ROW_RE.match(line)
            if match and NPU_NAME_RE.match(match.group(2)):
                chips.append(NpuChip(int(match.group(1)), match.group(2), match.group(3)))
        after_separator = False
    return chips


def soc_from_chips(chips: Sequence[NpuChip]) -> str:
    """ "Ascend" + the Name of the first healthy NPU, validated."""
    for chip in chips:
        if chip.health == HEALTHY:
            return validate_soc_version(chip.soc_version)
    if not chips:
        raise BackendError("`npu-smi info` listed no NPU; check the driver (npu-smi info) or pass --soc-version")
    listed = ", ".join(f"NPU {c.npu_id} {c.name} {c.health}" for c in chips)
    raise BackendError(f"`npu-smi info` lists no healthy NPU ({listed}); fix the device or pass --soc-version")


def npu_smi_values(text: str) -> dict[str, str]:
    """``name: value`` of an ``npu-smi info -t <type>`` answer (for one chip; the first of a name wins)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        match = NPU_SMI_VALUE_RE.match(line)
        if match:
            values.setdefault(match.group(1), match.group(2))
    return values


def parse_power(text: str) -> float:
    """Watts from ``npu-smi info -t power``; PowerUnavailable when it shows none (NA, or only a rated figure)."""
    values = npu_smi_values(text)
    for label in POWER_LABELS:
        if label in values:
            try:
                watts = float(values[label])
            except ValueError:
                raise PowerUnavailable(f"npu-smi shows {label} = {values[label]!r}, not a number") from None
            if watts < 0:
                raise PowerUnavailable(f"npu-smi shows a negative {label} ({watts})")
            return watts
    shown = ", ".join(name for name in values if "Power" in name) or "no power line"
    raise PowerUnavailable(f"npu-smi shows no real-time power ({shown}); expected one of {', '.join(POWER_LABELS)}")


def parse_chip_map(text: str) -> dict[int, tuple[int, int]]:
    """``npu-smi info -m``: device (chip logic) id → (NPU id, chip id); MCU rows (logic id "-") left out."""
    found: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        match = CHIP_MAP_RE.match(line)
        if match and match.group(3) != "-":
            found[int(match.group(3))] = (int(match.group(1)), int(match.group(2)))
    return found


def parse_processes(text: str) -> list[tuple[int, int, int, str, int]]:
    """(NPU, chip, pid, name, memory MB) rows of the process table of ``npu-smi info``."""
    rows = []
    in_processes = False
    for line in text.splitlines():
        if "Process id" in line:
            in_processes = True
            continue
        match = PROCESS_ROW_RE.match(line) if in_processes else None
        if match:
            npu, chip, pid, name, memory = match.groups()
            rows.append((int(npu), int(chip), int(pid), name, int(memory)))
    return rows


def parse_driver_version(text: str) -> str | None:
    """The driver version from the header of ``npu-smi info`` (None when the header is not there)."""
    for line in text.splitlines()[:5]:
        match = DRIVER_VERSION_RE.search(line)
        if match:
            return match.group(1)
    return None
