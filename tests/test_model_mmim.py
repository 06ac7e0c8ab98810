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
from infofusion.text import prepare_text, text_settings
from stage_steps import (
    changed_since,
    main_optimizer,
    main_parameter_names,
    snapshot,
    take_main_step,
    take_stage_step,
)
from text_fixtures import TINY_HIDDEN, tiny_bert

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


# -- the text front end, with a tiny random BERT (never a download) ----------------------------------
def front_end_model_and_batch(data, encoder, *overrides):
    """MMIM reading text through the shared front end (text.mode=finetune), and a prepared batch."""
    settings = config("text.mode=finetune", f"text.encoder={encoder}", *overrides)
    assert prepare_text(data, text_settings(settings))  # the windows stay for the model's front end
    torch.manual_seed(0)
    model = build_model("mmim", DataInfo.from_dataset(data), settings)
    return model, model.prepare_batch(first_batch(data))


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
    assert model.text_front_end is None and "text" in model.anchor_encoder  # sentence vectors: projected
    output = model(batch)
    expected = batch.mask.shape + ((options["num_classes"],) if options["task"] == "classification" else ())
    assert output.predictions.shape == expected
    assert output.representations["audio"].shape[-1] == model.params.modality_dim
    take_stage_step(model, batch)
    optimizer = main_optimizer(model)
    take_main_step(model, batch, optimizer)  # fills the entropy memory
    loss, terms = take_main_step(model, batch, optimizer)
    assert torch.isfinite(loss) and set(terms) == {"task", "cpc", "likelihood", "entropy"}
    for name, parameter in model.named_parameters():
        if not name.startswith("mmilb."):
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_token_ids_drive_the_fine_tuned_front_end_whose_vector_is_the_text_vector(tiny_encoder):
    data = with_tokens(make_synthetic({**SMALL, "task": "regression"}))  # MMSA ids, no transcripts
    model, batch = front_end_model_and_batch(data, tiny_encoder)
    assert model.text_from_front_end and "text" not in model.anchor_encoder
    # the front end's pooled vector itself, no projection (the authors use BERT's vector so)
    output = model(batch)
    assert output.representations["text"].shape[-1] == TINY_HIDDEN
    assert torch.equal(output.representations["text"], batch.features["text"])
    assert batch.features["text"][batch.mask].abs().sum() > 0
    # the pretrained weights are not re-initialised with the rest (Xavier)
    pretrained = tiny_bert().state_dict()
    for name, value in model.text_front_end.transformer.state_dict().items():
        assert torch.equal(value, pretrained[name]), name
    groups = model.parameter_groups(model.config["train"])
    front_end = {id(p) for p in model.text_front_end.parameters() if p.requires_grad}
    assert groups[0]["lr"] == 1e-3 and not {id(p) for p in groups[0]["params"]} & front_end
    assert {id(p) for g in groups[1:] for p in g["params"]} == front_end
    assert max(g["lr"] for g in groups[1:]) == pytest.approx(model.config["text"]["lr"])
    before = snapshot(model)
    take_stage_step(model, batch)
    assert not any(name.startswith("text_front_end") for name in changed_since(model, before))
    take_main_step(model, batch)
    assert any(name.startswith("text_front_end") for name in changed_since(model, before))


def test_transcripts_are_read_by_the_front_end(tiny_encoder):
    data = with_texts(make_synthetic({**SMALL, "task": "regression"}))
    model, batch = front_end_model_and_batch(data, tiny_encoder)
    loss, terms = take_main_step(model, batch)
    assert torch.isfinite(loss) and "cpc" in terms
    # Different sentences give different text vectors: the tokenizer really reads the transcripts.
    text = model(batch).representations["text"].reshape(-1, TINY_HIDDEN)
    assert not torch.allclose(text[0], text[1])


def test_without_tokens_or_transcripts_the_text_features_are_projected(tiny_encoder, tmp_path):
    """Feature-only data keeps its text features under text.mode=frozen (prepare_text): MMIM projects
    them as in sentence mode, frames included, and reads a frozen front end's vectors as they are."""
    data = make_synthetic({**SMALL, "task": "regression", "frames": 5, "text_frames": 6})
    settings = config("text.mode=frozen", f"text.encoder={tiny_encoder}")
    assert not prepare_text(data, text_settings(settings))
    model = build_model("mmim", DataInfo.from_dataset(data), settings)
    assert not model.text_from_front_end and "text" in model.anchor_encoder
    assert torch.isfinite(take_main_step(model, first_batch(data))[0])
    frozen = with_texts(make_synthetic({**SMALL, "task": "regression"}))
    assert not prepare_text(frozen, text_settings(settings), cache_dir=tmp_path)  # vectors computed once
    model = build_model("mmim", DataInfo.from_dataset(frozen), settings)
    assert model.text_front_end is None and model.text_from_front_end
    assert model.dims["text"] == TINY_HIDDEN


def test_the_per_epoch_diagnostics_read_the_front_ends_text(tiny_encoder, monkeypatch):
    data = with_tokens(make_synthetic({**SMALL, "task": "regression"}))
    model, _ = front_end_model_and_batch(data, tiny_encoder)
    info = DataInfo.from_dataset(data)
    loader = DialogueLoader(
        as_utterance_dialogues(data.splits["valid"]), 8, info.modalities, info.task, info.speaker_vocabulary
    )
    prepared = []
    original = model.prepare_batch
    monkeypatch.setattr(model, "prepare_batch", lambda batch: prepared.append(1) or original(batch))
    diagnostics = model.epoch_diagnostics(loader)
    assert len(prepared) == len(loader) and diagnostics
    assert all(math.isfinite(v) for v in diagnostics.values())


# -- versus the authors' code --------------------------------------------------------------------------
def test_cpc_contrasts_each_modality_vector_against_every_fusion_prediction():
    model, batch = model_and_batch({"task": "regression"})
    flat = {name: batch.flat(value) for name, value in model(batch).representations.items()}
    for modality, estimator in model.cpc.items():
        scores = estimator.scores(flat["fusion"], flat[modality])  # [i, j]: prediction i, vector j
        authors = (scores.diagonal() - torch.logsumexp(scores, dim=0)).mean() + math.log(len(scores))
        assert torch.allclose(model.cpc_bound(modality, flat), authors)
        rows = (scores.diagonal() - torch.logsumexp(scores, dim=1)).mean() + math.log(len(scores))
        assert not torch.allclose(authors, rows)


def test_audio_and_visual_lstms_end_in_an_undropped_linear_layer():
    model, batch = model_and_batch({"task": "regression", "frames": 5, "text_frames": 6})
    assert set(model.lstm_outputs) == {"audio", "visual"}
    for modality, layer in model.lstm_outputs.items():
        assert (layer.in_features, layer.out_features) == (16, 16)
        assert model.encoders[modality].encoder.dropout.p == 0.0
    model.train()
    first, second = model.encode(batch), model.encode(batch)  # no dropout: training passes agree
    assert torch.equal(first["audio"], second["audio"]) and torch.equal(first["visual"], second["visual"])


@pytest.mark.parametrize("memory_size", [1, 2])
def test_the_entropy_term_starts_once_the_memory_is_full(memory_size):
    model, batch = model_and_batch({"task": "regression"}, f"mmim.memory_size={memory_size}")
    optimizer = main_optimizer(model)
    logged = [set(take_main_step(model, batch, optimizer)[1]) for _ in range(memory_size + 1)]
    assert all("entropy" not in terms for terms in logged[:memory_size])
    assert "entropy" in logged[memory_size]
    model.eval()
    model.train()  # a new epoch empties the memory: no entropy term again until it is full
    assert "entropy" not in take_main_step(model, batch, optimizer)[1]


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
    optimizer = main_optimizer(model)
    take_main_step(model, batch, optimizer)  # fills the entropy memory
    _, terms = take_main_step(model, batch, optimizer)
    assert set(terms) == expected_terms
    assert bool(model.auxiliary_stages()) == (switch != "mmim.mmilb=false")


# -- through the trainer: selection on valid, seeding, loader cleaning --------------------------------
def trainer_for(tmp_path, data, *overrides):
    from infofusion.training.build import build_trainer

    return build_trainer(config("train.threads=1", *overrides), tmp_path, dataset=data)


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
