"""YAML for configs, read with bounds: a config is a few kilobytes of plain settings.

``yaml.safe_load`` runs no code, but a few hundred bytes can still cost gigabytes or the stack: aliases
(``*name``) nest into billions of nodes once walked, and deep nesting recurses. :class:`BoundedLoader`
refuses aliases and nesting past :data:`MAX_CONFIG_DEPTH`; ``config.load_yaml`` also refuses files over
:data:`MAX_CONFIG_BYTES`, reading at most one byte more (:func:`read_at_most`): a device or a pipe has no
size to check beforehand (``/dev/zero`` reports 0 bytes and never ends).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# A config is a few kilobytes of plain settings: anything far beyond is an accident or an attack.
MAX_CONFIG_BYTES = 1024 * 1024
MAX_CONFIG_DEPTH = 32


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without aliases (``*name``: a few of them expand into billions of nodes) and
    with a nesting limit (deep nesting exhausts the stack)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(f"aliases (*name) are not allowed in configs{mark}")
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_CONFIG_DEPTH:
                raise yaml.YAMLError(
                    f"nested deeper than {MAX_CONFIG_DEPTH} levels{self.peek_event().start_mark}"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def read_at_most(path: str | Path, limit: int) -> bytes:
    """The first ``limit + 1`` bytes of ``path`` at most: more than ``limit`` means "too large", known
    without trusting ``st_size`` (0 for devices and pipes) and without reading to the end."""
    chunks, left = [], limit + 1
    with open(path, "rb") as handle:
        while left > 0:
            chunk = handle.read(min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    return b"".join(chunks)


def bounded_yaml(text: str) -> Any:
    """``yaml.safe_load`` with :class:`BoundedLoader`'s limits (a ``yaml.YAMLError`` past them)."""
    return yaml.load(text, Loader=BoundedLoader)  # noqa: S506 - a SafeLoader subclass
