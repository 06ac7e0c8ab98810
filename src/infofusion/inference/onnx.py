"""ONNX export of a run's model: a tensor-only graph plus a JSON sidecar (``infofusion export``).

The graph takes what :func:`infofusion.data.batching.collate` builds, as plain tensors (``B`` dialogues
of up to ``U`` utterances, both dynamic axes; ``T`` frames, dynamic, for sequence modalities):

- ``mask`` bool ``(B, U)``: real utterances;
- ``speakers`` int64 ``(B, U)``: speaker's order of first appearance in its dialogue;
- ``global_speakers`` int64 ``(B, U)``: index in the run's speaker vocabulary (sidecar), 0 = unknown;
- ``features_<modality>`` float32 ``(B, U, D)`` or ``(B, U, T, D)``;
- ``frames_<modality>`` int64 ``(B, U)``: frame counts, sequence modalities only;
- ``present_<modality>`` bool ``(B, U)``: the modality was observed (False = missing, features zero).

Inputs a model never reads are not in the graph (e.g. ``speakers`` for late fusion); the sidecar lists the
graph's inputs. The output is ``probabilities`` ``(B, U, C)`` (softmax over the classes) or ``values``
``(B, U)`` for regression; padding positions hold meaningless numbers. Utterance-level models take the
same dialogue layout: the wrapper runs every utterance as its own one-utterance dialogue, as training did.

Exporters, in order; the first whose graph passes the check is kept:

1. TorchScript (``torch.onnx.export(..., dynamo=False)``): maps the dialogue LSTMs' packed sequences
   (bc-LSTM, MMMIE) to ONNX ``LSTM`` with ``sequence_lens``, keeping both axes dynamic. Frame LSTMs are
   run without packing while tracing (:func:`traceable_frame_lstms`, same numbers), because the exporter
   fails on a packed LSTM's final state (``models.layers.traceable_frame_lstms``).
2. dynamo (``dynamo=True``): cannot trace ``pack_padded_sequence`` at all, and torch.export unrolls an
   LSTM over a fixed length, but it keeps attention reshapes dynamic where the TorchScript graph fixes
   them (MulT on frame sequences).

The check runs the graph in onnxruntime on sizes other than the export example's (:data:`CHECK_SIZES`)
against the unpatched PyTorch model: a failure or a difference above the tolerance rejects that graph.
A model no exporter handles is an :class:`ExportError` giving each exporter's reason.

A seed ensemble (:class:`~.predictor.EnsemblePredictor`) exports as one graph,
:class:`EnsembleTensorModel`: every member behind the same inputs, the output the mean of theirs (the
probabilities served and predicted). An ensemble whose members read text through their own adapted
encoders (``text.mode=adapted``) is refused: each member would need its own text features, and the graph
has one input per modality.
"""

from __future__ import annotations

import json
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import ConfigError
from ..data.batching import Batch
from ..extras import require_extra
from ..models import DataInfo, InfoFusionModel
from ..models.base import probabilities
from ..models.layers import traceable_frame_lstms
from ..training.runs import RunDir, atomic_write_bytes, atomic_write_text
from .predictor import EnsemblePredictor, Predictor

FORMAT = "infofusion-onnx"
FORMAT_VERSION = 1
DEFAULT_OPSET = 17
TOLERANCE = 1e-4
# (dialogues, utterances) checked after export; the example itself is (2, 3).
CHECK_SIZES = ((1, 1), (3, 7), (5, 2))


class ExportError(ConfigError):
    """A model that cannot be exported, or an export whose outputs differ from PyTorch's."""


class TensorModel(nn.Module):
    """A run's model behind a forward pass of plain tensors (module docstring for the inputs)."""

    def __init__(self, model: InfoFusionModel, info: DataInfo, utterance_level: bool) -> None:
        super().__init__()
        self.model = model
        self.info = info
        self.utterance_level = utterance_level
        self.input_names = ["mask", "speakers", "global_speakers"]
        for modality in info.modalities:
            self.input_names.append(f"features_{modality}")
            if info.sequence[modality]:
                self.input_names.append(f"frames_{modality}")
            self.input_names.append(f"present_{modality}")
        self.output_name = "probabilities" if info.task == "classification" else "values"

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        named = dict(zip(self.input_names, inputs, strict=True))
        mask = named["mask"]
        dialogues, utterances = mask.shape
        speakers, global_speakers = named["speakers"], named["global_speakers"]
        features, frames, present = {}, {}, {}
        for modality in self.info.modalities:
            features[modality] = named[f"features_{modality}"]
            present[modality] = named[f"present_{modality}"]
            if self.info.sequence[modality]:
                frames[modality] = named[f"frames_{modality}"]
        if self.utterance_level:
            # Every utterance is its own dialogue, as the trainer feeds utterance-level models.
            def one_each(tensor: torch.Tensor) -> torch.Tensor:
                return tensor.reshape(dialogues * utterances, 1, *tensor.shape[2:])

            features = {m: one_each(t) for m, t in features.items()}
            frames = {m: one_each(t) for m, t in frames.items()}
            present = {m: one_each(t) for m, t in present.items()}
            mask, global_speakers = one_each(mask), one_each(global_speakers)
            speakers = torch.zeros_like(global_speakers)  # the only speaker of a one-utterance dialogue
        batch = Batch(
            features,
            frames,
            mask,
            speakers,
            global_speakers,
            torch.zeros_like(speakers),
            [],
            [],
            None,
            present,
        )
        # The graph takes raw features: the model standardises them as in training (data.standardize).
        predictions = self.model(self.model.standardize(batch)).predictions
        if self.info.task == "classification":
            return probabilities(predictions).reshape(dialogues, utterances, -1)
        return predictions.reshape(dialogues, utterances)


class EnsembleTensorModel(nn.Module):
    """A seed ensemble behind the same tensors as one member: the mean of the members' outputs."""

    def __init__(self, members: list[TensorModel]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        # The members agree on inputs and outputs (runs.load_members): the first one describes them.
        self.info = members[0].info
        self.input_names = members[0].input_names
        self.output_name = members[0].output_name

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(*inputs) for member in self.members]).mean(dim=0)


def tensor_model(predictor: Predictor) -> TensorModel | EnsembleTensorModel:
    """The graph's module: the run's model, or a seed ensemble's members averaged."""
    if isinstance(predictor, EnsemblePredictor):
        return EnsembleTensorModel([tensor_model(member) for member in predictor.members]).eval()
    return TensorModel(predictor.model, predictor.info, predictor.utterance_level).eval()


def exportable(predictor: Predictor) -> None:
    """Raise :class:`ExportError` for a model the tensor-only graph cannot represent."""
    if isinstance(predictor, EnsemblePredictor):
        if predictor.separate_text:
            raise ExportError(
                f"{predictor.source} is a seed ensemble whose members read text with their own adapted "
                "encoders (text.mode=adapted), so each needs its own text features and the graph has one "
                "input per modality: serve it with `infofusion serve`, or export each member"
            )
        for member in predictor.members:
            exportable(member)
        return
    if predictor.model.text_front_end is not None:
        raise ExportError(
            f"{predictor.model_name} reads transcripts through its own text front end (a Hugging Face "
            f"transformer, text.mode={predictor.model.text_settings.mode}); the ONNX graph takes feature "
            "tensors only. Retrain with text.mode=sentence (or text.mode=frozen, whose vectors are "
            "features), or serve it with `infofusion serve`"
        )


def batch_inputs(batch: Batch, input_names: list[str]) -> dict[str, np.ndarray]:
    """The graph's inputs (``input_names``, e.g. from the sidecar) from a collated :class:`Batch`."""
    values: dict[str, np.ndarray] = {
        "mask": batch.mask.numpy(),
        "speakers": batch.speakers.numpy(),
        "global_speakers": batch.global_speakers.numpy(),
    }
    for modality, tensor in batch.features.items():
        values[f"features_{modality}"] = tensor.numpy().astype(np.float32)
        present = batch.present.get(modality, batch.mask)
        values[f"present_{modality}"] = present.numpy()
        if modality in batch.frame_lengths:
            values[f"frames_{modality}"] = batch.frame_lengths[modality].numpy()
    missing = [name for name in input_names if name not in values]
    if missing:
        raise ExportError(f"the batch has no values for graph inputs {missing}")
    return {name: values[name] for name in input_names}


def example_inputs(
    info: DataInfo, dialogues: int, utterances: int, seed: int = 0, frames: int = 3
) -> tuple[torch.Tensor, ...]:
    """Random inputs of the given size; later dialogues are shorter, so padding is always exercised."""
    generator = torch.Generator().manual_seed(seed)
    lengths = [max(1, utterances - (b % utterances)) for b in range(dialogues)]
    lengths[0] = utterances
    mask = torch.zeros(dialogues, utterances, dtype=torch.bool)
    for b, length in enumerate(lengths):
        mask[b, :length] = True
    speakers = torch.randint(0, 3, (dialogues, utterances), generator=generator)
    vocabulary = len(info.speaker_vocabulary) + 1
    global_speakers = torch.randint(0, vocabulary, (dialogues, utterances), generator=generator)
    tensors: list[torch.Tensor] = [mask, speakers, global_speakers]
    for modality in info.modalities:
        dim = info.dims[modality]
        if info.sequence[modality]:
            tensors.append(torch.randn(dialogues, utterances, frames, dim, generator=generator))
            counts = torch.randint(1, frames + 1, (dialogues, utterances), generator=generator)
            tensors.append(counts * mask)
        else:
            tensors.append(torch.randn(dialogues, utterances, dim, generator=generator))
        # Some utterances miss this modality: the graph must honour `present` too.
        missing = torch.rand(dialogues, utterances, generator=generator) < 0.2
        tensors.append(mask & ~missing)
    return tuple(tensors)


@dataclass
class ExportResult:
    path: Path
    sidecar: Path
    model: str
    exporter: str
    inputs: list[str]
    max_abs_diff: float | None
    checked_sizes: list[tuple[int, int]] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)  # why earlier exporters were not used

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "onnx": str(self.path),
            "sidecar": str(self.sidecar),
            "exporter": self.exporter,
            "inputs": self.inputs,
            "max_abs_diff": self.max_abs_diff,
            "checked_sizes": [list(size) for size in self.checked_sizes],
            "exporter_fallbacks": self.fallbacks,
        }


def export_onnx(
    run_dir: str | Path,
    output: str | Path | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    tolerance: float = TOLERANCE,
    predictor: Predictor | None = None,
) -> ExportResult:
    """Export ``run_dir``'s best checkpoint to ``output`` (default ``run_dir/model.onnx``) and check it."""
    require_extra("export", "ONNX export", ("onnx", "onnxruntime"))  # read and check every graph
    run_dir = Path(run_dir)
    predictor = predictor or Predictor.from_run(run_dir)
    exportable(predictor)
    path = Path(output) if output is not None else RunDir(run_dir).onnx_path
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = tensor_model(predictor)
    example = example_inputs(predictor.info, 2, 3)
    failures: list[str] = []
    chosen = None
    produced: dict[str, bytes] = {}
    # Each exporter writes into a private folder of its own (a fresh name, mode 0700: nothing can be
    # planted there); only a graph that passed the check leaves it, through the one atomic writer. A
    # failure leaves no file; a link planted at the target is replaced, never followed.
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.export-", dir=path.parent) as scratch:
        for exporter in EXPORTERS:
            attempt = Path(scratch) / exporter
            attempt.mkdir()
            temporary = attempt / path.name
            try:
                with traceable_frame_lstms(wrapper):
                    _export(exporter, wrapper, example, temporary, opset)
            except Exception as error:  # any exporter failure is reported with its reason
                failures.append(f"{exporter} exporter: {type(error).__name__}: {_reason(error)}")
                continue
            try:
                inputs = graph_inputs(temporary)
                max_diff, sizes = check_onnx(temporary, wrapper, inputs, tolerance)
            except ExportError as error:
                failures.append(f"{exporter} exporter: {error}")
                continue
            except Exception as error:  # onnxruntime refusing the graph is a failure too
                failures.append(f"{exporter} exporter: onnxruntime: {type(error).__name__}: {_reason(error)}")
                continue
            chosen = exporter
            # The graph, and any external-data file an exporter wrote beside it (named in the graph).
            produced = {file.name: file.read_bytes() for file in sorted(attempt.iterdir()) if file.is_file()}
            break
    if chosen is None:
        raise ExportError(f"{predictor.model_name} cannot be exported to ONNX: " + "; ".join(failures))
    for name in sorted(produced, key=lambda name: name == path.name):  # the graph last: it names the rest
        atomic_write_bytes(path.with_name(name), produced[name])
    sidecar = sidecar_path(path)
    description = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "onnx": path.name,
        "run": str(run_dir),
        **predictor.describe(),
        "speaker_vocabulary": dict(predictor.info.speaker_vocabulary),
        "inputs": [_input_description(name, predictor.info) for name in inputs],
        "output": {
            "name": wrapper.output_name,
            "shape": ["dialogues", "utterances", "classes"]
            if predictor.info.task == "classification"
            else ["dialogues", "utterances"],
            "dtype": "float32",
        },
        "exporter": chosen,
        "exporter_fallbacks": failures,  # why an earlier exporter was not used
        "opset": opset,
        "torch": torch.__version__,
        "check": {"max_abs_diff": max_diff, "tolerance": tolerance, "sizes": [list(s) for s in sizes]},
    }
    atomic_write_text(sidecar, json.dumps(description, indent=2) + "\n")
    return ExportResult(path, sidecar, predictor.model_name, chosen, inputs, max_diff, list(sizes), failures)


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


EXPORTERS = ("torchscript", "dynamo")


def _export(
    exporter: str,
    wrapper: TensorModel | EnsembleTensorModel,
    example: tuple[torch.Tensor, ...],
    path: Path,
    opset: int,
) -> None:
    """Write ``path`` with one exporter (raises whatever the exporter raises)."""
    with warnings.catch_warnings():
        # Tracer and deprecation notices are about the exporter, not about this model's graph.
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            dynamic_axes: dict[str, dict[int, str]] = {}
            for input_name, tensor in zip(wrapper.input_names, example, strict=True):
                axes = {0: "dialogues", 1: "utterances"}
                if tensor.dim() == 4:
                    axes[2] = f"frames_{input_name.removeprefix('features_')}"
                dynamic_axes[input_name] = axes
            dynamic_axes[wrapper.output_name] = {0: "dialogues", 1: "utterances"}
            # Not under no_grad: there nn.TransformerEncoderLayer takes its fused fast path, an op
            # (aten::_transformer_encoder_layer_fwd) the TorchScript exporter has no ONNX mapping for.
            torch.onnx.export(
                wrapper,
                example,
                str(path),
                input_names=wrapper.input_names,
                output_names=[wrapper.output_name],
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                dynamo=False,
            )
            return
        dialogues = torch.export.Dim("dialogues", min=1)
        utterances = torch.export.Dim("utterances", min=1)
        shapes = []
        for tensor in example:
            dims: dict[int, Any] = {0: dialogues, 1: utterances}
            if tensor.dim() == 4:
                dims[2] = torch.export.Dim.AUTO
            shapes.append(dims)
        torch.onnx.export(
            wrapper,
            example,
            str(path),
            input_names=wrapper.input_names,
            output_names=[wrapper.output_name],
            dynamic_shapes={"inputs": tuple(shapes)},
            opset_version=max(opset, 18),  # the dynamo exporter's lowest
            dynamo=True,
            verbose=False,  # its progress lines would go to stdout, where the CLI prints JSON
        )


def _reason(error: BaseException) -> str:
    """One short line from an exporter's or onnxruntime's error: the dynamo exporter's "Exception summary"
    line, onnxruntime's final sentence, or the first line, without terminal colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "## Exception summary" in lines:
        following = lines[lines.index("## Exception summary") + 1 :]
        text = following[0] if following else text
    elif lines:
        text = lines[0]
    if "Status Message:" in text and "was false. " in text:
        text = text.split("was false. ", 1)[1]  # onnxruntime: the sentence after its C++ assertion
    return text[:300]


def graph_inputs(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initialisers = {tensor.name for tensor in graph.initializer}
    return [value.name for value in graph.input if value.name not in initialisers]


def check_onnx(
    path: Path, wrapper: TensorModel | EnsembleTensorModel, inputs: list[str], tolerance: float
) -> tuple[float, tuple[tuple[int, int], ...]]:
    """Largest difference between onnxruntime and PyTorch over real utterances, at :data:`CHECK_SIZES`."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for seed, (dialogues, utterances) in enumerate(CHECK_SIZES, start=1):
        tensors = example_inputs(wrapper.info, dialogues, utterances, seed=seed, frames=2 + seed)
        with torch.inference_mode():
            expected = wrapper(*tensors).numpy()
        named = dict(zip(wrapper.input_names, tensors, strict=True))
        size = f"{dialogues} dialogue(s) of {utterances} utterance(s)"
        try:
            got = session.run(None, {n: named[n].numpy() for n in inputs})[0]
        except Exception as error:  # onnxruntime's own error types vary by version
            raise ExportError(
                f"the graph fails in onnxruntime on {size}, so some axis kept the export example's size "
                f"(2 dialogues of 3 utterances): {_reason(error)}"
            ) from None
        mask = named["mask"].numpy()
        if got.shape != expected.shape:
            raise ExportError(
                f"the graph gives shape {got.shape} for {size}, PyTorch {expected.shape} (an axis was not "
                "exported as dynamic)"
            )
        difference = float(np.abs(got - expected)[mask].max())
        worst = max(worst, difference)
        if not difference <= tolerance:
            raise ExportError(
                f"onnxruntime and PyTorch differ by {difference:.3g} (> {tolerance:g}) on {size}; the "
                "exported graph is not trustworthy"
            )
    return worst, CHECK_SIZES


def _input_description(name: str, info: DataInfo) -> dict[str, Any]:
    if name in ("mask",) or name.startswith("present_"):
        return {"name": name, "dtype": "bool", "shape": ["dialogues", "utterances"]}
    if name in ("speakers", "global_speakers") or name.startswith("frames_"):
        return {"name": name, "dtype": "int64", "shape": ["dialogues", "utterances"]}
    modality = name.removeprefix("features_")
    shape: list[Any] = ["dialogues", "utterances"]
    if info.sequence.get(modality):
        shape.append(f"frames_{modality}")
    shape.append(info.dims[modality])
    return {"name": name, "dtype": "float32", "shape": shape, "modality": modality}
