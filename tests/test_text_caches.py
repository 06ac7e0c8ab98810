"""Text caches keyed by content (issue 30 item 5, issue 31 §3): sentence vectors, frozen front-end vectors
and adapted encoders follow the encoder's weights, not its name; encoder folders are recorded by absolute
path; a cache entry is used only when it is what its key promises; a damaged adaptation is made again;
a training that needs an adaptation another one is making waits for it.

Every encoder here is a tiny randomly initialised BERT folder written by the test (``text_fixtures``).
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from data_factories import write_dialogue_csvs
from infofusion.config import resolve_config
from infofusion.data import HashingTextEncoder, TextEncoder, encode_cached, load_dialogue_csvs
from infofusion.text import adaptation as text_adaptation
from infofusion.text import load_transformer, text_settings
from infofusion.text.adaptation import adapt_text_front_end, adaptation_config, adaptation_key
from infofusion.text.encoders import (
    TextEncoderError,
    cache_path,
    encoder_identity,
    encoder_key,
    resolved_encoder_name,
    write_array_atomically,
)
from infofusion.text.settings import resolve_encoder_paths
from infofusion.training.build import load_data_for_config
from infofusion.training.runs import RunDir, RunFolderError, atomic_torch_save
from text_fixtures import TINY_HIDDEN, save_tiny_bert, tiny_bert

ADAPTED = ["text.mode=adapted", "text.finetune_layers=1", "text.adapt_epochs=1"]


@pytest.fixture(scope="module")
def dialogue_csvs(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("csv")
    write_dialogue_csvs(directory, "plain", dialogues={"train": 4, "valid": 2, "test": 1}, utterances=3)
    return directory


def config_for(data: Path, encoder: str | Path, cache: Path, *overrides: str, model: str = "bc_lstm") -> dict:
    settings = [f"data.spec={data}", f"data.cache_dir={cache}", f"text.encoder={encoder}", "train.epochs=1"]
    return resolve_config(model, None, [*settings, *overrides])


def sentence_vectors(data: Path, encoder: str | Path, cache: Path) -> np.ndarray:
    dataset = load_dialogue_csvs(data, encoder=str(encoder), cache_dir=cache)
    return np.stack([u.features["text"] for d in dataset.splits["valid"] for u in d.utterances])


def frozen_vectors(data: Path, encoder: str | Path, cache: Path) -> np.ndarray:
    dataset = load_data_for_config(config_for(data, encoder, cache, "text.mode=frozen"), lambda _: None)
    return np.stack([u.features["text"] for d in dataset.splits["valid"] for u in d.utterances])


def cache_entries(cache: Path) -> set[str]:
    return {path.name for path in cache.rglob("*.npy")}


# -- 1. an encoder is its weights ----------------------------------------------------------------------
def test_an_encoder_folder_retrained_in_place_gets_new_vectors_from_every_text_cache(tmp_path, dialogue_csvs):
    folder = save_tiny_bert(tmp_path / "encoder")
    cache = tmp_path / "cache"
    sentence_before = sentence_vectors(dialogue_csvs, folder, cache)
    frozen_before = frozen_vectors(dialogue_csvs, folder, cache)
    windowed = load_data_for_config(config_for(dialogue_csvs, folder, cache, "text.mode=finetune"), print)
    adaptation_before = adaptation_key(adaptation_config(config_for(dialogue_csvs, folder, cache)), windowed)

    tiny_bert(seed=1).save_pretrained(folder)  # retrained in place: same name, other weights

    # Each cache serves the new weights' vectors: those an empty cache computes.
    sentence_after = sentence_vectors(dialogue_csvs, folder, cache)
    assert not np.allclose(sentence_after, sentence_before, atol=1e-4)
    np.testing.assert_allclose(sentence_after, sentence_vectors(dialogue_csvs, folder, tmp_path / "fresh"))
    frozen_after = frozen_vectors(dialogue_csvs, folder, cache)
    assert not np.allclose(frozen_after, frozen_before, atol=1e-4)
    np.testing.assert_allclose(frozen_after, frozen_vectors(dialogue_csvs, folder, tmp_path / "fresh"))
    adaptation_after = adaptation_key(adaptation_config(config_for(dialogue_csvs, folder, cache)), windowed)
    assert adaptation_after != adaptation_before

    # The same weights under another name share every entry: the key is the content, not the path.
    entries = cache_entries(cache)
    copy = shutil.copytree(folder, tmp_path / "a copy")
    np.testing.assert_array_equal(sentence_vectors(dialogue_csvs, copy, cache), sentence_after)
    np.testing.assert_array_equal(frozen_vectors(dialogue_csvs, copy, cache), frozen_after)
    assert cache_entries(cache) == entries
    assert encoder_identity(str(copy)) == encoder_identity(str(folder))
    # A file that does not shape the vectors changes nothing; one that does (the tokenizer) does.
    (copy / "README.md").write_text("notes\n", encoding="utf-8")
    assert encoder_identity(str(copy)) == encoder_identity(str(folder))
    with open(copy / "vocab.txt", "a", encoding="utf-8") as vocabulary:
        vocabulary.write("infofusionword\n")
    assert encoder_identity(str(copy)) != encoder_identity(str(folder))


# -- 2. encoder folders are recorded resolved ------------------------------------------------------------
def test_a_relative_encoder_path_is_recorded_absolute_and_reads_the_same_folder_elsewhere(
    tmp_path, dialogue_csvs, monkeypatch
):
    project = tmp_path / "project"
    folder = save_tiny_bert(project / "models" / "encoder")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(project)
    absolute = str(folder)
    for relative in ("models/encoder", "./models/encoder", "models/../models/encoder"):
        assert resolved_encoder_name(relative) == absolute
    # Names that are not folders are left alone.
    for name in ("all-MiniLM-L6-v2", "sentence-transformers/all-mpnet-base-v2", "hashing-64", "none"):
        assert resolved_encoder_name(name) == name

    config = config_for(dialogue_csvs, "./models/encoder", tmp_path / "cache", "data.encoder=models/encoder")
    recorded = resolve_encoder_paths(config)
    assert recorded["text"]["encoder"] == absolute and recorded["data"]["encoder"] == absolute
    # What the data set and the front end record is the folder they read.
    sentence = load_dialogue_csvs(dialogue_csvs, encoder="./models/encoder", cache_dir=tmp_path / "cache")
    assert sentence.meta["encoder"] == absolute
    frozen = load_data_for_config({**config, "text": {**config["text"], "mode": "frozen"}}, print)
    assert frozen.text_provenance.encoder == absolute
    assert text_settings(config).encoder == absolute
    identity = encoder_identity("./models/encoder")

    monkeypatch.chdir(elsewhere)  # predict from another working directory
    assert text_settings(recorded).encoder == absolute
    assert encoder_identity(recorded["text"]["encoder"]) == identity
    with pytest.raises(TextEncoderError, match="does not exist"):
        encoder_identity("./models/encoder")  # what recording the name as given would have read


# -- 3. an entry is what its key promises -------------------------------------------------------------
class CountingEncoder:
    def __init__(self, dim: int = 4) -> None:
        self.name, self.dim, self.calls = f"counting-{dim}", dim, 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        return np.array([[len(text) + k for k in range(self.dim)] for text in texts], dtype=np.float32)


def test_a_cached_array_with_a_matching_digest_is_used_only_in_the_shape_its_key_promises(
    tmp_path, dialogue_csvs, tiny_encoder, monkeypatch
):
    texts = ["a", "bb", "ccc"]
    encoder = CountingEncoder()
    expected = encode_cached(encoder, texts, content_sha256="f" * 64, cache_dir=tmp_path)
    path = cache_path("f" * 64, encoder_key(encoder), tmp_path)
    planted = {
        "wrong width": np.ones((3, 5), dtype=np.float32),
        "wrong row count": np.ones((2, 4), dtype=np.float32),
        "wrong dtype": expected.astype(np.float64),
        "one row of three dimensions": np.ones((3,), dtype=np.float32),
        "not finite": np.full((3, 4), np.nan, dtype=np.float32),
    }
    for what, array in planted.items():
        write_array_atomically(path, array)  # the .sha256 beside it matches these bytes
        calls = encoder.calls
        again = encode_cached(encoder, texts, content_sha256="f" * 64, cache_dir=tmp_path)
        assert encoder.calls == calls + 1, what  # computed again, not read
        np.testing.assert_array_equal(again, expected)
    encode_cached(encoder, texts, content_sha256="f" * 64, cache_dir=tmp_path)
    assert encoder.calls == len(planted) + 1  # the rewritten entry is read again
    hashing = HashingTextEncoder(8)
    encode_cached(hashing, texts, content_sha256="e" * 64, cache_dir=tmp_path)
    write_array_atomically(cache_path("e" * 64, encoder_key(hashing), tmp_path), np.ones((3, 9), np.float32))
    assert encode_cached(hashing, texts, content_sha256="e" * 64, cache_dir=tmp_path).shape == (3, 8)

    # A model's width comes from its folder's config, so an intact entry is read without loading it.
    model = TextEncoder(tiny_encoder)
    vectors = encode_cached(model, texts, content_sha256="d" * 64, cache_dir=tmp_path)
    assert vectors.shape == (3, TINY_HIDDEN)
    unloaded = TextEncoder(tiny_encoder)
    model_path = cache_path("d" * 64, encoder_key(unloaded), tmp_path)
    write_array_atomically(model_path, np.ones((3, TINY_HIDDEN + 1), dtype=np.float32))
    np.testing.assert_allclose(
        encode_cached(unloaded, texts, content_sha256="d" * 64, cache_dir=tmp_path), vectors
    )

    def no_loading(self) -> None:
        raise AssertionError("an intact entry must be read without loading the model")

    monkeypatch.setattr(TextEncoder, "_load", no_loading)
    cached = encode_cached(TextEncoder(tiny_encoder), texts, content_sha256="d" * 64, cache_dir=tmp_path)
    np.testing.assert_allclose(cached, vectors)
    monkeypatch.undo()

    # The frozen front end's cache: an entry of another width, digest and all, is computed again.
    cache = tmp_path / "frozen-cache"
    first = frozen_vectors(dialogue_csvs, tiny_encoder, cache)
    (entry,) = (cache / "text-windows").glob("*.npy")
    rows = len(np.load(entry))
    for array in (np.ones((rows, TINY_HIDDEN + 3), np.float32), np.ones((rows + 1, TINY_HIDDEN), np.float32)):
        write_array_atomically(entry, array)
        np.testing.assert_allclose(frozen_vectors(dialogue_csvs, tiny_encoder, cache), first)
        assert np.load(entry).shape == (rows, TINY_HIDDEN)


# -- 4. a damaged adaptation is made again ---------------------------------------------------------------
class FakeTrainer:
    """Stands in for the Trainer: "learns" the tiny encoder's top layer plus ``shift``, instantly."""

    constructed: list[Path] = []
    shift = 0.5
    started: threading.Event | None = None
    release: threading.Event | None = None

    def __init__(self, config: dict, output: Path, dataset: object, echo: object) -> None:
        type(self).constructed.append(Path(output))
        self.select_metric = "weighted_f1"
        encoder = config["text"]["encoder"]
        base = load_transformer(encoder).state_dict()
        learned = {
            name: value + self.shift for name, value in base.items() if name.startswith("encoder.layer.2.")
        }
        self.model = type("Model", (), {})()
        self.model.text_front_end = type("FrontEnd", (), {"learned_state": lambda _: learned})()

    def fit(self) -> dict:
        if self.started is not None:
            self.started.set()
            assert self.release is not None and self.release.wait(60)
        return {"best_epoch": 1, "valid": {"weighted_f1": 0.5}}


@pytest.fixture()
def fake_trainer(monkeypatch):
    monkeypatch.setattr(FakeTrainer, "constructed", [])
    return FakeTrainer


def windowed(dialogue_csvs: Path, encoder: str, cache: Path) -> tuple[dict, object]:
    """The adapted run's config and its data set with the windows the classifier reads."""
    config = config_for(dialogue_csvs, encoder, cache, *ADAPTED)
    finetune = config_for(dialogue_csvs, encoder, cache, "text.mode=finetune")
    return config, load_data_for_config(finetune, lambda _: None)


def test_a_damaged_or_foreign_cached_adaptation_is_made_again_not_trusted(
    tmp_path, dialogue_csvs, tiny_encoder, fake_trainer
):
    cache = tmp_path / "cache"
    config, dataset = windowed(dialogue_csvs, tiny_encoder, cache)
    made = adapt_text_front_end(config, dataset, fake_trainer, echo=lambda _: None).states[0]
    assert len(fake_trainer.constructed) == 1
    key = adaptation_key(adaptation_config(config), dataset)
    folder = RunDir(cache / "text-adapted" / key)
    good = folder.text_encoder_path.read_bytes()
    name = next(iter(made))
    damaged = {
        "not a checkpoint": b"garbage, not a torch file",
        "truncated": good[: len(good) // 2],
        "weights of another shape": {**made, name: torch.zeros(3, 3)},
        "a parameter the encoder lacks": {**made, "encoder.layer.9.output.dense.weight": made[name]},
        "weights that are not finite": {**made, name: torch.full_like(made[name], float("nan"))},
        "not a state dict": ["a", "list"],
    }
    for what, content in damaged.items():
        if isinstance(content, bytes):
            folder.text_encoder_path.write_bytes(content)
        else:
            atomic_torch_save(
                {"model": [content], "encoder": tiny_encoder, "key": key}, folder.text_encoder_path
            )
        lines: list[str] = []
        before = len(fake_trainer.constructed)
        state = adapt_text_front_end(config, dataset, fake_trainer, echo=lines.append).states[0]
        assert len(fake_trainer.constructed) == before + 1, what  # made again
        assert any("cached adaptation cannot be used" in line for line in lines), what
        assert all(torch.equal(state[k], made[k]) for k in made) and state.keys() == made.keys()
    # Weights that fit but were written for another key are another adaptation's: not used either.
    atomic_torch_save({"model": [made], "encoder": tiny_encoder, "key": "another"}, folder.text_encoder_path)
    adapt_text_front_end(config, dataset, fake_trainer, echo=lambda _: None)
    assert len(fake_trainer.constructed) == len(damaged) + 2
    # The adaptation made again is intact: the next training reads it.
    adapt_text_front_end(config, dataset, fake_trainer, echo=lambda _: None)
    assert len(fake_trainer.constructed) == len(damaged) + 2
    state, problem = text_adaptation.cached_adaptation(folder, tiny_encoder, key)
    assert problem is None and state is not None and state.keys() == made.keys()


# -- 5. two trainings sharing one adaptation ---------------------------------------------------------
def test_a_training_waits_for_the_adaptation_another_one_is_making_then_reads_it(
    tmp_path, dialogue_csvs, tiny_encoder, fake_trainer, monkeypatch
):
    monkeypatch.setattr(text_adaptation, "WAIT_POLL_S", 0.05)
    monkeypatch.setattr(FakeTrainer, "started", threading.Event())
    monkeypatch.setattr(FakeTrainer, "release", threading.Event())
    cache = tmp_path / "cache"
    config, dataset = windowed(dialogue_csvs, tiny_encoder, cache)
    results: dict[str, object] = {}

    def adapt(name: str, lines: list[str]) -> None:
        try:
            results[name] = adapt_text_front_end(config, dataset, fake_trainer, echo=lines.append)
        except Exception as error:  # reported by the assertions below
            results[name] = error

    first_lines: list[str] = []
    first = threading.Thread(target=adapt, args=("first", first_lines))
    first.start()
    assert FakeTrainer.started.wait(60)  # the first training is adapting, holding the cache folder

    # Waiting has a bound: past it, one error that says what it waited for.
    monkeypatch.setattr(text_adaptation, "WAIT_FOR_ADAPTATION_S", 0.3)
    impatient: list[str] = []
    with pytest.raises(RunFolderError, match="gave up after 0 s waiting for another training") as caught:
        adapt_text_front_end(config, dataset, fake_trainer, echo=impatient.append)
    assert "choose another --output" not in str(caught.value) and "text-adapted" in str(caught.value)
    assert any(line.startswith("waiting for another training that adapts") for line in impatient)

    monkeypatch.setattr(text_adaptation, "WAIT_FOR_ADAPTATION_S", 60.0)
    second_lines: list[str] = []
    second = threading.Thread(target=adapt, args=("second", second_lines))
    second.start()
    deadline = time.monotonic() + 30
    while not any(line.startswith("waiting for another training") for line in second_lines):
        assert time.monotonic() < deadline, second_lines
        time.sleep(0.05)
    assert "second" not in results  # still waiting
    FakeTrainer.release.set()
    first.join(60)
    second.join(60)
    assert not isinstance(results["first"], Exception), results["first"]
    assert not isinstance(results["second"], Exception), results["second"]
    assert len(fake_trainer.constructed) == 1  # adapted once; the second training read it
    made, read = results["first"].states[0], results["second"].states[0]
    assert made.keys() == read.keys() and all(torch.equal(made[k], read[k]) for k in made)
    assert not any(line.startswith("adapting ") for line in second_lines)


def test_a_run_records_a_relative_encoder_folder_absolute_and_resumes_from_the_same_place(
    tmp_path, monkeypatch
):
    """``text.encoder=./folder`` is written to the run's config.yaml as the absolute folder, so predict
    from another working directory reads the same weights; --resume with the same relative spelling is
    the same config."""
    from data_factories import write_dialogue_csvs
    from infofusion.config import resolve_config
    from infofusion.training.build import train
    from infofusion.training.runs import RunDir
    from text_fixtures import save_tiny_bert

    monkeypatch.chdir(tmp_path)
    save_tiny_bert(tmp_path / "enc")
    write_dialogue_csvs(tmp_path / "csv", "plain", dialogues={"train": 3, "valid": 1, "test": 1})
    settings = ["data.spec=csv", "data.cache_dir=cache", "text.mode=frozen", "text.encoder=./enc"]
    config = resolve_config("late_fusion", None, [*settings, "train.epochs=1"])
    train(config, tmp_path / "run")
    saved = RunDir(tmp_path / "run").config()
    assert saved["text"]["encoder"] == str(tmp_path / "enc")
    again = resolve_config("late_fusion", None, [*settings, "train.epochs=2"])
    train(again, tmp_path / "run", resume=True)  # the same relative spelling is the same config


def test_predicting_a_data_set_training_read_reuses_its_cached_vectors_and_reads_the_same(
    tmp_path, dialogue_csvs, tiny_encoder, monkeypatch
):
    """``predict RUN --input DATA`` on the very windows training encoded reads them from the cache (no
    transformer pass), and gives the predictions a fresh pass gives."""
    from infofusion.inference import Predictor, load_input
    from infofusion.text import prepare
    from infofusion.training.build import train

    cache = tmp_path / "cache"
    config = config_for(dialogue_csvs, tiny_encoder, cache, "text.mode=frozen", "train.epochs=1")
    train(config, tmp_path / "run")

    def probabilities(predictor: Predictor) -> np.ndarray:
        results = predictor.predict(load_input(str(dialogue_csvs), predictor).dialogues)
        return np.array([list(u.probabilities.values()) for r in results for u in r.utterances])

    calls = []
    real = prepare.encode_windows
    monkeypatch.setattr(prepare, "encode_windows", lambda *a, **k: calls.append(1) or real(*a, **k))
    cached = probabilities(Predictor.from_run(tmp_path / "run"))
    assert calls == []  # every window came from training's cache
    # Without the cache the same windows are encoded again, to the same vectors.
    shutil.rmtree(cache / "text-windows")
    again = probabilities(Predictor.from_run(tmp_path / "run"))
    assert calls and not (cache / "text-windows").exists()  # read, never written at inference
    np.testing.assert_allclose(again, cached, atol=1e-5)


def test_evaluating_one_split_of_the_data_training_read_reuses_its_cached_vectors(
    tmp_path, dialogue_csvs, tiny_encoder, monkeypatch
):
    """``evaluate RUN --split valid`` reads the whole data set, looks its windows up in training's cache
    and scores the split without a transformer pass, to the figures a fresh pass gives."""
    from infofusion.inference.evaluate import evaluate_run
    from infofusion.text import prepare
    from infofusion.training.build import train

    cache = tmp_path / "cache"
    config = config_for(dialogue_csvs, tiny_encoder, cache, "text.mode=frozen", "train.epochs=1")
    train(config, tmp_path / "run")
    calls = []
    real = prepare.encode_windows
    monkeypatch.setattr(prepare, "encode_windows", lambda *a, **k: calls.append(1) or real(*a, **k))
    cached = evaluate_run(tmp_path / "run", split="valid")
    assert calls == []
    shutil.rmtree(cache / "text-windows")
    again = evaluate_run(tmp_path / "run", split="valid")
    assert calls  # without the cache the split is read by the transformer, to the same figures
    assert again["weighted_f1"] == pytest.approx(cached["weighted_f1"], abs=1e-6)
