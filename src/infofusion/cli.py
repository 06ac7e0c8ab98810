"""The ``infofusion`` command line: argument parsing and one ``command_*`` per command, nothing else.

Every command hands its work to the library (config, trainer, runs, inference, workflow); the library
never imports this module. What a user's input or environment can get wrong is one of the errors of
:data:`EXIT_CODES`, the one catalogue :func:`main` uses: printed as one line, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
import warnings
from pathlib import Path
from typing import TextIO

from .command_config import config_from_options, describe_sized_settings
from .config import ConfigError, resolve_config
from .data.types import DataError
from .metrics import scalar_metrics
from .models import UnknownModelError
from .workflow.cli import _at_least_one

# Every error that means "bad input or environment", and its exit code. Anything else is a bug: traceback.
EXIT_CODES: dict[type[BaseException], int] = {
    ConfigError: 2,  # includes RunFolderError (busy, existing or damaged run folders) and ExportError
    DataError: 2,
    UnknownModelError: 2,
    OSError: 2,  # a full disk, a folder we may not write, a busy port
    KeyboardInterrupt: 130,
}


def error_line(error: BaseException) -> str:
    """The one line printed for a catalogued error."""
    if isinstance(error, UnknownModelError):
        return str(error.args[0])
    if isinstance(error, OSError) and error.strerror:
        reason = "the disk is full" if error.errno == errno.ENOSPC else error.strerror
        return f"{error.filename}: {reason}" if error.filename else reason
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return " ".join(str(error).split()) or type(error).__name__


def _say_sized_settings(config: dict, is_main: bool) -> None:
    """The model's sized settings, when the training split made them apply (stderr: --json stays clean)."""
    note = describe_sized_settings(config)
    if note and is_main:
        print(note, file=sys.stderr, flush=True)


# -- commands ------------------------------------------------------------------------------------------
def command_train(args: argparse.Namespace) -> int:
    from .distributed import DistributedContext
    from .runs import RunDir
    from .trainer import train
    from .workflow.report import metrics_table, summarise_seeds, summary_markdown

    output = Path(args.output)
    # Under torchrun every process trains; rank 0 alone prints and writes the summaries.
    is_main = DistributedContext.from_environment().is_main
    if not args.seeds:
        config = config_from_options(args)
        _say_sized_settings(config, is_main)
        metrics = train(config, output, args.resume, _loggers(args.logger, output, config), args.overwrite)
        if is_main and args.json:
            print(json.dumps({k: scalar_metrics(v) for k, v in metrics.items() if isinstance(v, dict)}))
        elif is_main:
            print(f"\n{metrics_table(metrics)}run folder: {output}")
        return 0
    per_seed = {}
    for number, seed in enumerate(args.seeds, start=1):
        config, run_dir = config_from_options(args, seed), output / f"seed_{seed}"
        if number == 1:
            _say_sized_settings(config, is_main)
        if is_main:
            print(f"== seed {seed} ({number} of {len(args.seeds)}): training in {run_dir} ==", flush=True)
        loggers = _loggers(args.logger, run_dir, config)
        per_seed[seed] = train(config, run_dir, args.resume, loggers, args.overwrite)
    if not is_main:
        return 0
    summary = summarise_seeds(per_seed)
    markdown = summary_markdown(summary, f"{args.model} on {args.data or 'synthetic'}")
    RunDir(output).write_summary(summary, markdown)
    print(markdown)
    return 0


def _loggers(kind: str | None, run_dir: Path, config: dict) -> list:
    if not kind:
        return []
    from .workflow.loggers import make_logger_callback

    return [make_logger_callback(kind, run_dir, config)]


def command_evaluate(args: argparse.Namespace) -> int:
    from .trainer import Trainer

    trainer = Trainer.from_run(Path(args.run_dir), args.data)
    if args.split not in trainer.dataset.splits:
        raise DataError(
            f"split {args.split!r} not in data (has {sorted(trainer.dataset.splits)})",
            file=trainer.dataset.source,
            split=args.split,
        )
    print(json.dumps(trainer.evaluate(args.split)))
    return 0


def command_predict(args: argparse.Namespace) -> int:
    """``--input FILE``: predictions of any input; ``--dialogue ID``: one dialogue of the run's data."""
    if args.input is None and args.dialogue is None:
        raise ConfigError("predict needs --input FILE, or --dialogue ID (with --data SPEC or the run's data)")
    if args.input is not None and args.data is not None:
        raise ConfigError("--data and --input both name an input: give one of them")
    if args.input is None and args.output is not None:
        raise ConfigError("--output is for --input predictions; use --json for one dialogue")
    from .inference import Predictor, dialogue_report, load_input, read_dataset_dialogues
    from .inference.outputs import results_as_json, results_as_table, write_results

    predictor = Predictor.from_run(args.run_dir, batch_size=args.batch_size)
    if args.input is None:
        spec = args.data if args.data is not None else str(predictor.config["data"]["spec"])
        input_data = read_dataset_dialogues(spec, predictor).only(args.dialogue, first=True)
        result = predictor.predict(input_data.dialogues, **input_data.predict_options())[0]
        print(dialogue_report(result, predictor, as_json=args.json), end="")
        return 0
    input_data = load_input(args.input, predictor)
    if args.dialogue is not None:
        input_data = input_data.only(args.dialogue)
    results = predictor.predict(input_data.dialogues, **input_data.predict_options())
    for problem in input_data.problems:
        print(f"warning: {problem}", file=sys.stderr)
    if args.output is not None:
        path = write_results(args.output, results, predictor, input_data)
        if not args.json:
            count = sum(len(result.utterances) for result in results)
            print(f"wrote predictions for {count} utterances in {len(results)} dialogues to {path}")
    if args.json:
        print(json.dumps(results_as_json(results, predictor, input_data), ensure_ascii=False))
    elif args.output is None:
        print(results_as_table(results), end="")
    return 0


def command_serve(args: argparse.Namespace) -> int:
    """Serve a run over HTTP (FastAPI under uvicorn) until interrupted."""
    from .extras import require_extra

    require_extra("serve", "infofusion serve")  # one line naming the extra, not an ImportError
    from .inference import Predictor
    from .inference.http import ServiceLimits, create_app, listening_socket, serve

    sockets = [listening_socket(args.host, args.port)]  # a busy or bad port fails before the model loads
    predictor = Predictor.from_run(args.run_dir, batch_size=args.batch_size, threads=args.threads)
    limits = ServiceLimits(
        max_utterances=args.max_utterances,
        max_text_chars=args.max_text_chars,
        max_body_bytes=args.max_body_bytes,
        session_ttl=args.session_ttl,
        max_sessions=args.max_sessions,
        max_session_utterances=args.max_session_utterances,
        session_context=args.session_context,
        request_timeout=args.request_timeout,
    )
    serve(create_app(predictor, limits), sockets, limits, log_level=args.log_level)
    return 0


def command_export(args: argparse.Namespace) -> int:
    from .inference.onnx import export_onnx

    result = export_onnx(Path(args.run_dir), Path(args.output) if args.output else None, opset=args.opset)
    print(json.dumps(result.summary()))
    return 0


def command_models(_: argparse.Namespace) -> int:
    from .models import MODELS

    for name, model_class in sorted(MODELS.items()):
        doc = (
            (model_class.__module__ and sys.modules[model_class.__module__].__doc__ or "")
            .strip()
            .splitlines()
        )
        print(f"{name:<14} {model_class.unit:<10} {doc[0] if doc else ''}")
    return 0


def command_data_inspect(args: argparse.Namespace) -> int:
    from .data import load_dataset

    options = dict(resolve_config("late_fusion", None, args.overrides)["data"])
    dataset = load_dataset(args.spec, options)
    print(json.dumps(dataset.summary(), indent=2))
    return 0


def command_demo(args: argparse.Namespace) -> int:
    """Train the seed models beside a baseline on the embedded synthetic data; tables and figures."""
    from .workflow.demo import run_demo

    result = run_demo(Path(args.output), args.epochs)
    print("\nResults on the synthetic data (validation selects the best epoch; test is scored once):\n")
    print(result.results_table())
    print("Mutual information between modalities: the truth the generator knows, and MMMIE's estimate.")
    print("Estimates on learned representations stay at or below the truth (data processing).\n")
    print(result.mi_table())
    print(f"Runs (config, checkpoints, history, metrics) in {result.output}/<model>/")
    print("Figures (PNG; the same as SVG and PDF beside each):")
    for path in result.figures:
        print(f"  {path}")
    return 0


# -- parsers -------------------------------------------------------------------------------------------
def _add_train(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="train a model")
    parser.add_argument("--model", required=True, help="registered model name (see `infofusion models`)")
    parser.add_argument("--data", default=None, help="synthetic | FILE.pkl | DIR of dialogue CSVs")
    parser.add_argument("--output", required=True, help="run folder")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--seeds", type=_seed_list, default=None, help="comma-separated seeds: one run per seed and a summary"
    )
    parser.add_argument("--epochs", type=_at_least_one, default=None)
    parser.add_argument("--config", default=None, help="YAML file merged over the model's defaults")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--resume", action="store_true", help="continue a killed run from its last checkpoint (same config)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the run in --output, deleting its files first"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the final metrics as one JSON line instead of a table"
    )
    parser.add_argument(
        "--logger",
        choices=("tensorboard", "mlflow"),
        default=None,
        help="also log every epoch to TensorBoard (RUN/tensorboard) or MLflow (local store RUN/mlflow.db)",
    )
    parser.set_defaults(handler=command_train)


def _add_evaluate(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("evaluate", help="evaluate a run's best checkpoint")
    parser.add_argument("run_dir")
    parser.add_argument("--data", default=None)
    parser.add_argument("--split", default="test")
    parser.set_defaults(handler=command_evaluate)


def _add_predict(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("predict", help="per-utterance predictions and confidence for a dialogue")
    parser.add_argument("run_dir")
    parser.add_argument("--data", default=None, help="with --dialogue: the data set to take it from")
    parser.add_argument(
        "--input",
        default=None,
        help="FILE.json dialogues | manifest .csv | FILE.pkl or any data spec: predict without training data",
    )
    parser.add_argument("--dialogue", default=None, help="dialogue id as in the data (or in --input)")
    parser.add_argument("--output", default=None, help="with --input: write OUT.json or OUT.csv")
    parser.add_argument("--batch-size", type=int, default=32, help="dialogues (utterances) per forward pass")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=command_predict)


def _add_serve(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("serve", help="serve a run over HTTP: /predict, /sessions, /health")
    parser.add_argument("run_dir")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=_port, default=8000)
    parser.add_argument("--max-utterances", type=int, default=200, help="utterances per request")
    parser.add_argument("--max-text-chars", type=int, default=2000, help="characters per transcript")
    parser.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024, help="request body size")
    parser.add_argument(
        "--session-ttl", type=float, default=1800.0, help="seconds of inactivity before expiry"
    )
    parser.add_argument("--max-sessions", type=int, default=1000)
    parser.add_argument("--max-session-utterances", type=int, default=1000, help="utterances per session")
    parser.add_argument("--batch-size", type=int, default=32, help="dialogues (utterances) per forward pass")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--session-context",
        type=_at_least_one,
        default=64,
        help="earlier utterances of a session a new turn is predicted with (bounds a turn's cost)",
    )
    parser.add_argument(
        "--request-timeout", type=float, default=10.0, help="seconds to receive a request's headers and body"
    )
    parser.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug")
    )
    parser.set_defaults(handler=command_serve)


def _add_export(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("export", help="export a run's model (ONNX) with a JSON sidecar")
    parser.add_argument("run_dir")
    parser.add_argument("--format", default="onnx", choices=("onnx",))
    parser.add_argument("--output", default=None, help="model file (default RUN/model.onnx)")
    parser.add_argument("--opset", type=int, default=17)
    parser.set_defaults(handler=command_export)


def _add_small_commands(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="list registered models")
    models.set_defaults(handler=command_models)

    data = commands.add_parser("data", help="data utilities")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    inspect = data_commands.add_parser("inspect", help="splits, dialogues, utterances, dims, label counts")
    inspect.add_argument("spec")
    inspect.add_argument("--set", dest="overrides", action="append", default=[], metavar="data.KEY=VALUE")
    inspect.set_defaults(handler=command_data_inspect)

    demo = commands.add_parser("demo", help="MMIM, MMMIE and MInD beside a baseline on synthetic data")
    demo.add_argument("--output", default="runs/demo")
    demo.add_argument("--epochs", type=int, default=15)
    demo.set_defaults(handler=command_demo)


def _seed_list(text: str) -> list[int]:
    seeds = [part.strip() for part in text.split(",") if part.strip()]
    if not seeds or not all(part.lstrip("-").isdigit() for part in seeds):
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}")
    return [int(part) for part in seeds]


def _port(text: str) -> int:
    if not text.strip().isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    from .extract.cli import add_extract_parser
    from .mi.cli import add_mi_parser
    from .workflow.cli import add_workflow_parsers

    parser = argparse.ArgumentParser(prog="infofusion", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_evaluate, _add_predict, _add_serve, _add_export, _add_small_commands):
        add(commands)
    add_mi_parser(commands)
    add_workflow_parsers(commands)
    add_extract_parser(commands)
    return parser


def _leave_process_group() -> None:
    """Under torchrun the trainer joined a process group; leave it cleanly before the process exits."""
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """A warning as one line on stderr: its text, not the library line that raised it."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            return int(args.handler(args) or 0)
    except tuple(EXIT_CODES) as error:
        print(f"error: {error_line(error)}", file=sys.stderr)
        return next(code for kind, code in EXIT_CODES.items() if isinstance(error, kind))
    finally:
        _leave_process_group()


if __name__ == "__main__":
    sys.exit(main())
