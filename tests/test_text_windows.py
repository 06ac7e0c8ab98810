"""Context windows: causal by default, speakers in the text, the token budget, the target's tokens."""

from __future__ import annotations

import numpy as np
import pytest

from infofusion.text import WindowSpec, build_dialogue_windows, pad_windows, special_tokens
from infofusion.text.encoders import load_tokenizer
from infofusion.text.windows import IDS, SEGMENT, TARGET, TURN

SPEAKERS = ["Joey", "Rachel", "Joey", "Ross", "Rachel"]
TEXTS = [
    "How you doin'?",
    "We were on a break!",
    "Could this be any more awkward?",
    "Pivot! Pivot! Pivot!",
    "It's not that common, it doesn't happen to every guy, and it is a big deal!",
]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("all-MiniLM-L6-v2")


def windows(tokenizer, spec: WindowSpec, speakers=SPEAKERS, texts=TEXTS) -> list[np.ndarray]:
    def tokenize(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    return build_dialogue_windows(speakers, texts, tokenize, special_tokens(tokenizer), spec)


def decode(tokenizer, window: np.ndarray, row_mask: np.ndarray | None = None) -> str:
    ids = window[IDS] if row_mask is None else window[IDS][row_mask.astype(bool)]
    return tokenizer.decode(ids)


def test_windows_are_causal_by_default(tokenizer):
    built = windows(tokenizer, WindowSpec())
    for index, window in enumerate(built):
        assert window[TURN].max() == index  # nothing from a later turn
        assert window[TURN].min() == max(0, index - 3)
    # the third utterance sees exactly the two before it, in order, then itself
    text = decode(tokenizer, built[2])
    assert text.index("how you doin") < text.index("we were on a break") < text.index("could this be")


def test_future_turns_only_when_asked(tokenizer):
    built = windows(tokenizer, WindowSpec(past=1, future=2))
    assert built[1][TURN].tolist().count(3) > 0 and built[1][TURN].max() == 3
    assert built[1][TURN].min() == 0
    text = decode(tokenizer, built[1])
    assert text.index("how you doin") < text.index("we were on a break") < text.index("pivot")


def test_speaker_names_are_in_the_text_and_not_in_the_target_tokens(tokenizer):
    window = windows(tokenizer, WindowSpec())[3]
    text = decode(tokenizer, window)
    assert "rachel : we were on a break" in text and "ross : pivot" in text
    assert decode(tokenizer, window, window[TARGET]) == "pivot! pivot! pivot!"
    # the target's segment (its "Ross:" prefix and [SEP]) is 1, the context 0
    segment = decode(tokenizer, window, window[SEGMENT])
    assert segment.startswith("ross : pivot") and segment.endswith("[SEP]")
    unnamed = windows(tokenizer, WindowSpec(speaker_names=False))[3]
    assert "ross" not in decode(tokenizer, unnamed)


@pytest.mark.parametrize("budget", [8, 12, 20, 32])
def test_the_token_budget_is_respected_and_the_target_comes_first(tokenizer, budget):
    built = windows(tokenizer, WindowSpec(past=4, future=2, max_tokens=budget))
    for index, window in enumerate(built):
        assert window.shape[1] <= budget
        assert window[IDS][0] == tokenizer.cls_token_id
        assert (window[TURN] == index).sum() >= 3  # the target keeps its place before any context
        assert window[TARGET].sum() >= 1
    # a big budget keeps the target whole; a small one cuts the context, nearest turn kept last
    whole = windows(tokenizer, WindowSpec(past=4, max_tokens=128))[4]
    assert decode(tokenizer, whole, whole[TARGET]).endswith("big deal!")
    tight = windows(tokenizer, WindowSpec(past=4, max_tokens=40))[4]
    assert set(tight[TURN].tolist()) < set(whole[TURN].tolist())
    assert 3 in tight[TURN]  # the nearest previous turn survives


def test_padding_and_lengths(tokenizer):
    built = windows(tokenizer, WindowSpec())
    padded, lengths = pad_windows(built, tokenizer.pad_token_id)
    assert padded.shape == (5, 4, max(w.shape[1] for w in built))
    assert lengths.tolist() == [w.shape[1] for w in built]
    for row, window in enumerate(built):
        assert (padded[row, :, : window.shape[1]] == window).all()
        assert (padded[row, IDS, window.shape[1] :] == tokenizer.pad_token_id).all()
        assert (padded[row, TARGET, window.shape[1] :] == 0).all()


def test_an_empty_utterance_still_pools_over_something(tokenizer):
    built = windows(tokenizer, WindowSpec(), speakers=["A", "B"], texts=["hello there", ""])
    assert built[1][TARGET].sum() == 1
