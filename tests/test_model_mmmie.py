"""MMMIE: Identity Embedding, causal context, the MINE/CLUB terms and their stage, training end to end."""

import json
from importlib import resources

import pytest
import torch
import yaml

from infofusion import mi
from infofusion.config import apply_overrides, load_yaml, resolve_config
from infofusion.data.batching import DialogueLoader
from infofusion.data.synthetic import make_synthetic
from infofusion.models import DataInfo, build_model
from infofusion.training.build import build_trainer
from stage_steps import changed_since, main_parameter_names, snapshot, take_main_step, take_stage_step

SMALL = {"dialogues": {"train": 8, "valid": 4, "test": 4}, "max_utterances": 6}
PAIRS = {"text-audio", "text-visual", "audio-visual"}
MODALITIES = {"text", "audio", "visual"}


def config(*overrides):
    return resolve_config("mmmie", None, ["train.epochs=3", "train.batch_size=2", *overrides])


def first_batch(data, batch_size=4):
    info = DataInfo.from_dataset(data)
    loader = DialogueLoader(
        data.splits["train"], batch_size, info.modalities, info.task, info.speaker_vocabulary
    )
    return next(iter(loader))


def model_and_batch(data_options=None, *overrides, data=None):
    data = data if data is not None else make_synthetic({**SMALL, **(data_options or {})})
    torch.manual_seed(0)
    model = build_model("mmmie", DataInfo.from_dataset(data), config(*overrides))
    return model, first_batch(data)


def predictions(model, batch):
    model.eval()
    with torch.no_grad():
        return model(batch).predictions


# -- shapes in every layout -----------------------------------------------------------------------------
@pytest.mark.parametrize("encoder", ["conv", "transformer"])
@pytest.mark.parametrize(
    "options",
    [
        {"task": "classification", "num_classes": 4},  # utterance vectors
        {"task": "regression"},
        {"task": "classification", "num_classes": 3, "frames": 5, "text_frames": 6},  # frame sequences
    ],
)
def test_per_utterance_outputs_and_finite_gradients(encoder, options):
    model, batch = model_and_batch(options, f"mmmie.encoder={encoder}")
    output = model(batch)
    expected = batch.mask.shape + ((options["num_classes"],) if options["task"] == "classification" else ())
    assert output.predictions.shape == expected  # per-utterance logits: softmax gives confidences
    assert {"fusion", *MODALITIES} <= set(output.representations)
    loss, terms = take_main_step(model, batch)
    assert torch.isfinite(loss) and set(terms) == {"task", "mi", "msi", "msi_estimate"}
    estimator_ids = {id(p) for p in model.estimator_parameters()}
    for name, parameter in model.named_parameters():
        if id(parameter) not in estimator_ids:
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


# -- Identity Embedding ------------------------------------------------------------------------------------
def swapped_speakers(speakers):
    """Speaker 0 becomes 1 and 1 becomes 0 in every dialogue."""
    return torch.where(speakers == 0, 1, torch.where(speakers == 1, 0, speakers))


def test_identity_embedding_follows_dialogue_speakers_only():
    model, batch = model_and_batch()
    reference = predictions(model, batch)
    assert torch.equal(predictions(model, batch), reference)  # deterministic in eval mode
    real = batch.mask
    batch.global_speakers = torch.zeros_like(batch.global_speakers)  # not what dialogue ids read
    assert torch.equal(predictions(model, batch), reference)
    batch.speakers = swapped_speakers(batch.speakers)
    changed = predictions(model, batch)
    assert not torch.allclose(changed[real], reference[real])
    batch.speakers = swapped_speakers(batch.speakers)  # back to the original labelling
    assert torch.equal(predictions(model, batch), reference)


def test_without_identity_speakers_have_no_effect():
    model, batch = model_and_batch(None, "mmmie.identity=false")
    assert model.identity is None
    reference = predictions(model, batch)
    batch.speakers = swapped_speakers(batch.speakers)
    batch.global_speakers = torch.flip(batch.global_speakers, dims=[1])
    assert torch.equal(predictions(model, batch), reference)


def test_global_identity_reads_training_speaker_names_and_unknown_adds_nothing():
    model, batch = model_and_batch(None, "mmmie.speaker_ids=global")
    vocabulary = model.info.speaker_vocabulary
    assert model.identity.num_embeddings == len(vocabulary) + 1
    reference = predictions(model, batch)
    batch.speakers = swapped_speakers(batch.speakers)  # per-dialogue ids are not what global reads
    assert torch.equal(predictions(model, batch), reference)
    real = batch.mask
    known = batch.global_speakers.clone()
    batch.global_speakers = torch.where(real, known % len(vocabulary) + 1, 0)  # another known speaker
    assert not torch.allclose(predictions(model, batch)[real], reference[real])
    # Row 0 (speakers unseen in training) is zero and stays zero through training.
    batch.global_speakers = known
    model.train()
    take_main_step(model, batch)
    assert torch.count_nonzero(model.identity.weight[0]) == 0
    batch.global_speakers = torch.zeros_like(known)
    unknown = predictions(model, batch)
    model.identity = None  # an unknown speaker is the same as no Identity Embedding at all
    assert torch.equal(predictions(model, batch), unknown)


def test_an_utterance_never_sees_later_utterances():
    """Causal conv or attention over utterances, then a uni-directional LSTM: the future has no effect."""
    for encoder in ("conv", "transformer"):
        model, batch = model_and_batch(None, f"mmmie.encoder={encoder}")
        reference = predictions(model, batch)
        last = int(batch.mask[0].sum()) - 1
        for modality in batch.features:
            batch.features[modality][0, last] += 5.0
        batch.speakers[0, last] = 3
        changed = predictions(model, batch)
        assert torch.allclose(changed[0, :last], reference[0, :last], atol=1e-6), encoder
        assert not torch.allclose(changed[0, last], reference[0, last]), encoder


# -- the MI terms and their stage --------------------------------------------------------------------------
def forbid(monkeypatch, cls, methods):
    for method in methods:

        def refuse(*args, _method=method, **kwargs):
            raise AssertionError(f"{cls.__name__}.{_method} called although switched off")

        monkeypatch.setattr(cls, method, refuse)


@pytest.mark.parametrize("mine", [True, False])
@pytest.mark.parametrize("club", [True, False])
def test_mine_and_club_terms_only_when_switched_on(monkeypatch, mine, club):
    if not mine:
        forbid(monkeypatch, mi.MINE, ["estimate", "learning_loss"])
    if not club:
        forbid(monkeypatch, mi.CLUB, ["estimate", "learning_loss"])
    model, batch = model_and_batch(None, f"mmmie.mine={mine}", f"mmmie.club={club}")
    assert set(model.mine) == (PAIRS if mine else set())
    assert set(model.club) == (MODALITIES if club else set())
    assert [s.name for s in model.auxiliary_stages()] == (["estimators"] if mine or club else [])
    if mine or club:
        assert torch.isfinite(take_stage_step(model, batch))
    _, terms = take_main_step(model, batch)
    club_terms = {"msi", "msi_estimate"} if club else set()
    assert set(terms) == {"task"} | ({"mi"} if mine else set()) | club_terms


def test_loss_is_task_plus_weighted_mi_terms():
    model, batch = model_and_batch(None, "mmmie.alpha=0.7", "mmmie.beta=0.05", "model.dropout=0.0")
    loss, terms = model.training_loss(batch)
    expected = terms["task"] + 0.7 * terms["mi"] + 0.05 * terms["msi"]
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    _, outputs = model.encode(batch)
    flat = {m: batch.flat(v) for m, v in outputs.items()}
    assert terms["mi"] == pytest.approx(
        -sum(float(v.detach()) for v in model.mine_estimates(flat).values()), rel=1e-5
    )


def test_mi_terms_reach_the_encoders():
    """L_MI moves every modality's encoder and LSTM; L_MSI too (it is computed on f_m = LSTM outputs)."""
    model, batch = model_and_batch()
    inputs, outputs = model.encode(batch)
    flat_inputs = {m: batch.flat(v) for m, v in inputs.items()}
    flat_outputs = {m: batch.flat(v) for m, v in outputs.items()}
    terms = {
        "mi": -sum(model.mine_estimates(flat_outputs).values()),
        "msi": sum(model.club_estimates(flat_inputs, flat_outputs).values()),
    }
    for name, term in terms.items():
        for modality in MODALITIES:
            weights = [model.encoders[modality].conv.weight, model.context[modality].weight_hh_l0]
            gradients = torch.autograd.grad(term, weights, retain_graph=True)
            assert all(g.abs().sum() > 0 for g in gradients), (name, modality)


def test_each_stage_updates_exactly_its_own_parameters():
    model, batch = model_and_batch()
    assert len(model.auxiliary_stages()) == 1  # one stage trains every estimator network
    estimators = {n for n, _ in model.named_parameters() if n.startswith(("mine.", "club."))}
    main = main_parameter_names(model)
    assert estimators and not estimators & main
    assert estimators | main == {name for name, _ in model.named_parameters()}
    model.train()
    before = snapshot(model)
    take_stage_step(model, batch)
    assert changed_since(model, before) == estimators
    before = snapshot(model)
    take_main_step(model, batch)
    assert changed_since(model, before) == main


def test_one_utterance_batch_trains_the_task_only():
    model, batch = model_and_batch()
    batch.mask[:] = False
    batch.mask[0, 0] = True
    assert float(take_stage_step(model, batch).detach()) == 0.0
    _, terms = take_main_step(model, batch)
    assert set(terms) == {"task"}


@pytest.mark.parametrize("setting", ["mmmie.encoder=gru", "mmmie.speaker_ids=name"])
def test_unknown_options_are_refused(setting):
    with pytest.raises(ValueError, match=setting.split("=")[0]):
        model_and_batch(None, setting)


# -- through the trainer ----------------------------------------------------------------------------------
def history(folder):
    return [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]


def test_trains_at_batch_size_two_and_logs_mi_curves(tmp_path):
    data = make_synthetic({**SMALL, "num_classes": 3})
    metrics = build_trainer(config("train.threads=1"), tmp_path, dataset=data, echo=lambda _: None).fit()
    assert 0.0 <= metrics["valid"]["acc"] <= 1.0 and "test" in metrics
    records = history(tmp_path)
    assert len(records) == 3
    for record in records:
        assert all(torch.isfinite(torch.tensor(v)) for v in record["train"].values()), record["train"]
        assert {"task", "mi", "msi", "stage_estimators"} <= set(record["train"])
        expected = {f"mine/{p}" for p in PAIRS} | {f"club/{m}" for m in MODALITIES}
        assert set(record["diagnostics"]) == expected
        assert all(torch.isfinite(torch.tensor(v)) for v in record["diagnostics"].values())


def test_one_modality_trains_without_mi_but_with_msi_and_identity(tmp_path):
    data = make_synthetic(SMALL).select_modalities(["text"])
    trainer = build_trainer(config("train.threads=1"), tmp_path, dataset=data, echo=lambda _: None)
    assert not trainer.model.mine and trainer.model.identity is not None
    trainer.fit()
    for record in history(tmp_path):
        assert "mi" not in record["train"] and "msi" in record["train"]
        assert set(record["diagnostics"]) == {"club/text"}


def test_monitor_logs_the_curve_of_a_term_that_is_not_optimised(tmp_path, monkeypatch):
    calls = {"training": 0}
    original = mi.MINE.estimate

    def counted(self, x, y):
        calls["training"] += torch.is_grad_enabled()
        return original(self, x, y)

    monkeypatch.setattr(mi.MINE, "estimate", counted)
    overrides = ("train.threads=1", "train.epochs=2", "mmmie.mine=false", "mmmie.monitor=true")
    build_trainer(config(*overrides), tmp_path, dataset=make_synthetic(SMALL), echo=lambda _: None).fit()
    assert calls["training"] == 0  # never part of a loss
    for record in history(tmp_path):
        assert "mi" not in record["train"] and "stage_estimators" in record["train"]
        assert {f"mine/{p}" for p in PAIRS} <= set(record["diagnostics"])


def test_diagnostics_do_not_depend_on_the_evaluation_batch_size():
    data = make_synthetic(SMALL)
    model, _ = model_and_batch(data=data)
    info = model.info
    values = [
        model.epoch_diagnostics(
            DialogueLoader(data.splits["valid"], size, info.modalities, info.task, info.speaker_vocabulary)
        )
        for size in (1, 64)
    ]
    assert values[0].keys() == values[1].keys() and len(values[0]) == 6
    for name in values[0]:
        assert values[0][name] == pytest.approx(values[1][name], rel=1e-4, abs=1e-5)
    assert model.training  # left in the mode it was found in


# -- shipped configs --------------------------------------------------------------------------------------
def packaged(path):
    return yaml.safe_load((resources.files("infofusion") / "configs" / path).read_text())


@pytest.mark.parametrize(
    ("name", "batch_size", "alpha", "beta", "lr"),
    [("mmmie_iemocap.yaml", 2, 0.3, 0.0002, 2e-5), ("mmmie_meld.yaml", 4, 0.2, 0.0006, 4e-5)],
)
def test_paper_configs_hold_table_1(name, batch_size, alpha, beta, lr):
    path = resources.files("infofusion") / "configs" / name
    resolved = resolve_config("mmmie", str(path))
    assert resolved["seed"] == 100 and resolved["train"]["epochs"] == 50
    assert resolved["train"]["batch_size"] == batch_size and resolved["train"]["lr"] == pytest.approx(lr)
    assert (resolved["mmmie"]["alpha"], resolved["mmmie"]["beta"]) == pytest.approx((alpha, beta))
    assert load_yaml(path)  # a plain mapping


@pytest.mark.parametrize("grid", ["ablations/mmmie_table4.yaml", "ablations/mmmie_table5.yaml"])
def test_ablation_grids_only_set_existing_options(grid):
    defaults = resolve_config("mmmie")
    settings = packaged(grid)["settings"]
    assert "full" in settings and settings["full"] == []
    for name, overrides in settings.items():
        changed = apply_overrides(defaults, overrides)
        for override in overrides:
            section, key = override.split("=")[0].split(".")
            assert key in defaults[section], (name, override)
        resolve_config("mmmie", None, overrides)  # modality lists are valid
        assert changed is not None


@pytest.mark.parametrize("model_name", ["mmmie", "mmim"])
def test_main_step_reuses_the_stage_forward_pass_with_the_same_result(model_name):
    """The estimator stage changes estimator parameters only, so the main loss may reuse its encoder pass:
    one encode per training step, and the same loss and encoder gradients as a fresh pass (no dropout)."""
    data = make_synthetic(SMALL)
    torch.manual_seed(0)
    settings = resolve_config(model_name, None, ["model.dropout=0.0", "train.batch_size=4"])
    model = build_model(model_name, DataInfo.from_dataset(data), settings)
    batch = first_batch(data)
    model.train()
    calls = []
    real_encode = model.encode

    def counted_encode(b):
        calls.append(b)
        return real_encode(b)

    model.encode = counted_encode
    take_stage_step(model, batch)
    model.zero_grad(set_to_none=True)
    shared_loss, _ = model.training_loss(batch)
    shared_loss.backward()
    shared_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert len(calls) == 1  # the stage's pass, reused by the main loss

    model.zero_grad(set_to_none=True)
    model.eval()
    model.train()  # MMIM: back to training empties the entropy memory the first loss filled
    fresh_loss, _ = model.training_loss(batch)  # nothing kept any more: encodes again
    fresh_loss.backward()
    assert len(calls) == 2
    assert float(shared_loss) == pytest.approx(float(fresh_loss), abs=1e-5)
    for name, grad in shared_grads.items():
        assert torch.allclose(grad, model.get_parameter(name).grad, atol=1e-5), name


def test_mine_critic_option():
    from infofusion.mi.networks import ConcatCritic, SeparableCritic

    model, _ = model_and_batch()
    assert all(isinstance(e.critic, ConcatCritic) for e in model.mine.values())  # MINE's network
    model, batch = model_and_batch(None, "mmmie.mine_critic=separable")
    assert set(model.mine) == PAIRS
    assert all(isinstance(e.critic, SeparableCritic) for e in model.mine.values())
    loss, terms = model.training_loss(batch)
    assert torch.isfinite(loss) and "mi" in terms
