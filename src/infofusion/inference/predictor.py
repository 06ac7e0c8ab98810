"""Predictions from a finished run, without its training data: :class:`Predictor`.

A run folder (:class:`~infofusion.training.runs.RunDir`) holds the config and the best checkpoint:
weights plus the :class:`DataInfo` the model was sized with (modalities, dims, classes, speaker vocabulary,
and how the training data's features were made), which is all inference needs. ::

    predictor = Predictor.from_run("runs/bc_lstm")
    results = predictor.predict(dialogues)           # list[DialoguePrediction]

Inputs are :class:`~infofusion.data.Dialogue` s whose utterances may lack features:

- text: when the run's text modality came from encoding transcripts (a folder of dialogue CSVs, or a
  pickle written by ``infofusion extract`` whose sidecar names the encoder; recorded at training time in
  ``DataInfo.provenance``) an utterance's ``text`` is encoded with that same encoder; a run whose text came
  through the text front end gets each transcript read with its dialogue's earlier turns. Runs trained on
  pre-extracted text features need the features. Given features always win over text.
- a missing modality is allowed only when the run was trained with modality dropout
  (``train.modality_dropout > 0``): its features are zeros and ``batch.present`` marks it absent, the same
  mechanism the trainer's modality dropout uses; otherwise it is a :class:`DataError`.

A seed ensemble's folder (``train --ensemble``, ``ensemble.json``) loads as an
:class:`EnsemblePredictor`: the same interface, whose probabilities are the mean of its members'
(regression: the mean of their predictions), so ``predict``, ``serve`` and ``export`` use it as one model.

Features are given raw: the model standardises its own inputs (``InfoFusionModel.standardize``). Every
error names the input file, the dialogue and the field (``utterances[2].features.audio``). Readers of
input files are in :mod:`.inputs`, writers of results in :mod:`.outputs`.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ConfigError
from ..data.batching import as_utterance_dialogues, collate
from ..data.labels import label_kind_problem, run_class_indices
from ..data.provenance import data_provenance, files_text_provenance
from ..data.types import DataError, Dialogue, Utterance
from ..models import DataInfo, InfoFusionModel, get_model_class
from ..models.base import probabilities
from ..text import TextProvenance, WindowReader, text_settings
from ..text.encoders import DEFAULT_ENCODER, clean_text, get_text_encoder
from ..training.runs import RunDir
from .records import DialoguePrediction, UtterancePrediction

MODALITY_NAMES = ("text", "audio", "visual")
DEFAULT_BATCH_SIZE = 32


@dataclass
class PreparedDialogue:
    """A dialogue checked against the run: every modality filled in, ``present`` says which were real."""

    id: str
    utterances: list[Utterance]
    present: list[dict[str, bool]]
    true: list[str | float | None]
    split: str | None = None


class Predictor:
    """A run's best checkpoint in evaluation mode, and everything needed to feed it (module docstring)."""

    def __init__(
        self,
        model: InfoFusionModel,
        config: dict,
        info: DataInfo,
        *,
        source: str = "",
        batch_size: int = DEFAULT_BATCH_SIZE,
        device: str | torch.device = "cpu",
        text_encoder_states: list[dict[str, torch.Tensor]] | None = None,
        window_reader: WindowReader | None = None,
    ) -> None:
        self.model = model.eval()
        self.config = config
        self.info = info
        self.model_name = str(config["model_name"])
        self.utterance_level = get_model_class(self.model_name).unit == "utterance"
        provenance = info.provenance or data_provenance(config.get("data", {}), info.modalities)
        text = info.text
        if info.provenance is None and text.kind == "none" and "text" in info.modalities:
            # A checkpoint older than the provenance record: what its data's files say.
            text = files_text_provenance(config.get("data", {}), info.modalities)
        # How the run's text modality was made, hence what an utterance must bring.
        self.text_provenance: TextProvenance = text
        # Modalities the training data carried as a constant zero column (extract's placeholders).
        self.placeholders = set(provenance["placeholders"])
        self.extraction: dict[str, Any] = provenance["extraction"]
        self.source = source
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device)
        dropout = float(config.get("train", {}).get("modality_dropout") or 0.0)
        # The trainer only drops modalities when there are two or more (see Trainer._drop_modalities).
        self.allow_missing = dropout > 0 and len(info.modalities) >= 2
        self._encoder_lock = threading.Lock()
        if window_reader is None and self.text_provenance.kind == "front_end":
            window_reader = WindowReader(
                text_settings(config),
                model.text_front_end is not None,
                text_encoder_states,
                config["data"].get("cache_dir"),  # the vectors training cached, when the input is its data
            )
        self.window_reader = window_reader

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        device: str = "cpu",
        threads: int | None = None,
    ) -> Predictor:
        """The run's best checkpoint (:class:`~infofusion.training.runs.RunDir`); the training data is never
        read."""
        # The commands' --batch-size and --threads: refused in one line, not clamped or a torch traceback.
        for flag, value in (("--batch-size", batch_size), ("--threads", threads)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{flag} must be a whole number of at least 1, got {value!r}")
        if threads:
            torch.set_num_threads(int(threads))
        run = RunDir(run_dir)
        if run.is_ensemble():
            return EnsemblePredictor.from_ensemble(run, batch_size=batch_size, device=device)
        model, loaded = run.load_model(device)
        adapted = (
            run.text_encoders_for_reading()
        )  # text.mode=adapted: the transformers the text was read with
        return cls(
            model,
            loaded.config,
            loaded.info,
            source=str(Path(run_dir)),
            batch_size=batch_size,
            device=device,
            text_encoder_states=adapted,
        )

    # -- description -----------------------------------------------------------------------------
    @property
    def classes(self) -> list[str] | None:
        if self.info.task != "classification":
            return None
        return list(self.info.class_names or [str(k) for k in range(self.info.num_classes)])

    def describe(self) -> dict[str, Any]:
        """What the run expects: for ``/health``, the CLI and the export sidecar."""
        return {
            "model": self.model_name,
            "unit": "utterance" if self.utterance_level else "dialogue",
            "task": self.info.task,
            "classes": self.classes,
            "modalities": list(self.info.modalities),
            "dims": dict(self.info.dims),
            "sequence": dict(self.info.sequence),
            "text_input": self.text_provenance.describe(),
            "missing_modalities_allowed": self.allow_missing,
            "placeholders": sorted(self.placeholders),
            "standardized": sorted(self.info.feature_scaling or {}),  # scaled with training statistics
        }

    def remember_cached_text(self, dialogues: Sequence[Dialogue]) -> None:
        """Before predicting a part of a data set (one split), look up the frozen text vectors training
        cached for the whole of it (:meth:`WindowReader.remember_cached`): the part then runs no
        transformer pass. Does nothing where the vectors are not the cache's to give."""
        if self.window_reader is not None:
            self.window_reader.remember_cached(list(dialogues), self.source or "input")

    def warm_up(self) -> None:
        """Load the text encoder now (it loads lazily; a server should not pay that on a request)."""
        if self.text_provenance.kind == "sentence":
            self._encode(["warm up"])

    # -- preparation -----------------------------------------------------------------------------
    def prepare(
        self,
        dialogues: Sequence[Dialogue],
        *,
        source: str = "input",
        labels: bool = False,
        label_names: Sequence[str] | None = None,
        splits: Sequence[str | None] | None = None,
    ) -> list[PreparedDialogue]:
        """Check every utterance against the run and fill in its features (module docstring).

        ``labels``: echo each utterance's ``label`` as ``true``; ``label_names``: the input's own class
        names, index = label, matched to the run's classes by name (a class the run never learned is a
        DataError); ``splits``: each dialogue's split, in order (data sets reuse ids across splits).
        """
        true_names = self._true_names(dialogues, label_names, source) if labels else None
        prepared: list[PreparedDialogue] = []
        to_encode: list[tuple[int, int, str]] = []  # (dialogue, utterance, cleaned transcript)
        for d_index, dialogue in enumerate(dialogues):
            if not dialogue.utterances:
                raise DataError("dialogue has no utterances", file=source, dialogue=dialogue.id)
            utterances, present, truth = [], [], []
            for u_index, utterance in enumerate(dialogue.utterances):
                features, observed, pending = self._utterance_features(
                    utterance, source, dialogue.id, u_index
                )
                if pending is not None:
                    to_encode.append((d_index, u_index, pending))
                utterances.append(
                    Utterance(
                        features,
                        str(utterance.speaker),
                        0,  # collate needs a label; predictions never read it
                        utterance.text,
                        utterance.uid or str(u_index),
                        utterance.tokens if self.info.has_tokens else None,
                    )
                )
                present.append(observed)
                truth.append(_true_label(utterance.label, true_names) if labels else None)
            split = splits[d_index] if splits is not None else None
            prepared.append(PreparedDialogue(dialogue.id, utterances, present, truth, split))
        if self.window_reader is not None:
            self.window_reader.fill([Dialogue(d.id, d.utterances) for d in prepared], source)
        if to_encode:
            encoded = self._encode([text for _, _, text in to_encode])
            for (d_index, u_index, _), vector in zip(to_encode, encoded, strict=True):
                prepared[d_index].utterances[u_index].features["text"] = vector
        for dialogue in prepared:
            for u_index, observed in enumerate(dialogue.present):
                if not any(observed.values()):
                    raise DataError(
                        f"utterance {u_index} has none of the run's modalities {self.info.modalities}",
                        file=source,
                        dialogue=dialogue.id,
                        field=f"utterances[{u_index}]",
                    )
        return prepared

    def _true_names(
        self, dialogues: Sequence[Dialogue], label_names: Sequence[str] | None, source: str
    ) -> dict[int, str] | None:
        """The run's class name of each input label, when the input names its classes: by name, never by
        position (data/labels.py). None when the labels are plain numbers, echoed as they are."""
        if label_names is None:
            return None
        problem = label_kind_problem(self.info.task, "classification", source)
        if problem is not None:
            raise problem
        classes = self.classes or []
        used = {int(u.label) for dialogue in dialogues for u in dialogue.utterances}
        mapping = run_class_indices(label_names, classes, used, source=source)
        return {index: classes[position] for index, position in mapping.items()}

    def _utterance_features(
        self, utterance: Utterance, source: str, dialogue_id: str, index: int
    ) -> tuple[dict[str, np.ndarray], dict[str, bool], str | None]:
        """The utterance's features for every run modality, which were observed, and text to encode."""
        given = utterance.features or {}
        for name in given:
            if name not in MODALITY_NAMES:
                raise DataError(
                    f"unknown modality {name!r} (use {', '.join(MODALITY_NAMES)})",
                    file=source,
                    dialogue=dialogue_id,
                    field=f"utterances[{index}].features.{name}",
                )
        features: dict[str, np.ndarray] = {}
        observed: dict[str, bool] = {}
        pending: str | None = None
        for modality in self.info.modalities:
            where = f"utterances[{index}].features.{modality}"
            value = given.get(modality)
            if modality == "text" and self.text_provenance.kind == "front_end":
                value = None  # the model reads the transcript; a text vector would be ignored anyway
            if value is not None:
                features[modality] = self._checked(value, modality, source, dialogue_id, where)
                observed[modality] = True
                continue
            text = clean_text(utterance.text) if utterance.text is not None else ""
            if modality == "text" and self.text_provenance.kind == "sentence" and text:
                pending = text  # encoded for the whole batch at once
                features[modality] = np.zeros(self.info.dims[modality], dtype=np.float32)
                observed[modality] = True
                continue
            # A missing modality is zero in the space the model was trained in (the model's
            # standardisation keeps absent inputs zero).
            features[modality] = self._zeros(modality)
            if modality in self.placeholders:
                # Training saw this very zero column, marked present.
                observed[modality] = True
                continue
            if modality == "text" and self.text_provenance.kind == "front_end" and text:
                observed[modality] = True  # the model reads the transcript; its vector is unused
                continue
            if not self.allow_missing:
                named = f" ({utterance.uid})" if utterance.uid and utterance.uid != str(index) else ""
                raise DataError(
                    f"utterance {index}{named} has no {modality} "
                    f"{self._what_is_needed(modality)}; the run was trained without modality dropout "
                    "(train.modality_dropout=0), so every utterance needs all of "
                    f"{', '.join(self.info.modalities)}",
                    file=source,
                    dialogue=dialogue_id,
                    field=where,
                )
            observed[modality] = False
        return features, observed, pending

    def _what_is_needed(self, modality: str) -> str:
        if modality == "text" and self.text_provenance.reads_transcripts:
            return "transcript ('text') or text features"
        return "features"

    def _checked(self, value: Any, modality: str, source: str, dialogue_id: str, where: str) -> np.ndarray:
        try:
            array = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            raise DataError(
                f"{modality} features are not a list of numbers (or a list of equal-length frames)",
                file=source,
                dialogue=dialogue_id,
                field=where,
            ) from None
        sequence, dim = self.info.sequence[modality], self.info.dims[modality]
        expected = f"(frames, {dim}) frames" if sequence else f"a vector of {dim} numbers"
        if array.ndim != (2 if sequence else 1) or array.shape[-1] != dim or array.shape[0] == 0:
            raise DataError(
                f"{modality} features have shape {tuple(array.shape)}; the run expects {expected}",
                file=source,
                dialogue=dialogue_id,
                field=where,
            )
        if not np.isfinite(array).all():
            raise DataError(
                f"{modality} features hold NaN or infinite values",
                file=source,
                dialogue=dialogue_id,
                field=where,
            )
        return array

    def _zeros(self, modality: str) -> np.ndarray:
        dim = self.info.dims[modality]
        shape = (1, dim) if self.info.sequence[modality] else (dim,)
        return np.zeros(shape, dtype=np.float32)

    def _encode(self, texts: list[str]) -> np.ndarray:
        name = self.text_provenance.encoder or DEFAULT_ENCODER
        # The sentence model loads on first use; two threads must not both load it.
        with self._encoder_lock:
            encoder = get_text_encoder(name)
            distinct = list(dict.fromkeys(texts))
            vectors = np.asarray(encoder.encode(distinct), dtype=np.float32)
        if vectors.shape[-1] != self.info.dims["text"]:
            raise ConfigError(
                f"text encoder {name!r} gives {vectors.shape[-1]}-d vectors but the run's text features are "
                f"{self.info.dims['text']}-d"
            )
        row = {text: position for position, text in enumerate(distinct)}
        return vectors[[row[text] for text in texts]]

    # -- prediction ------------------------------------------------------------------------------
    def predict(
        self,
        dialogues: Sequence[Dialogue],
        *,
        source: str = "input",
        labels: bool = False,
        label_names: Sequence[str] | None = None,
        splits: Sequence[str | None] | None = None,
        batch_size: int | None = None,
    ) -> list[DialoguePrediction]:
        """Per-utterance predictions for ``dialogues`` (see :meth:`prepare` for the options)."""
        prepared = self.prepare(
            dialogues, source=source, labels=labels, label_names=label_names, splits=splits
        )
        return self.predict_prepared(prepared, batch_size=batch_size)

    def predict_prepared(
        self, dialogues: Sequence[PreparedDialogue], *, batch_size: int | None = None
    ) -> list[DialoguePrediction]:
        size = max(1, int(batch_size or self.batch_size))
        return self._results(dialogues, self.outputs(dialogues, size))

    def outputs(self, dialogues: Sequence[PreparedDialogue], batch_size: int) -> torch.Tensor:
        """Every utterance's probabilities (regression: its prediction), in order, as one tensor."""
        size = max(1, int(batch_size))
        # Utterance-level models see one-utterance dialogues, as in training; batches count utterances.
        units: list[tuple[Dialogue, list[dict[str, bool]]]] = []
        for dialogue in dialogues:
            whole = Dialogue(dialogue.id, dialogue.utterances)
            if self.utterance_level:
                units += [
                    (unit, [observed])
                    for unit, observed in zip(as_utterance_dialogues([whole]), dialogue.present, strict=True)
                ]
            else:
                units.append((whole, dialogue.present))
        outputs: list[torch.Tensor] = []
        with torch.inference_mode():
            for start in range(0, len(units), size):
                outputs.append(self._forward(units[start : start + size]))
        return torch.cat(outputs) if outputs else torch.zeros(0)

    def _forward(self, units: list[tuple[Dialogue, list[dict[str, bool]]]]) -> torch.Tensor:
        dialogues = [dialogue for dialogue, _ in units]
        if any(u.tokens is None for d in dialogues for u in d.utterances):
            # collate reads tokens only when the first utterance has them: all or none.
            dialogues = [
                Dialogue(
                    d.id,
                    [
                        Utterance(u.features, u.speaker, u.label, u.text, u.uid, window=u.window)
                        for u in d.utterances
                    ],
                )
                for d in dialogues
            ]
        info = self.info
        batch = collate(dialogues, info.modalities, info.task, info.speaker_vocabulary)
        for modality in info.modalities:
            present = torch.zeros_like(batch.mask)
            for row, (_, observed) in enumerate(units):
                present[row, : len(observed)] = torch.tensor([o[modality] for o in observed])
            batch.present[modality] = present
        batch = self.model.prepare_batch(self.model.standardize(batch.to(self.device)))
        predictions = batch.flat(self.model(batch).predictions).float().cpu()
        if info.task == "classification":
            return probabilities(predictions)
        return predictions.reshape(-1)

    def _results(self, dialogues: Sequence[PreparedDialogue], flat: torch.Tensor) -> list[DialoguePrediction]:
        names = self.classes
        informative = [m for m in self.info.modalities if m not in self.placeholders]
        results, position = [], 0
        for dialogue in dialogues:
            rows = []
            for index, (utterance, observed, truth) in enumerate(
                zip(dialogue.utterances, dialogue.present, dialogue.true, strict=True)
            ):
                output = flat[position]
                position += 1
                if not torch.isfinite(output).all():
                    # Never a NaN answer: finite but huge features (3e38) overflow inside the model.
                    raise DataError(
                        "the model's output for this utterance is not finite: its features are outside "
                        "the range the model can use",
                        dialogue=dialogue.id,
                        field=f"utterances[{index}].features",
                    )
                row = UtterancePrediction(
                    index=index,
                    uid=utterance.uid,
                    speaker=utterance.speaker,
                    text=utterance.text,
                    # A placeholder (extract's zero column for a modality it had no media for) is fed as
                    # training saw it, but it carries nothing: reported as missing, not as used.
                    modalities=[m for m in informative if observed[m]],
                    missing=[m for m in self.info.modalities if not observed[m] or m not in informative],
                    true=truth,
                )
                if names is not None:
                    probabilities = [float(p) for p in output]
                    chosen = int(np.argmax(probabilities))
                    row.label = names[chosen]
                    row.probability = round(probabilities[chosen], 6)
                    row.probabilities = {
                        name: round(p, 6) for name, p in zip(names, probabilities, strict=True)
                    }
                else:
                    row.value = float(output)
                rows.append(row)
            results.append(DialoguePrediction(dialogue.id, rows, dialogue.split))
        return results


class EnsemblePredictor(Predictor):
    """A seed ensemble as one model: each member predicts, the answer is the mean of their probabilities
    (regression: of their predictions). Inputs are checked and prepared once, as the first member reads
    them (the members agree on inputs, classes and text settings: ``runs.load_members``); members whose
    text vectors come from their own adapted encoders (``text.mode=adapted``) each read the same windows.
    """

    def __init__(
        self,
        members: list[Predictor],
        names: list[str],
        seeds: list[int | None],
        *,
        source: str = "",
        batch_size: int = DEFAULT_BATCH_SIZE,
        device: str | torch.device = "cpu",
    ) -> None:
        first = members[0]
        # Seed-dependent adapted encoders read the text differently per member: the ensemble attaches
        # the windows only, and each member computes its own vectors from them (outputs).
        self.separate_text = any(
            member.window_reader is not None
            and not member.window_reader.model_reads_windows
            and bool(member.window_reader.encoder_states)
            for member in members
        )
        super().__init__(
            first.model,
            first.config,
            first.info,
            source=source,
            batch_size=batch_size,
            device=device,
            window_reader=self._shared_reader(first),
        )
        self.members = members
        self.member_names = names
        self.seeds = seeds
        # A missing modality is allowed only when every member learned to answer without it.
        self.allow_missing = all(member.allow_missing for member in members)

    def remember_cached_text(self, dialogues: Sequence[Dialogue]) -> None:
        """For the ensemble's reader and every member's own (``evaluate`` scores each member too)."""
        done: set[int] = set()
        for predictor in (self, *self.members):
            reader = predictor.window_reader
            if reader is not None and id(reader) not in done:
                done.add(id(reader))
                reader.remember_cached(list(dialogues), self.source or "input")

    def _shared_reader(self, first: Predictor) -> WindowReader | None:
        if first.window_reader is None or not self.separate_text:
            return first.window_reader
        return WindowReader(first.window_reader.text, True)  # windows only; members read them

    @classmethod
    def from_ensemble(
        cls, run: RunDir, *, batch_size: int = DEFAULT_BATCH_SIZE, device: str = "cpu"
    ) -> EnsemblePredictor:
        """The members ``ensemble.json`` names, each loaded and checked (``RunDir.load_ensemble``)."""
        members = run.load_ensemble(device=device)
        predictors = [
            Predictor(
                member.loaded.build_model(device),
                member.loaded.config,
                member.loaded.info,
                source=str(member.run.path),
                batch_size=batch_size,
                device=device,
                text_encoder_states=member.run.text_encoders_for_reading(),
            )
            for member in members
        ]
        names, seeds = [m.name for m in members], [m.seed for m in members]
        return cls(predictors, names, seeds, source=str(run.path), batch_size=batch_size, device=device)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "ensemble": {"members": self.member_names, "seeds": self.seeds}}

    def outputs(self, dialogues: Sequence[PreparedDialogue], batch_size: int) -> torch.Tensor:
        total: torch.Tensor | None = None
        for member in self.members:
            own = self._read_by(member, dialogues) if self.separate_text else dialogues
            output = member.outputs(own, batch_size)
            total = output if total is None else total + output
        assert total is not None  # an ensemble has at least one member (runs.ensemble_entries)
        return total / len(self.members)

    @staticmethod
    def _read_by(member: Predictor, dialogues: Sequence[PreparedDialogue]) -> list[PreparedDialogue]:
        """Copies of ``dialogues`` whose text vectors ``member``'s own encoders read from the windows."""
        copies = [
            dataclasses.replace(
                dialogue,
                utterances=[dataclasses.replace(u, features=dict(u.features)) for u in dialogue.utterances],
            )
            for dialogue in dialogues
        ]
        if member.window_reader is not None:
            member.window_reader.read_windows([Dialogue(d.id, d.utterances) for d in copies])
        return copies


def _true_label(label: Any, names: dict[int, str] | None) -> str | float | None:
    if label is None:
        return None
    if names is not None:
        return names[int(label)]
    number = float(label)
    return int(number) if number.is_integer() else number
