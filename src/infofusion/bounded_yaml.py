"""YAML for configs, read with bounds: a config is a few kilobytes of plain settings.

``yaml.safe_load`` runs no code, but a few hundred bytes can still cost gigabytes or the stack: aliases
(``*name``) nest into billions of nodes once walked, and deep nesting recurses. :class:`BoundedLoader`
refuses aliases and nesting past :data:`MAX_CONFIG_DEPTH`; ``config.load_yaml`` also refuses files over
:data:`MAX_CONFIG_BYTES`.
"""

from __future__ import annotations

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


def bounded_yaml(text: str) -> Any:
    """``yaml.safe_load`` with :class:`BoundedLoader`'s limits (a ``yaml.YAMLError`` past them)."""
    return yaml.load(text, Loader=BoundedLoader)  # noqa: S506 - a SafeLoader subclass
