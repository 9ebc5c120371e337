"""`convmixer-tasks <step>`: the front door a person uses by hand, with the ModelZoo reference scripts' flag names.

Each sub-command parses flags, calls one library function and prints its result: a short summary for people by
default, the whole result with `--output json` (or yaml) for programs — Airflow CLI's option and choices
(``cli_output.py``). This module declares the flags and prints; ``cli_steps`` holds the handler each step runs.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Sequence
from typing import Any

from convmixer_tasks.backends.catalog import BACKEND_NAMES
from convmixer_tasks.backends.precision import DEFAULT_GELU_IMPLMODE, GELU_IMPLMODES
from convmixer_tasks.cli_output import DEFAULT_FORMAT, OUTPUT_FORMATS, ROWS_FORMATS, check_format, render
from convmixer_tasks.cli_steps import HANDLERS
from convmixer_tasks.defaults import DEFAULT_CONFIRM, DEFAULT_MAX_CV_PCT, DEFAULT_REMEASURE
from convmixer_tasks.dtypes import INPUT_DTYPES
from convmixer_tasks.errors import ConvMixerError
from convmixer_tasks.models import DEFAULT_MODEL
from convmixer_tasks.status import STATUSES


def _fail(command: str, message: str) -> int:
    """One readable line, no traceback: these are errors the user can fix (tool output may span lines)."""
    message = " | ".join(line.strip() for line in message.splitlines() if line.strip())
    print(f"convmixer-tasks {command}: error: {message}", file=sys.stderr)
    return 1


DTYPE_HELP = "float32 NCHW normalised (reference) or uint8 NHWC pixels (normalised by AIPP / the model)"
URL_HELP = "metrics DB (SQLAlchemy URL; default: $CONVMIXER_METRICS_DB_URL, else $AIRFLOW_HOME/convmixer_metrics.db)"


# --- parser -------------------------------------------------------------------------------------------------------


def _add(sub, name: str, help_text: str, formats: Sequence[str] | None = OUTPUT_FORMATS) -> argparse.ArgumentParser:
    """A sub-command; with ``formats`` it takes ``-o/--output FORMAT`` after its name too, as Airflow's do.

    Steps whose reference flags use ``--output`` for a path pass ``formats=None``: for them the format goes before
    the step (``convmixer-tasks -o json infer --output DIR``), which every step accepts.
    """
    extra: dict[str, Any] = {}
    if formats is None:
        # Raw: argparse would break the command at its hyphen ("convmixer-" / "tasks").
        extra = {
            "epilog": f"Here --output is a path; give the format before the step:\n  convmixer-tasks -o json {name}",
            "formatter_class": argparse.RawDescriptionHelpFormatter,
        }
    parser = sub.add_parser(name, help=help_text, description=help_text, **extra)
    parser.set_defaults(handler=HANDLERS[name])
    if formats is not None:
        _output_flag(parser, formats, default=argparse.SUPPRESS)  # SUPPRESS: keep a format given before the step
    return parser


def _output_flag(parser: argparse.ArgumentParser, formats: Sequence[str], default: Any) -> None:
    parser.add_argument(
        "-o",
        "--output",
        dest="output_format",
        choices=formats,
        default=default,
        metavar=f"({', '.join(formats)})",
        help=f"output format. Allowed values: {', '.join(formats)} (default: {DEFAULT_FORMAT}); "
        "json/yaml carry the whole result, for programs",
    )


def _gelu_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gelu-implmode",
        choices=[*GELU_IMPLMODES, "none"],
        default=DEFAULT_GELU_IMPLMODE,
        help="ascend: ATC --op_select_implmode for --optypelist_for_implmode=Gelu (none: neither flag)",
    )


def _backend_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKEND_NAMES, default="onnxruntime")
    parser.add_argument("--device", dest="device_id", type=int, default=0, help="NPU device id (ascend)")
    parser.add_argument(
        "--cann-set-env",
        default=None,
        help="CANN set_env.sh to source (ascend; default: the toolkit's standard locations)",
    )
    parser.add_argument(
        "--ais-bench-python",
        dest="python",
        default="python3",
        help="interpreter that has ais_bench installed (ascend; runs `<it> -m ais_bench`)",
    )
    parser.add_argument(
        "--atc-log",
        default="error",
        choices=["error", "warning", "info", "debug", "null"],
        help="ATC --log level (ascend)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convmixer-tasks", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    _output_flag(parser, ROWS_FORMATS, default=DEFAULT_FORMAT)
    sub = parser.add_subparsers(dest="command", required=True, metavar="<step>")

    p = _add(sub, "preprocess", "ImageNet val JPEGs -> batched input_XXXXX.bin files + manifest.json")
    p.add_argument("--image-path", "--image-dir", dest="image_dir", required=True, help="val JPEGs (flat/synset dirs)")
    p.add_argument("--prep-image", "--out-dir", dest="out_dir", required=True, help="output folder for the .bin files")
    p.add_argument("--batch-size", type=int, required=True, help="images per .bin file (batched layouts)")
    p.add_argument("--model", default=None, help="model card (convmixer-tasks models); default: the default model")
    p.add_argument(
        "--dtype",
        choices=INPUT_DTYPES,
        default=None,
        help="default: the model guide's own files; float32: its float path batched NCHW; uint8: the pixels AIPP takes",
    )
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--shard", default="0/1", help="i/n: write only the i-th of n contiguous ranges of files")
    p.add_argument(
        "--label-file", "--annotation-file-path", dest="label_file", default=None, help="val_label.txt, to validate"
    )
    p.add_argument("--limit", type=int, default=None, help="only the first N images (quick runs)")

    _add(sub, "models", "list the model cards (-o json: every card whole)")

    p = _add(sub, "export", "checkpoint -> ONNX, validated against PyTorch (parity report beside it)")
    p.add_argument("--source", default=None, help="checkpoint (.pth/.pth.tar in the card's format), or an ONNX file")
    p.add_argument("--target", required=True, help="ONNX file to write")
    p.add_argument("--model", dest="variant", default=DEFAULT_MODEL, help="model card (convmixer-tasks models)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (ATC accepts <= 18; default: the card's)")
    p.add_argument("--dynamo", action="store_true", help="use torch's dynamo exporter (slower GELU under ORT)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max |logit difference| ONNX Runtime vs PyTorch")
    p.add_argument("--random-weights", action="store_true", help="export without a checkpoint (architecture checks)")

    p = _add(sub, "eval", "top-1/top-5 from outputs in ais_bench layout against val_label.txt")
    p.add_argument("--folder-davinci-target", "--outputs", dest="output_dir", required=True, help="ais_bench outputs")
    p.add_argument("--annotation-file-path", "--label-file", dest="label_file", required=True, help="val_label.txt")
    p.add_argument("--result-json-path", required=True, help="folder for the result JSON")
    p.add_argument("--json-file-name", default="result.json")
    p.add_argument("--batch-size", type=int, default=None, help="rows per output file (needed without --prep-image)")
    p.add_argument(
        "--prep-image",
        dest="prep_dir",
        default=None,
        help="prep folder whose manifest maps rows to images (recommended)",
    )

    p = _add(sub, "compare", "flips, McNemar exact p and per-class deltas between two evaluations")
    p.add_argument("a", help="result folder of `eval` (its predictions.npz), or row:<id> of a metrics row")
    p.add_argument("b", help="the other side, the same way; flips are counted from a to b")
    p.add_argument("--url", default=None, help=f"for row:<id>: the {URL_HELP}")
    p.add_argument("--classes", type=int, default=10, help="how many per-class deltas to list (largest drop first)")

    p = _add(sub, "fidelity", "compiled artifact vs its ONNX in fp32 on a fixed seeded image subset")
    _backend_flags(p)
    p.add_argument("--onnx", required=True, help="the ONNX the artifact was compiled from")
    p.add_argument("--artifact", required=True, help="compiled artifact (.om / .onnx from `compile`)")
    p.add_argument("--image-path", dest="image_dir", required=True, help="val JPEGs")
    p.add_argument("--annotation-file-path", "--label-file", dest="label_file", required=True, help="val_label.txt")
    p.add_argument("--subset", type=int, default=None, help="images (default 256, or all when fewer)")
    p.add_argument("--work-dir", default="fidelity-work", help="folder for the subset's prep, outputs and cache")

    p = _add(
        sub, "compile", "ONNX -> fixed-batch artifact (OM via ATC, or optimised ONNX for ORT); cached", formats=None
    )
    _backend_flags(p)
    p.add_argument("--onnx", required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--output", required=True, help="artifact cache folder")
    p.add_argument(
        "--model", default=None, help="model card: its input size, AIPP (uint8) and ATC extras; default: the default"
    )
    p.add_argument("--soc-version", default="auto", help="auto (from npu-smi) or e.g. Ascend310P3")
    p.add_argument("--input-dtype", choices=INPUT_DTYPES, default="float32", help=DTYPE_HELP)
    p.add_argument("--precision-mode", default=None, help="ATC --precision_mode (e.g. force_fp32)")
    _gelu_flag(p)

    p = _add(sub, "infer", "run a compiled artifact over a prep folder; outputs in ais_bench layout", formats=None)
    _backend_flags(p)
    p.add_argument("--model", required=True, help="compiled artifact (.om / .onnx from `compile`)")
    p.add_argument("--input", required=True, help="prep folder")
    p.add_argument("--output", required=True, help="output folder (summary written beside it)")
    p.add_argument("--batch-size", type=int, default=None, help="checked against the artifact")

    p = _add(sub, "benchmark", "pure-inference throughput: 1000 x batch / mean compute ms")
    _backend_flags(p)
    p.add_argument("--model", required=True, help="compiled artifact")
    p.add_argument("--batch-size", type=int, default=None, help="checked against the artifact")
    p.add_argument("--loop", type=int, default=100)
    p.add_argument("--warmup", type=int, default=5)

    p = _add(sub, "demo-dataset", "generate the ImageNet-shaped demo set (images/ + val_label.txt)", formats=None)
    p.add_argument("--output", required=True)
    p.add_argument("--count", type=int, default=None, help="images (default: 250, the demo model's val set)")
    p.add_argument("--seed", type=int, default=None)

    p = _add(
        sub,
        "demo-train",
        "train convmixer_demo on a generated set and rewrite demo_assets/ (checkpoint + expected scores)",
    )
    p.add_argument("--out-dir", default=None, help="default: the package's demo_assets/")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--train-count", type=int, default=None, help="generated training images")

    p = _add(
        sub,
        "run",
        "the whole chain in one process, with the DAG's params and defaults (default: demo set + demo model on "
        "ONNX Runtime)",
    )
    p.add_argument(
        "--work-dir", default="work", help="folder for prep, ONNX, artifacts, outputs (default: %(default)s)"
    )
    p.add_argument("--image-path", dest="image_dir", default=None, help="default: the demo set, made in the work dir")
    p.add_argument(
        "--annotation-file-path", dest="label_file", default=None, help="val_label.txt (default: the demo set's)"
    )
    p.add_argument(
        "--source",
        dest="checkpoint",
        default=None,
        help="the (first) model's checkpoint; default: the model's committed one (the demo model's), else seeded "
        "random weights",
    )
    p.add_argument(
        "--model",
        "--model-variant",
        dest="models",
        nargs="+",
        default=None,
        help="model card(s) (convmixer-tasks models); several make a zoo run (one row per model × batch size × "
        "mode); default: convmixer_demo",
    )
    p.add_argument(
        "--checkpoint",
        dest="checkpoints",
        nargs="+",
        default=None,
        metavar="MODEL=PATH",
        help="a zoo run's checkpoints, one per model (--source names the first model's)",
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="models without a checkpoint get seeded random weights (top-1 at chance: a smoke test, not a result)",
    )
    p.add_argument("--batch-size", dest="batch_sizes", type=int, nargs="+", default=None, help="default: 1 4")
    _backend_flags(p)
    p.add_argument("--soc-version", default=None, help="ascend: ATC --soc_version; default: auto (from npu-smi)")
    p.add_argument("--dtype", dest="input_dtype", choices=INPUT_DTYPES, default=None, help=DTYPE_HELP)
    p.add_argument("--limit", type=int, default=None, help="only the first N images (default: all)")
    p.add_argument("--loop", type=int, default=None, help="benchmark loops per batch size (default: 100)")
    p.add_argument(
        "--record",
        action="store_true",
        help="record the rows in the metrics DB and apply the DAG's regression gate to them (exit 1 if regressed)",
    )
    p.add_argument("--url", default=None, help=f"with --record: the {URL_HELP}")
    p.add_argument(
        "--remeasure", type=int, default=None, help=f"re-measurements while the CV is too high ({DEFAULT_REMEASURE})"
    )
    p.add_argument(
        "--confirm", type=int, default=None, help=f"measurements confirming a suspect figure ({DEFAULT_CONFIRM})"
    )
    p.add_argument(
        "--max-cv-pct", type=float, default=None, help=f"per-loop CV (%%) judged too noisy ({DEFAULT_MAX_CV_PCT:g})"
    )
    p.add_argument(
        "--precision-mode",
        dest="precision_modes",
        nargs="+",
        default=None,
        help="ascend: ATC --precision_mode(s); several map the run over them (one row per batch size × mode)",
    )
    _gelu_flag(p)

    p = _add(sub, "metrics-upgrade", "create/upgrade the metrics table (Alembic)")
    p.add_argument("--url", default=None, help=f"the {URL_HELP}")

    p = _add(
        sub,
        "metrics-show",
        "print the newest metrics rows (the UI's filters; --output csv gives the UI's CSV)",
        formats=ROWS_FORMATS,
    )
    p.add_argument("--url", default=None, help=f"the {URL_HELP}")
    p.add_argument("--limit", type=int, default=20, help="rows (default: %(default)s, at most 500)")
    p.add_argument("--offset", type=int, default=0, help="skip this many newest rows first")
    p.add_argument("--model", default=None, help="model variant, e.g. convmixer_1536_20")
    p.add_argument("--backend", default=None, choices=BACKEND_NAMES)
    p.add_argument("--device", default=None, help="device name as recorded (e.g. Ascend310P3)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--status", default=None, help=f"one of {', '.join(STATUSES)}")
    p.add_argument("--since", default=None, help="ISO date or date-time (UTC), inclusive")
    p.add_argument("--until", default=None, help="ISO date (that whole day) or date-time (UTC), inclusive")

    p = _add(sub, "metrics-rebaseline", "mark a row as its fingerprint's new throughput baseline")
    p.add_argument("--row", type=int, required=True, help="the row's id (metrics-show)")
    p.add_argument("--reason", required=True, help="why the change is intended; kept on the row")
    p.add_argument("--by", default=None, help="who (default: the login name)")
    p.add_argument("--url", default=None, help=f"the {URL_HELP}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The log goes to this call's stderr and only for this call: main() may run more than once in one process (tests,
    # scripts), and a handler left behind would write to a stream a later caller has closed.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return _run_step(args)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _run_step(args: argparse.Namespace) -> int:
    try:
        check_format(args.output_format, gives_rows=args.command == "metrics-show")
        result = args.handler(args)
    except ConvMixerError as exc:
        return _fail(args.command, str(exc))
    except OSError as exc:
        # A path no check foresaw (an unwritable output folder, a file where a folder must go): still one line.
        where = f" {exc.filename}" if exc.filename else ""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return _fail(args.command, f"no space left on device writing{where}; free some space or use another folder")
        return _fail(args.command, f"cannot use{where}: {exc.strerror or exc}; check that path and its permissions")
    try:
        print(render(result, args.output_format))
    except ConvMixerError as exc:
        return _fail(args.command, str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
