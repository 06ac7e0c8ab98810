"""Resolved configuration: base defaults < model YAML < a named recipe < ``--config`` file < ``--set``.

A config is a nested dict. Shared sections are ``data``, ``train`` and ``model``; each model also reads a
section named after itself (``mmim.cpc``, ``mmmie.identity``...). Model defaults ship as YAML in
``infofusion/configs/<model>.yaml``; a recipe is what one corpus's best measured run changes on top of
them, ``infofusion/configs/recipes/<corpus>/<model>.yaml``. Nothing depends on the data's size: the
same options give the same config from the command line and from Python.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import keyword
import math
import sys
import types
import typing
from collections.abc import Collection
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml

from .bounded_yaml import MAX_CONFIG_BYTES, bounded_yaml, read_at_most
from .trees import deep_merge

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
            return f"{'>' if self.low_open else '≥'} {_bound(self.low)}"
        if self.low is None:
            return f"{'<' if self.high_open else '≤'} {_bound(self.high)}"
        opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {opening}{_bound(self.low)}, {_bound(self.high)}{closing}"


def _bound(value: float | None) -> str:
    """Ints in full (a seed's bound is 9223372036854775808, not 9.22337e+18), floats short."""
    return str(value) if isinstance(value, int) else f"{value:g}"


# Caps: past them a setting is a typo or an attack, never an experiment, and it must be one line, not a
# traceback or a huge allocation (model.hidden=100000000 asks for a 12.8 GB weight matrix). Each is its
# own Range, so a value below the floor still reads "must be ≥ 1" and one above "must be ≤ 16384".
MAX_COUNT = 1_000_000  # epochs, batch sizes, patience, threads, folds, window turns...
MAX_WIDTH = 16_384  # a layer's width: one square layer of it is 1 GiB of float32
MAX_DEPTH = 64  # stacked layers or attention heads
MAX_WEIGHT = 1.0e6  # loss weights, learning rates, decays, clips: finite and far below overflow
SEED_LIMIT = 2**63  # NumPy and torch take seeds as signed 64-bit integers
MAX_ENSEMBLE = 100  # seed-ensemble members: each is a whole training run

PositiveInt = Annotated[int, Range(1), Range(high=MAX_COUNT)]
NonNegativeInt = Annotated[int, Range(0), Range(high=MAX_COUNT)]
Width = Annotated[int, Range(1), Range(high=MAX_WIDTH)]
Depth = Annotated[int, Range(1), Range(high=MAX_DEPTH)]  # also attention heads and kernel sizes
LayerCount = Annotated[int, Range(0), Range(high=MAX_DEPTH)]  # 0: no hidden layer
Seed = Annotated[int, Range(0), Range(high=SEED_LIMIT, high_open=True)]
NonNegativeFloat = Annotated[float, Range(0.0), Range(high=MAX_WEIGHT)]
PositiveFloat = Annotated[float, Range(0.0, low_open=True), Range(high=MAX_WEIGHT)]
Weight = NonNegativeFloat  # a loss term's weight; 0 turns the term's gradient off
SignedWeight = Annotated[float, Range(-MAX_WEIGHT, MAX_WEIGHT)]  # a factor that may flip a gradient
Fraction = Annotated[float, Range(0.0, 1.0, high_open=True)]  # dropout rates
UnitInterval = Annotated[float, Range(0.0, 1.0)]  # 0 to 1, both included
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
        out_of_range = None  # a value of the right kind outside its option's range: say which range
        for option in args:
            try:
                return check_value(key, value, option)
            except ConfigError as error:
                if option is not _unbounded(option) and _is_kind(key, value, _unbounded(option)):
                    out_of_range = error
        raise out_of_range or ConfigError(f"{key} must be {describe(hint)}, got {value!r}")
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


def _is_kind(key: str, value: Any, kind: Any) -> bool:
    try:
        check_value(key, value, kind)
    except ConfigError:
        return False
    return True


def _unbounded(hint: Any) -> Any:
    return typing.get_args(hint)[0] if typing.get_origin(hint) is Annotated else hint


def _is_instance(value: Any, kind: Any) -> bool:
    if kind is type(None):
        return value is None
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        if isinstance(value, int):  # compared exactly: math.isfinite(10**400) raises OverflowError
            return abs(value) <= sys.float_info.max
        return isinstance(value, float) and math.isfinite(value)
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
        return " ".join([describe(args[0]), " and ".join(bounds)]) if bounds else describe(args[0])
    if origin in (typing.Union, types.UnionType):  # the kinds only: a range error names its range
        return " or ".join(describe(_unbounded(option)) for option in args)
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
    split_seed: Seed = 0
    test_as_valid: bool = False
    encoder: str = "all-MiniLM-L6-v2"
    modalities: str | list | None = None  # None = every modality the data has; "t,a" or a list otherwise
    # (x - mean) / std per dimension with training-split statistics, for every modality read from the data's
    # files (MOSI's openSMILE audio reaches 356 beside unit-scale text: unscaled, MMIM's MI terms swamped its
    # task loss). The text front end's own vectors are a transformer's, already unit-scale: left as they are.
    standardize: bool = True
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
    # Classification: class c's task loss weighted by (N / (C * n_c)) ** class_balance, n_c its training
    # utterances out of N in C classes. 0: unweighted; 1: every class weighs as much in total (scikit-learn's
    # "balanced"); between, a milder lift of the rare classes (MELD's fear and disgust: docs/results.md).
    class_balance: UnitInterval = 0.0
    # Evaluate, select and keep a moving average of the weights over about this many epochs; 0: the
    # weights of the last step (infofusion.training.weight_averaging).
    ema_epochs: NonNegativeFloat = 0.0
    threads: NonNegativeInt = 0  # 0 leaves torch's default
    # N > 0: `infofusion train` trains seeds 1..N (or --seeds) into one seed-ensemble run (docs/workflow.md);
    # 0: one run. Members are saved with 0: each is an ordinary run.
    ensemble: Annotated[int, Range(0), Range(high=MAX_ENSEMBLE)] = 0
    device: str | None = field(default=None, metadata=OPTIONAL)  # None: cuda when available, else cpu


@dataclass
class TextSection:
    """``text``: the text front end (``infofusion.text``). ``sentence`` reads one context-free vector
    per utterance (``data.encoder``); ``frozen``/``finetune`` run a transformer over context windows;
    ``adapted`` fine-tunes it on the training labels first, then reads with it frozen
    (``infofusion.text.adaptation``)."""

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
    adapt_folds: PositiveInt = 1
    # frozen/adapted readings computed once (a model's own front end runs in fp32). auto: bf16-feedforward
    # (attention in fp32) on a CPU with native bf16 (AMX, AVX512-BF16), about 2x fp32 and within cosine
    # 0.99 of it on MiniLM and mpnet; fp32 elsewhere. bf16 (every product) is faster but moved one mpnet
    # window in 400 to cosine 0.9895 (docs/text.md).
    precision: Literal["auto", "fp32", "bf16", "bf16-feedforward"] = "auto"


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
    "model": {},  # each model's parameter class holds its defaults (models/base.py)
}
TOP_LEVEL_SETTINGS = ("seed", "model_name", "recipe")

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
        raw = read_at_most(path, MAX_CONFIG_BYTES)  # st_size is 0 for /dev/zero: read, bounded
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {path} is over {MAX_CONFIG_BYTES} bytes: not a config")
        loaded = bounded_yaml(raw.decode("utf-8"))
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
    recipe: str | None = None,
) -> dict:
    """Layers, each over the one before: base defaults < the model's YAML < ``recipe`` (a corpus name,
    :func:`recipe_layer`) < ``config_file`` < ``extra`` < ``overrides`` (``--set``).

    The config records the recipe's name (``recipe``; None for the defaults). A saved config passed as
    ``extra`` keeps the recipe it names without applying it again: its settings are already in it.
    """
    config = deep_merge(BASE_DEFAULTS, packaged_config(model))
    if recipe is not None:
        config = deep_merge(config, recipe_layer(recipe, model))
    if config_file:
        config = deep_merge(config, load_yaml(config_file))
    if extra:
        config = deep_merge(config, extra)
    config = apply_overrides(config, overrides or [])
    config["model_name"] = model
    config.setdefault("recipe", recipe)
    check_sections(config)
    config["data"]["modalities"] = normalise_modalities(config["data"].get("modalities"))
    return config


# -- recipes: a corpus's measured settings, by name -------------------------------------------------------
def recipes_directory() -> Any:
    return resources.files("infofusion") / "configs" / "recipes"


def recipe_names(model: str | None = None) -> list[str]:
    """The corpora with a recipe (for ``model``, when given)."""
    return sorted(
        entry.name
        for entry in recipes_directory().iterdir()
        if entry.is_dir() and (model is None or (entry / f"{model}.yaml").is_file())
    )


def recipe_path(recipe: str) -> str:
    """Where a recipe's file is, as shown to users: ``configs/recipes/<corpus>/<model>.yaml``."""
    return f"configs/recipes/{recipe}/"


def recipe_layer(recipe: str, model: str) -> dict:
    """The settings ``configs/recipes/<recipe>/<model>.yaml`` changes, or a :class:`ConfigError` that
    lists the recipes there are."""
    resource = recipes_directory() / recipe / f"{model}.yaml"
    if not recipe.replace("_", "").replace("-", "").isalnum() or not resource.is_file():
        for_model = recipe_names(model)
        known = ", ".join(for_model) if for_model else "none"
        close = difflib.get_close_matches(recipe, for_model, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"--recipe {recipe}: no recipe for {model}{hint}; recipes for {model}: {known}")
    layer = yaml.safe_load(resource.read_text(encoding="utf-8")) or {}
    if not isinstance(layer, dict):
        raise ConfigError(f"recipe {recipe}/{model}.yaml must hold a mapping")
    return layer


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
        if key not in known:
            raise unknown_key(str(key), known)
    config["seed"] = check_value("seed", config.get("seed", 0), Seed)
    if config.get("recipe") is not None:
        config["recipe"] = check_value("recipe", config["recipe"], str)
    for name, section_class in TYPED_SECTIONS.items():
        config[name] = checked_section(name, config[name], section_class)


def data_loader_options() -> list[str]:
    """Keys of ``data`` the loaders read besides :class:`DataSection`'s: the synthetic generator's."""
    from ..data.synthetic import SyntheticSpec

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


# Settings whose `auto` needs the data (the task), so it is resolved when the trainer is built
# (training/build.py) and recorded resolved in the run's config.yaml.
RESOLVED_WHEN_BUILT = frozenset({"train.select_metric"})


def train_settings(config: dict) -> TrainSection:
    """The resolved config's ``train`` section, typed."""
    return _typed(TrainSection, config["train"])


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
