"""The work folder shared by every step of every run: content-keyed caches any run may reuse, and per-run folders.

cache/prep/<key>/               prep folders (dataset fingerprint + transform + batch size + dtype + limit)
cache/onnx/<key>/model.onnx     validated ONNX (+ model.parity.json) (checkpoint hash + variant + exporter)
cache/artifacts/<backend>/      compiled artifacts (ONNX hash + options + toolkit/device)
runs/<run>/<model>/bs<N>-<precision>/   one run's outputs, eval and benchmark results per model × batch size × precision
demo/                           the generated demo set, when the dataset params point there

Scripts outside Python (docker/smoke-test.sh) ask here rather than restate the layout::

    python -m convmixer_tasks.run.workdir benchmark-json WORK_DIR RUN_ID BATCH_SIZE BACKEND [PRECISION_MODE [MODEL]]
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from convmixer_tasks.fileio import sha256_json

if TYPE_CHECKING:
    from convmixer_tasks.cache import ContentCache


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
        return _cache(self.root / "cache" / "prep")

    @property
    def onnx_cache(self) -> ContentCache:
        return _cache(self.root / "cache" / "onnx")

    def artifact_cache(self, backend: str) -> ContentCache:
        return _cache(self.root / "cache" / "artifacts" / backend)

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

    def benchmark_json(self, run_id: str, batch_size: int, *, precision: str, model: str) -> Path:
        return self.batch_dir(run_id, batch_size, precision=precision, model=model) / "benchmark.json"


def _cache(folder: Path) -> ContentCache:
    # imported here: the settings build a WorkLayout at DAG parse time, the caches are used inside tasks only
    from convmixer_tasks.cache import ContentCache

    return ContentCache(folder)


def run_slug(run_id: str) -> str:
    """A folder name for an Airflow run id (``manual__2026-01-01T00:00:00+00:00`` has ``:`` and ``+``)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._")[:80]
    return f"{readable}-{sha256_json(run_id)[:8]}"  # the hash keeps two ids that read alike apart


USAGE = "benchmark-json WORK_DIR RUN_ID BATCH_SIZE BACKEND [PRECISION_MODE [MODEL]]"


def main(argv: Sequence[str] | None = None) -> int:
    """``USAGE``: print where that benchmark.json is (its folder names the model, the DAG's default model_variant
    when none is given, and the effective precision mode, e.g. force_fp16 for an Ascend run that set none; an empty
    PRECISION_MODE is none)."""
    from convmixer_tasks.backends.precision import effective_precision
    from convmixer_tasks.models.variants import DEMO_VARIANT

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (5, 6, 7) or args[0] != "benchmark-json" or not args[3].isdigit():
        print(f"usage: python -m convmixer_tasks.run.workdir {USAGE}", file=sys.stderr)
        return 2
    _, work_dir, run_id, batch_size, backend, *rest = args
    precision = effective_precision(backend, rest[0] if rest and rest[0] else None)
    # the DAG's default model as the services read it ([convmixer] model_variant through the environment; settings
    # is not imported here: it imports this module)
    model = rest[1] if len(rest) > 1 else os.environ.get("AIRFLOW__CONVMIXER__MODEL_VARIANT") or DEMO_VARIANT
    print(WorkLayout(Path(work_dir)).benchmark_json(run_id, int(batch_size), precision=precision, model=model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
