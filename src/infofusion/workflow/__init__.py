"""Experiment workflow on top of the one trainer: ablation grids, Optuna sweeps, reports, figures, loggers.

The command line pieces live in :mod:`infofusion.workflow.cli` (``add_workflow_parsers``); this module holds
the few helpers the commands share. It imports nothing heavy, so building the parser stays cheap.
"""

from __future__ import annotations

import copy
import re
from importlib import resources
from pathlib import Path

import yaml

from ..config import RESOLVED_WHEN_BUILT, ConfigError, config_hash, load_yaml

PLOT_KINDS = ("curves", "mi", "confusion", "tsne")
# Settings that change how fast a run goes, not what it computes; a finished run is still reusable.
RUNTIME_ONLY_TRAIN_KEYS = ("threads",)


def comparable_hash(config: dict) -> str:
    """``config_hash`` without runtime-only settings (``train.threads`` may change between reruns)."""
    trimmed = copy.deepcopy(config)
    for key in RUNTIME_ONLY_TRAIN_KEYS:
        trimmed.get("train", {}).pop(key, None)
    return config_hash(trimmed)


def same_run_config(recorded: dict, config: dict) -> bool:
    """Whether a run that recorded ``recorded`` (its ``config.yaml``) ran ``config``: runtime-only settings
    aside, and a setting ``config`` leaves ``auto`` taken as what the run resolved it to on the same data
    (``RESOLVED_WHEN_BUILT``)."""
    config = copy.deepcopy(config)
    for key in RESOLVED_WHEN_BUILT:
        section, name = key.split(".")
        if config.get(section, {}).get(name) == "auto" and name in recorded.get(section, {}):
            config[section][name] = recorded[section][name]
    return comparable_hash(recorded) == comparable_hash(config)


def setting_kind(config: dict, key: str) -> str:
    """``"setting"``, ``"section"`` or ``"missing"``: what a dotted key names in a resolved config."""
    node: object = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return "missing"
        node = node[part]
    return "section" if isinstance(node, dict) else "setting"


def packaged_names(folder: str) -> list[str]:
    directory = resources.files("infofusion") / "configs" / folder
    if not directory.is_dir():
        return []
    return sorted(
        entry.name[: -len(".yaml")] for entry in directory.iterdir() if entry.name.endswith(".yaml")
    )


def load_named_yaml(name_or_path: str, folder: str, what: str) -> tuple[dict, str]:
    """A YAML mapping from a file path, or from ``infofusion/configs/<folder>/<name>.yaml`` when no such file.

    Returns the mapping and where it came from (for messages and reports).
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return load_yaml(path), str(path)
    stem = name_or_path[: -len(".yaml")] if name_or_path.endswith(".yaml") else name_or_path
    resource = resources.files("infofusion") / "configs" / folder / f"{stem}.yaml"
    if "/" not in stem and resource.is_file():
        try:
            loaded = yaml.safe_load(resource.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"packaged {what} {stem!r} is not valid YAML: {error}") from error
        if not isinstance(loaded, dict):
            raise ConfigError(f"packaged {what} {stem!r} must hold a mapping")
        return loaded, f"infofusion/configs/{folder}/{stem}.yaml"
    available = ", ".join(packaged_names(folder)) or "none"
    raise ConfigError(f"{what} {name_or_path!r}: no such file and no packaged {what} (packaged: {available})")


def safe_folder_name(name: str) -> str:
    """A setting name as a folder name: letters, digits, ``-``, ``_``, ``.`` and ``+`` kept, others ``_``."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._")
    return cleaned or "setting"


def parse_seeds(text: str) -> list[int]:
    """``"3"`` means seeds 1, 2, 3; ``"1,5,9"`` (any comma) means exactly those seeds."""
    text = str(text).strip()
    try:
        if "," in text:
            seeds = [int(part) for part in text.split(",") if part.strip()]
        else:
            count = int(text)
            if count < 1:
                raise ConfigError(f"--seeds must be at least 1, got {text}")
            seeds = list(range(1, count + 1))
    except ValueError:
        raise ConfigError(f"--seeds expects a count N (seeds 1..N) or a comma list, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds needs distinct seeds, got {text!r}")
    return seeds
