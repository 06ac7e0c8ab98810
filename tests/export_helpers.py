"""Shared by the export tests and the model contract: a run folder of untrained weights, and the check
that its ONNX graph gives the Predictor's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml

from infofusion.config import resolve_config
from infofusion.data import load_dataset
from infofusion.data.batching import collate
from infofusion.data.types import Dialogue
from infofusion.inference import Predictor
from infofusion.inference.onnx import batch_inputs, export_onnx
from infofusion.models import MODELS, DataInfo, build_model

TINY = ["data.dialogues={train: 6, valid: 2, test: 6}"]


def narrow(model: str) -> list[str]:
    """``model.hidden=16`` for a model with a shared width (LMF, MulT and the text classifier size
    themselves)."""
    return ["model.hidden=16"] if MODELS[model].reads_hidden() else []


def make_run(path: Path, model: str, *overrides: str) -> tuple[Path, list[Dialogue]]:
    """A run folder as the trainer leaves it (config.yaml, best.pt), with untrained weights: parity
    between two runtimes does not need a trained model. Returns it and the test dialogues."""
    config = resolve_config(model, None, [*TINY, *narrow(model), *overrides])
    dataset = load_dataset("synthetic", config["data"])
    info = DataInfo.from_dataset(dataset)
    if config["data"].get("standardize"):
        from infofusion.data.standardize import training_statistics

        info.feature_scaling = training_statistics(dataset)  # as the trainer keeps them
    torch.manual_seed(0)
    network = build_model(model, info, config)
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    torch.save(
        {"model": network.state_dict(), "epoch": 0, "config": config, "info": info.to_dict()},
        path / "best.pt",
    )
    return path, dataset.splits["test"]


def onnx_outputs(
    path: Path, predictor: Predictor, dialogues: list[Dialogue], inputs: list[str]
) -> np.ndarray:
    """The graph's outputs for ``dialogues`` (collated as whole dialogues), real utterances only."""
    prepared = predictor.prepare(dialogues)
    batch = collate(
        [Dialogue(d.id, d.utterances) for d in prepared],
        predictor.info.modalities,
        predictor.info.task,
        predictor.info.speaker_vocabulary,
    )
    for modality in predictor.info.modalities:
        present = torch.zeros_like(batch.mask)
        for row, dialogue in enumerate(prepared):
            present[row, : len(dialogue.present)] = torch.tensor([o[modality] for o in dialogue.present])
        batch.present[modality] = present
    # The graph takes raw features, as prepare gives them (the model standardises its own inputs).
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    output = session.run(None, batch_inputs(batch, inputs))[0]
    return output[batch.mask.numpy()]


def torch_outputs(predictor: Predictor, dialogues: list[Dialogue]) -> np.ndarray:
    results = predictor.predict(dialogues)
    if predictor.info.task == "regression":
        return np.array([u.value for r in results for u in r.utterances])
    return np.array([[u.probabilities[c] for c in predictor.classes] for r in results for u in r.utterances])


def assert_parity(run: Path, dialogues: list[Dialogue]) -> dict:
    predictor = Predictor.from_run(run)
    result = export_onnx(run, run / "model.onnx", predictor=predictor)
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["inputs"] and [i["name"] for i in sidecar["inputs"]] == result.inputs
    # Sizes other than the export example's (2 dialogues of 3): 1, 2 and 5 dialogues of 4..12 utterances.
    for group in (dialogues[:1], dialogues[1:3], dialogues[:5]):
        got = onnx_outputs(result.path, predictor, group, result.inputs)
        expected = torch_outputs(predictor, group)
        # The predictor rounds probabilities to 6 decimals, far below the tolerance.
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    return sidecar
