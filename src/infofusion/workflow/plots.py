"""``infofusion plot RUN_DIR curves|mi|confusion|tsne``: PNG figures of a finished run.

Each ``*_figure`` function returns a matplotlib :class:`~matplotlib.figure.Figure` (Agg canvas, no pyplot
global state), so tests can check axis labels and titles before :func:`save_figure` writes the PNG.

- ``curves``: training loss terms and the validation selection metric per epoch (``history.jsonl``);
- ``mi``: MI estimates per epoch from the ``diagnostics`` of ``history.jsonl`` (MMMIE Fig. 2/3 style);
- ``confusion``: the row-normalised confusion matrix from ``metrics.json``, counts annotated;
- ``tsne``: for a model with component codes (``has_component_codes``: MInD's shared, private and noise
  codes, the paper's Fig. 2) one t-SNE of every code; otherwise a t-SNE of the fused representation
  coloured by label. Both go through :func:`tsne_embedding`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..data.types import DataError
from ..models import InfoFusionModel, get_model_class
from ..runs import RunDir
from . import PLOT_KINDS
from .figure_style import (
    ESTIMATE_UNITS,
    ESTIMATOR_NAMES,
    OKABE_ITO,
    epoch_axis,
    figure_style,
    legend_below,
    new_figure,
    pair_words,
    save_figure,
    style,
    term_words,
)

MAIN_LOSS_TERMS = ("loss", "task")
METRIC_WORDS = {"weighted_f1": "weighted F1", "macro_f1": "macro F1", "acc": "accuracy", "mae": "MAE"}
METRIC_WORDS.update({"corr": "correlation", "acc2": "binary accuracy", "acc7": "7-class accuracy"})
TSNE_MAX_POINTS = 2000  # t-SNE is quadratic; a seeded subsample keeps the figure quick


MODEL_NAMES = {"mmim": "MMIM", "mmmie": "MMMIE", "mind": "MInD", "late_fusion": "late fusion"}
MODEL_NAMES.update({"bc_lstm": "bc-LSTM", "tfn": "TFN", "lmf": "LMF", "mult": "MulT", "misa": "MISA"})


def run_label(run_dir: Path) -> str:
    """``MMIM on MOSI`` style: the model and the data set's name, never a file path."""
    run = RunDir(run_dir)
    if not run.is_run():
        return run_dir.name
    config = run.config()
    model = str(config.get("model_name", "?"))
    spec = str(config.get("data", {}).get("spec", "?"))
    name = (run.run_info().get("data") or {}).get("name") if run.info_path.exists() else None
    return f"{MODEL_NAMES.get(model, model)} on {name or Path(spec).stem}"


def class_names(run_dir: Path, count: int) -> list[str]:
    """The run's class names (``DataInfo.class_names``, as trained), else numbers."""
    names = list((RunDir(run_dir).load_best_state("cpu").get("info") or {}).get("class_names") or [])
    return names if len(names) == count else [str(k) for k in range(count)]


def read_history(run_dir: Path) -> list[dict]:
    run = RunDir(run_dir)
    path = run.history_path
    if not path.exists():
        raise DataError(f"{run_dir} is not a run folder (no history.jsonl)", file=str(path))
    records = run.history()
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
    valid_loss = series(records, "valid").get("task_loss")
    metric = next(k for k in records[0]["select"] if k not in ("best", "improved"))
    metric_words = METRIC_WORDS.get(metric, metric.replace("_", " "))
    panels = 3 if extra_terms else 2
    figure = new_figure(panels)
    axes = figure.subplots(1, panels)
    loss_axis, metric_axis = axes[0], axes[-1]
    for name, (epochs, values) in main_terms.items():
        loss_axis.plot(epochs, values, marker="o", label=f"training {term_words(name)}")
    if valid_loss:
        loss_axis.plot(*valid_loss, marker="s", linestyle="--", label="validation task loss")
    loss_axis.set(title="Loss", ylabel="mean loss per utterance batch")
    legend_below(loss_axis)
    if extra_terms:
        # Auxiliary terms (MI bounds, stage losses) live on very different scales: symlog keeps all visible.
        terms_axis = axes[1]
        for name, (epochs, values) in extra_terms.items():
            terms_axis.plot(epochs, values, marker=".", label=term_words(name))
        terms_axis.set_yscale("symlog", linthresh=1e-2)
        terms_axis.set(title="Auxiliary training terms", ylabel="mean value per batch (symlog)")
        legend_below(terms_axis)
    epochs = [int(r["epoch"]) + 1 for r in records]
    scores = [float(r["select"][metric]) for r in records]
    metric_axis.plot(epochs, scores, marker="o", color=OKABE_ITO[2], label=f"validation {metric_words}")
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
            color=OKABE_ITO[3],
            zorder=3,
            label=f"best (epoch {best_epoch})",
        )
    metric_axis.set(title=f"Validation {metric_words}", ylabel=metric_words)
    legend_below(metric_axis)
    for axis in axes:
        epoch_axis(axis)
    figure.suptitle(f"Training curves: {run_label(run_dir)}")
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
    records = read_history(run_dir)
    diagnostics = series(records, "diagnostics")
    # MInD's Deep InfoMax JSD is a training term (the loss holds minus the estimate): shown as estimated.
    jsd = series(records, "train").get("info") if run_model_class(run_dir).has_component_codes else None
    if not diagnostics and not jsd:
        raise DataError(
            f"run {run_dir} has no MI estimates: its history.jsonl diagnostics are empty "
            "(only models with MI terms log them, e.g. mmim, mmmie, mind)",
            file=str(RunDir(run_dir).history_path),
        )
    groups: dict[str, list[tuple[str, tuple[list[int], list[float]]]]] = {}
    for key, values in diagnostics.items():
        estimator, pair = estimator_and_pair(key)
        groups.setdefault(estimator, []).append((pair_words(pair), values))
    if jsd:
        groups["jsd"] = [("training batches, all code pairs", (jsd[0], [-v for v in jsd[1]]))]
    figure = new_figure(len(groups))
    axes = np.atleast_1d(figure.subplots(1, len(groups)))
    for axis, (estimator, curves) in zip(axes, groups.items(), strict=True):
        for pair, (epochs, values) in curves:
            axis.plot(epochs, values, marker="o", label=pair)
        name = ESTIMATOR_NAMES.get(estimator, estimator.upper())
        axis.set(title=name, ylabel=ESTIMATE_UNITS.get(estimator, "MI estimate (nats)"))
        epoch_axis(axis)
        legend_below(axis, title="variables")
    figure.suptitle(f"Information estimates per epoch: {run_label(run_dir)}")
    return figure


# -- confusion matrix ---------------------------------------------------------------------------------
def confusion_split(run_dir: Path, split: str | None) -> tuple[str, dict]:
    run = RunDir(run_dir)
    path, metrics = run.metrics_path, run.metrics()
    if metrics is None:
        raise DataError(f"{run_dir} has no metrics.json (unfinished run?)", file=str(path))
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
            "no confusion matrix: this is a regression run",
            file=str(RunDir(run_dir).metrics_path),
            split=split,
        )
    counts = np.asarray(metrics["confusion_matrix"], dtype=np.int64)
    names = class_names(run_dir, len(counts))
    totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    figure = new_figure(1, height_scale=max(1.0, 0.25 * len(names)))
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
        title=f"Confusion matrix, {split} split\n(row-normalised; counts)",
    )
    figure.colorbar(image, ax=axis, label="fraction of the true class")
    figure.suptitle(run_label(run_dir))
    return figure


# -- t-SNE ----------------------------------------------------------------------------------------------
# Blue, orange, purple families: told apart under the common colour-vision deficiencies (red/green is not).
COMPONENT_COLOURMAPS = {"S": "Blues", "P": "Oranges", "N": "Purples"}
COMPONENT_NAMES = {"S": "shared", "P": "private", "N": "noise"}
MARKERS = ("o", "^", "s", "D", "v", "P")


def tsne_embedding(points: np.ndarray, seed: int = 0) -> np.ndarray:
    """The one 2-D t-SNE of every figure; perplexity stays below the number of points (sklearn's rule)."""
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(1.0, (len(points) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)


def run_model_class(run_dir: Path) -> type[InfoFusionModel]:
    return get_model_class(str(RunDir(run_dir).config().get("model_name")))


def has_component_codes(run_dir: Path) -> bool:
    """Whether the run's model declares S/P/N codes (``has_component_codes``, MInD's ``collect_codes``)."""
    return run_model_class(run_dir).has_component_codes


def fused_representations(trainer, split: str) -> tuple[np.ndarray, np.ndarray]:
    import torch

    if split not in trainer.dataset.splits:
        raise DataError(
            f"split {split!r} not in the data (has {sorted(trainer.dataset.splits)})", split=split
        )
    if not trainer.model.has_fusion_representation:
        raise DataError(f"model {trainer.config['model_name']} exposes no 'fusion' representation")
    trainer.model.eval()
    points, labels = [], []
    with torch.no_grad():
        for batch in trainer.loader(split):
            batch = batch.to(trainer.device)
            fused = trainer.model(batch).representations["fusion"]
            points.append(batch.flat(fused).reshape(int(batch.mask.sum()), -1).cpu())
            labels.append(batch.flat(batch.labels).cpu())
    return torch.cat(points).numpy(), torch.cat(labels).numpy()


def tsne_figure(run_dir: Path, data: str | None, split: str) -> Figure:
    """A 2-D t-SNE of the best checkpoint's fused representation of each utterance, coloured by label."""
    from ..trainer import Trainer

    trainer = Trainer.from_run(run_dir, data)
    points, labels = fused_representations(trainer, split)
    if len(points) > TSNE_MAX_POINTS:
        keep = np.sort(np.random.default_rng(0).choice(len(points), TSNE_MAX_POINTS, replace=False))
        points, labels = points[keep], labels[keep]
    if len(points) < 3:
        raise DataError(
            f"t-SNE needs at least 3 utterances, the {split} split has {len(points)}", split=split
        )
    embedded = tsne_embedding(points)
    figure = new_figure(1, height_scale=1.2)
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
                    s=style().marker_size,
                    alpha=0.75,
                    color=OKABE_ITO[index % len(OKABE_ITO)],
                    marker=MARKERS[index % len(MARKERS)],  # shape too, for print in grey
                    linewidths=0,
                    label=name,
                )
        legend_below(axis, title="true class")
    else:
        scatter = axis.scatter(
            embedded[:, 0], embedded[:, 1], c=labels, cmap="cividis", s=style().marker_size, alpha=0.8
        )
        figure.colorbar(scatter, ax=axis, label="true label")
    axis.set(
        xlabel="t-SNE 1",
        ylabel="t-SNE 2",
        title=f"t-SNE of the fused representation\n{split} split, {len(points)} utterances",
    )
    figure.suptitle(run_label(run_dir))
    return figure


def collect_component_codes(trainer_or_model: Any, loader: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``{"S/text": (n, d), "P/text": ..., "N/text": ...}`` over a loader's real utterances, and labels.

    Accepts a :class:`~infofusion.trainer.Trainer` (its ``model``) or a model with component codes.
    """
    from ..trainer import Trainer

    model = trainer_or_model.model if isinstance(trainer_or_model, Trainer) else trainer_or_model
    codes, labels = model.collect_codes(loader)
    wanted = {name: value.numpy() for name, value in codes.items() if name.split("/")[0] in COMPONENT_NAMES}
    return wanted, labels.numpy()


def codes_figure(
    representations: dict[str, np.ndarray],
    labels: np.ndarray | None,
    seed: int = 0,
    title: str = "MInD codes (t-SNE)",
    names_of_classes: list[str] | None = None,
) -> Figure:
    """One t-SNE of every ``"<component>/<modality>"`` code array: colour family by component (S blue,
    P red, N green), shade by modality, marker by class when the labels are a few classes."""
    from matplotlib import colormaps

    names = sorted(
        (n for n in representations if n.split("/")[0] in COMPONENT_NAMES),
        key=lambda n: ("SPN".index(n.split("/")[0]), n),
    )
    if not names:
        raise ValueError("no S/, P/ or N/ representations to plot")
    points = np.concatenate([np.asarray(representations[n], dtype=np.float64) for n in names])
    groups = np.concatenate([np.full(len(representations[n]), i) for i, n in enumerate(names)])
    embedded = tsne_embedding(points, seed)

    label_values = np.asarray(labels) if labels is not None else None
    classes: list = []
    if label_values is not None and np.allclose(label_values, np.round(label_values)):
        classes = sorted(np.unique(label_values).tolist())
    if not 1 < len(classes) <= len(MARKERS):
        classes = []
    tiled_labels = np.tile(label_values, len(names)) if classes else None

    modalities = sorted({n.split("/", 1)[1] for n in names})
    figure = new_figure(2, height_scale=1.3)
    axis = figure.subplots()
    for index, name in enumerate(names):
        component, modality = name.split("/", 1)
        shade = 0.45 + 0.45 * modalities.index(modality) / max(len(modalities) - 1, 1)
        colour = colormaps[COMPONENT_COLOURMAPS[component]](shade)
        chosen = groups == index
        for class_index, value in enumerate(classes or [None]):
            mask = chosen if value is None else chosen & (tiled_labels == value)
            axis.scatter(
                embedded[mask, 0],
                embedded[mask, 1],
                s=style().marker_size,
                color=colour,
                marker=MARKERS[class_index],
                alpha=0.7,
                linewidths=0,
                label=f"{component} ({COMPONENT_NAMES[component]}) {modality}" if class_index == 0 else None,
            )
    # Both legends outside the points (constrained layout makes room for "outside" figure legends).
    figure.legend(loc="outside right upper", title="code (component, modality)")
    if classes:
        words = names_of_classes or []
        handles = [
            axis.scatter(
                [],
                [],
                marker=MARKERS[i],
                color="grey",
                s=style().marker_size * 2,
                label=words[int(value)] if 0 <= int(value) < len(words) else f"class {value:g}",
            )
            for i, value in enumerate(classes)
        ]
        figure.legend(handles=handles, loc="outside right lower", title="true class")
    axis.set_title(title)
    axis.set_xticks([])
    axis.set_yticks([])
    return figure


def write_codes_figure(
    representations: dict[str, np.ndarray], labels: np.ndarray | None, path: str | Path, seed: int = 0
) -> Path:
    """:func:`codes_figure` as a PNG at ``path`` (nothing is written when there are no codes)."""
    return save_figure(codes_figure(representations, labels, seed), Path(path))


def plot_codes(run_dir: Path, data: str | None, split: str, output: Path) -> Path:
    """The S/P/N t-SNE PNG of a finished run's best checkpoint on one split of its (or other) data."""
    from ..trainer import Trainer

    trainer = Trainer.from_run(Path(run_dir), data)
    representations, labels = collect_component_codes(trainer, trainer.loader(split))
    figure = codes_figure(
        representations,
        labels,
        title=f"t-SNE of the shared, private and noise codes, {split} split: {run_label(run_dir)}",
        names_of_classes=trainer.info.class_names,
    )
    return save_figure(figure, output)


def plot_tsne(run_dir: Path, data: str | None, split: str, output: Path) -> Path:
    if has_component_codes(run_dir):
        return plot_codes(run_dir, data, split, output)
    return save_figure(tsne_figure(run_dir, data, split), output)


def default_split(run_dir: Path) -> str:
    """Test when the run has test results, else valid (the withheld-test data sets)."""
    metrics = RunDir(run_dir).metrics() or {}
    return "test" if "test" in metrics else "valid"


def plot(
    run_dir: Path,
    kind: str,
    data: str | None,
    split: str | None,
    output: Path | None,
    style_name: str = "screen",
) -> Path:
    """One figure of a run as PNG, with SVG and PDF beside it; returns the PNG's path."""
    if not RunDir(run_dir).is_run():
        raise DataError(f"{run_dir} is not a run folder (no config.yaml)", file=str(run_dir))
    with figure_style(style_name):
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


def write_run_figures(run_dir: Path, style_name: str = "screen") -> list[Path]:
    """Every figure that applies to a finished run (MI only with estimates, confusion only for classes)."""
    metrics = RunDir(run_dir).metrics() or {}
    kinds = ["curves"]
    if series(read_history(run_dir), "diagnostics") or run_model_class(run_dir).has_component_codes:
        kinds.append("mi")
    if "confusion_matrix" in metrics.get(default_split(run_dir), {}):
        kinds.append("confusion")
    kinds.append("tsne")
    return [plot(run_dir, kind, None, None, None, style_name) for kind in kinds]
