"""Resolved configuration: base defaults < model YAML < ``--config`` file < ``--set key=value``.

A config is a nested dict. Shared sections are ``data``, ``train`` and ``model``; each model also reads a
section named after itself (``mmim.cpc``, ``mmmie.identity``...). Model defaults ship as YAML in
``infofusion/configs/<model>.yaml``.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import keyword
import math
import types
import typing
from collections.abc import Collection
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml

from . import sized_settings
from .bounded_yaml import MAX_CONFIG_BYTES, bounded_yaml
from .trees import deep_merge, flat_items

# Field metadata of a setting absent from a resolved config unless given (it has no default to show).
OPTIONAL = {"optional": True}


# -- typed parameters: a config section read into a dataclass ------------------------------------------
@dataclass(frozen=True)
class Range:
    """Bounds of a number field: ``Annotated[float, Range(0.0, 1.0, high_open=True)]`` is [0, 1)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '≥'} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '≤'} {self.high:g}"
        opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {opening}{self.low:g}, {self.high:g}{closing}"


PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, Range(0)]
NonNegativeFloat = Annotated[float, Range(0.0)]
PositiveFloat = Annotated[float, Range(0.0, low_open=True)]
Fraction = Annotated[float, Range(0.0, 1.0, high_open=True)]  # dropout rates
Modality = Literal["text", "audio", "visual"]

SectionType = TypeVar("SectionType")


def parse_section(dataclass_type: type[SectionType], values: dict | None, section_name: str) -> SectionType:
    """One config section as ``dataclass_type``; keys left out keep the dataclass's defaults.

    A key the dataclass does not have, or a value of the wrong type or out of its :class:`Range`, is a
    :class:`ConfigError` naming ``section_name.key`` (and the nearest valid key). An int is a valid float,
    and so is a number written as text (YAML reads ``1e-3`` as a string); a comma list is a valid list.
    """
    names = [f.name for f in fields(dataclass_type)]  # type: ignore[arg-type]
    return parse_sections(dataclass_type, {section_name: (values, names)})


def parse_sections(
    dataclass_type: type[SectionType], sections: dict[str, tuple[dict | None, Collection[str]]]
) -> SectionType:
    """Like :func:`parse_section`, for a dataclass whose fields come from several sections:
    ``sections`` maps each section's name to its values and the names of the fields it may set."""
    hints = typing.get_type_hints(dataclass_type, include_extras=True)
    owners = {setting_name(n): section_name for section_name, (_, names) in sections.items() for n in names}
    checked: dict[str, Any] = {}
    for section_name, (values, names) in sections.items():
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{section_name} must be a section of settings, got {values!r}")
        by_key = {setting_name(name): name for name in names}
        for key, value in values.items():
            if key not in by_key:
                close = difflib.get_close_matches(str(key), list(owners), n=1)
                hint = f"; did you mean {owners[close[0]]}.{close[0]}?" if close else ""
                raise ConfigError(f"unknown key {section_name}.{key}{hint}")
            checked[by_key[key]] = check_value(f"{section_name}.{key}", value, hints[by_key[key]])
    return dataclass_type(**checked)


def setting_name(field_name: str) -> str:
    """The config key of a dataclass field: ``lambda_`` is ``lambda`` (a keyword cannot name a field)."""
    stripped = field_name.removesuffix("_")
    return stripped if keyword.iskeyword(stripped) else field_name


def settings_of(instance: Any) -> dict[str, Any]:
    """A parsed dataclass back as config settings (``{key: value}``)."""
    return {setting_name(f.name): getattr(instance, f.name) for f in fields(instance)}


def check_value(key: str, value: Any, hint: Any) -> Any:
    """``value`` as the type ``hint`` names (converted where that is lossless), or a :class:`ConfigError`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        checked = check_value(key, value, args[0])
        for bound in args[1:]:
            if isinstance(bound, Range) and checked not in bound:
                raise ConfigError(f"{key} must be {bound}, got {value!r}")
        return checked
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return check_value(key, value, option)
            except ConfigError:
                continue
        raise ConfigError(f"{key} must be {describe(hint)}, got {value!r}")
    if origin is Literal:
        if any(value == choice and type(value) is type(choice) for choice in args):
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint_text = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"{key} must be {describe(hint)}, got {value!r}{hint_text}")
    if origin is list:
        items = [part.strip() for part in value.split(",")] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise ConfigError(f"{key} must be {describe(hint)}, got {value!r}")
        return [check_value(f"{key}[{index}]", item, args[0]) for index, item in enumerate(items)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be {describe(hint)}, got {value!r}")
        key_type, value_type = args
        names = typing.get_args(key_type) if typing.get_origin(key_type) is Literal else None
        for name in value:
            if names is not None and name not in names:
                close = difflib.get_close_matches(str(name), list(names), n=1)
                hint_text = f"; did you mean {key}.{close[0]}?" if close else ""
                raise ConfigError(f"unknown key {key}.{name}{hint_text}")
        return {name: check_value(f"{key}.{name}", item, value_type) for name, item in value.items()}
    if not _is_instance(value, hint):
        converted = _number_from_text(value) if hint is float else None
        if converted is None:
            raise ConfigError(f"{key} must be {describe(hint)}, got {value!r}")
        return converted
    return float(value) if hint is float else value


def _is_instance(value: Any, kind: Any) -> bool:
    if kind is type(None):
        return value is None
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, int | float) and math.isfinite(value)
    return isinstance(value, kind)


def _number_from_text(value: Any) -> float | None:
    try:
        number = float(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def describe(hint: Any) -> str:
    """A type hint in words, for error messages: ``an integer ≥ 1``, ``one of conv, transformer``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        bounds = [str(bound) for bound in args[1:] if isinstance(bound, Range)]
        return " ".join([describe(args[0]), *bounds])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(option) for option in args)
    if origin is Literal:
        return "one of " + ", ".join(str(choice) for choice in args)
    if origin is list:
        return f"a list of ({describe(args[0])})"
    if origin is dict:
        return f"a mapping of {describe(args[0])} to {describe(args[1])}"
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    return words.get(hint, getattr(hint, "__name__", str(hint)))


@dataclass
class DataSection:
    """``data``: which data set and how it is read. Loader options of the synthetic generator
    (``dialogues``, ``frames``...) pass through to it; every other key must be one of these fields."""

    spec: str = "synthetic"
    label: str = "Emotion"
    valid_fraction: Fraction = 0.1
    split_seed: int = 0
    test_as_valid: bool = False
    encoder: str = "all-MiniLM-L6-v2"
    modalities: str | list | None = None  # None = every modality the data has; "t,a" or a list otherwise
    standardize: bool = False  # true: (x - mean) / std per dimension, training-split statistics
    cache_dir: str | None = field(default=None, metadata=OPTIONAL)  # text-encoder cache folder


@dataclass
class TrainSection:
    """``train``: the one trainer's settings."""

    epochs: PositiveInt = 30
    batch_size: PositiveInt = 16
    eval_batch_size: PositiveInt = 64
    lr: NonNegativeFloat = 1e-3
    weight_decay: NonNegativeFloat = 1e-4
    optimizer: Literal["adam", "adamw"] = "adam"
    clip: NonNegativeFloat = 1.0  # gradient-norm clip; 0 turns it off
    patience: NonNegativeInt = 10  # epochs without improvement before stopping; 0 means never stop
    select_metric: str = "auto"  # auto: the task's default (metrics.default_selection_metric)
    modality_dropout: Fraction = 0.0
    # Evaluate, select and keep a moving average of the weights over about this many epochs; 0: the
    # weights of the last step (infofusion.weight_averaging).
    ema_epochs: NonNegativeFloat = 0.0
    threads: NonNegativeInt = 0  # 0 leaves torch's default
    device: str | None = field(default=None, metadata=OPTIONAL)  # None: cuda when available, else cpu


@dataclass
class TextSection:
    """``text``: the text front end (``infofusion.text``). ``sentence`` reads one context-free vector
    per utterance (``data.encoder``); ``frozen``/``finetune`` run a transformer over context windows;
    ``adapted`` fine-tunes it on the training labels first, then reads with it frozen
    (``infofusion.text_adaptation``)."""

    mode: Literal["sentence", "frozen", "finetune", "adapted"] = "sentence"
    encoder: str = "all-MiniLM-L6-v2"  # the bundled MiniLM, a model directory or a Hugging Face name
    past: NonNegativeInt = 3  # preceding turns in a window
    future: NonNegativeInt = 0  # following turns; 0 keeps windows causal (what live serving sees)
    max_tokens: Annotated[int, Range(8, 512)] = 128
    speaker_names: bool = True  # turns read "Speaker: text"
    pooling: Literal["target", "cls", "window"] = "target"
    segments: bool = True  # BERT pair segment ids: context 0, target 1
    finetune_layers: NonNegativeInt = 0  # finetune: the top N layers learn; 0 = all and the embeddings
    layer_decay: Annotated[float, Range(0.0, 1.0, low_open=True)] = 0.9
    lr: PositiveFloat = 5.0e-5  # the transformer's own learning rate (its top layer)
    weight_decay: NonNegativeFloat = 0.01
    adapt_epochs: PositiveInt = 2  # adapted: epochs of the text classifier that adapts the transformer
    adapt_batch_size: PositiveInt = 16  # adapted: utterances per step of that classifier
    # adapted: cross-fitting. With K > 1, K classifiers each learn all training dialogues but one fold and
    # read that fold, so no training vector is fit to its own label; the rest read as their mean vector.
    # auto: two folds when the training dialogues are long, else one (infofusion.text_adaptation).
    adapt_folds: PositiveInt | Literal["auto"] = 1


TYPED_SECTIONS: dict[str, type] = {"data": DataSection, "train": TrainSection, "text": TextSection}


def section_defaults(section_class: type) -> dict[str, Any]:
    """A typed section's defaults as they appear in a resolved config (optional fields left out)."""
    return {
        f.name: getattr(section_class(), f.name)
        for f in fields(section_class)
        if not f.metadata.get("optional")
    }


BASE_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "data": section_defaults(DataSection),
    "train": section_defaults(TrainSection),
    "text": section_defaults(TextSection),
    "model": {"hidden": 128, "dropout": 0.3},
}
TOP_LEVEL_SETTINGS = ("seed", "model_name")
# Settings added after runs and caches were made, each with the value at which it behaves as before it
# existed: a saved config without it reads as having that value (resuming an older run,
# ``RunDir.check_resume_config``), and at that value it stays out of cache keys (``text_adaptation``).
ADDED_SETTINGS: dict[str, Any] = {"train.ema_epochs": 0.0}

MODALITY_ALIASES = {"t": "text", "a": "audio", "v": "visual"}


class ConfigError(ValueError):
    """A config file or ``--set`` option that cannot be used."""


def packaged_config(name: str) -> dict:
    """A YAML file shipped in ``infofusion/configs`` (``{}`` when absent)."""
    resource = resources.files("infofusion") / "configs" / f"{name}.yaml"
    if not resource.is_file():
        return {}
    return yaml.safe_load(resource.read_text(encoding="utf-8")) or {}


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {path} is over {MAX_CONFIG_BYTES} bytes: not a config")
        loaded = bounded_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ConfigError(f"config file not found: {path}") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path} is not UTF-8 text: {error}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from error
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping, not {type(loaded).__name__}")
    return loaded


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """``"mmim.cpc=false"`` to ``(["mmim", "cpc"], False)``; values are parsed as YAML scalars."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    path = [part for part in key.strip().split(".") if part]
    if not path:
        raise ConfigError(f"--set has an empty key in {assignment!r}")
    try:
        value = bounded_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return path, value


def apply_overrides(config: dict, assignments: list[str]) -> dict:
    config = copy.deepcopy(config)
    for assignment in assignments:
        path, value = parse_override(assignment)
        node = config
        for part in path[:-1]:
            if not isinstance(node.setdefault(part, {}), dict):
                raise ConfigError(f"--set {assignment}: {part} is not a section")
            node = node[part]
        node[path[-1]] = value
    return config


def resolve_config(
    model: str,
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
    extra: dict | None = None,
    training_split: sized_settings.TrainingSplit | None = None,
) -> dict:
    """Layers, each over the one before: base defaults < the model's YAML < its sized settings
    (``small_data`` or ``long_dialogues``) < ``config_file`` < ``extra`` < ``overrides`` (``--set``).

    A sized section applies when ``training_split`` (counted by the caller) is within its bound, no
    section before it applied, and no user layer sets one of its opt-out settings (``sized_settings``).
    """
    model_layer = deep_merge(BASE_DEFAULTS, packaged_config(model))
    user_layers = [load_yaml(config_file)] if config_file else []
    user_layers += [extra] if extra else []

    def under_user_layers(config: dict) -> dict:
        for layer in user_layers:
            config = deep_merge(config, layer)
        return apply_overrides(config, overrides or [])

    config = under_user_layers(model_layer)
    if training_split is not None:
        sections = sized_settings.sections_of(config)  # as the user's layers left them (--set small_data.…)
        user_settings = [flat_items(tree) for tree in [*user_layers, apply_overrides({}, overrides or [])]]
        chosen = sized_settings.first_applying(sections, training_split, user_settings)
        if chosen is not None:
            config = under_user_layers(deep_merge(model_layer, chosen.settings_layer(sections[chosen])))
        config.update(sized_settings.recorded(sections, training_split, chosen))
    config["model_name"] = model
    check_sections(config)
    config["data"]["modalities"] = normalise_modalities(config["data"].get("modalities"))
    return config


# -- typed sections ---------------------------------------------------------------------------------------
def unknown_key(key: str, candidates: Collection[str], prefix: str = "") -> ConfigError:
    """``unknown key data.x; did you mean data.y?`` (the nearest candidate, when one is close)."""
    close = difflib.get_close_matches(key, list(candidates), n=1)
    hint = f"; did you mean {prefix}{close[0]}?" if close else ""
    return ConfigError(f"unknown key {prefix}{key}{hint}")


def packaged_model_sections() -> list[str]:
    """Sections a config may hold besides the shared ones: one per model YAML shipped in ``configs``."""
    directory = resources.files("infofusion") / "configs"
    return sorted(
        entry.name[: -len(".yaml")] for entry in directory.iterdir() if entry.name.endswith(".yaml")
    )


def check_sections(config: dict) -> None:
    """Unknown top-level keys and the typed ``data`` and ``train`` sections are a :class:`ConfigError`.

    The ``model`` and per-model sections are the models' own parameter classes' to check.
    """
    model_sections = [str(config.get("model_name")), *packaged_model_sections()]
    known = [*TOP_LEVEL_SETTINGS, "model", *TYPED_SECTIONS, *model_sections]
    for key in config:
        if key not in known and key not in sized_settings.NAMES:
            raise unknown_key(str(key), known)
    for kind in sized_settings.SECTIONS:
        check_sized_section(kind, config.get(kind.name, {}), known)
    config["seed"] = check_value("seed", config.get("seed", 0), int)
    for name, section_class in TYPED_SECTIONS.items():
        config[name] = checked_section(name, config[name], section_class)


def check_sized_section(kind: sized_settings.SizedSection, section: Any, known: list[str]) -> None:
    """A sized section is a mapping, its bound a positive number and its settings name known sections
    (their values are checked with the rest of the config once they apply)."""
    if not isinstance(section, dict):
        raise ConfigError(f"{kind.name} must be a section of settings, not a single value")
    bound, whole = section.get(kind.bound, 0), kind.at_most  # a size is a count, an average may not be
    if isinstance(bound, bool) or not isinstance(bound, int if whole else int | float) or bound < 0:
        unit = "a count of utterances" if whole else "a number of utterances"
        raise ConfigError(f"{kind.name}.{kind.bound} must be {unit}, got {bound!r}")
    for key, value in kind.settings_layer(section).items():
        if key not in known:
            raise unknown_key(str(key), known, f"{kind.name}.")
        if not isinstance(value, dict) and key not in TOP_LEVEL_SETTINGS:
            raise ConfigError(f"{kind.name}.{key} must be a section of settings")


def data_loader_options() -> list[str]:
    """Keys of ``data`` the loaders read besides :class:`DataSection`'s: the synthetic generator's."""
    from .data.synthetic import SyntheticSpec

    return [f.name for f in fields(SyntheticSpec)]


def checked_section(name: str, values: Any, section_class: type) -> dict:
    """``values`` with every key a field of ``section_class`` and of its type. Only the given keys are
    kept (a resolved config stays as it was written); loader options of ``data`` pass through."""
    if not isinstance(values, dict):
        raise ConfigError(f"{name} must be a section of settings, got {values!r}")
    hints = typing.get_type_hints(section_class, include_extras=True)
    passed_through = data_loader_options() if section_class is DataSection else []
    checked = {}
    for key, value in values.items():
        if key in hints:
            checked[key] = check_value(f"{name}.{key}", value, hints[key])
        elif key in passed_through:
            checked[key] = value  # the loader checks its own options
        else:
            raise unknown_key(str(key), [*hints, *passed_through], f"{name}.")
    return checked


def train_settings(config: dict) -> TrainSection:
    """The resolved config's ``train`` section, typed."""
    return _typed(TrainSection, config["train"])


def data_settings(config: dict) -> DataSection:
    """The resolved config's ``data`` section, typed (loader pass-through options left out)."""
    return _typed(DataSection, config["data"])


def _typed(section_class: type, values: dict) -> Any:
    names = {f.name for f in fields(section_class)}
    return section_class(**{k: v for k, v in values.items() if k in names})


def normalise_modalities(value: Any) -> list[str] | None:
    """``"t,a"`` / ``"text,audio"`` / ``["t", "a"]`` to ``["text", "audio"]``; None stays None."""
    if value is None or value == "" or value == "all":
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    names = []
    for item in items:
        name = MODALITY_ALIASES.get(str(item).strip(), str(item).strip())
        if name not in MODALITY_ALIASES.values():
            raise ConfigError(
                f"data.modalities: unknown modality {item!r} (use t, a, v or text, audio, visual)"
            )
        names.append(name)
    if not names:
        raise ConfigError("data.modalities is empty")
    if len(set(names)) != len(names):
        raise ConfigError(f"data.modalities repeats a modality: {value!r}")
    return names


def section(config: dict, name: str) -> dict:
    return config.get(name) or {}


def config_hash(config: dict) -> str:
    """A short stable hash of the settings that define a run (the seed and output place excluded)."""
    relevant = {k: v for k, v in config.items() if k not in {"seed", "output"}}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:10]
