"""The input dtypes a prep folder's files may hold, with their item sizes. A leaf (imports nothing): the DAG file's
Params and the CLI's choices read it at parse time without loading the prep folder's contract."""

from __future__ import annotations

DTYPE_ITEMSIZE: dict[str, int] = {"float32": 4, "uint8": 1}
INPUT_DTYPES: tuple[str, ...] = tuple(DTYPE_ITEMSIZE)
