"""The figures a run starts from when its params leave them out, each stated once: ``params.RunParams`` (so the
DAG's Params and the CLI's flags) and the rules' own keyword defaults (gate, throughput, quiet device, fidelity)
read them here. No imports: the DAG file reads them at parse time without loading the rules."""

from __future__ import annotations

# The DAG Params that carry the gate's two tolerances: messages cite them, so advice to "rerun with a larger …"
# names a param that exists.
TOP1_TOLERANCE_PARAM = "top1_tolerance"
THROUGHPUT_TOLERANCE_PARAM = "throughput_tolerance_pct"

# --- gate ---
DEFAULT_TOP1_TOLERANCE = 0.5  # percentage points below the baseline still pass
DEFAULT_THROUGHPUT_DROP_PCT = 10.0  # percent below the history median still passes
DEFAULT_HISTORY = 20  # same-fingerprint ok runs the throughput baseline and its noise are taken over
DEFAULT_SIGNIFICANCE = 0.01  # McNemar p below which a paired top-1 drop beyond tolerance is a regression
DEFAULT_RUNS = 2  # consecutive runs a throughput regression needs (see throughput's module docstring)

# --- benchmark ---
BENCHMARK_LOOP = 100  # pure-inference iterations per batch size (after the warm-up)
DEFAULT_MAX_CV_PCT = 10.0  # per-loop latency CV above which a measurement is too noisy to judge
DEFAULT_REMEASURE = 2  # extra measurements the benchmark step may take when the CV is too high
DEFAULT_CONFIRM = 3  # measurements a suspect run takes to confirm or clear itself (bench/bench_gate.py)
DEFAULT_IDLE_WAIT_S = 60.0  # how long a busy device is waited for before it is timed anyway (and flagged)

# --- evidence ---
DEFAULT_SUBSET = 256  # images the artifact is compared with its ONNX on (all when the set is smaller)
# msit compare's abnormality thresholds.
DEFAULT_THRESHOLDS = {"min_cosine": 0.99, "max_rel_euclidean": 0.05, "max_kl": 0.005}
