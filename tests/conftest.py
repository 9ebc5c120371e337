"""Shared fixtures. Heavy imports stay inside fixtures so collecting the DAG tests stays cheap."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DOUBLES_DIR = REPO_ROOT / "tests" / "doubles"
