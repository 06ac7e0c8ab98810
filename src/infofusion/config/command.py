"""The config that command-line options describe (``train``, ``ablate``, ``sweep``), and the first line a
run prints: which recipe, which text it reads and about how long its text step takes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from . import recipe_path, resolve_config

if TYPE_CHECKING:
    from ..data.types import Dataset


class CommandOptions(Protocol):
    """What ``train``, ``ablate`` and ``sweep`` share on their command lines."""

    model: str
    data: str | None
    recipe: str | None
    epochs: int | None
    seed: int | None
    config: str | None
    overrides: list[str]


def config_from_options(options: CommandOptions, seed: int | None = None) -> dict:
    """The resolved config of command-line options; ``seed`` (one of ``--seeds``) wins over ``--seed``.
    The same as ``resolve_config`` gives from Python with the same layers."""
    extra: dict = {}
    if options.data is not None:
        extra.setdefault("data", {})["spec"] = options.data
    if options.epochs is not None:
        extra.setdefault("train", {})["epochs"] = options.epochs
    chosen_seed = seed if seed is not None else options.seed
    if chosen_seed is not None:
        extra["seed"] = chosen_seed
    config = resolve_config(options.model, options.config, options.overrides, extra, options.recipe)
    from ..models import model_params  # imports torch: only once a command runs

    model_params(config)  # a bad model setting fails here, before a line is printed or data is read
    return config


def describe_run(config: dict) -> str:
    """One line: the model, the recipe (or the defaults), the text representation and, when the data has
    transcripts, an estimate of the text step's duration (the data is read, not encoded, to count it)."""
    from ..text import text_settings
    from ..text.cost import SplitSizes, cached_text_step, duration, text_step_seconds
    from ..text.frontend import resolve_precision
    from ..text.split_wheels import missing_install

    recipe = config.get("recipe")
    model = config["model_name"]
    where = f"recipe {recipe} ({recipe_path(recipe)}{model}.yaml)" if recipe else "the defaults (no recipe)"
    text = text_settings(config)
    dataset = transcribed_dataset(config) if text.mode != "sentence" else None
    if text.mode != "sentence" and dataset is None:
        return f"{model} with {where} | text: the data's own text features (no transcripts)"
    reads = {
        "sentence": f"one {config['data']['encoder']} vector per utterance",
        "frozen": f"frozen {text.encoder}",
        "finetune": f"{text.encoder} fine-tuned with the model",
        "adapted": f"{text.encoder} adapted to the training labels by "
        + ("one classifier" if text.adapt_folds == 1 else f"{text.adapt_folds} cross-fitted classifiers"),
    }[text.mode]
    if text.mode != "sentence":
        turns = "turn" if text.past == 1 else "turns"
        reads += f", {text.past} past {turns}" + (f", {text.future} future" if text.future else "")
    if text.mode in ("frozen", "adapted"):
        precision = resolve_precision(text.precision)
        reads += f", read in {precision}" + (" (auto)" if text.precision == "auto" else "")
    line = f"{model} with {where} | text: {reads}"
    install = missing_install(text.encoder) if text.mode != "sentence" else None
    if install:
        line += f" (not installed here: {install})"
    if dataset is None:
        return line
    counts = {name: sum(len(d) for d in dialogues) for name, dialogues in dataset.splits.items()}
    train = counts.pop("train", 0)
    sizes = SplitSizes(train=train, other=sum(counts.values()))
    cached = cached_text_step(dataset, config)
    if cached.vectors:
        return f"{line} | text step: none, the {sizes.total:,} vectors are cached"
    seconds = text_step_seconds(text, sizes, int(config["train"]["epochs"]), adapted_cached=cached.adapted)
    if seconds is None:
        return f"{line} | text step: no measured rate for {text.encoder}"
    what = "reading" if cached.adapted else "for"
    done = " (the adaptation is cached)" if cached.adapted else ""
    return f"{line} | text step: {duration(seconds)} {what} {sizes.total:,} utterances on 2 CPU cores{done}"


def transcribed_dataset(config: dict) -> Dataset | None:
    """The data ``config`` names, read as the trainer reads it (the same validation split) without any
    vector computed, or None when it has no transcripts."""
    from ..data import load_dataset
    from ..text.settings import loader_options

    if config["data"]["spec"] == "synthetic":
        return None  # generated vectors: no transcripts
    dataset = load_dataset(str(config["data"]["spec"]), {**loader_options(config), "encoder": "none"})
    return dataset if dataset.has_transcripts else None


def settable_config(config: dict) -> dict:
    """``config`` with every key ``--set`` accepts: the model's sections complete with the defaults of
    its parameter class (what ``infofusion config`` prints)."""
    from dataclasses import fields

    from ..models import get_model_class, model_params
    from ..models.base import SHARED_SETTINGS
    from . import setting_name

    params = model_params(config)
    shared = set(SHARED_SETTINGS)
    model_class = get_model_class(config["model_name"])
    complete = {key: value for key, value in config.items() if key not in ("model", model_class.name)}
    complete["model"] = {
        setting_name(f.name): getattr(params, f.name) for f in fields(params) if f.name in shared
    }
    own = {setting_name(f.name): getattr(params, f.name) for f in fields(params) if f.name not in shared}
    if own:
        complete[model_class.name] = own
    return complete
