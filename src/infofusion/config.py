"""Resolved configuration: base defaults < model YAML < ``--config`` file < ``--set key=value``.

A config is a nested dict. Shared sections are ``data``, ``train`` and ``model``; each model also reads a
section named after itself (``mmim.cpc``, ``mmmie.identity``...). Model defaults ship as YAML in
``infofusion/configs/<model>.yaml``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

BASE_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "data": {
        "spec": "synthetic",
        "label": "Emotion",
        "valid_fraction": 0.1,
        "split_seed": 0,
        "test_as_valid": False,
        "encoder": "all-MiniLM-L6-v2",
        "modalities": None,  # None = every modality the data has; "t,a" or a list otherwise
        "standardize": False,  # true: (x - mean) / std per dimension, training-split statistics
    },
    "train": {
        "epochs": 30,
        "batch_size": 16,
        "eval_batch_size": 64,
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "optimizer": "adam",
        "clip": 1.0,
        "patience": 10,
        "select_metric": "auto",
        "modality_dropout": 0.0,
        "threads": 0,  # 0 leaves torch's default
    },
    "model": {"hidden": 128, "dropout": 0.3},
}

MODALITY_ALIASES = {"t": "text", "a": "audio", "v": "visual"}


class ConfigError(ValueError):
    """A config file or ``--set`` option that cannot be used."""


def deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def packaged_config(name: str) -> dict:
    """A YAML file shipped in ``infofusion/configs`` (``{}`` when absent)."""
    resource = resources.files("infofusion") / "configs" / f"{name}.yaml"
    if not resource.is_file():
        return {}
    return yaml.safe_load(resource.read_text(encoding="utf-8")) or {}


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ConfigError(f"config file not found: {path}") from error
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
        value = yaml.safe_load(raw) if raw.strip() else ""
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
) -> dict:
    config = deep_merge(BASE_DEFAULTS, packaged_config(model))
    if config_file:
        config = deep_merge(config, load_yaml(config_file))
    if extra:
        config = deep_merge(config, extra)
    config = apply_overrides(config, overrides or [])
    config["model_name"] = model
    config["data"]["modalities"] = normalise_modalities(config["data"].get("modalities"))
    return config


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
