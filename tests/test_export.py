"""`infofusion export`: ONNX graphs that give PyTorch's probabilities on inputs of any size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from export_helpers import assert_parity, make_run, onnx_outputs, torch_outputs  # noqa: E402
from infofusion.cli import main  # noqa: E402
from infofusion.data.types import Dialogue, Utterance  # noqa: E402
from infofusion.inference import Predictor  # noqa: E402
from infofusion.inference import onnx as export_module  # noqa: E402
from infofusion.inference.onnx import ExportError, export_onnx  # noqa: E402

torch.set_num_threads(1)


@pytest.mark.parametrize("model", ["late_fusion", "mmmie"])
def test_frame_sequences_export_with_a_dynamic_frame_axis(model, tmp_path):
    run, dialogues = make_run(tmp_path / model, model, "data.frames=4")
    sidecar = assert_parity(run, dialogues)
    audio = next(i for i in sidecar["inputs"] if i["name"] == "features_audio")
    assert audio["shape"] == ["dialogues", "utterances", "frames_audio", 16]
    assert sidecar["exporter"] == "torchscript" and sidecar["exporter_fallbacks"] == []


def test_dynamo_takes_over_when_the_torchscript_graph_fails(tmp_path, monkeypatch):
    # As for MulT on frame sequences (its TorchScript graph fixes a frame count; docs/serving.md), here
    # forced: the TorchScript export fails and the dynamo exporter's graph must pass the same check.
    run, dialogues = make_run(tmp_path / "lf", "late_fusion")
    real_export = export_module._export

    def torchscript_fails(exporter, *args, **kwargs):
        if exporter == "torchscript":
            raise RuntimeError("no symbolic for this op")
        return real_export(exporter, *args, **kwargs)

    monkeypatch.setattr(export_module, "_export", torchscript_fails)
    sidecar = assert_parity(run, dialogues)
    assert sidecar["exporter"] == "dynamo"
    assert sidecar["exporter_fallbacks"] == ["torchscript exporter: RuntimeError: no symbolic for this op"]
    assert "speakers" in {i["name"] for i in sidecar["inputs"]}  # dynamo keeps unread inputs


@pytest.mark.parametrize("model", ["late_fusion", "mmmie"])
def test_standardised_runs_scale_raw_features_inside_the_graph(model, tmp_path):
    run, dialogues = make_run(tmp_path / model, model, "data.standardize=true", "train.modality_dropout=0.3")
    predictor = Predictor.from_run(run)
    assert predictor.describe()["standardized"] == ["audio", "text", "visual"]
    missing_audio = [
        Dialogue(
            d.id,
            [
                Utterance({m: v for m, v in u.features.items() if m != "audio" or i % 2}, u.speaker, 0)
                for i, u in enumerate(d.utterances)
            ],
        )
        for d in dialogues
    ]
    result = export_onnx(run, predictor=predictor)
    for group in (missing_audio[:1], missing_audio[:4]):
        got = onnx_outputs(result.path, predictor, group, result.inputs)
        np.testing.assert_allclose(got, torch_outputs(predictor, group), atol=1e-4, rtol=0)


def test_regression_exports_values(tmp_path):
    run, dialogues = make_run(tmp_path / "reg", "bc_lstm", "data.task=regression")
    sidecar = assert_parity(run, dialogues)
    assert sidecar["output"] == {"name": "values", "shape": ["dialogues", "utterances"], "dtype": "float32"}


def test_missing_modalities_follow_present(tmp_path):
    run, dialogues = make_run(tmp_path / "drop", "mmmie", "train.modality_dropout=0.3")
    without_audio = [
        Dialogue(
            d.id,
            [
                Utterance({"text": u.features["text"], "visual": u.features["visual"]}, u.speaker, 0)
                if i % 2
                else u
                for i, u in enumerate(d.utterances)
            ],
        )
        for d in dialogues
    ]
    predictor = Predictor.from_run(run)
    result = export_onnx(run, predictor=predictor)
    assert result.path == run / "model.onnx"
    got = onnx_outputs(result.path, predictor, without_audio[:3], result.inputs)
    np.testing.assert_allclose(got, torch_outputs(predictor, without_audio[:3]), atol=1e-4, rtol=0)
    assert "present_audio" in result.inputs and "speakers" in result.inputs  # mmmie's identity embedding


def test_a_model_with_a_text_front_end_is_refused_clearly(tmp_path, capsys):
    from data_factories import write_dialogue_csvs
    from infofusion.config import resolve_config
    from infofusion.training.build import trainer_for_config
    from text_fixtures import save_tiny_bert

    csvs = write_dialogue_csvs(tmp_path / "csv", "plain", dialogues={"train": 3, "valid": 2, "test": 1})
    settings = [
        f"data.spec={next(iter(csvs.values())).parent}",
        "text.mode=finetune",
        f"text.encoder={save_tiny_bert(tmp_path / 'tiny-bert')}",
        "train.epochs=1",
        "train.threads=1",
    ]
    run = tmp_path / "mmim"
    trainer_for_config(resolve_config("mmim", None, settings), run, echo=lambda _: None).fit()
    with pytest.raises(ExportError, match="text front end"):
        export_onnx(run)
    assert main(["export", str(run), "--format", "onnx"]) == 2
    # The last stderr line (transformers may draw a loading bar before it) is the one-line error.
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: mmim reads transcripts") and "text.mode=sentence" in last
    assert not (run / "model.onnx").exists()


def test_a_graph_that_fixes_an_axis_is_refused_with_the_reason(tmp_path):
    # MMMIE's transformer encoder: both exporters give graphs whose attention reshapes keep the export
    # example's utterance count; the check on other sizes finds it.
    run, _ = make_run(tmp_path / "mmmie", "mmmie", "mmmie.encoder=transformer")
    with pytest.raises(ExportError) as error:
        export_onnx(run)
    message = str(error.value)
    assert message.startswith("mmmie cannot be exported to ONNX: torchscript exporter: the graph fails")
    assert "kept the export example's size" in message and "cannot be reshaped" in message
    assert "dynamo exporter:" in message and not (run / "model.onnx").exists()


def test_an_exporter_failure_names_the_model_and_the_reason(tmp_path, monkeypatch):
    run, _ = make_run(tmp_path / "lf", "late_fusion")

    def broken(*args, **kwargs):
        raise RuntimeError("Unsupported: aten::mystery_op\nmore detail")

    monkeypatch.setattr(export_module.torch.onnx, "export", broken)
    with pytest.raises(ExportError) as error:
        export_onnx(run)
    message = str(error.value)
    assert message.startswith("late_fusion cannot be exported to ONNX")
    assert "torchscript exporter: RuntimeError: Unsupported: aten::mystery_op" in message
    assert "dynamo exporter" in message and "more detail" not in message


def test_a_parity_failure_is_an_error(tmp_path):
    run, _ = make_run(tmp_path / "lf", "late_fusion")
    with pytest.raises(ExportError, match="differ by"):
        export_onnx(run, tolerance=-1.0)


def test_cli_export_writes_model_and_sidecar(tmp_path, capsys):
    run, _ = make_run(tmp_path / "bc", "bc_lstm")
    target = tmp_path / "out" / "bc.onnx"
    assert main(["export", str(run), "--format", "onnx", "--output", str(target)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["onnx"] == str(target) and target.is_file()
    sidecar = json.loads((tmp_path / "out" / "bc.onnx.json").read_text())
    assert sidecar["format"] == "infofusion-onnx" and sidecar["unit"] == "dialogue"
    assert sidecar["check"]["sizes"] == [[1, 1], [3, 7], [5, 2]]
