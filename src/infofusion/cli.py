"""The ``infofusion`` command line."""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np

from .config import ConfigError, load_yaml, resolve_config
from .data.types import DataError
from .metrics import scalar_metrics
from .models import UnknownModelError

DEMO_MODELS = ("late_fusion", "bc_lstm")


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registered model name (see `infofusion models`)")
    parser.add_argument("--data", default=None, help="synthetic | FILE.pkl | DIR of dialogue CSVs")
    parser.add_argument("--output", required=True, help="run folder")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--seeds", default=None, help="comma-separated seeds: one run per seed and a summary")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--config", default=None, help="YAML file merged over the model's defaults")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--resume", action="store_true", help="continue a killed run from its last checkpoint"
    )
    parser.add_argument(
        "--logger",
        choices=("tensorboard", "mlflow"),
        default=None,
        help="also log every epoch to TensorBoard (RUN/tensorboard) or MLflow (local store RUN/mlflow.db)",
    )


def build_config(args: argparse.Namespace, seed: int | None = None) -> dict:
    extra: dict = {}
    if args.data is not None:
        extra.setdefault("data", {})["spec"] = args.data
    if args.epochs is not None:
        extra.setdefault("train", {})["epochs"] = args.epochs
    chosen_seed = seed if seed is not None else args.seed
    if chosen_seed is not None:
        extra["seed"] = chosen_seed
    return resolve_config(args.model, args.config, args.overrides, extra)


def run_training(config: dict, output: Path, resume: bool = False, logger: str | None = None) -> dict:
    from .trainer import Trainer

    callbacks = []
    if logger:
        from .workflow.loggers import make_logger_callback

        callbacks.append(make_logger_callback(logger, output, config))
    started = time.perf_counter()
    try:
        metrics = Trainer(config, output, callbacks=callbacks).fit(resume=resume)
    finally:
        for callback in callbacks:
            callback.close()
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    return metrics


def summarise_seeds(per_seed: dict[int, dict]) -> dict:
    """Mean and standard deviation (population, ddof=0) of every scalar metric over seeds."""
    summary: dict = {"seeds": sorted(per_seed), "splits": {}}
    for split in ("valid", "test"):
        rows = [scalar_metrics(m[split]) for m in per_seed.values() if split in m]
        if not rows:
            continue
        summary["splits"][split] = {
            name: {
                "mean": float(np.mean([r[name] for r in rows])),
                "std": float(np.std([r[name] for r in rows])),
            }
            for name in rows[0]
        }
    summary["seconds_per_run"] = float(np.mean([m.get("seconds", 0.0) for m in per_seed.values()]))
    return summary


def summary_markdown(summary: dict, title: str) -> str:
    lines = [
        f"# {title}",
        "",
        f"seeds: {summary['seeds']}",
        "",
        "| split | metric | mean ± std |",
        "| --- | --- | --- |",
    ]
    for split, metrics in summary["splits"].items():
        for name, stats in metrics.items():
            lines.append(f"| {split} | {name} | {stats['mean']:.4f} ± {stats['std']:.4f} |")
    return "\n".join(lines) + "\n"


def command_train(args: argparse.Namespace) -> int:
    from .distributed import DistributedContext

    output = Path(args.output)
    # Under torchrun every process trains; rank 0 alone prints and writes the summaries.
    is_main = DistributedContext.from_environment().is_main
    if not args.seeds:
        metrics = run_training(build_config(args), output, args.resume, args.logger)
        if is_main:
            print(json.dumps({k: scalar_metrics(v) for k, v in metrics.items() if isinstance(v, dict)}))
        return 0
    seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    per_seed = {
        seed: run_training(build_config(args, seed), output / f"seed_{seed}", args.resume, args.logger)
        for seed in seeds
    }
    if not is_main:
        return 0
    summary = summarise_seeds(per_seed)
    (output / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (output / "summary.md").write_text(
        summary_markdown(summary, f"{args.model} on {args.data or 'synthetic'}"), encoding="utf-8"
    )
    print(summary_markdown(summary, f"{args.model} on {args.data or 'synthetic'}"))
    return 0


def load_run(run_dir: Path, data: str | None, overrides: list[str] | None = None):
    """A trainer around a finished run's best checkpoint, optionally on other data."""
    import torch

    from .models import DataInfo
    from .trainer import Trainer

    config_path = run_dir / "config.yaml"
    if not config_path.exists():
        raise ConfigError(f"{run_dir} is not a run folder (no config.yaml)")
    config = load_yaml(config_path)
    if data is not None:
        config["data"]["spec"] = data
    config = resolve_config(config["model_name"], None, overrides, config)
    saved = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
    trainer = Trainer(config, run_dir, echo=lambda _: None, info=DataInfo(**saved["info"]))
    trainer.load_best()
    return trainer


def command_evaluate(args: argparse.Namespace) -> int:
    trainer = load_run(Path(args.run_dir), args.data)
    if args.split not in trainer.dataset.splits:
        raise DataError(
            f"split {args.split!r} not in data (has {sorted(trainer.dataset.splits)})",
            file=trainer.dataset.source,
            split=args.split,
        )
    print(json.dumps(trainer.evaluate(args.split)))
    return 0


def find_dialogue(dataset, dialogue_id: str):
    for split, dialogues in dataset.splits.items():
        for dialogue in dialogues:
            if dialogue.id == dialogue_id:
                return split, dialogue
    raise DataError(f"dialogue {dialogue_id!r} not found", file=dataset.source, dialogue=dialogue_id)


def command_predict(args: argparse.Namespace) -> int:
    """Per-utterance transcript, speaker, true and predicted label and its probability (MMMIE Table 6)."""
    if args.input is not None:
        return predict_input(args)
    if args.dialogue is None:
        raise ConfigError("predict needs --input FILE, or --dialogue ID (with --data SPEC or the run's data)")
    if args.output is not None:
        raise ConfigError("--output is for --input predictions; use --json for one dialogue")
    import torch

    from .data.batching import as_utterance_dialogues, collate

    trainer = load_run(Path(args.run_dir), args.data)
    split, dialogue = find_dialogue(trainer.dataset, args.dialogue)
    info = trainer.info
    units = as_utterance_dialogues([dialogue]) if trainer.utterance_level else [dialogue]
    batch = collate(units, info.modalities, info.task, info.speaker_vocabulary).to(trainer.device)
    trainer.model.eval()
    with torch.no_grad():
        predictions = batch.flat(trainer.model(batch).predictions).float().cpu()
    rows = []
    for utterance, prediction in zip(dialogue.utterances, predictions, strict=True):
        row = {"utterance": utterance.uid, "speaker": utterance.speaker, "text": utterance.text}
        if info.task == "classification":
            probabilities = torch.softmax(prediction, dim=-1)
            names = info.class_names or [str(i) for i in range(info.num_classes)]
            chosen = int(probabilities.argmax())
            row.update(
                true=names[int(utterance.label)],
                predicted=names[chosen],
                probability=round(float(probabilities[chosen]), 4),
                probabilities={names[k]: round(float(p), 4) for k, p in enumerate(probabilities)},
            )
        else:
            row.update(true=float(utterance.label), predicted=float(prediction))
        rows.append(row)
    if args.json:
        print(json.dumps({"dialogue": dialogue.id, "split": split, "utterances": rows}))
        return 0
    print(f"dialogue {dialogue.id} ({split}, {len(rows)} utterances)")
    for row in rows:
        confidence = f"  p={row['probability']:.3f}" if "probability" in row else ""
        print(
            f"[{row['speaker']}] {row['text'] or row['utterance']}\n"
            f"    true={row['true']}  predicted={row['predicted']}{confidence}"
        )
    return 0


def predict_input(args: argparse.Namespace) -> int:
    """``predict DIR --input FILE``: the run's checkpoint alone, never its training data."""
    from .inference import Predictor, load_input, results_as_json, results_as_table, write_results

    if args.data is not None:
        raise ConfigError("--data and --input both name an input: give one of them")
    predictor = Predictor.from_run(args.run_dir, batch_size=args.batch_size)
    input_data = load_input(args.input, predictor)
    if args.dialogue is not None:
        chosen = [k for k, d in enumerate(input_data.dialogues) if d.id == args.dialogue]
        input_data.dialogues = [input_data.dialogues[k] for k in chosen]
        if input_data.splits is not None:
            input_data.splits = [input_data.splits[k] for k in chosen]
        if not chosen:
            raise DataError(
                f"dialogue {args.dialogue!r} not found", file=input_data.source, dialogue=args.dialogue
            )
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
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("serve needs fastapi and uvicorn: pip install 'infofusion[serve]'") from None
    from .inference import Predictor
    from .serve import ServiceLimits, create_app

    predictor = Predictor.from_run(args.run_dir, batch_size=args.batch_size, threads=args.threads)
    limits = ServiceLimits(
        max_utterances=args.max_utterances,
        max_text_chars=args.max_text_chars,
        max_body_bytes=args.max_body_bytes,
        session_ttl=args.session_ttl,
        max_sessions=args.max_sessions,
        max_session_utterances=args.max_session_utterances,
    )
    app = create_app(predictor, limits)
    # The objects of start-up (torch, the model, FastAPI: ~230k) never die; a full collection walking
    # them takes ~80 ms (measured), a pause for every request in flight. Keep them out of its passes.
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def command_export(args: argparse.Namespace) -> int:
    from .export import export_onnx

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
    """Train the demo models on the embedded synthetic data and print a results table."""
    output = Path(args.output)
    rows = []
    for model in DEMO_MODELS:
        namespace = argparse.Namespace(
            model=model, data="synthetic", epochs=args.epochs, seed=0, config=None, overrides=[]
        )
        print(f"== training {model} on synthetic data ==", flush=True)
        metrics = run_training(build_config(namespace), output / model)
        rows.append((model, metrics))
    print("\n| model | valid acc | valid weighted F1 | test acc | test weighted F1 | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for model, metrics in rows:
        valid, test = metrics["valid"], metrics["test"]
        print(
            f"| {model} | {valid['acc']:.3f} | {valid['weighted_f1']:.3f} | {test['acc']:.3f} | "
            f"{test['weighted_f1']:.3f} | {metrics['seconds']:.1f} |"
        )
    return 0


def _leave_process_group() -> None:
    """Under torchrun the trainer joined a process group; leave it cleanly before the process exits."""
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infofusion", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model")
    _train_arguments(train)
    train.set_defaults(handler=command_train)

    evaluate = commands.add_parser("evaluate", help="evaluate a run's best checkpoint")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--data", default=None)
    evaluate.add_argument("--split", default="test")
    evaluate.set_defaults(handler=command_evaluate)

    predict = commands.add_parser("predict", help="per-utterance predictions and confidence for a dialogue")
    predict.add_argument("run_dir")
    predict.add_argument("--data", default=None, help="with --dialogue: the data set to take it from")
    predict.add_argument(
        "--input",
        default=None,
        help="FILE.json dialogues | manifest .csv | FILE.pkl or any data spec: predict without training data",
    )
    predict.add_argument("--dialogue", default=None, help="dialogue id as in the data (or in --input)")
    predict.add_argument("--output", default=None, help="with --input: write OUT.json or OUT.csv")
    predict.add_argument("--batch-size", type=int, default=32, help="dialogues (utterances) per forward pass")
    predict.add_argument("--json", action="store_true", help="print one JSON object")
    predict.set_defaults(handler=command_predict)

    serve = commands.add_parser("serve", help="serve a run over HTTP: /predict, /sessions, /health")
    serve.add_argument("run_dir")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-utterances", type=int, default=200, help="utterances per request")
    serve.add_argument("--max-text-chars", type=int, default=2000, help="characters per transcript")
    serve.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024, help="request body size")
    serve.add_argument(
        "--session-ttl", type=float, default=1800.0, help="seconds of inactivity before expiry"
    )
    serve.add_argument("--max-sessions", type=int, default=1000)
    serve.add_argument("--max-session-utterances", type=int, default=1000, help="utterances per session")
    serve.add_argument("--batch-size", type=int, default=32, help="dialogues (utterances) per forward pass")
    serve.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    serve.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug")
    )
    serve.set_defaults(handler=command_serve)

    export = commands.add_parser("export", help="export a run's model (ONNX) with a JSON sidecar")
    export.add_argument("run_dir")
    export.add_argument("--format", default="onnx", choices=("onnx",))
    export.add_argument("--output", default=None, help="model file (default RUN/model.onnx)")
    export.add_argument("--opset", type=int, default=17)
    export.set_defaults(handler=command_export)

    models = commands.add_parser("models", help="list registered models")
    models.set_defaults(handler=command_models)

    data = commands.add_parser("data", help="data utilities")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    inspect = data_commands.add_parser("inspect", help="splits, dialogues, utterances, dims, label counts")
    inspect.add_argument("spec")
    inspect.add_argument("--set", dest="overrides", action="append", default=[], metavar="data.KEY=VALUE")
    inspect.set_defaults(handler=command_data_inspect)

    demo = commands.add_parser("demo", help="train on the embedded synthetic data and print a table")
    demo.add_argument("--output", default="runs/demo")
    demo.add_argument("--epochs", type=int, default=15)
    demo.set_defaults(handler=command_demo)

    from .extract.cli import add_extract_parser
    from .mi.cli import add_mi_parser
    from .workflow.cli import add_workflow_parsers

    add_mi_parser(commands)
    add_workflow_parsers(commands)
    add_extract_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (DataError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except UnknownModelError as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 2
    finally:
        _leave_process_group()


if __name__ == "__main__":
    sys.exit(main())
