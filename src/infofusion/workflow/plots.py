"""``infofusion plot RUN_DIR curves|mi|confusion|tsne``: PNG figures of a finished run.

Each ``*_figure`` function returns a matplotlib :class:`~matplotlib.figure.Figure` (Agg canvas, no pyplot
global state), so tests can check axis labels and titles before :func:`save_figure` writes the PNG.

- ``curves``: training loss terms and the validation selection metric per epoch (``history.jsonl``);
- ``mi``: MI estimates per epoch from the ``diagnostics`` of ``history.jsonl`` (MMMIE Fig. 2/3 style);
- ``confusion``: the row-normalised confusion matrix from ``metrics.json``, counts annotated;
- ``tsne``: MInD's S/P/N codes through :mod:`infofusion.tsne` when the run is a model with such codes,
  otherwise a t-SNE of the fused representation coloured by label.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..config import load_yaml
from ..data.types import DataError
from . import PLOT_KINDS

MAIN_LOSS_TERMS = ("loss", "task")
TSNE_MAX_POINTS = 2000  # t-SNE is quadratic; a seeded subsample keeps the figure quick


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(figure)
    return figure


def epoch_axis(axis) -> None:
    axis.set_xlabel("epoch")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))


def save_figure(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def run_label(run_dir: Path) -> str:
    config_path = run_dir / "config.yaml"
    if not config_path.exists():
        return run_dir.name
    config = load_yaml(config_path)
    return f"{config.get('model_name', '?')} on {config.get('data', {}).get('spec', '?')}"


def read_history(run_dir: Path) -> list[dict]:
    path = run_dir / "history.jsonl"
    if not path.exists():
        raise DataError(f"{run_dir} is not a run folder (no history.jsonl)", file=str(path))
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not records:
        raise DataError("history.jsonl has no epochs yet", file=str(path))
    return records


def series(records: list[dict], section: str) -> dict[str, tuple[list[int], list[float]]]:
    """Every numeric key of a record section as (epochs, values), in first-seen order."""
    found: dict[str, tuple[list[int], list[float]]] = {}
    for record in records:
        for name, value in (record.get(section) or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                epochs, values = found.setdefault(name, ([], []))
                epochs.append(int(record["epoch"]) + 1)
                values.append(float(value))
    return found


# -- training curves ----------------------------------------------------------------------------------
def curves_figure(run_dir: Path) -> Figure:
    records = read_history(run_dir)
    train = series(records, "train")
    main_terms = {name: s for name, s in train.items() if name in MAIN_LOSS_TERMS}
    extra_terms = {name: s for name, s in train.items() if name not in MAIN_LOSS_TERMS}
    metric = next(k for k in records[0]["select"] if k not in ("best", "improved"))
    panels = 3 if extra_terms else 2
    figure = new_figure(5.0 * panels, 4.2)
    axes = figure.subplots(1, panels)
    loss_axis, metric_axis = axes[0], axes[-1]
    for name, (epochs, values) in main_terms.items():
        loss_axis.plot(epochs, values, marker="o", label="total loss" if name == "loss" else f"{name} loss")
    loss_axis.set(title="Training loss", ylabel="mean loss per batch")
    loss_axis.legend()
    if extra_terms:
        # Auxiliary terms (MI bounds, stage losses) live on very different scales: symlog keeps all visible.
        terms_axis = axes[1]
        for name, (epochs, values) in extra_terms.items():
            terms_axis.plot(epochs, values, marker=".", label=name)
        terms_axis.set_yscale("symlog", linthresh=1e-2)
        terms_axis.set(title="Auxiliary training terms", ylabel="mean value per batch")
        terms_axis.legend(fontsize=8)
    epochs = [int(r["epoch"]) + 1 for r in records]
    scores = [float(r["select"][metric]) for r in records]
    metric_axis.plot(epochs, scores, marker="o", color="tab:green", label=f"validation {metric}")
    improved = [
        (e, s) for e, s, r in zip(epochs, scores, records, strict=True) if r["select"].get("improved")
    ]
    if improved:
        best_epoch, best_score = improved[-1]
        metric_axis.scatter(
            [best_epoch],
            [best_score],
            s=120,
            marker="*",
            color="tab:red",
            zorder=3,
            label=f"best (epoch {best_epoch})",
        )
    metric_axis.set(title=f"Validation {metric} (model selection)", ylabel=metric)
    metric_axis.legend()
    for axis in axes:
        epoch_axis(axis)
    figure.suptitle(f"Training curves: {run_label(run_dir)}")
    figure.tight_layout()
    return figure


# -- MI estimates -------------------------------------------------------------------------------------
def estimator_and_pair(key: str) -> tuple[str, str]:
    """``"mine/text-audio"`` -> ``("mine", "text-audio")``; ``"cpc_text"`` -> ``("cpc", "text")``."""
    for separator in ("/", "_"):
        if separator in key:
            head, tail = key.split(separator, 1)
            return head, tail
    return key, key


def mi_figure(run_dir: Path) -> Figure:
    diagnostics = series(read_history(run_dir), "diagnostics")
    if not diagnostics:
        raise DataError(
            f"run {run_dir} has no MI estimates: its history.jsonl diagnostics are empty "
            "(only models with MI terms log them, e.g. mmim, mmmie, mind)",
            file=str(run_dir / "history.jsonl"),
        )
    groups: dict[str, list[tuple[str, tuple[list[int], list[float]]]]] = {}
    for key, values in diagnostics.items():
        estimator, pair = estimator_and_pair(key)
        groups.setdefault(estimator, []).append((pair, values))
    figure = new_figure(5.0 * len(groups), 4.2)
    axes = np.atleast_1d(figure.subplots(1, len(groups)))
    for axis, (estimator, curves) in zip(axes, groups.items(), strict=True):
        for pair, (epochs, values) in curves:
            axis.plot(epochs, values, marker="o", label=pair)
        axis.set(title=f"{estimator.upper()} estimates", ylabel="estimate (nats)")
        epoch_axis(axis)
        axis.legend(title="variables", fontsize=8)
    figure.suptitle(f"MI estimates on the validation split per epoch: {run_label(run_dir)}")
    figure.tight_layout()
    return figure


# -- confusion matrix ---------------------------------------------------------------------------------
def confusion_split(run_dir: Path, split: str | None) -> tuple[str, dict]:
    path = run_dir / "metrics.json"
    if not path.exists():
        raise DataError(f"{run_dir} has no metrics.json (unfinished run?)", file=str(path))
    metrics = json.loads(path.read_text(encoding="utf-8"))
    chosen = split or ("test" if "test" in metrics else "valid")
    if chosen not in metrics:
        raise DataError(
            f"metrics.json has no {chosen!r} split (has valid/test only)", file=str(path), split=chosen
        )
    return chosen, metrics[chosen]


def confusion_figure(run_dir: Path, split: str | None = None) -> Figure:
    split, metrics = confusion_split(run_dir, split)
    if "confusion_matrix" not in metrics:
        raise DataError(
            "no confusion matrix: this is a regression run", file=str(run_dir / "metrics.json"), split=split
        )
    counts = np.asarray(metrics["confusion_matrix"], dtype=np.int64)
    names = list(metrics.get("per_class_f1") or {})  # the run's class names, in label order
    if len(names) != len(counts):
        names = [str(k) for k in range(len(counts))]
    totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    size = max(4.5, 0.9 * len(names) + 2.5)
    figure = new_figure(size + 1.0, size)
    axis = figure.subplots()
    image = axis.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    for row in range(len(names)):
        for column in range(len(names)):
            axis.text(
                column,
                row,
                f"{counts[row, column]}\n{fractions[row, column]:.0%}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if fractions[row, column] > 0.5 else "black",
            )
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axis.set_yticks(range(len(names)), names)
    axis.set(
        xlabel="predicted class",
        ylabel="true class",
        title=f"Confusion matrix, {split} split (row-normalised; counts)",
    )
    figure.colorbar(image, ax=axis, label="fraction of the true class")
    figure.suptitle(run_label(run_dir))
    figure.tight_layout()
    return figure


# -- t-SNE ----------------------------------------------------------------------------------------------
def fused_representations(trainer, split: str) -> tuple[np.ndarray, np.ndarray]:
    import torch

    if split not in trainer.dataset.splits:
        raise DataError(
            f"split {split!r} not in the data (has {sorted(trainer.dataset.splits)})", split=split
        )
    trainer.model.eval()
    points, labels = [], []
    with torch.no_grad():
        for batch in trainer.loader(split):
            batch = batch.to(trainer.device)
            representations = trainer.model(batch).representations
            if "fusion" not in representations:
                raise DataError(f"model {trainer.config['model_name']} exposes no 'fusion' representation")
            points.append(batch.flat(representations["fusion"]).reshape(int(batch.mask.sum()), -1).cpu())
            labels.append(batch.flat(batch.labels).cpu())
    return torch.cat(points).numpy(), torch.cat(labels).numpy()


def tsne_figure(run_dir: Path, data: str | None, split: str) -> Figure:
    """A 2-D t-SNE of the best checkpoint's fused representation of each utterance, coloured by label."""
    from sklearn.manifold import TSNE

    from ..cli import load_run

    trainer = load_run(run_dir, data)
    points, labels = fused_representations(trainer, split)
    if len(points) > TSNE_MAX_POINTS:
        keep = np.sort(np.random.default_rng(0).choice(len(points), TSNE_MAX_POINTS, replace=False))
        points, labels = points[keep], labels[keep]
    if len(points) < 3:
        raise DataError(
            f"t-SNE needs at least 3 utterances, the {split} split has {len(points)}", split=split
        )
    perplexity = float(min(30.0, max(1.0, (len(points) - 1) / 3)))
    embedded = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0).fit_transform(points)
    figure = new_figure(7.0, 6.0)
    axis = figure.subplots()
    info = trainer.info
    if info.task == "classification":
        names = info.class_names or [str(k) for k in range(info.num_classes)]
        for index, name in enumerate(names):
            chosen = labels == index
            if chosen.any():
                # Colour by class index, so a class keeps its colour when another one is absent.
                axis.scatter(
                    embedded[chosen, 0],
                    embedded[chosen, 1],
                    s=10,
                    alpha=0.75,
                    color=f"C{index % 10}",
                    label=name,
                )
        axis.legend(title="true class", fontsize=8, markerscale=1.5)
    else:
        scatter = axis.scatter(embedded[:, 0], embedded[:, 1], c=labels, cmap="coolwarm", s=10, alpha=0.8)
        figure.colorbar(scatter, ax=axis, label="true label")
    axis.set(
        xlabel="t-SNE 1",
        ylabel="t-SNE 2",
        title=f"t-SNE of the fused representation, {split} split ({len(points)} utterances)",
    )
    figure.suptitle(run_label(run_dir))
    figure.tight_layout()
    return figure


def has_component_codes(run_dir: Path) -> bool:
    """Whether the run's model exposes S/P/N codes (MInD's ``collect_codes``) for :mod:`infofusion.tsne`."""
    from ..models import MODELS

    model_class = MODELS.get(str(load_yaml(run_dir / "config.yaml").get("model_name")))
    return model_class is not None and hasattr(model_class, "collect_codes")


def plot_tsne(run_dir: Path, data: str | None, split: str, output: Path) -> Path:
    if has_component_codes(run_dir):
        try:  # written separately, absent in some checkouts; import_module honours sys.modules
            tsne = importlib.import_module("infofusion.tsne")
        except ModuleNotFoundError as error:
            if error.name != "infofusion.tsne":
                raise
        else:
            return tsne.plot_tsne(run_dir, data, split, output)
    return save_figure(tsne_figure(run_dir, data, split), output)


def default_split(run_dir: Path) -> str:
    """Test when the run has test results, else valid (the withheld-test data sets)."""
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    return "test" if "test" in metrics else "valid"


def plot(run_dir: Path, kind: str, data: str | None, split: str | None, output: Path | None) -> Path:
    if not (run_dir / "config.yaml").exists():
        raise DataError(f"{run_dir} is not a run folder (no config.yaml)", file=str(run_dir))
    if kind == "curves":
        return save_figure(curves_figure(run_dir), output or run_dir / "curves.png")
    if kind == "mi":
        return save_figure(mi_figure(run_dir), output or run_dir / "mi.png")
    if kind == "confusion":
        split = split or default_split(run_dir)
        return save_figure(confusion_figure(run_dir, split), output or run_dir / f"confusion_{split}.png")
    if kind == "tsne":
        split = split or default_split(run_dir)
        return plot_tsne(run_dir, data, split, output or run_dir / f"tsne_{split}.png")
    raise DataError(f"unknown plot kind {kind!r} (use {', '.join(PLOT_KINDS)})")
