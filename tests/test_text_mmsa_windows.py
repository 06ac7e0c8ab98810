"""Windows from MMSA token ids: an MMSA pickle without transcripts trains through the text front end."""

from __future__ import annotations

import math

import numpy as np
import pytest

from data_factories import make_mmsa_dict, write_pickle
from infofusion.config import resolve_config
from infofusion.data import DataError
from infofusion.data.types import Dialogue, Utterance
from infofusion.text import WindowSpec
from infofusion.text.prepare import attach_dialogue_windows, token_window
from infofusion.text.windows import IDS, SEGMENT, TARGET, TURN, SpecialTokens
from infofusion.training.build import build_trainer, load_data_for_config
from text_fixtures import save_tiny_bert

SPECIAL = SpecialTokens(cls=101, sep=102, pad=0)


def mmsa_tokens(words: list[int], length: int = 10) -> np.ndarray:
    """MMSA's text_bert row of one clip: [CLS] words [SEP] padded with 0, its mask, segment ids 0."""
    ids = np.zeros(length, dtype=np.int64)
    ids[: len(words) + 2] = [101, *words, 102]
    mask = (np.arange(length) < len(words) + 2).astype(np.int64)
    return np.stack([ids, mask, np.zeros_like(ids)])


def no_tokenizer(text: str) -> list[int]:
    raise AssertionError("token-id windows need no tokenizer")


def test_a_token_window_is_the_utterance_alone_with_the_target_marked():
    window = token_window(mmsa_tokens([2000, 2001, 2002]), 4, SPECIAL, WindowSpec())
    assert window[IDS].tolist() == [101, 2000, 2001, 2002, 102]  # padding dropped
    assert window[SEGMENT].tolist() == [0, 1, 1, 1, 1]  # the target's turn, its [SEP] included
    assert window[TARGET].tolist() == [0, 1, 1, 1, 0]  # the words only
    assert window[TURN].tolist() == [4] * 5


def test_the_token_budget_cuts_the_words_and_keeps_the_final_sep():
    window = token_window(mmsa_tokens(list(range(2000, 2012)), 16), 0, SPECIAL, WindowSpec(max_tokens=8))
    assert window.shape[1] == 8
    assert window[IDS].tolist() == [101, *range(2000, 2006), 102]
    assert window[TARGET].sum() == 6


def test_an_empty_utterance_pools_over_its_sep():
    window = token_window(mmsa_tokens([]), 0, SPECIAL, WindowSpec())
    assert window[IDS].tolist() == [101, 102] and window[TARGET].tolist() == [0, 1]


def test_ids_without_the_encoders_special_tokens_are_a_data_error():
    roberta = SpecialTokens(cls=0, sep=2, pad=1)  # another vocabulary: MMSA's ids would be read wrongly
    with pytest.raises(DataError, match="special tokens") as error:
        token_window(mmsa_tokens([2000]), 0, roberta, WindowSpec(), source="mosi.pkl", dialogue="v1")
    assert "mosi.pkl" in str(error.value) and "text_bert" in str(error.value)


def test_dialogues_with_tokens_and_no_transcripts_get_token_windows():
    tokens = [mmsa_tokens([2000 + i, 2100 + i]) for i in range(3)]
    dialogue = Dialogue("v1", [Utterance({}, "v1", 0.0, None, f"v1$_${i}", t) for i, t in enumerate(tokens)])
    attach_dialogue_windows([dialogue], no_tokenizer, SPECIAL, WindowSpec())
    for index, utterance in enumerate(dialogue.utterances):
        assert utterance.window[IDS].tolist() == [101, 2000 + index, 2100 + index, 102]  # no context turns
        assert set(utterance.window[TURN].tolist()) == {index}


def test_transcripts_win_over_tokens():
    tokens = mmsa_tokens([2000])
    dialogue = Dialogue("v1", [Utterance({}, "v1", 0.0, f"turn {i}", str(i), tokens) for i in range(2)])
    attach_dialogue_windows([dialogue], lambda text: [3000 + len(text)], SPECIAL, WindowSpec())
    assert set(dialogue.utterances[1].window[TURN].tolist()) == {0, 1}  # the past turn is in context


def test_an_mmsa_pickle_without_transcripts_trains_mmim_through_the_front_end(tmp_path):
    content = make_mmsa_dict()
    for block in content.values():  # as MMSA writes them: [CLS] words [SEP], and no transcripts
        del block["raw_text"]
        ids, mask = block["text_bert"][:, 0], block["text_bert"][:, 1]
        for row in range(len(ids)):
            length = max(2, int(mask[row].sum()))
            mask[row, :length] = 1
            ids[row, 0], ids[row, 1 : length - 1], ids[row, length - 1] = 101, 2000 + row, 102
    path = write_pickle(tmp_path / "mosi.pkl", content)
    encoder = save_tiny_bert(tmp_path / "tiny-bert")
    config = resolve_config(
        "mmim",
        None,
        [
            f"data.spec={path}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "text.mode=finetune",
            f"text.encoder={encoder}",
            "train.epochs=1",
            "train.threads=1",
        ],
    )
    dataset = load_data_for_config(config)
    utterance = dataset.splits["train"][0].utterances[1]
    assert utterance.text is None and utterance.window[IDS][0] == 101
    assert set(utterance.window[TURN].tolist()) == {1}
    trainer = build_trainer(config, tmp_path / "run", dataset=dataset, echo=lambda _: None)
    assert trainer.model.text_front_end is not None and trainer.model.text_from_front_end
    assert math.isfinite(trainer.fit()["valid"]["mae"])
