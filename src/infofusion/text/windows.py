"""Context windows: each utterance's token ids together with neighbouring turns of its dialogue.

One window per utterance, laid out for a BERT-style encoder::

    [CLS] past turns [SEP] Speaker: target utterance [SEP] future turns [SEP]

Each turn is ``Speaker: text`` (``speaker_names=False`` drops the name). The target is kept whole when
it fits the token budget (else its end is cut); the remaining budget goes to the nearest turns first,
past before future at equal distance, a turn that does not fit whole keeping the part nearest the
target. ``future=0`` (the default) makes a window causal, so live serving, which only knows the past,
sees exactly what training saw.

A window is an int64 array ``(4, length)`` with no padding (batches pad to their own longest window):

- row ``IDS``: token ids;
- row ``SEGMENT``: 0 for context tokens, 1 for the target's turn (its ``[SEP]`` included), as in a
  BERT sentence pair;
- row ``TARGET``: 1 on the target utterance's own tokens (what ``pooling=target`` averages), else 0;
- row ``TURN``: the index, within its dialogue, of the utterance each token belongs to (special
  tokens count as the target's), so a model can give every token its turn's speaker.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

IDS, SEGMENT, TARGET, TURN = range(4)
ROWS = 4
MIN_CONTEXT_TOKENS = 4  # a context turn cut to fewer tokens than this is left out: it says nothing


@dataclass(frozen=True)
class WindowSpec:
    """How windows are built: turns before/after the target, the token budget, speaker names."""

    past: int = 3
    future: int = 0
    max_tokens: int = 128
    speaker_names: bool = True

    def __post_init__(self) -> None:
        if self.past < 0 or self.future < 0:
            raise ValueError(f"context turns must be >= 0, got past={self.past}, future={self.future}")
        if self.max_tokens < 8:
            raise ValueError(f"text.max_tokens must be >= 8, got {self.max_tokens}")

    def key(self) -> str:
        return f"p{self.past}-f{self.future}-t{self.max_tokens}-n{int(self.speaker_names)}"


@dataclass(frozen=True)
class SpecialTokens:
    cls: int
    sep: int
    pad: int


Tokenize = Callable[[str], list[int]]


def turn_text(speaker: str, text: str | None, speaker_names: bool) -> str:
    text = text or ""
    return f"{speaker}: {text}" if speaker_names and speaker else text


def build_dialogue_windows(
    speakers: Sequence[str],
    texts: Sequence[str | None],
    tokenize: Tokenize,
    special: SpecialTokens,
    spec: WindowSpec,
) -> list[np.ndarray]:
    """The window of every utterance of one dialogue (turns in spoken order)."""
    turns = [tokenize(turn_text(s, t, spec.speaker_names)) for s, t in zip(speakers, texts, strict=True)]
    # The name prefix ("Joey:") counts as the turn's but not as the target utterance's own tokens.
    prefixes = [len(tokenize(f"{s}:")) if spec.speaker_names and s else 0 for s in speakers]
    return [_window(turns, prefixes, index, special, spec) for index in range(len(turns))]


def _window(
    turns: list[list[int]], prefixes: list[int], index: int, special: SpecialTokens, spec: WindowSpec
) -> np.ndarray:
    # Special tokens: [CLS], the [SEP] after the past, the target's [SEP], and one after the future.
    budget = spec.max_tokens - 4
    target = turns[index][:budget] if len(turns[index]) > budget else turns[index]
    budget -= len(target)
    chosen: dict[int, list[int]] = {}
    for distance in range(1, max(spec.past, spec.future) + 1):
        for neighbour, allowed in ((index - distance, spec.past), (index + distance, spec.future)):
            if distance > allowed or not 0 <= neighbour < len(turns) or budget < MIN_CONTEXT_TOKENS:
                continue
            tokens = turns[neighbour]
            if len(tokens) > budget:  # keep the part nearest the target
                tokens = tokens[-budget:] if neighbour < index else tokens[:budget]
            chosen[neighbour] = tokens
            budget -= len(tokens)

    ids: list[int] = [special.cls]
    turn_of: list[int] = [index]
    for neighbour in sorted(n for n in chosen if n < index):
        ids += chosen[neighbour]
        turn_of += [neighbour] * len(chosen[neighbour])
    ids.append(special.sep)
    turn_of.append(index)
    target_start = len(ids)
    ids += target + [special.sep]
    turn_of += [index] * (len(target) + 1)
    future = sorted(n for n in chosen if n > index)
    for neighbour in future:
        ids += chosen[neighbour]
        turn_of += [neighbour] * len(chosen[neighbour])
    if future:
        ids.append(special.sep)
        turn_of.append(index)

    window = np.zeros((ROWS, len(ids)), dtype=np.int64)
    window[IDS] = ids
    window[TURN] = turn_of
    window[SEGMENT, target_start : target_start + len(target) + 1] = 1
    own_start = target_start + min(prefixes[index], max(len(target) - 1, 0))
    window[TARGET, own_start : target_start + len(target)] = 1
    if not window[TARGET].any():  # an empty utterance: pool over its [SEP] rather than nothing
        window[TARGET, target_start + len(target)] = 1
    return window


def pad_windows(windows: Sequence[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack windows into ``(N, 4, L)``, ``L`` the longest of them (dynamic padding), and their lengths.

    Padding holds ``pad_id`` in the id row and, in the turn row, the target's index (so a lookup of the
    turn's speaker stays in range); the lengths give the attention mask.
    """
    length = max((w.shape[1] for w in windows), default=1)
    out = np.zeros((len(windows), ROWS, length), dtype=np.int64)
    out[:, IDS] = pad_id
    for row, window in enumerate(windows):
        out[row, :, : window.shape[1]] = window
        out[row, TURN, window.shape[1] :] = window[TURN, 0]
    return out, window_lengths(windows)


def window_lengths(windows: Sequence[np.ndarray]) -> np.ndarray:
    return np.asarray([w.shape[1] for w in windows], dtype=np.int64)


def windows_digest(windows: Sequence[np.ndarray]) -> str:
    """A content hash of a list of windows: keys the cache of their encodings."""
    digest = hashlib.sha256()
    for window in windows:
        digest.update(np.int64(window.shape[1]).tobytes())
        digest.update(np.ascontiguousarray(window).tobytes())
    return digest.hexdigest()
