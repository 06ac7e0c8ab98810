"""Settings for small transcribed training splits: a model YAML's ``small_data`` section.

A small training split affords, within the same time budget, what a large one does not: on MOSI's
1,101 training utterances four epochs of fine-tuning the whole text transformer cost minutes where they
cost hours on MELD's 9,989 (docs/text.md). A model's YAML says so once::

    small_data:
      max_train_utterances: 2000   # at most this many training utterances, with transcripts
      text: {mode: finetune}
      train: {epochs: 4}

``config.resolve_config(..., train_utterances=N)`` puts these settings between the model's YAML and the
user's layers (``--config``, ``--epochs``, ``--set``), so a setting the user gives still wins, and records
``N`` in the section. They are a bundle around a text mode: a user layer that sets ``text.mode`` itself
(``--set text.mode=frozen``) opts out of all of them. ``command_config.config_from_options`` counts
``N`` on the data the options name (``None`` for data without transcripts: the settings concern the text
front end). Without a count, as in a config resolved by hand, nothing is applied.
"""

from __future__ import annotations

from typing import Any

SECTION = "small_data"
LIMIT = "max_train_utterances"
MODE = "text.mode"  # a user layer that sets it opts out of the settings (config.resolve_config)
# Recorded once counted, so that a run's config.yaml says why its settings are what they are.
COUNTED = "train_utterances"
APPLIED = "applied"


def section_of(config: dict) -> dict:
    section = config.get(SECTION) or {}
    return section if isinstance(section, dict) else {}


def wants_count(config: dict) -> bool:
    """Whether the resolved ``config`` has small-data settings that a count of its data could apply."""
    section = section_of(config)
    limit = section.get(LIMIT, 0)
    return isinstance(limit, int) and limit > 0 and COUNTED not in section


def applies(section: dict, train_utterances: int | None) -> bool:
    limit = section.get(LIMIT, 0)
    return train_utterances is not None and isinstance(limit, int) and 0 < train_utterances <= limit


def settings_layer(section: dict) -> dict[str, Any]:
    """The section's settings, without its own keys: the layer merged under the user's."""
    return {key: value for key, value in section.items() if key not in (LIMIT, COUNTED, APPLIED)}
