"""MInD: the term switches, the gradient-reversal paths, disentanglement on known factors, tiny batches,
the MMSA regression layout and the t-SNE picture."""

import json
import math

import matplotlib.image
import numpy as np
import pytest
import torch

from data_factories import write_mmsa_pickle
from infofusion.config import resolve_config
from infofusion.data import load_dataset
from infofusion.data.batching import DialogueLoader, as_utterance_dialogues
from infofusion.data.synthetic import make_synthetic
from infofusion.models import DataInfo, build_model
from infofusion.models import mind as mind_module
from infofusion.training.build import build_trainer, trainer_for_config
from infofusion.workflow.plots import collect_component_codes, plot_codes, write_codes_figure

SMALL = {"dialogues": {"train": 8, "valid": 4, "test": 4}, "max_utterances": 6}
TINY_NETWORKS = ["model.hidden=16", "mind.critic_hidden=16", "mind.fusion_dim=16"]
TERM_SWITCHES = ("info", "cons", "diff", "recon", "cyr", "np")
# The method computing each term, and the MI-library function it must call.
TERM_METHODS = {
    "info": "info_loss",
    "cons": "consistency_loss",
    "diff": "difference_loss",
    "recon": "reconstruction_loss",
    "cyr": "cyclic_loss",
    "np": "noise_prediction_loss",
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def config(*overrides):
    return resolve_config("mind", None, ["train.epochs=2", "train.batch_size=16", *TINY_NETWORKS, *overrides])


def loader_for(data, split="train", batch_size=16):
    info = DataInfo.from_dataset(data)
    dialogues = as_utterance_dialogues(data.splits[split])
    return DialogueLoader(dialogues, batch_size, info.modalities, info.task, info.speaker_vocabulary)


def model_and_batch(*overrides, data=None, batch_size=16):
    data = data if data is not None else make_synthetic(SMALL)
    torch.manual_seed(0)
    model = build_model("mind", DataInfo.from_dataset(data), config(*overrides))
    return model, next(iter(loader_for(data, batch_size=batch_size)))


def test_all_terms_logged_and_representations_exposed():
    model, batch = model_and_batch()
    loss, logged = model.training_loss(batch)
    assert set(logged) == {"task", *TERM_SWITCHES}
    assert all(math.isfinite(v) for v in logged.values()) and torch.isfinite(loss)
    output = model(batch)
    for kind in ("S", "P", "N"):
        for modality in ("text", "audio", "visual"):
            assert output.representations[f"{kind}/{modality}"].shape == (*batch.mask.shape, 16)
    assert output.predictions.shape == (*batch.mask.shape, model.info.num_classes)


@pytest.mark.parametrize("term", TERM_SWITCHES)
def test_switched_off_term_is_neither_computed_nor_logged(term, monkeypatch):
    model, batch = model_and_batch(f"mind.{term}=false")

    def must_not_run(*args, **kwargs):
        raise AssertionError(f"{term} computed although switched off")

    monkeypatch.setattr(model, TERM_METHODS[term], must_not_run)
    _, logged = model.training_loss(batch)
    assert term not in logged
    assert set(logged) == {"task", *TERM_SWITCHES} - {term}


@pytest.mark.parametrize(
    ("term", "library_function"),
    [("cons", "barlow_twins_loss"), ("diff", "hsic"), ("cyr", "grad_reverse"), ("info", "build_estimator")],
)
def test_switched_off_term_never_reaches_the_mi_library(term, library_function, monkeypatch):
    calls = []
    original = getattr(mind_module, library_function)

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(mind_module, library_function, counting)
    model, batch = model_and_batch()
    model.training_loss(batch)
    assert calls, f"{library_function} unused with {term} on"
    # With np also off, the noise head's GRL cannot call grad_reverse either.
    off = [f"mind.{term}=false"] + (["mind.np=false"] if library_function == "grad_reverse" else [])
    calls.clear()
    model, batch = model_and_batch(*off)
    model.training_loss(batch)
    assert not calls


def test_switched_off_terms_build_no_networks():
    model, _ = model_and_batch("mind.info=false", "mind.recon=false", "mind.cyr=false", "mind.np=false")
    assert len(model.critics) == 0 and len(model.reconstructors) == 0 and len(model.cyclic_decoders) == 0
    assert model.noise_head is None


def test_without_noise_there_is_no_n_and_no_noise_term():
    model, batch = model_and_batch("mind.noise=false")
    output = model(batch)
    assert not any(name.startswith(("N/", "G/")) for name in output.representations)
    _, logged = model.training_loss(batch)
    assert set(logged) == {"task", "info", "cons", "diff", "recon"}
    assert all(not a.startswith("N/") and not b.startswith("N/") for a, b in model.difference_pairs())


@pytest.mark.parametrize(("kinds", "width"), [("[S, P]", 6), ("[P]", 3), ("[S]", 3), ("[Z]", 3)])
def test_predict_from_sets_the_head_input(kinds, width):
    model, batch = model_and_batch(f"mind.predict_from={kinds}")
    assert model.head[0].in_features == width * 16
    assert model(batch).predictions.shape == (*batch.mask.shape, model.info.num_classes)


def noise_path_gradients(grl_scale: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Gradients of L_NP alone for the private encoders and the noise head; eval mode fixes the noise."""
    model, batch = model_and_batch(f"mind.grl_scale={grl_scale}")
    model.eval()
    codes = {name: batch.flat(value) for name, value in model(batch).representations.items()}
    loss = model.noise_prediction_loss(codes, batch.flat(batch.labels))
    loss.backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return gradients, loss.detach()


def test_noise_prediction_gradient_is_reversed_for_the_encoders_only():
    reversed_gradients, reversed_loss = noise_path_gradients(1.0)
    plain_gradients, plain_loss = noise_path_gradients(-1.0)  # scale -1: the GRL lets gradients through
    assert torch.equal(reversed_loss, plain_loss)  # the GRL is the identity forward
    private = [n for n in reversed_gradients if n.startswith("private.")]
    head = [n for n in reversed_gradients if n.startswith("noise_head.")]
    assert private and head
    # Nothing else gets a gradient from L_NP: N depends on the private encoders and the noise only.
    assert set(reversed_gradients) == set(private) | set(head)
    for name in private:
        assert reversed_gradients[name].abs().sum() > 0
        torch.testing.assert_close(reversed_gradients[name], -plain_gradients[name])
    for name in head:
        torch.testing.assert_close(reversed_gradients[name], plain_gradients[name])


def test_cyclic_reconstruction_reverses_the_encoder_gradient():
    """L_CyR: decoders learn to reconstruct, encoders get the reversed gradient (targets are detached)."""
    gradients = {}
    for scale in (1.0, -1.0):
        model, batch = model_and_batch(f"mind.grl_scale={scale}")
        model.eval()
        codes = {name: batch.flat(value) for name, value in model(batch).representations.items()}
        model.cyclic_loss(codes).backward()
        gradients[scale] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert any(n.startswith("shared.") for n in gradients[1.0])
    for name, gradient in gradients[1.0].items():
        if name.startswith("cyclic_decoders."):
            torch.testing.assert_close(gradient, gradients[-1.0][name])
        else:
            torch.testing.assert_close(gradient, -gradients[-1.0][name])


def test_difference_term_lowers_hsic_of_shared_and_private(tmp_path):
    """Synthetic data with known shared and private latents: training with L_Diff makes S and P of each
    modality less dependent than at the start, and than training without L_Diff."""
    data = make_synthetic({"dialogues": {"train": 20, "valid": 8, "test": 4}, "seed": 3})
    # A strong weight, so the test checks what the term does rather than the paper's balance of terms.
    overrides = ["train.epochs=8", "train.patience=100", "mind.gamma=10"]
    results = {}
    for name, extra in (("with", []), ("without", ["mind.diff=false"])):
        trainer = build_trainer(
            config(*overrides, *extra), tmp_path / name, dataset=data, echo=lambda _: None
        )
        before = trainer.model.epoch_diagnostics(trainer.loader("valid"))["hsic_S_P"]
        trainer.fit()
        last = (tmp_path / name / "history.jsonl").read_text().splitlines()[-1]
        results[name] = (before, json.loads(last)["diagnostics"]["hsic_S_P"])
    before, after = results["with"]
    assert after < 0.5 * before
    assert after < results["without"][1]


def test_batches_of_two_and_one_stay_finite(tmp_path):
    data = make_synthetic({"dialogues": {"train": 3, "valid": 2, "test": 2}, "max_utterances": 5})
    trainer = build_trainer(config("train.batch_size=2"), tmp_path, dataset=data, echo=lambda _: None)
    metrics = trainer.fit()  # raises on a non-finite loss
    assert math.isfinite(metrics["valid"]["acc"])
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    model, batch = model_and_batch(data=data, batch_size=1)
    loss, logged = model.training_loss(batch)
    assert torch.isfinite(loss) and logged["info"] == logged["cons"] == logged["diff"] == 0.0


def test_synthetic_regression_with_frame_sequences(tmp_path):
    data = make_synthetic({**SMALL, "task": "regression", "frames": 5, "text_frames": 6})
    trainer = build_trainer(config(), tmp_path, dataset=data, echo=lambda _: None)
    assert all(encoder.sequence for encoder in trainer.model.encoders.values())
    batch = next(iter(trainer.loader("train")))
    assert trainer.model(batch).predictions.shape == batch.mask.shape
    _, logged = trainer.model.training_loss(batch)
    assert set(logged) == {"task", *TERM_SWITCHES}
    metrics = trainer.fit()
    assert math.isfinite(metrics["valid"]["mae"]) and math.isfinite(metrics["test"]["mae"])


def test_mmsa_pickle_layout(tmp_path):
    path = write_mmsa_pickle(tmp_path / "mmsa.pkl")
    data = load_dataset(str(path), config()["data"])
    metrics = build_trainer(
        config("train.epochs=1"), tmp_path / "run", dataset=data, echo=lambda _: None
    ).fit()
    assert math.isfinite(metrics["valid"][next(iter(metrics["valid"]))])


def test_eval_noise_is_fixed_and_leaves_the_global_random_stream_alone():
    model, batch = model_and_batch()
    model.eval()
    torch.manual_seed(7)
    first = model(batch).representations["N/text"]
    after_first = torch.rand(1)
    torch.manual_seed(7)
    model.eval()  # a new evaluation pass
    second = model(batch).representations["N/text"]
    assert torch.equal(first, second) and torch.equal(after_first, torch.rand(1))


def test_eval_noise_differs_across_the_batches_of_a_pass_and_repeats_per_pass():
    """Review finding: a new generator per call gave every batch the same noise codes."""
    data = make_synthetic(SMALL)
    model, _ = model_and_batch(data=data)
    loader = loader_for(data, "valid", batch_size=4)
    assert len(loader) > 2
    codes, _ = model.collect_codes(loader)
    noise = codes["G/text"]
    assert len(torch.unique(noise, dim=0)) == len(noise)  # one draw per utterance of the pass
    again, _ = model.collect_codes(loader)
    assert torch.equal(again["G/text"], noise)


def test_collect_codes_prepares_every_batch(monkeypatch):
    """The text front end's vectors reach the diagnostics as they reach training (prepare_batch)."""
    data = make_synthetic(SMALL)
    model, _ = model_and_batch(data=data)
    loader = loader_for(data, "valid", batch_size=4)
    prepared = []
    original = model.prepare_batch
    monkeypatch.setattr(model, "prepare_batch", lambda batch: prepared.append(1) or original(batch))
    assert model.epoch_diagnostics(loader)
    assert len(prepared) == len(loader)


def test_barlow_twins_weights_are_the_authors_consistent_pair():
    """λ_BT = 1/dim with β = 1e-4 (the authors' script); λ_BT = dim with that β is d² times stronger."""
    model, batch = model_and_batch()
    assert model.bt_lambda == pytest.approx(1 / model.params.hidden) and model.weights["cons"] == 1e-4
    paper, _ = model_and_batch("mind.bt_lambda=dim")
    assert paper.bt_lambda is None  # the library's default: the width


def assert_real_png(path):
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200


def test_tsne_png_from_a_model(tmp_path):
    data = make_synthetic(SMALL)
    model = build_model("mind", DataInfo.from_dataset(data), config())
    representations, labels = collect_component_codes(model, loader_for(data, "valid"))
    assert set(representations) == {f"{k}/{m}" for k in "SPN" for m in ("text", "audio", "visual")}
    assert len(labels) == len(representations["S/text"])
    assert_real_png(write_codes_figure(representations, labels, tmp_path / "tsne.png"))


def test_plot_tsne_from_a_run_folder(tmp_path):
    run_config = config("train.epochs=1", "data.dialogues={train: 6, valid: 3, test: 3}")
    trainer_for_config(run_config, tmp_path / "run", echo=lambda _: None).fit()
    written = plot_codes(tmp_path / "run", None, "test", tmp_path / "figure" / "tsne.png")
    assert written == tmp_path / "figure" / "tsne.png"
    assert_real_png(written)


def test_tsne_needs_s_p_or_n_codes(tmp_path):
    with pytest.raises(ValueError, match="no S/, P/ or N/"):
        write_codes_figure({"Z/text": np.zeros((4, 2))}, None, tmp_path / "unused.png")
    assert not (tmp_path / "unused.png").exists()


def test_separable_critics_option_builds_them_and_trains():
    from infofusion.mi.networks import ConcatCritic, SeparableCritic

    concat, _ = model_and_batch()
    assert all(isinstance(c.critic, ConcatCritic) for c in concat.critics.values())  # the default
    model, batch = model_and_batch("mind.critic=separable")
    assert len(model.critics) == 9
    assert all(isinstance(c.critic, SeparableCritic) for c in model.critics.values())
    loss, logged = model.training_loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and math.isfinite(logged["info"])
    assert all(p.grad is not None for c in model.critics.values() for p in c.parameters())
