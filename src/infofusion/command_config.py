"""The config that command-line options describe (``train``, ``ablate``, ``sweep``), sized to its data.

It sits above ``config`` and ``data`` because a model's ``small_data`` settings (``infofusion.small_data``)
depend on the training split it will read, which only loading the data tells.
"""

from __future__ import annotations

from typing import Protocol

from . import small_data
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

    When the model's YAML has ``small_data`` settings, the data is loaded once to count its training
    utterances, and the config is resolved again with that count.
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
    if not small_data.wants_count(config):
        return config
    count = transcribed_training_utterances(config)
    return resolve_config(options.model, options.config, options.overrides, extra, train_utterances=count)


def transcribed_training_utterances(config: dict) -> int | None:
    """The training split's utterances of the data ``config`` names, or None when it has no transcripts
    (the small-data settings concern the text front end, which reads them)."""
    if config["data"]["spec"] == "synthetic" or config["text"]["mode"] == "sentence":
        return None  # generated vectors, or no front end: nothing for the settings to change
    # Read as the trainer reads it (the same validation split), without computing sentence vectors.
    dataset = load_dataset(str(config["data"]["spec"]), {**config["data"], "encoder": "none"})
    if not dataset.has_transcripts:
        return None
    return sum(len(dialogue) for dialogue in dataset.splits.get("train", []))


def describe_small_data(config: dict) -> str | None:
    """One console line when the model's small-data settings applied to ``config``, else None."""
    section = small_data.section_of(config)
    if section.get(small_data.APPLIED) is not True:
        return None
    # Only the settings in force: one the user gave (--set, --config, --epochs) wins over them.
    resolved = flat_items(config)
    layer = flat_items(small_data.settings_layer(section))
    shown = ", ".join(f"{key}={value}" for key, value in layer.items() if resolved.get(key) == value)
    if not shown:
        return None
    counted, limit = section[small_data.COUNTED], section[small_data.LIMIT]
    return f"small training split ({counted:,} utterances, at most {limit:,}): {shown} (small_data)"
