"""The work folder shared by every step of every run: content-keyed caches any run may reuse, and per-run folders.

cache/prep/<key>/               prep folders (dataset fingerprint + transform + batch size + dtype + limit)
cache/onnx/<key>/model.onnx     validated ONNX (+ model.parity.json) (checkpoint hash + variant + exporter)
cache/artifacts/<backend>/      compiled artifacts (ONNX hash + options + toolkit/device)
runs/<run>/bs<N>-<precision>/   one run's outputs, eval and benchmark results per batch size × precision mode
demo/                           the generated demo set, when the dataset params point there
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from convmixer_tasks.cache import ContentCache
from convmixer_tasks.fileio import sha256_json


@dataclass(frozen=True)
class WorkLayout:
    root: Path

    @property
    def demo_root(self) -> Path:
        return self.root / "demo"

    @property
    def demo_image_dir(self) -> Path:
        return self.demo_root / "images"

    @property
    def demo_label_file(self) -> Path:
        return self.demo_root / "val_label.txt"

    @property
    def prep_cache(self) -> ContentCache:
        return ContentCache(self.root / "cache" / "prep")

    @property
    def onnx_cache(self) -> ContentCache:
        return ContentCache(self.root / "cache" / "onnx")

    def artifact_cache(self, backend: str) -> ContentCache:
        return ContentCache(self.root / "cache" / "artifacts" / backend)

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_slug(run_id)

    def batch_dir(self, run_id: str, batch_size: int, *, precision: str, model: str) -> Path:
        # model and effective precision mode in the path: two models or modes of one run never share a folder
        return self.run_dir(run_id) / model / f"bs{batch_size}-{precision}"

    def shard_output_dir(self, run_id: str, batch_size: int, shard: int, *, precision: str, model: str) -> Path:
        # ais_bench layout: outputs in .../shardNNN/outputs, summary beside it as outputs_summary.json
        batch_dir = self.batch_dir(run_id, batch_size, precision=precision, model=model)
        return batch_dir / "infer" / f"shard{shard:03d}" / "outputs"

    def merged_output_dir(self, run_id: str, batch_size: int, *, precision: str, model: str) -> Path:
        return self.batch_dir(run_id, batch_size, precision=precision, model=model) / "outputs"


def run_slug(run_id: str) -> str:
    """A folder name for an Airflow run id (``manual__2026-01-01T00:00:00+00:00`` has ``:`` and ``+``)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._")[:80]
    return f"{readable}-{sha256_json(run_id)[:8]}"  # the hash keeps two ids that read alike apart
