"""`convmixer-tasks <step>`: the front door a person uses by hand, with the ModelZoo reference scripts' flag names.

Each sub-command parses flags, calls one library function and prints its result: a short summary for people by
default, the whole result with `--output json` (or yaml) for programs — Airflow CLI's option and choices
(``cli_output.py``). Library modules are imported inside the handlers so `--help` and light commands never pay for
torch.
"""

from __future__ import annotations

import argparse
import errno
import inspect
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from convmixer_tasks.backends.base import BACKEND_NAMES, BACKENDS
from convmixer_tasks.cli_output import DEFAULT_FORMAT, OUTPUT_FORMATS, ROWS_FORMATS, check_format, render
from convmixer_tasks.defaults import DEFAULT_CONFIRM, DEFAULT_MAX_CV_PCT, DEFAULT_REMEASURE
from convmixer_tasks.errors import ConvMixerError
from convmixer_tasks.models import DEFAULT_MODEL
from convmixer_tasks.precision import DEFAULT_GELU_IMPLMODE, GELU_IMPLMODES, gelu_compile_options
from convmixer_tasks.prepfolder import INPUT_DTYPES
from convmixer_tasks.status import STATUSES


def _fail(command: str, message: str) -> int:
    """One readable line, no traceback: these are errors the user can fix (tool output may span lines)."""
    message = " | ".join(line.strip() for line in message.splitlines() if line.strip())
    print(f"convmixer-tasks {command}: error: {message}", file=sys.stderr)
    return 1


# --- handlers -----------------------------------------------------------------------------------------------------


def _call(function: Callable[..., Any], args: argparse.Namespace, **extra: Any) -> Any:
    """``function`` called with every flag whose ``dest`` names one of its parameters, plus ``extra``.

    The flags keep the reference scripts' names; their ``dest`` is the library's parameter name, so the mapping
    is written once, where the flag is declared.
    """
    parameters = inspect.signature(function).parameters
    given = {name: value for name, value in vars(args).items() if name in parameters and name not in extra}
    return function(**given, **extra)


def _preprocess(args: argparse.Namespace) -> Any:
    from convmixer_tasks.prepfolder import parse_shard
    from convmixer_tasks.preprocess import preprocess

    return _call(preprocess, args, shard=parse_shard(args.shard))


def _export(args: argparse.Namespace) -> Any:
    from convmixer_tasks.export import export_and_validate
    from convmixer_tasks.models import get_card

    if args.source is None and not args.random_weights and get_card(args.variant).onnx is None:
        raise ConvMixerError("export needs --source CHECKPOINT (or --random-weights to export an untrained model)")
    return _call(export_and_validate, args)


def _models(args: argparse.Namespace) -> Any:
    from convmixer_tasks.models.listing import list_cards

    return list_cards()


def _eval(args: argparse.Namespace) -> Any:
    from convmixer_tasks.evaluate import evaluate_with_evidence
    from convmixer_tasks.evidence import PREDICTIONS_FILE

    if not args.json_file_name.strip() or Path(args.json_file_name).name != args.json_file_name:
        raise ConvMixerError(f"--json-file-name {args.json_file_name!r} must be a plain file name, e.g. result.json")
    folder = Path(args.result_json_path)
    written = {"result_json": folder / args.json_file_name, "predictions_file": folder / PREDICTIONS_FILE}
    return _call(evaluate_with_evidence, args, **written).result


def _fidelity(args: argparse.Namespace) -> Any:
    from convmixer_tasks.evidence_steps import fidelity_by_hand

    return fidelity_by_hand(
        args.onnx, args.artifact, args.image_dir, args.label_file, args.subset, args.work_dir, _backend(args)
    )


def _compare(args: argparse.Namespace) -> Any:
    from convmixer_tasks.compare import compare

    return compare(args.a, args.b, url=args.url, classes=args.classes)


def _backend_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The flags the chosen backend's constructor takes (the registry names them)."""
    return {name: getattr(args, name) for name in BACKENDS[args.backend].settings}


def _backend(args: argparse.Namespace):
    from convmixer_tasks.backends.base import get_backend

    return get_backend(args.backend, **_backend_settings(args))


def _compile(args: argparse.Namespace) -> Any:
    from convmixer_tasks.backends.base import CompileOptions

    options = CompileOptions(
        model=args.model,
        input_dtype=args.input_dtype,
        soc_version=args.soc_version,
        precision_mode=args.precision_mode,
        **gelu_compile_options(args.backend, _implmode(args.gelu_implmode)),
    )
    return _backend(args).compile(args.onnx, args.batch_size, args.output, options)


def _implmode(flag: str) -> str | None:
    """--gelu-implmode's "none" is the param's null: pass neither ATC flag."""
    return None if flag == "none" else flag


def _load_artifact(args: argparse.Namespace):
    from convmixer_tasks.backends.base import Artifact

    artifact = Artifact.load(args.model)
    if args.batch_size is not None and args.batch_size != artifact.batch_size:
        raise ConvMixerError(
            f"--batch-size {args.batch_size} does not match the model {args.model}, compiled for batch "
            f"{artifact.batch_size}; compile it for {args.batch_size} or drop the flag"
        )
    return artifact


def _infer(args: argparse.Namespace) -> Any:
    return _backend(args).infer(_load_artifact(args), args.input, args.output)


def _benchmark(args: argparse.Namespace) -> Any:
    return _backend(args).benchmark(_load_artifact(args), loop=args.loop, warmup=args.warmup)


def _demo_dataset(args: argparse.Namespace) -> Any:
    from convmixer_tasks.demo import make_demo_dataset

    # Unset flags take make_demo_dataset's defaults (kept there only, so --help never imports numpy/PIL for them).
    kwargs = {name: value for name, value in (("count", args.count), ("seed", args.seed)) if value is not None}
    return make_demo_dataset(args.output, **kwargs)


def _demo_train(args: argparse.Namespace) -> Any:
    from convmixer_tasks.demo import ASSETS_DIR, TrainSettings, train_demo_model

    overrides = {
        name: value for name, value in (("epochs", args.epochs), ("train_count", args.train_count)) if value is not None
    }
    return train_demo_model(args.out_dir or ASSETS_DIR, TrainSettings(**overrides))


def _run(args: argparse.Namespace) -> Any:
    from convmixer_tasks.local_run import local_params, run_chain

    url = None
    if args.record:
        from convmixer_tasks.metrics import resolve_metrics_url

        url = resolve_metrics_url(args.url)
    run = local_params(args.work_dir, **_run_params(args))
    summary = run_chain(run, args.work_dir, backend_settings=_backend_settings(args), metrics_url=url)
    if not args.record and args.output_format in ("table", "plain"):
        # Nothing was recorded or gated: "pending" would read as a verdict still to come (json keeps the status).
        summary = {**summary, "rows": [{**row, "status": NOT_GATED} for row in summary["rows"]]}
    return summary


# ``run``'s flags that are DAG params as they are: argparse dest -> Param name (None = left out: the default).
RUN_PARAM_FLAGS = {
    "image_dir": "dataset_dir",
    "label_file": "label_file",
    "checkpoint": "checkpoint",
    "batch_sizes": "batch_sizes",
    "backend": "backend",
    "soc_version": "soc_version",
    "input_dtype": "input_dtype",
    "limit": "image_limit",
    "loop": "benchmark_loop",
    "remeasure": "benchmark_remeasure",
    "confirm": "benchmark_confirm",
    "max_cv_pct": "throughput_max_cv_pct",
    "precision_modes": "precision_modes",
}


def _run_params(args: argparse.Namespace) -> dict[str, Any]:
    """The flags of ``run`` as the DAG's params (by Param name): ``RunParams`` parses both the same way, and a flag
    left out takes the DAG's default. A model named without a checkpoint runs its card's committed one, else (or
    with ``--random-weights``) seeded random weights."""
    from convmixer_tasks.local_run import default_checkpoint
    from convmixer_tasks.params import RANDOM_CHECKPOINT

    params: dict[str, Any] = {"gelu_implmode": _implmode(args.gelu_implmode)}
    models = args.models or []
    if models:  # the first model is model_variant: --source is its checkpoint
        params["model_variant"] = models[0]
    if len(models) > 1:
        params["model_variants"] = models
    checkpoints = {}
    for entry in args.checkpoints or []:
        model, _, path = entry.partition("=")
        if not path:
            raise ConvMixerError(f"--checkpoint {entry!r} must be MODEL=PATH, e.g. resnet50=/models/resnet50.pth")
        checkpoints[model] = path
    unnamed = [model for model in models[1:] if model not in checkpoints]
    fallback = (lambda model: RANDOM_CHECKPOINT) if args.random_weights else default_checkpoint
    checkpoints.update({model: fallback(model) for model in unnamed})
    if not args.checkpoint and (models or args.random_weights):
        params["checkpoint"] = fallback(models[0] if models else load_default_model())
    if checkpoints:
        params["checkpoints"] = checkpoints
    for flag, name in RUN_PARAM_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            params[name] = value
    return params


def load_default_model() -> str:
    """The DAG's default model_variant (``[convmixer] model_variant``; the demo model)."""
    from convmixer_tasks.settings import env_reader, load_scheduling_settings

    return load_scheduling_settings(env_reader({})).model_variant


def _metrics_upgrade(args: argparse.Namespace) -> Any:
    from convmixer_tasks.metrics import mask_url, resolve_metrics_url, upgrade

    url = resolve_metrics_url(args.url)
    return {"metrics_db": mask_url(url), "revision": upgrade(url)}


def _metrics_show(args: argparse.Namespace) -> Any:
    from convmixer_tasks.metrics import query_runs, resolve_metrics_url
    from convmixer_tasks.metrics.url import require_existing_database

    url = resolve_metrics_url(args.url)
    require_existing_database(url)  # a reader must not create the database
    filters = {name: getattr(args, name) for name in ("model", "backend", "device", "batch_size", "status")}
    rows, total = query_runs(url, limit=args.limit, offset=args.offset, since=args.since, until=args.until, **filters)
    return {"total": total, **_with_change_points(url, rows)}


def _with_change_points(url: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The rows, each that starts a stored change point carrying it (``change_point``), and one line per change
    point of the shown rows' series."""
    from convmixer_tasks.metrics.changes import change_points, series_of

    points: dict[int, dict[str, Any]] = {}
    for series in {json.dumps(series_of(row), sort_keys=True) for row in rows if row.get("precision_mode")}:
        points.update({point["start_row_id"]: point for point in change_points(url, json.loads(series))})
    lines = [
        f"{'/'.join(str(point['series'][name]) for name in ('model_variant', 'backend', 'precision_mode'))} "
        f"bs{point['series']['batch_size']}: {point['metric']} {point['magnitude_pct']:+.1f}% from run "
        f"{point['start_run_id']} ({point['before_value']:.2f} -> {point['after_value']:.2f})"
        + (f", {'; '.join(point['fingerprint_changes'])}" if point["fingerprint_changes"] else "")
        for point in points.values()
    ]
    shown = [{**row, "change_point": points[row["id"]]} if row.get("id") in points else row for row in rows]
    return {**({"change_points": lines} if lines else {}), "rows": shown}


def _metrics_rebaseline(args: argparse.Namespace) -> Any:
    import getpass

    from convmixer_tasks.metrics import resolve_metrics_url
    from convmixer_tasks.metrics.rebaseline import rebaseline
    from convmixer_tasks.metrics.url import require_existing_database

    url = resolve_metrics_url(args.url)
    require_existing_database(url)  # an update of a row that cannot exist must not create the database
    return rebaseline(url, args.row, args.reason, args.by or getpass.getuser())


DTYPE_HELP = "float32 NCHW normalised (reference) or uint8 NHWC pixels (normalised by AIPP / the model)"
NOT_GATED = "not gated (--record)"  # run's verdict column without --record
URL_HELP = "metrics DB (SQLAlchemy URL; default: $CONVMIXER_METRICS_DB_URL, else $AIRFLOW_HOME/convmixer_metrics.db)"


# --- parser -------------------------------------------------------------------------------------------------------


def _add(
    sub,
    name: str,
    handler: Callable[[argparse.Namespace], Any],
    help_text: str,
    formats: Sequence[str] | None = OUTPUT_FORMATS,
) -> argparse.ArgumentParser:
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
    parser.set_defaults(handler=handler)
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

    p = _add(sub, "preprocess", _preprocess, "ImageNet val JPEGs -> batched input_XXXXX.bin files + manifest.json")
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

    _add(sub, "models", _models, "list the model cards (-o json: every card whole)")

    p = _add(sub, "export", _export, "checkpoint -> ONNX, validated against PyTorch (parity report beside it)")
    p.add_argument("--source", default=None, help="checkpoint (.pth/.pth.tar in the card's format), or an ONNX file")
    p.add_argument("--target", required=True, help="ONNX file to write")
    p.add_argument("--model", dest="variant", default=DEFAULT_MODEL, help="model card (convmixer-tasks models)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (ATC accepts <= 18; default: the card's)")
    p.add_argument("--dynamo", action="store_true", help="use torch's dynamo exporter (slower GELU under ORT)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max |logit difference| ONNX Runtime vs PyTorch")
    p.add_argument("--random-weights", action="store_true", help="export without a checkpoint (architecture checks)")

    p = _add(sub, "eval", _eval, "top-1/top-5 from outputs in ais_bench layout against val_label.txt")
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

    p = _add(sub, "compare", _compare, "flips, McNemar exact p and per-class deltas between two evaluations")
    p.add_argument("a", help="result folder of `eval` (its predictions.npz), or row:<id> of a metrics row")
    p.add_argument("b", help="the other side, the same way; flips are counted from a to b")
    p.add_argument("--url", default=None, help=f"for row:<id>: the {URL_HELP}")
    p.add_argument("--classes", type=int, default=10, help="how many per-class deltas to list (largest drop first)")

    p = _add(sub, "fidelity", _fidelity, "compiled artifact vs its ONNX in fp32 on a fixed seeded image subset")
    _backend_flags(p)
    p.add_argument("--onnx", required=True, help="the ONNX the artifact was compiled from")
    p.add_argument("--artifact", required=True, help="compiled artifact (.om / .onnx from `compile`)")
    p.add_argument("--image-path", dest="image_dir", required=True, help="val JPEGs")
    p.add_argument("--annotation-file-path", "--label-file", dest="label_file", required=True, help="val_label.txt")
    p.add_argument("--subset", type=int, default=None, help="images (default 256, or all when fewer)")
    p.add_argument("--work-dir", default="fidelity-work", help="folder for the subset's prep, outputs and cache")

    p = _add(
        sub,
        "compile",
        _compile,
        "ONNX -> fixed-batch artifact (OM via ATC, or optimised ONNX for ORT); cached",
        formats=None,
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

    p = _add(
        sub, "infer", _infer, "run a compiled artifact over a prep folder; outputs in ais_bench layout", formats=None
    )
    _backend_flags(p)
    p.add_argument("--model", required=True, help="compiled artifact (.om / .onnx from `compile`)")
    p.add_argument("--input", required=True, help="prep folder")
    p.add_argument("--output", required=True, help="output folder (summary written beside it)")
    p.add_argument("--batch-size", type=int, default=None, help="checked against the artifact")

    p = _add(sub, "benchmark", _benchmark, "pure-inference throughput: 1000 x batch / mean compute ms")
    _backend_flags(p)
    p.add_argument("--model", required=True, help="compiled artifact")
    p.add_argument("--batch-size", type=int, default=None, help="checked against the artifact")
    p.add_argument("--loop", type=int, default=100)
    p.add_argument("--warmup", type=int, default=5)

    p = _add(
        sub,
        "demo-dataset",
        _demo_dataset,
        "generate the ImageNet-shaped demo set (images/ + val_label.txt)",
        formats=None,
    )
    p.add_argument("--output", required=True)
    p.add_argument("--count", type=int, default=None, help="images (default: 250, the demo model's val set)")
    p.add_argument("--seed", type=int, default=None)

    p = _add(
        sub,
        "demo-train",
        _demo_train,
        "train convmixer_demo on a generated set and rewrite demo_assets/ (checkpoint + expected scores)",
    )
    p.add_argument("--out-dir", default=None, help="default: the package's demo_assets/")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--train-count", type=int, default=None, help="generated training images")

    p = _add(
        sub,
        "run",
        _run,
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

    p = _add(sub, "metrics-upgrade", _metrics_upgrade, "create/upgrade the metrics table (Alembic)")
    p.add_argument("--url", default=None, help=f"the {URL_HELP}")

    p = _add(
        sub,
        "metrics-show",
        _metrics_show,
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

    p = _add(sub, "metrics-rebaseline", _metrics_rebaseline, "mark a row as its fingerprint's new throughput baseline")
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
