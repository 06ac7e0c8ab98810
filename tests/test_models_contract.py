"""What every registered model gives the rest of the toolkit, checked for each entry of the registry:
a new model (one file, one registry line, one YAML) is covered here with no other edit.

Forward and backward, one training step of each stage, resume, a Predictor round trip, and export:
ONNX parity for a model that declares itself ``exportable``, a clean ``ExportError`` otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infofusion.config import resolve_config
from infofusion.data.batching import DialogueLoader, as_utterance_dialogues
from infofusion.data.synthetic import make_synthetic
from infofusion.models import MODELS, DataInfo, build_model
from infofusion.training.build import trainer_for_config, trainer_for_run
from infofusion.training.runs import RunDir

torch.set_num_threads(1)
SMALL = [
    "data.dialogues={train: 8, valid: 3, test: 3}",
    "train.batch_size=4",
    "train.threads=1",
]
NAMES = sorted(MODELS)


def small_config(name: str, *overrides: str) -> dict:
    # Narrow where the model has a shared width (LMF, MulT and the text classifier size themselves).
    narrow = ["model.hidden=16"] if MODELS[name].reads_hidden() else []
    return resolve_config(name, None, [*SMALL, *narrow, *overrides])


def first_batch(name: str, config: dict):
    data = make_synthetic(config["data"])
    info = DataInfo.from_dataset(data)
    dialogues = data.splits["train"]
    if MODELS[name].unit == "utterance":
        dialogues = as_utterance_dialogues(dialogues)
    loader = DialogueLoader(dialogues, 4, info.modalities, info.task, info.speaker_vocabulary)
    return info, next(iter(loader))


class Interrupted(Exception):
    """Stands for a kill right after an epoch's checkpoint."""


def stop_after_first_epoch(record: dict) -> None:
    if record["epoch"] == 0:
        raise Interrupted


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    """One run per model, interrupted after its first epoch and resumed for the second (trained once,
    read by several tests)."""
    runs: dict[str, RunDir] = {}

    def run_of(name: str) -> RunDir:
        if name not in runs:
            folder = tmp_path_factory.mktemp(name)
            config = small_config(name, "train.epochs=2", "train.patience=5")
            with pytest.raises(Interrupted):
                trainer_for_config(
                    config, folder, callbacks=[stop_after_first_epoch], echo=lambda _: None
                ).fit()
            assert RunDir(folder).metrics() is None  # not finished
            trainer_for_config(config, folder, echo=lambda _: None).fit(resume=True)
            runs[name] = RunDir(folder)
        return runs[name]

    return run_of


@pytest.mark.parametrize("name", NAMES)
def test_forward_and_backward(name):
    config = small_config(name)
    info, batch = first_batch(name, config)
    torch.manual_seed(0)
    model = build_model(name, info, config).train()
    output = model(batch)
    expected = (*batch.mask.shape, info.output_dim) if info.task == "classification" else batch.mask.shape
    assert tuple(output.predictions.shape) == tuple(expected)
    if model.has_fusion_representation:
        assert output.representations["fusion"].shape[:2] == batch.mask.shape
    loss, terms = model.training_loss(batch)
    assert torch.isfinite(loss) and all(np.isfinite(value) for value in terms.values())
    loss.backward()
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    assert gradients and any(float(g.abs().sum()) > 0 for g in gradients)


@pytest.mark.parametrize("name", NAMES)
def test_one_training_step_changes_every_stage(name, tmp_path):
    config = small_config(name, "train.epochs=1")
    trainer = trainer_for_config(config, tmp_path, echo=lambda _: None)
    groups = {stage.name: stage.parameters for stage in trainer.stages}
    groups["main"] = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    before = {name: [p.detach().clone() for p in params] for name, params in groups.items()}
    terms = trainer.train_epoch(0)
    assert np.isfinite(terms["loss"])
    for stage, params in groups.items():
        changed = any(not torch.equal(old, new) for old, new in zip(before[stage], params, strict=True))
        assert changed, f"{name}: stage {stage} did not change its parameters"
    for stage in trainer.stages:
        assert f"stage_{stage.name}" in terms


@pytest.mark.parametrize("name", NAMES)
def test_resume_continues_the_run(name, trained_runs):
    run = trained_runs(name)
    assert [record["epoch"] for record in run.history()] == [0, 1]
    metrics = run.metrics()
    assert metrics is not None and metrics["best_epoch"] in (1, 2)  # counted from 1, as on screen
    assert run.load_last("cpu")["epoch"] == 1


@pytest.mark.parametrize("name", NAMES)
def test_predictor_round_trip(name, trained_runs):
    from infofusion.inference import Predictor, read_dataset_dialogues

    run = trained_runs(name)
    predictor = Predictor.from_run(run.path)
    input_data = read_dataset_dialogues(str(predictor.config["data"]["spec"]), predictor)
    results = predictor.predict(input_data.dialogues, **input_data.predict_options())
    test_rows = [u for r in results if r.split == "test" for u in r.utterances]
    expected = trainer_for_run(run.path).predict("test")
    if predictor.info.task == "classification":
        got = np.array([[u.probabilities[c] for c in predictor.classes] for u in test_rows])
        np.testing.assert_allclose(got, expected["probabilities"], atol=1e-5)
    else:
        np.testing.assert_allclose([u.value for u in test_rows], expected["predictions"], atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_export_with_parity_or_a_clean_export_error(name, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from export_helpers import assert_parity, make_run
    from infofusion.inference.onnx import ExportError, export_onnx

    run, dialogues = make_run(tmp_path / name, name)
    if not MODELS[name].exportable:
        with pytest.raises(ExportError, match=name):
            export_onnx(run, run / "model.onnx")
        assert not (run / "model.onnx").exists()
        return
    sidecar = assert_parity(run, dialogues)
    assert sidecar["model"] == name and sidecar["exporter"] == "torchscript"
    assert sidecar["check"]["max_abs_diff"] <= 1e-4
    assert sidecar["output"]["name"] == "probabilities" and sidecar["classes"] == [
        f"class{k}" for k in range(4)
    ]
    names = {i["name"] for i in sidecar["inputs"]}
    read = MODELS[name].modalities_read or ("text", "audio", "visual")
    assert {"mask", *(f"features_{m}" for m in read)} <= names
