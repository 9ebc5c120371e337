"""The handlers of `convmixer-tasks <step>`: each takes the parsed flags, calls one library function and returns its
result for ``cli`` to print. Library modules are imported inside the handlers so `--help` and light commands never
pay for torch.
"""

from __future__ import annotations

import argparse
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from convmixer_tasks.backends.catalog import BACKENDS
from convmixer_tasks.backends.precision import gelu_compile_options
from convmixer_tasks.errors import ConvMixerError

NOT_GATED = "not gated (--record)"  # run's verdict column without --record


def _call(function: Callable[..., Any], args: argparse.Namespace, **extra: Any) -> Any:
    """``function`` called with every flag whose ``dest`` names one of its parameters, plus ``extra``.

    The flags keep the reference scripts' names; their ``dest`` is the library's parameter name, so the mapping
    is written once, where the flag is declared.
    """
    parameters = inspect.signature(function).parameters
    given = {name: value for name, value in vars(args).items() if name in parameters and name not in extra}
    return function(**given, **extra)


def _preprocess(args: argparse.Namespace) -> Any:
    from convmixer_tasks.stages.prepfolder import parse_shard
    from convmixer_tasks.stages.preprocess import preprocess

    return _call(preprocess, args, shard=parse_shard(args.shard))


def _export(args: argparse.Namespace) -> Any:
    from convmixer_tasks.models import get_card
    from convmixer_tasks.stages.export import export_and_validate

    if args.source is None and not args.random_weights and get_card(args.variant).onnx is None:
        raise ConvMixerError("export needs --source CHECKPOINT (or --random-weights to export an untrained model)")
    return _call(export_and_validate, args)


def _models(args: argparse.Namespace) -> Any:
    from convmixer_tasks.models.listing import list_cards

    return list_cards()


def _eval(args: argparse.Namespace) -> Any:
    from convmixer_tasks.evidence.predictions import PREDICTIONS_FILE
    from convmixer_tasks.stages.evaluate import evaluate_with_evidence

    if not args.json_file_name.strip() or Path(args.json_file_name).name != args.json_file_name:
        raise ConvMixerError(f"--json-file-name {args.json_file_name!r} must be a plain file name, e.g. result.json")
    folder = Path(args.result_json_path)
    written = {"result_json": folder / args.json_file_name, "predictions_file": folder / PREDICTIONS_FILE}
    return _call(evaluate_with_evidence, args, **written).result


def _fidelity(args: argparse.Namespace) -> Any:
    from convmixer_tasks.run.evidence_steps import fidelity_by_hand

    return fidelity_by_hand(
        args.onnx, args.artifact, args.image_dir, args.label_file, args.subset, args.work_dir, _backend(args)
    )


def _compare(args: argparse.Namespace) -> Any:
    from convmixer_tasks.evidence.compare import compare

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
    from convmixer_tasks.run.demo import make_demo_dataset

    # Unset flags take make_demo_dataset's defaults (kept there only, so --help never imports numpy/PIL for them).
    kwargs = {name: value for name, value in (("count", args.count), ("seed", args.seed)) if value is not None}
    return make_demo_dataset(args.output, **kwargs)


def _demo_train(args: argparse.Namespace) -> Any:
    from convmixer_tasks.run.demo import ASSETS_DIR, TrainSettings, train_demo_model

    overrides = {
        name: value for name, value in (("epochs", args.epochs), ("train_count", args.train_count)) if value is not None
    }
    return train_demo_model(args.out_dir or ASSETS_DIR, TrainSettings(**overrides))


def _run(args: argparse.Namespace) -> Any:
    from convmixer_tasks.run.local_run import local_params, run_chain

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
    from convmixer_tasks.run.local_run import default_checkpoint
    from convmixer_tasks.run.params import RANDOM_CHECKPOINT

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
    from convmixer_tasks.run.settings import env_reader, load_scheduling_settings

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


# The step each sub-command runs (``cli.build_parser`` declares their flags).
HANDLERS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "preprocess": _preprocess,
    "models": _models,
    "export": _export,
    "eval": _eval,
    "compare": _compare,
    "fidelity": _fidelity,
    "compile": _compile,
    "infer": _infer,
    "benchmark": _benchmark,
    "demo-dataset": _demo_dataset,
    "demo-train": _demo_train,
    "run": _run,
    "metrics-upgrade": _metrics_upgrade,
    "metrics-show": _metrics_show,
    "metrics-rebaseline": _metrics_rebaseline,
}
