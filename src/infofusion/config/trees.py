"""Nested mappings (configs): merged layer over layer, and flattened to dotted setting names."""

from __future__ import annotations

import copy
from typing import Any


def flat_items(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` as ``{"train.lr": 1}``: the dotted names of a config's settings."""
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree}
    items: dict[str, Any] = {}
    for key, value in tree.items():
        items.update(flat_items(value, f"{prefix}.{key}" if prefix else str(key)))
    return items


def deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
