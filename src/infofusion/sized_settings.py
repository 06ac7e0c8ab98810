"""Settings for a kind of training split: a model YAML's ``small_data`` and ``long_dialogues`` sections.

What fits a time budget, and what reads a corpus best, depends on its training split. A small split
affords fine-tuning the whole text transformer: on MOSI's 1,101 training utterances four epochs cost
minutes where they cost hours on MELD's 9,989 (docs/text.md). Long dialogues (IEMOCAP's 48 utterances
on average) were read best by a larger frozen transformer, short ones (MELD's 10) by the adapted MiniLM
(docs/text.md). A model's YAML says so once per kind::

    small_data:
      max_train_utterances: 2000         # at most this many training utterances, with transcripts
      text: {mode: finetune}
      train: {epochs: 4}
    long_dialogues:
      min_utterances_per_dialogue: 20    # training dialogues at least this long on average
      text: {mode: frozen, encoder: all-mpnet-base-v2}

``config.resolve_config(..., training_split=TrainingSplit(...))`` puts the first section that applies,
in the order of :data:`SECTIONS`, between the model's YAML and the user's layers (``--config``,
``--epochs``, ``--set``), so a setting the user gives still wins, and records the counted figure and
whether it applied in every section. Each section is a bundle around the text front end: a user layer
that sets one of its :attr:`SizedSection.opt_out` settings (``--set text.mode=frozen``) opts out of all
of it. ``command_config.config_from_options`` counts the data the options name (``None`` for data
without transcripts: the settings concern the text front end). Without a count, as in a config resolved
by hand, nothing is applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

APPLIED = "applied"


@dataclass(frozen=True)
class TrainingSplit:
    """What the sections are keyed on: the training split's size, counted on data with transcripts."""

    utterances: int
    dialogues: int

    @property
    def utterances_per_dialogue(self) -> float:
        return round(self.utterances / max(self.dialogues, 1), 1)


@dataclass(frozen=True)
class SizedSection:
    """One YAML section: its bound, the training split's figure the bound is compared with, and the user
    settings that opt out of it."""

    name: str
    bound: str  # the section's key holding the bound; without a positive bound it never applies
    counted: str  # the figure recorded in the section once counted (a run's config.yaml says why)
    at_most: bool  # True: applies when the figure is at most the bound; False: at least
    opt_out: tuple[str, ...]
    description: str  # for the console line: "{description} ({figure} …)"

    def figure(self, split: TrainingSplit) -> int | float:
        return split.utterances if self.at_most else split.utterances_per_dialogue

    def of(self, config: dict) -> dict:
        section = config.get(self.name) or {}
        return section if isinstance(section, dict) else {}

    def bound_of(self, section: dict) -> int | float:
        bound = section.get(self.bound, 0)
        return bound if isinstance(bound, int | float) and not isinstance(bound, bool) else 0

    def applies(self, section: dict, split: TrainingSplit | None) -> bool:
        bound = self.bound_of(section)
        if split is None or bound <= 0:
            return False
        figure = self.figure(split)
        return figure <= bound if self.at_most else figure >= bound

    def settings_layer(self, section: dict) -> dict[str, Any]:
        """The section's settings, without its own keys: the layer merged under the user's."""
        return {
            key: value for key, value in section.items() if key not in (self.bound, self.counted, APPLIED)
        }


SMALL_DATA = SizedSection(
    name="small_data",
    bound="max_train_utterances",
    counted="train_utterances",
    at_most=True,
    opt_out=("text.mode",),
    description="small training split",
)
LONG_DIALOGUES = SizedSection(
    name="long_dialogues",
    bound="min_utterances_per_dialogue",
    counted="utterances_per_dialogue",
    at_most=False,
    # Its bundle is a text transformer and how it is read: a user who names either has chosen their own.
    opt_out=("text.mode", "text.encoder"),
    description="long training dialogues",
)
# In order of precedence: the first that applies is the one applied. MOSI's videos average 23 utterances
# but its split is small: fine-tuning fits there, and was measured there.
SECTIONS = (SMALL_DATA, LONG_DIALOGUES)
NAMES = tuple(section.name for section in SECTIONS)


def sections_of(config: dict) -> dict[SizedSection, dict]:
    """The sized sections ``config`` has, in order of precedence."""
    return {kind: kind.of(config) for kind in SECTIONS if kind.of(config)}


def first_applying(
    sections: dict[SizedSection, dict], split: TrainingSplit, user_settings: list[dict[str, Any]]
) -> SizedSection | None:
    """The first of ``sections`` that applies to ``split`` and none of whose opt-out settings the user
    gave (``user_settings``: each user layer's flat settings)."""
    for kind, section in sections.items():
        opted_out = any(settings.get(key) is not None for settings in user_settings for key in kind.opt_out)
        if not opted_out and kind.applies(section, split):
            return kind
    return None


def recorded(
    sections: dict[SizedSection, dict], split: TrainingSplit, chosen: SizedSection | None
) -> dict[str, dict]:
    """Each section with the figure it was compared on and whether it applied: what a run's config keeps."""
    return {
        kind.name: {**section, kind.counted: kind.figure(split), APPLIED: kind is chosen}
        for kind, section in sections.items()
    }


def wants_count(config: dict) -> bool:
    """Whether the resolved ``config`` has sized settings that a count of its data could apply."""
    return any(
        kind.bound_of(section) > 0 and kind.counted not in section
        for kind, section in sections_of(config).items()
    )


def applied_section(config: dict) -> SizedSection | None:
    """The section applied to a resolved ``config``, if any."""
    return next((section for section in SECTIONS if section.of(config).get(APPLIED) is True), None)
