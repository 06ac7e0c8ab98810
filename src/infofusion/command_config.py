"""The config that command-line options describe (``train``, ``ablate``, ``sweep``), sized to its data.

It sits above ``config`` and ``data`` because a model's sized settings (``small_data``, ``long_dialogues``:
``infofusion.sized_settings``) depend on the training split it will read, which only loading the data
tells.
"""

from __future__ import annotations

from typing import Protocol

from . import sized_settings
from .config import resolve_config
from .data import load_dataset
from .trees import flat_items


class CommandOptions(Protocol):
    """What ``train``, ``ablate`` and ``sweep`` share on their command lines."""

    model: str
    data: str | None
    epochs: int | None
    seed: int | None
    config: str | None
    overrides: list[str]


def config_from_options(options: CommandOptions, seed: int | None = None) -> dict:
    """The resolved config of command-line options; ``seed`` (one of ``--seeds``) wins over ``--seed``.

    When the model's YAML has sized settings, the data is loaded once to count its training split, and
    the config is resolved again with that count.
    """
    extra: dict = {}
    if options.data is not None:
        extra.setdefault("data", {})["spec"] = options.data
    if options.epochs is not None:
        extra.setdefault("train", {})["epochs"] = options.epochs
    chosen_seed = seed if seed is not None else options.seed
    if chosen_seed is not None:
        extra["seed"] = chosen_seed
    config = resolve_config(options.model, options.config, options.overrides, extra)
    if not sized_settings.wants_count(config):
        return config
    split = transcribed_training_split(config)
    return resolve_config(options.model, options.config, options.overrides, extra, training_split=split)


def transcribed_training_split(config: dict) -> sized_settings.TrainingSplit | None:
    """The size of the training split of the data ``config`` names, or None when it has no transcripts
    (the sized settings concern the text front end, which reads them)."""
    if config["data"]["spec"] == "synthetic" or config["text"]["mode"] == "sentence":
        return None  # generated vectors, or no front end: nothing for the settings to change
    # Read as the trainer reads it (the same validation split), without computing sentence vectors.
    dataset = load_dataset(str(config["data"]["spec"]), {**config["data"], "encoder": "none"})
    if not dataset.has_transcripts:
        return None
    train = dataset.splits.get("train", [])
    return sized_settings.TrainingSplit(
        utterances=sum(len(dialogue) for dialogue in train), dialogues=len(train)
    )


def describe_sized_settings(config: dict) -> str | None:
    """One console line when one of the model's sized sections applied to ``config``, else None."""
    kind = sized_settings.applied_section(config)
    if kind is None:
        return None
    section = kind.of(config)
    # Only the settings in force: one the user gave (--set, --config, --epochs) wins over them.
    resolved = flat_items(config)
    layer = flat_items(kind.settings_layer(section))
    shown = ", ".join(f"{key}={value}" for key, value in layer.items() if resolved.get(key) == value)
    if not shown:
        return None
    figure, bound = section[kind.counted], section[kind.bound]
    if kind.at_most:
        size = f"{figure:,} utterances, at most {bound:,}"
    else:
        size = f"{figure:,} utterances a dialogue on average, at least {bound:,}"
    return f"{kind.description} ({size}): {shown} ({kind.name})"
