"""The error classes the command line catches, importable without numpy, pandas or torch.

``DataError`` (bad input data) and ``UnknownModelError`` (a model name that is not registered) are raised
deep in the library, but ``infofusion.cli`` must name them in its exit-code catalogue before it imports
anything heavy: ``infofusion --help`` answers without loading torch. ``infofusion.data`` and
``infofusion.models`` re-export them, so both spellings name the same class.
"""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data. The message names the file, split, dialogue and field at fault."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        split: str | None = None,
        dialogue: str | None = None,
        field: str | None = None,
    ) -> None:
        self.file, self.split, self.dialogue, self.field = file, split, dialogue, field
        where = [
            f"{name}={value}"
            for name, value in (("file", file), ("split", split), ("dialogue", dialogue), ("field", field))
            if value is not None
        ]
        super().__init__(f"{message} [{', '.join(where)}]" if where else message)


class UnknownModelError(LookupError):
    """A model name that is not registered."""


class TrainingNote(UserWarning):
    """What training does differently on this data (MMMIE with one modality leaves MINE out): worth a line
    when a run trains, noise when a finished run is loaded to predict, evaluate or serve, where
    ``runs.training_notes_silenced`` keeps it quiet."""
