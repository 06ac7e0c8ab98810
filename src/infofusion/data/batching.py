"""Turning dialogues into padded tensors, and a seeded loader over them.

A batch holds ``B`` dialogues of up to ``U`` utterances. Vector modalities are ``(B, U, D)``; sequence
modalities ``(B, U, T, D)`` with ``frame_lengths[m]`` of shape ``(B, U)``. ``mask`` marks real utterances.
Utterance-level models get one-utterance dialogues (see :func:`as_utterance_dialogues`), so one layout
serves both kinds of model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .types import Dataset, Dialogue

UNKNOWN_SPEAKER = 0  # index 0 of the global speaker vocabulary is reserved for unseen speakers
BUCKET_BLOCK = 50  # batches sorted by length together when the data carries text windows


@dataclass
class Batch:
    features: dict[str, torch.Tensor]
    frame_lengths: dict[str, torch.Tensor]
    mask: torch.Tensor  # (B, U) bool
    speakers: torch.Tensor  # (B, U) long: speaker's order of first appearance within its dialogue
    global_speakers: torch.Tensor  # (B, U) long: index in the training vocabulary, 0 = unknown
    labels: torch.Tensor  # (B, U) long (classification) or float (regression)
    dialogue_ids: list[str]
    texts: list[list[str | None]] = field(default_factory=list)
    tokens: torch.Tensor | None = None  # (B, U, 3, L) when the data set carries token ids
    present: dict[str, torch.Tensor] = field(default_factory=dict)  # (B, U) bool: modality observed
    # The text front end's context windows (infofusion.text.windows), padded to the batch's longest:
    # (B, U, 4, L) token rows and (B, U) lengths; None when the data set has no windows.
    windows: torch.Tensor | None = None
    window_lengths: torch.Tensor | None = None

    @property
    def modalities(self) -> list[str]:
        return list(self.features)

    def flat(self, tensor: torch.Tensor) -> torch.Tensor:
        """Keep real utterances only: ``(B, U, ...)`` to ``(N, ...)``."""
        return tensor[self.mask]

    def to(self, device: torch.device | str) -> Batch:
        move = {k: v.to(device) for k, v in self.features.items()}
        return Batch(
            move,
            {k: v.to(device) for k, v in self.frame_lengths.items()},
            self.mask.to(device),
            self.speakers.to(device),
            self.global_speakers.to(device),
            self.labels.to(device),
            self.dialogue_ids,
            self.texts,
            None if self.tokens is None else self.tokens.to(device),
            {k: v.to(device) for k, v in self.present.items()},
            None if self.windows is None else self.windows.to(device),
            None if self.window_lengths is None else self.window_lengths.to(device),
        )


def speaker_vocabulary(dataset: Dataset) -> dict[str, int]:
    """Global speaker names seen in training, numbered from 1 (0 is ``unknown``)."""
    return {name: index + 1 for index, name in enumerate(dataset.speakers("train"))}


def as_utterance_dialogues(dialogues: Sequence[Dialogue]) -> list[Dialogue]:
    """Every utterance as its own dialogue, for models that ignore conversational context."""
    return [Dialogue(f"{d.id}#{i}", [u]) for d in dialogues for i, u in enumerate(d.utterances)]


def collate(
    dialogues: Sequence[Dialogue],
    modalities: Sequence[str],
    task: str,
    vocabulary: dict[str, int],
) -> Batch:
    batch_size = len(dialogues)
    max_utterances = max(len(d) for d in dialogues)
    mask = torch.zeros(batch_size, max_utterances, dtype=torch.bool)
    speakers = torch.zeros(batch_size, max_utterances, dtype=torch.long)
    global_speakers = torch.zeros(batch_size, max_utterances, dtype=torch.long)
    label_dtype = torch.float32 if task == "regression" else torch.long
    labels = torch.zeros(batch_size, max_utterances, dtype=label_dtype)
    texts: list[list[str | None]] = []

    features: dict[str, torch.Tensor] = {}
    frame_lengths: dict[str, torch.Tensor] = {}
    for modality in modalities:
        sample = dialogues[0].utterances[0].features[modality]
        dim = sample.shape[-1]
        if sample.ndim == 2:
            max_frames = max(u.features[modality].shape[0] for d in dialogues for u in d.utterances)
            padded = np.zeros((batch_size, max_utterances, max_frames, dim), dtype=np.float32)
            lengths = torch.zeros(batch_size, max_utterances, dtype=torch.long)
            for b, dialogue in enumerate(dialogues):
                for i, utterance in enumerate(dialogue.utterances):
                    frames = utterance.features[modality]
                    padded[b, i, : frames.shape[0]] = frames
                    lengths[b, i] = frames.shape[0]
            frame_lengths[modality] = lengths
        else:
            padded = np.zeros((batch_size, max_utterances, dim), dtype=np.float32)
            for b, dialogue in enumerate(dialogues):
                for i, utterance in enumerate(dialogue.utterances):
                    padded[b, i] = utterance.features[modality]
        features[modality] = torch.from_numpy(padded)

    tokens = None
    first_tokens = dialogues[0].utterances[0].tokens
    if first_tokens is not None:
        tokens = torch.zeros(batch_size, max_utterances, *first_tokens.shape, dtype=torch.long)

    for b, dialogue in enumerate(dialogues):
        first_seen: dict[str, int] = {}
        texts.append([u.text for u in dialogue.utterances])
        for i, utterance in enumerate(dialogue.utterances):
            mask[b, i] = True
            speakers[b, i] = first_seen.setdefault(utterance.speaker, len(first_seen))
            global_speakers[b, i] = vocabulary.get(utterance.speaker, UNKNOWN_SPEAKER)
            labels[b, i] = utterance.label
            if tokens is not None and utterance.tokens is not None:
                tokens[b, i] = torch.from_numpy(np.asarray(utterance.tokens, dtype=np.int64))
    present = {m: mask.clone() for m in modalities}
    windows, window_lengths = collate_windows(dialogues, max_utterances)
    return Batch(
        features,
        frame_lengths,
        mask,
        speakers,
        global_speakers,
        labels,
        [d.id for d in dialogues],
        texts,
        tokens,
        present,
        windows,
        window_lengths,
    )


def collate_windows(
    dialogues: Sequence[Dialogue], max_utterances: int
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Context windows padded to the longest in the batch (dynamic padding); padding utterances get
    an empty window of length 0. All utterances have windows or none do."""
    if dialogues[0].utterances[0].window is None:
        return None, None
    rows = dialogues[0].utterances[0].window.shape[0]
    length = max(u.window.shape[1] for d in dialogues for u in d.utterances)
    windows = np.zeros((len(dialogues), max_utterances, rows, length), dtype=np.int64)
    lengths = np.zeros((len(dialogues), max_utterances), dtype=np.int64)
    for b, dialogue in enumerate(dialogues):
        for i, utterance in enumerate(dialogue.utterances):
            window = utterance.window
            windows[b, i, :, : window.shape[1]] = window
            # Padding positions keep the target's turn index so a speaker lookup stays in range.
            windows[b, i, -1, window.shape[1] :] = window[-1, 0]
            lengths[b, i] = window.shape[1]
    return torch.from_numpy(windows), torch.from_numpy(lengths)


class DialogueLoader:
    """Batches of dialogues; the order of epoch ``e`` depends only on ``(seed, e)`` so resumes repeat it."""

    def __init__(
        self,
        dialogues: Sequence[Dialogue],
        batch_size: int,
        modalities: Sequence[str],
        task: str,
        vocabulary: dict[str, int],
        shuffle: bool = False,
        seed: int = 0,
        num_shards: int = 1,
        shard: int = 0,
    ) -> None:
        if not 0 <= shard < num_shards:
            raise ValueError(f"shard {shard} out of range for {num_shards} shards")
        self.dialogues = list(dialogues)
        self.batch_size = max(1, int(batch_size))
        self.modalities = list(modalities)
        self.task = task
        self.vocabulary = vocabulary
        self.shuffle = shuffle
        self.seed = seed
        self.num_shards = num_shards
        self.shard = shard
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        per_shard = -(-len(self.dialogues) // self.num_shards)
        return (per_shard + self.batch_size - 1) // self.batch_size

    def order(self) -> np.ndarray:
        """This shard's dialogue indices for the current epoch.

        Every shard permutes with the same ``(seed, epoch)`` and takes every ``num_shards``-th index; the
        permutation is padded with its own first indices so all shards have as many batches, which
        distributed data parallelism needs (each step is a collective).
        """
        order = np.arange(len(self.dialogues))
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            order = rng.permutation(len(self.dialogues))
            if self.dialogues and self.dialogues[0].utterances[0].window is not None:
                order = self._bucketed(order, rng)
        if self.num_shards > 1:
            padding = (-len(order)) % self.num_shards
            order = np.concatenate([order, order[:padding]])[self.shard :: self.num_shards]
        return order

    def _bucketed(self, order: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Length bucketing for the text front end: within blocks of ``BUCKET_BLOCK`` batches of the
        shuffled order, dialogues are sorted by their windows' length and the resulting batches are
        shuffled again, so a batch pads little while every epoch still mixes the data."""
        length = np.array([max(u.window.shape[1] for u in d.utterances) for d in self.dialogues])
        block = self.batch_size * BUCKET_BLOCK
        batches = []
        for start in range(0, len(order), block):
            chunk = order[start : start + block]
            chunk = chunk[np.argsort(length[chunk], kind="stable")]
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        return np.concatenate([batches[i] for i in rng.permutation(len(batches))])

    def __iter__(self) -> Iterator[Batch]:
        order = self.order()
        for start in range(0, len(order), self.batch_size):
            chosen = [self.dialogues[i] for i in order[start : start + self.batch_size]]
            yield collate(chosen, self.modalities, self.task, self.vocabulary)
