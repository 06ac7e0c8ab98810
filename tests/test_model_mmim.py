"""MMIM: every data layout, the two-stage step, the ablation switches and the reference-code bugs fixed."""

import math

import numpy as np
import pytest
import torch

from data_factories import write_mmsa_pickle
from infofusion import mi
from infofusion.config import resolve_config
from infofusion.data import load_dataset
from infofusion.data.batching import DialogueLoader, as_utterance_dialogues
from infofusion.data.synthetic import make_synthetic
from infofusion.models import DataInfo, build_model
from stage_steps import (
    changed_since,
    main_optimizer,
    main_parameter_names,
    snapshot,
    take_main_step,
    take_stage_step,
)

SMALL = {"dialogues": {"train": 6, "valid": 3, "test": 3}, "max_utterances": 6}
TOKEN_LENGTH = 8


def config(*overrides):
    return resolve_config("mmim", None, ["train.epochs=3", "train.batch_size=16", *overrides])


def first_batch(data, batch_size=16):
    info = DataInfo.from_dataset(data)
    loader = DialogueLoader(
        as_utterance_dialogues(data.splits["train"]),
        batch_size,
        info.modalities,
        info.task,
        info.speaker_vocabulary,
    )
    return next(iter(loader))


def model_and_batch(data_options=None, *overrides, data=None):
    data = data if data is not None else make_synthetic({**SMALL, **(data_options or {})})
    torch.manual_seed(0)
    model = build_model("mmim", DataInfo.from_dataset(data), config(*overrides))
    return model, first_batch(data)


# -- a tiny BERT, so the transformer path is tested without the real MiniLM --------------------------
@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    # The uncased BERT vocabulary size, as MMSA token ids require; everything else is tiny.
    bert_config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(bert_config).save_pretrained(folder)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie", "not", "the", "very"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


def with_tokens(data, seed=0):
    """MMSA layout: input ids starting with [CLS] (101), attention mask, segment ids."""
    rng = np.random.default_rng(seed)
    for dialogues in data.splits.values():
        for dialogue in dialogues:
            for utterance in dialogue.utterances:
                length = int(rng.integers(3, TOKEN_LENGTH + 1))
                ids = np.zeros(TOKEN_LENGTH, dtype=np.int64)
                ids[:length] = rng.integers(1000, 3000, size=length)
                ids[0], ids[length - 1] = 101, 102
                mask = (np.arange(TOKEN_LENGTH) < length).astype(np.int64)
                utterance.tokens = np.stack([ids, mask, np.zeros_like(ids)])
    return data


def with_texts(data, seed=0):
    rng = np.random.default_rng(seed)
    words = ["good", "bad", "movie", "not", "the", "very", "unseen"]
    for dialogues in data.splits.values():
        for dialogue in dialogues:
            for utterance in dialogue.utterances:
                utterance.text = " ".join(rng.choice(words, size=int(rng.integers(1, 6))))
    return data


# -- forward and backward in every layout --------------------------------------------------------------
@pytest.mark.parametrize(
    "options",
    [
        {"task": "regression"},  # utterance vectors (the bc-LSTM MOSI layout)
        {"task": "classification", "num_classes": 2},
        {"task": "classification", "num_classes": 4},
        {"task": "regression", "frames": 5, "text_frames": 6},  # frame sequences for every modality
    ],
)
def test_forward_backward_on_vectors_and_frames(options):
    model, batch = model_and_batch(options)
    assert model.text_transformer is None  # no token ids: the text vector is projected
    output = model(batch)
    expected = batch.mask.shape + ((options["num_classes"],) if options["task"] == "classification" else ())
    assert output.predictions.shape == expected
    assert output.representations["audio"].shape[-1] == model.params.modality_dim
    take_stage_step(model, batch)
    loss, terms = take_main_step(model, batch)
    assert torch.isfinite(loss) and set(terms) == {"task", "cpc", "likelihood", "entropy"}
    for name, parameter in model.named_parameters():
        if not name.startswith("mmilb."):
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_tokens_drive_a_fine_tuned_transformer_with_its_own_learning_rate(tiny_bert):
    data = with_tokens(make_synthetic({**SMALL, "task": "regression"}))
    model, batch = model_and_batch(None, f"mmim.text_model={tiny_bert}", data=data)
    assert model.text_transformer is not None  # auto picks the transformer when tokens are present
    assert batch.tokens.shape[-2:] == (3, TOKEN_LENGTH)
    assert model(batch).representations["text"].shape[-1] == 32
    groups = model.parameter_groups(model.config["train"])
    text_ids = {id(p) for p in model.text_transformer.parameters()}
    assert [g["lr"] for g in groups] == [1e-3, 5e-5]
    assert {id(p) for p in groups[1]["params"]} == text_ids
    before = snapshot(model)
    take_stage_step(model, batch)
    assert not any(name.startswith("text_transformer") for name in changed_since(model, before))
    take_main_step(model, batch)
    embeddings = model.text_transformer.model.embeddings.word_embeddings.weight
    assert not torch.equal(embeddings, before["text_transformer.model.embeddings.word_embeddings.weight"])


def test_transcripts_are_tokenised_on_the_fly(tiny_bert):
    data = with_texts(make_synthetic({**SMALL, "task": "regression"}))
    model, batch = model_and_batch(
        None, f"mmim.text_model={tiny_bert}", "mmim.text_encoder=transformer", data=data
    )
    loss, terms = take_main_step(model, batch)
    assert torch.isfinite(loss) and "cpc" in terms
    # Different sentences give different text vectors: the tokenizer really reads the transcripts.
    text = model(batch).representations["text"].reshape(-1, 32)
    assert not torch.allclose(text[0], text[1])


def test_transformer_without_tokens_or_transcripts_is_an_error(tiny_bert):
    model, batch = model_and_batch(
        {"task": "regression"}, f"mmim.text_model={tiny_bert}", "mmim.text_encoder=transformer"
    )
    with pytest.raises(ValueError, match="transcripts"):
        model(batch)


def test_token_ids_from_another_vocabulary_are_refused(tmp_path):
    from transformers import BertConfig, BertModel

    small = BertConfig(
        vocab_size=100, hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8
    )
    BertModel(small).save_pretrained(tmp_path)
    data = with_tokens(make_synthetic({**SMALL, "task": "regression"}))
    with pytest.raises(ValueError, match="vocabulary"):
        model_and_batch(None, f"mmim.text_model={tmp_path}", data=data)


# -- the two-stage step --------------------------------------------------------------------------------
def test_each_stage_updates_exactly_its_own_parameters():
    model, batch = model_and_batch({"task": "regression"})
    mmilb = {name for name, _ in model.named_parameters() if name.startswith("mmilb.")}
    main = main_parameter_names(model)
    assert mmilb and not mmilb & main and mmilb | main == {name for name, _ in model.named_parameters()}

    before = snapshot(model)
    take_stage_step(model, batch)
    assert changed_since(model, before) == mmilb

    before = snapshot(model)
    take_main_step(model, batch)
    assert changed_since(model, before) == main


def test_entropy_projection_is_trained_in_stage_two():
    """Reference bug: the projection into the entropy space sits in no optimiser that updates it."""
    model, batch = model_and_batch({"task": "regression"}, "mmim.entropy_projection=true")
    projection = {n for n, _ in model.named_parameters() if n.startswith("entropy_projection.")}
    assert projection
    assert projection <= main_parameter_names(model)
    optimizer = main_optimizer(model)
    take_main_step(model, batch, optimizer)  # fills the memory
    before = snapshot(model)
    take_main_step(model, batch, optimizer)
    assert projection <= changed_since(model, before)


def test_likelihood_is_the_full_gaussian_so_the_variance_stays_bounded():
    """Reference bug: without the log-variance term, maximising the likelihood inflates the variance."""
    data = make_synthetic({**SMALL, "task": "regression", "dialogues": {"train": 12, "valid": 2, "test": 2}})
    model, _ = model_and_batch(data=data)
    model.eval()
    batch = first_batch(data, 64)
    encoded = {m: batch.flat(v).detach() for m, v in model.encode(batch).items()}
    decoder = model.mmilb["audio"]
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    for _ in range(300):
        optimizer.zero_grad()
        decoder.learning_loss(encoded["text"], encoded["audio"]).backward()
        optimizer.step()
    mean, log_variance = decoder.decoder(encoded["text"])
    # At a maximum of the full likelihood d/d(log σ²) = ½(r²/σ² - 1) = 0: the variance matches the
    # squared residuals. The reference's likelihood (no log σ² term) drives r²/σ² to 0 instead.
    standardised = ((encoded["audio"] - mean) ** 2 * torch.exp(-log_variance)).mean().item()
    assert 0.5 < standardised < 2.0
    # On average no wider than the marginal spread of y (what a decoder that ignores x would fit).
    assert torch.exp(log_variance).mean() < 2.0 * encoded["audio"].var(dim=0).mean()
    wide = mi.numerics.gaussian_log_density(encoded["audio"], mean, log_variance + 5.0).mean()
    assert wide < decoder.log_likelihood(encoded["text"], encoded["audio"]).mean()


def test_mmilb_is_finite_with_two_samples_one_per_sign():
    """Reference bug: logdet of a covariance from one sample per sentiment sign is NaN / -inf."""
    model, batch = model_and_batch({"task": "regression"})
    keep = batch.mask.clone()
    keep[2:] = False
    batch.mask = keep
    batch.labels[:2, 0] = torch.tensor([1.5, -0.5])
    optimizer = main_optimizer(model)
    for _ in range(3):  # first step with an empty memory, then with one remembered sample per sign
        assert torch.isfinite(take_stage_step(model, batch))
        loss, terms = take_main_step(model, batch, optimizer)
        assert torch.isfinite(loss) and all(math.isfinite(v) for v in terms.values()), terms
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_a_one_utterance_batch_trains_the_task_only():
    model, batch = model_and_batch({"task": "regression"})
    batch.mask[1:] = False
    assert torch.isfinite(take_stage_step(model, batch))
    _, terms = take_main_step(model, batch)
    assert set(terms) == {"task"}


# -- ablation switches ---------------------------------------------------------------------------------
def forbid(monkeypatch, cls, method):
    def refuse(*args, **kwargs):
        raise AssertionError(f"{cls.__name__}.{method} called although switched off")

    monkeypatch.setattr(cls, method, refuse)


@pytest.mark.parametrize(
    ("switch", "expected_terms", "forbidden"),
    [
        ("mmim.cpc=false", {"task", "likelihood", "entropy"}, [(mi.CPC, "estimate"), (mi.CPC, "forward")]),
        (
            "mmim.mmilb=false",
            {"task", "cpc"},
            [(mi.BarberAgakov, "log_likelihood"), (mi.BarberAgakov, "learning_loss")],
        ),
        ("mmim.entropy=false", {"task", "cpc", "likelihood"}, [(mi.GaussianMemoryEntropy, "entropy")]),
    ],
)
def test_ablation_switches_remove_their_terms(monkeypatch, switch, expected_terms, forbidden):
    for cls, method in forbidden:
        forbid(monkeypatch, cls, method)
    model, batch = model_and_batch({"task": "regression"}, switch)
    for stage in model.auxiliary_stages():
        stage.loss(batch).backward()
    _, terms = take_main_step(model, batch)
    assert set(terms) == expected_terms
    assert bool(model.auxiliary_stages()) == (switch != "mmim.mmilb=false")


# -- through the trainer: selection on valid, seeding, loader cleaning --------------------------------
def trainer_for(tmp_path, data, *overrides):
    from infofusion.trainer import Trainer

    return Trainer(config("train.threads=1", *overrides), tmp_path, dataset=data)


def test_same_seed_gives_identical_metrics(tmp_path):
    data = make_synthetic({**SMALL, "task": "regression"})
    first = trainer_for(tmp_path / "a", data).fit()
    second = trainer_for(tmp_path / "b", data).fit()
    assert first == second
    third = trainer_for(tmp_path / "c", data, "seed=7").fit()
    assert third["valid"] != first["valid"]


def test_scrambled_test_labels_do_not_change_the_chosen_epoch(tmp_path):
    """Reference bug: the best epoch was chosen by test loss. Ours selects on valid only."""
    clean = trainer_for(tmp_path / "a", make_synthetic({**SMALL, "task": "regression"})).fit()
    scrambled = make_synthetic({**SMALL, "task": "regression"})
    for dialogue in scrambled.splits["test"]:
        for utterance in dialogue.utterances:
            utterance.label = -3.0 * utterance.label
    other = trainer_for(tmp_path / "b", scrambled).fit()
    assert other["best_epoch"] == clean["best_epoch"] and other["valid"] == clean["valid"]
    assert other["test"] != clean["test"]


def test_audio_neg_inf_is_cleaned_before_the_model(tmp_path):
    """Reference bug: -inf audio values reach the model. The loader cleans them; training stays finite."""
    path = write_mmsa_pickle(tmp_path / "mmsa.pkl", with_neg_inf=True)
    with pytest.warns(UserWarning, match="-inf"):
        data = load_dataset(str(path), config()["data"])
    audio = [u.features["audio"] for ds in data.splits.values() for d in ds for u in d.utterances]
    assert all(np.isfinite(a).all() for a in audio)
    metrics = trainer_for(tmp_path / "run", data, "train.epochs=1").fit()
    assert math.isfinite(metrics["valid"]["mae"])
