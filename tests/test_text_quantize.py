"""The reduced-precision paths of frozen encoding (issue 33 item 4). ``text.precision=bf16`` runs every
matrix product of the frozen reading in bfloat16, ``bf16-feedforward`` only the feed-forward blocks'
(attention stays fp32); both keep the vectors within cosine 0.99 of fp32 and have their own cache
entries. The default, ``auto``, is bf16-feedforward on a CPU with native bf16 and fp32 elsewhere (on
all-mpnet-base-v2 bf16 everywhere moved one MELD window in 400 to 0.9895, bf16-feedforward's worst was
0.9916; docs/text.md). int8 dynamic quantization was measured and rejected (0.54-0.94), so it is not a
setting and has no test here.

The encoder is a tiny randomly initialised BERT folder (``text_fixtures``). bf16 moves its vectors far
less than a trained model's (worst window 0.9999999 here), so the bar is the same 0.99 as on real text,
and the tests also check that the setting did run in bf16 (the vectors differ from fp32's by up to
about 1e-4).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from data_factories import write_dialogue_csvs
from infofusion.config import ConfigError, resolve_config
from infofusion.text import FrontEndSpec, TextFrontEnd, encode_windows, load_transformer, text_settings
from infofusion.text.encoders import TextEncoderError, load_tokenizer
from infofusion.text.frontend import feedforward_linears, reading_precision, special_tokens
from infofusion.text.prepare import memoized_tokenizer
from infofusion.text.settings import front_end_spec
from infofusion.text.windows import WindowSpec, build_dialogue_windows
from infofusion.training.build import load_data_for_config

COSINE_BOUND = 0.99  # the bar on real transcripts; the tiny model's worst window measured 0.9999999

TURNS = [
    ("Monica", "Have you seen Chandler?!"),
    ("Phoebe", "No! Why?"),
    ("Monica", "The woman from the museum called and said that there was a cancellation."),
    ("Monica", "I know!"),
    ("Joey", "Okay."),
    ("Rachel", "Wait, wait, what are you talking about? Who is getting married next week?"),
]


@pytest.fixture(scope="module")
def dialogue_csvs(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("csv")
    write_dialogue_csvs(directory, "plain", dialogues={"train": 4, "valid": 2, "test": 1}, utterances=3)
    return directory


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def readings(encoder: str, precision: str) -> np.ndarray:
    tokenizer = load_tokenizer(encoder)
    special = special_tokens(tokenizer)
    speakers, texts = zip(*TURNS, strict=True)
    windows = build_dialogue_windows(speakers, texts, memoized_tokenizer(tokenizer), special, WindowSpec())
    front_end = TextFrontEnd(FrontEndSpec(encoder, precision=precision), load_transformer(encoder))
    return encode_windows(front_end, windows, special.pad)


def test_bf16_reading_stays_within_cosine_of_fp32_and_really_runs_in_bf16(tiny_encoder):
    fp32 = readings(tiny_encoder, "fp32")
    bf16 = readings(tiny_encoder, "bf16")
    assert bf16.dtype == np.float32 and bf16.shape == fp32.shape
    assert cosines(fp32, bf16).min() >= COSINE_BOUND
    # bfloat16 keeps 8 bits of mantissa: identical vectors would mean the setting did nothing
    assert not np.allclose(fp32, bf16, atol=1e-6)
    np.testing.assert_array_equal(readings(tiny_encoder, "fp32"), fp32)  # fp32 itself is untouched


def test_precision_is_part_of_the_cache_key_and_fp32_keeps_the_old_key(tiny_encoder):
    fp32 = FrontEndSpec(tiny_encoder).cache_key()
    bf16 = FrontEndSpec(tiny_encoder, precision="bf16").cache_key()
    assert fp32 != bf16
    assert "precision" not in fp32  # readings cached before the setting existed are still found
    with pytest.raises(ValueError, match="text.precision"):
        FrontEndSpec(tiny_encoder, precision="int8")


@pytest.mark.parametrize("native", [True, False])
def test_auto_reads_in_bf16_feedforward_only_on_native_bf16(
    tmp_path, dialogue_csvs, tiny_encoder, monkeypatch, native
):
    """The default, through prepare_text: ``auto`` is bf16-feedforward where this CPU has native bf16 and
    fp32 elsewhere, each precision with its own cache entry; an explicit precision is kept."""
    monkeypatch.setattr("infofusion.text.frontend.native_bf16", lambda: native)

    def frozen(*overrides: str) -> tuple[np.ndarray, str]:
        settings = [
            f"data.spec={dialogue_csvs}",
            f"data.cache_dir={tmp_path}",
            f"text.encoder={tiny_encoder}",
        ]
        config = resolve_config("bc_lstm", None, [*settings, "text.mode=frozen", *overrides])
        dataset = load_data_for_config(config, lambda _: None)
        vectors = np.stack(
            [u.features["text"] for s in dataset.splits.values() for d in s for u in d.utterances]
        )
        return vectors, front_end_spec(text_settings(config)).precision

    entries = lambda: {path.name for path in tmp_path.rglob("text-windows/*.npy")}  # noqa: E731
    fp32, precision = frozen("text.precision=fp32")
    assert precision == "fp32"
    fp32_entries = entries()
    assert len(fp32_entries) == 1
    default, precision = frozen()
    assert precision == ("bf16-feedforward" if native else "fp32")
    if native:
        assert len(entries() - fp32_entries) == 1  # its own cache entry, not the fp32 one
        assert cosines(fp32, default).min() >= COSINE_BOUND
        assert not np.allclose(fp32, default, atol=1e-6)
    else:
        assert entries() == fp32_entries
        np.testing.assert_array_equal(default, fp32)  # the fp32 entry, read back
    bf16, precision = frozen("text.precision=bf16")
    assert precision == "bf16" and cosines(fp32, bf16).min() >= COSINE_BOUND
    with pytest.raises(ConfigError, match="precision"):
        resolve_config("bc_lstm", None, ["text.precision=int8"])


def test_bf16_on_a_cpu_without_native_bf16_says_fp32_is_faster(tiny_encoder, monkeypatch):
    monkeypatch.setattr("infofusion.text.frontend.native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bf16.*--set text.precision=fp32"):
        readings(tiny_encoder, "bf16-feedforward")


def test_bf16_feedforward_runs_only_the_feedforward_products_in_bf16(tiny_encoder):
    fp32 = readings(tiny_encoder, "fp32")
    feedforward = readings(tiny_encoder, "bf16-feedforward")
    everything = readings(tiny_encoder, "bf16")
    assert cosines(fp32, feedforward).min() >= COSINE_BOUND
    assert not np.allclose(fp32, feedforward, atol=1e-6)  # it did run in bf16 ...
    assert not np.allclose(everything, feedforward, atol=1e-6)  # ... but not everywhere


def test_bf16_feedforward_picks_two_linears_a_layer_and_leaves_the_model_as_it_was(tiny_encoder):
    transformer = load_transformer(tiny_encoder)
    linears = feedforward_linears(transformer)
    layers = transformer.config.num_hidden_layers
    assert len(linears) == 2 * layers
    assert all(transformer.config.intermediate_size in (m.in_features, m.out_features) for m in linears)
    front_end = TextFrontEnd(FrontEndSpec(tiny_encoder, precision="bf16-feedforward"), transformer)
    before = {name: tensor.clone() for name, tensor in transformer.state_dict().items()}
    with reading_precision(front_end):
        assert all("forward" in vars(m) for m in linears)
    assert not any("forward" in vars(m) for m in linears)  # the class's forward again: fp32 in a model
    after = transformer.state_dict()
    assert before.keys() == after.keys()
    assert all(
        after[name].dtype == torch.float32 and torch.equal(before[name], after[name]) for name in before
    )


def test_bf16_feedforward_refuses_an_encoder_whose_feedforward_it_cannot_tell(tiny_encoder):
    transformer = load_transformer(tiny_encoder)
    transformer.config.intermediate_size = transformer.config.hidden_size
    with pytest.raises(TextEncoderError, match="text.precision=bf16-feedforward"):
        feedforward_linears(transformer)
