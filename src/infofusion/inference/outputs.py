"""How predictions are written: JSON, CSV, a plain-text table, the one-dialogue report."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import ConfigError
from ..training.runs import atomic_write_text
from .records import DialoguePrediction

if TYPE_CHECKING:
    from .inputs import InputData
    from .predictor import Predictor


def results_as_json(
    results: Sequence[DialoguePrediction], predictor: Predictor, input_data: InputData | None = None
) -> dict:
    out: dict[str, Any] = {
        "run": predictor.source,
        "model": predictor.model_name,
        "task": predictor.info.task,
        "classes": predictor.classes,
    }
    if input_data is not None:
        out["input"] = input_data.source
        if input_data.problems:
            out["problems"] = input_data.problems
    out["dialogues"] = [result.as_dict() for result in results]
    return out


def results_as_csv(results: Sequence[DialoguePrediction], classes: Sequence[str] | None) -> str:
    """One row per utterance; classification adds one probability column per class."""
    buffer = io.StringIO()
    header = ["dialogue_id", "split", "index", "uid", "speaker", "text"]
    header += (
        ["label", "probability", *[f"p_{name}" for name in classes]] if classes is not None else ["value"]
    )
    header += ["modalities", "missing", "true"]
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for dialogue in results:
        for u in dialogue.utterances:
            row: list[Any] = [
                dialogue.dialogue_id,
                dialogue.split or "",
                u.index,
                u.uid,
                u.speaker,
                u.text or "",
            ]
            if classes is not None:
                row += [u.label, u.probability, *[(u.probabilities or {}).get(name) for name in classes]]
            else:
                row.append(u.value)
            row += [" ".join(u.modalities), " ".join(u.missing), "" if u.true is None else u.true]
            writer.writerow(row)
    return buffer.getvalue()


def counted(count: int, noun: str) -> str:
    """``1 dialogue``, ``2 dialogues``: no "1 dialogues" in what a user reads."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def results_as_table(results: Sequence[DialoguePrediction]) -> str:
    """A readable plain-text table per dialogue."""
    lines: list[str] = []
    for dialogue in results:
        where = f", {dialogue.split}" if dialogue.split else ""
        lines.append(
            f"dialogue {dialogue.dialogue_id} ({counted(len(dialogue.utterances), 'utterance')}{where})"
        )
        rows = [("#", "speaker", "predicted", "p", "true", "modalities", "text")]
        for u in dialogue.utterances:
            predicted = u.label if u.value is None else f"{u.value:+.3f}"
            confidence = "" if u.probability is None else f"{u.probability:.3f}"
            modalities = ",".join(u.modalities) + (f" (no {','.join(u.missing)})" if u.missing else "")
            text = (u.text or u.uid)[:60]  # data sets without transcripts: the utterance id
            truth = "" if u.true is None else str(u.true)
            rows.append((str(u.index), u.speaker, str(predicted), confidence, truth, modalities, text))
        widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]) - 1)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
            lines.append("  " + "  ".join(cells) + "  " + row[-1])
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_results(
    path: str | Path,
    results: Sequence[DialoguePrediction],
    predictor: Predictor,
    input_data: InputData | None,
) -> Path:
    """``.json`` (the ``--json`` object) or ``.csv`` (one row per utterance), chosen by the suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        text = (
            json.dumps(results_as_json(results, predictor, input_data), indent=2, ensure_ascii=False) + "\n"
        )
    elif suffix == ".csv":
        text = results_as_csv(results, predictor.classes)
    else:
        raise ConfigError(f"--output must end in .json or .csv, got {path.name!r}")
    if path.is_dir():
        raise ConfigError(f"--output {path} is a folder; name a .json or .csv file")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)  # a full disk leaves the old file (or none), never a truncated one
    return path


def dialogue_report(result: DialoguePrediction, predictor: Predictor, as_json: bool = False) -> str:
    """``predict RUN --dialogue ID``: one dialogue of a data set, each utterance with its true label,
    the prediction and its probability (MMMIE Table 6)."""
    rows = []
    for u in result.utterances:
        row: dict[str, Any] = {"utterance": u.uid, "speaker": u.speaker, "text": u.text}
        if u.value is None:
            row.update(
                true=u.true,
                predicted=u.label,
                probability=round(float(u.probability or 0.0), 4),
                probabilities={name: round(p, 4) for name, p in (u.probabilities or {}).items()},
            )
        else:
            row.update(true=None if u.true is None else float(u.true), predicted=u.value)
        rows.append(row)
    if as_json:
        return json.dumps({"dialogue": result.dialogue_id, "split": result.split, "utterances": rows}) + "\n"
    lines = [f"dialogue {result.dialogue_id} ({result.split}, {counted(len(rows), 'utterance')})"]
    for row in rows:
        confidence = f"  p={row['probability']:.3f}" if "probability" in row else ""
        lines.append(
            f"[{row['speaker']}] {row['text'] or row['utterance']}\n"
            f"    true={row['true']}  predicted={row['predicted']}{confidence}"
        )
    return "\n".join(lines) + "\n"
