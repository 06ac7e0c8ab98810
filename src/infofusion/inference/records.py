"""What a prediction is: one utterance's and one dialogue's predicted labels, probabilities and what the
model read. The predictor makes them; ``outputs`` writes them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class UtterancePrediction:
    """One utterance's prediction and what it was computed from."""

    index: int  # position in its dialogue
    uid: str
    speaker: str
    text: str | None
    modalities: list[str]  # modalities the model saw for this utterance
    missing: list[str]  # modalities of the run this utterance did not have (zeros, marked absent)
    label: str | None = None  # classification: the predicted class name
    probability: float | None = None  # classification: probability of the predicted class
    probabilities: dict[str, float] | None = None  # classification: every class
    value: float | None = None  # regression: the predicted value
    true: str | float | None = None  # the input's own label, when it had one

    def as_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "index": self.index,
            "uid": self.uid,
            "speaker": self.speaker,
            "text": self.text,
        }
        if self.value is not None:
            row["value"] = self.value
        else:
            row.update(label=self.label, probability=self.probability, probabilities=self.probabilities)
        row.update(modalities=self.modalities, missing=self.missing)
        if self.true is not None:
            row["true"] = self.true
        return row


@dataclass
class DialoguePrediction:
    dialogue_id: str
    utterances: list[UtterancePrediction]
    split: str | None = None  # the split of a data-set input

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dialogue_id": self.dialogue_id}
        if self.split is not None:
            out["split"] = self.split
        out["utterances"] = [u.as_dict() for u in self.utterances]
        return out
