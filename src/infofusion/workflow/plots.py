"""``infofusion plot RUN_DIR curves|mi|confusion|tsne``: PNG figures of a finished run.

Each ``*_figure`` function returns a matplotlib :class:`~matplotlib.figure.Figure` (Agg canvas, no pyplot
global state), so tests can check axis labels and titles before :func:`save_figure` writes the PNG (and
SVG and PDF beside it) through the run folder's one atomic writer.

- ``curves``: training loss, the other training terms one panel per unit (nats, the estimators' own stage
  losses, squared errors, ...) and the validation selection metric per epoch (``history.jsonl``);
- ``mi``: MI estimates per epoch from the ``diagnostics`` of ``history.jsonl`` (MMMIE Fig. 2/3 style), one
  panel per estimator, each line naming both of its variables, the kind of bound in the title;
- ``confusion``: the row-normalised confusion matrix from ``metrics.json``, counts and whole percentages
  (largest-remainder rounding: every row sums to 100 %);
- ``tsne``: for a model with component codes (``has_component_codes``: MInD's shared, private and noise
  codes, the paper's Fig. 2) one t-SNE of every code, a panel per component; otherwise a t-SNE of the
  fused representation coloured by class. Both go through :func:`tsne_embedding`.

What a reviewer should never meet: a legend entry whose line is hidden under an identical one (equal
series are drawn once, the legend says which are equal), a y-axis that zooms until noise fills it
(:func:`keep_minimum_span`), an estimate below 0 with no word on what that means, ticks on t-SNE axes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from math import ceil
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..data.types import DataError
from ..models import InfoFusionModel, get_model_class
from ..training.runs import RunDir
from . import PLOT_KINDS
from .figure_style import (
    CLUB_TERMS,
    ESTIMATE_UNITS,
    ESTIMATOR_BOUNDS,
    ESTIMATOR_NAMES,
    OKABE_ITO,
    UNITS,
    epoch_axis,
    figure_style,
    keep_minimum_span,
    legend_below,
    new_figure,
    pair_words,
    save_figure,
    style,
    term_unit,
    term_words,
)

MAIN_LOSS_TERMS = ("loss", "task")
METRIC_WORDS = {"weighted_f1": "weighted F1", "macro_f1": "macro F1", "acc": "accuracy", "mae": "MAE"}
METRIC_WORDS.update({"corr": "correlation", "acc2": "binary accuracy", "acc7": "7-class accuracy"})
# The range each selection metric lives in: a widened axis stays inside it.
METRIC_BOUNDS: dict[str, tuple[float | None, float | None]] = {"corr": (-1.0, 1.0), "mae": (0.0, None)}
METRIC_BOUNDS.update({name: (0.0, 1.0) for name in ("weighted_f1", "macro_f1", "acc", "acc2", "acc7")})
METRIC_MINIMUM_SPAN = 0.1  # a 0.004 change in F1 shows as 4 % of the panel, not all of it
RELATIVE_MINIMUM_SPAN = 0.1  # loss panels: at least 10 % of the largest value
TSNE_MAX_POINTS = 2000  # t-SNE is quadratic; a seeded subsample keeps the figure quick
# Lines sharing a panel get different markers, so two that nearly coincide still both show.
LINE_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
COINCIDING = 0.005  # of a panel's span: lines closer than this are drawn as one

Series = tuple[list[int], list[float]]

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


# -- history ------------------------------------------------------------------------------------------
def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


@dataclass
class History:
    """The numbers of ``history.jsonl`` the figures draw, gathered in one pass over its records."""

    train: dict[str, Series] = field(default_factory=dict)
    valid: dict[str, Series] = field(default_factory=dict)
    diagnostics: dict[str, Series] = field(default_factory=dict)
    metric: str | None = None  # the validation selection metric
    scores: Series = field(default_factory=lambda: ([], []))
    best_epoch: int | None = None  # the last epoch that improved the selection metric
    epochs: int = 0

    def add(self, record: dict) -> None:
        epoch = int(record["epoch"]) + 1
        self.epochs += 1
        for section, found in (
            ("train", self.train),
            ("valid", self.valid),
            ("diagnostics", self.diagnostics),
        ):
            values = record.get(section)
            for name, value in values.items() if isinstance(values, dict) else ():
                if is_number(value):
                    epochs, numbers = found.setdefault(name, ([], []))
                    epochs.append(epoch)
                    numbers.append(float(value))
        select = record.get("select") if isinstance(record.get("select"), dict) else {}
        if self.metric is None:
            self.metric = next((k for k in select if k not in ("best", "improved")), None)
        if self.metric is not None and is_number(select.get(self.metric)):
            self.scores[0].append(epoch)
            self.scores[1].append(float(select[self.metric]))
            if select.get("improved") is True:
                self.best_epoch = epoch


def collect_history(records: Iterable[dict]) -> History:
    """One :class:`History` from epoch records, read one at a time (a long history is never held whole)."""
    history = History()
    for record in records:
        history.add(record)
    return history


def read_history(run_dir: Path) -> History:
    run = RunDir(run_dir)
    path = run.history_path
    if not path.exists():
        raise DataError(f"{run_dir} is not a run folder (no history.jsonl)", file=str(path))
    history = collect_history(run.iter_history())  # streamed: one line in memory at a time
    if not history.epochs:
        raise DataError("history.jsonl has no epochs yet", file=str(path))
    return history


# -- lines ----------------------------------------------------------------------------------------------
def equal_series(first: Series, second: Series) -> bool:
    """Same epochs, values equal up to float noise."""
    return first[0] == second[0] and np.allclose(first[1], second[1], rtol=1e-6, atol=1e-9)


def coinciding_series(first: Series, second: Series, tolerance: float) -> bool:
    """Same epochs and nowhere further apart than ``tolerance``: drawn, one would hide the other."""
    if first[0] != second[0]:
        return False
    return bool(np.max(np.abs(np.subtract(first[1], second[1])), initial=0.0) <= tolerance)


def distinct_lines(lines: list[tuple[str, Series]]) -> list[tuple[str, Series]]:
    """``lines`` with each group of coinciding series drawn once, its label naming them all.

    Equal series join as ``A = B``; series closer than half a percent of the panel's span (invisible
    apart at any size a figure is printed) as ``A ≈ B``, e.g. the total loss beside the task loss when
    the other terms weigh 2e-4 of it.
    """
    values = [v for _, (_, numbers) in lines for v in numbers if np.isfinite(v)]
    span = max(values, default=0.0) - min(values, default=0.0)
    largest = max((abs(v) for v in values), default=0.0)
    # The smallest span the panel will show (keep_minimum_span widens to at least this).
    tolerance = COINCIDING * max(span, RELATIVE_MINIMUM_SPAN * largest, 1e-12)
    kept: list[tuple[list[str], Series, bool]] = []  # labels, series, whether every member is equal
    for label, series in lines:
        for index, (labels, seen, exact) in enumerate(kept):
            if coinciding_series(seen, series, tolerance):
                labels.append(label)
                kept[index] = (labels, seen, exact and equal_series(seen, series))
                break
        else:
            kept.append(([label], series, True))
    return [((" = " if exact else " ≈ ").join(labels), series) for labels, series, exact in kept]


def draw_lines(
    axis: Axes,
    lines: list[tuple[str, Series]],
    linestyles: dict[str, str] | None = None,
    notes: dict[str, str] | None = None,
) -> None:
    """Each distinct series once (:func:`distinct_lines`), a marker of its own; ``notes`` (label ->
    remark) are added in brackets to the entry of the line that carries that label."""
    for index, (label, (epochs, values)) in enumerate(distinct_lines(lines)):
        members = label.replace(" ≈ ", " = ").split(" = ")
        remarks = list(dict.fromkeys(notes[m] for m in members if notes and m in notes))
        axis.plot(
            epochs,
            values,
            marker=LINE_MARKERS[index % len(LINE_MARKERS)],
            markersize=5,
            linestyle=(linestyles or {}).get(members[0], "-"),
            label=label + "".join(f" ({remark})" for remark in remarks),
        )


def largest_value(axis: Axes) -> float:
    values = [abs(float(v)) for line in axis.get_lines() for v in line.get_ydata() if np.isfinite(v)]
    return max(values, default=0.0)


def grid_figure(panels: int, max_columns: int | None = None, height_scale: float = 1.0) -> list[Axes]:
    """A figure of ``panels`` axes, in as few rows as the style's ``max_columns`` allows (a seven-panel
    row is unreadable on a page), the rows filled evenly; the axes in reading order."""
    rows = ceil(panels / (max_columns or style().max_columns))
    columns = ceil(panels / rows)
    figure = new_figure(columns, height_scale=height_scale, rows=rows)
    axes = list(np.atleast_1d(figure.subplots(rows, columns)).ravel())
    for spare in axes[panels:]:
        spare.remove()
    return axes[:panels]


# -- training curves ----------------------------------------------------------------------------------
def curves_figure(run_dir: Path) -> Figure:
    history = read_history(run_dir)
    loss_lines = [
        (f"training {term_words(n)}", history.train[n]) for n in MAIN_LOSS_TERMS if n in history.train
    ]
    if "task_loss" in history.valid:
        loss_lines.append(("validation task loss", history.valid["task_loss"]))
    # Every other training term on a panel of its own unit: stage losses (~1e2), nats and unitless
    # regularisers never share an axis.
    by_unit: dict[str, list[tuple[str, Series]]] = {}
    for name, values in history.train.items():
        if name not in MAIN_LOSS_TERMS:
            by_unit.setdefault(term_unit(name), []).append((term_words(name), values))
    # A CLUB value below 0 bounds nothing: its line's legend entry says so (once, if lines merged).
    notes = {
        term_words(name): "below 0: not an upper bound"
        for name, values in history.train.items()
        if name in CLUB_TERMS and min(values[1]) < 0
    }
    units = [unit for unit in UNITS if unit in by_unit]
    panels = 1 + len(units) + (history.metric is not None)
    axes = grid_figure(panels)
    figure = axes[0].figure

    loss_axis = axes[0]
    draw_lines(loss_axis, loss_lines, {"validation task loss": "--"})
    loss_axis.set(title="Loss", ylabel="mean loss per utterance batch")
    keep_minimum_span(loss_axis, RELATIVE_MINIMUM_SPAN * largest_value(loss_axis))
    legend_below(loss_axis)
    for axis, unit in zip(axes[1:], units, strict=False):
        draw_lines(axis, by_unit[unit], notes=notes)
        axis.set(title=UNITS[unit].title, ylabel=UNITS[unit].ylabel)
        keep_minimum_span(axis, max(UNITS[unit].minimum_span, RELATIVE_MINIMUM_SPAN * largest_value(axis)))
        legend_below(axis)
    if history.metric is not None:
        metric_axis = axes[-1]
        metric_words = METRIC_WORDS.get(history.metric, history.metric.replace("_", " "))
        metric_axis.plot(*history.scores, marker="o", color=OKABE_ITO[2], label=f"validation {metric_words}")
        if history.best_epoch is not None:
            best_score = history.scores[1][history.scores[0].index(history.best_epoch)]
            metric_axis.scatter(
                [history.best_epoch],
                [best_score],
                s=120,
                marker="*",
                color=OKABE_ITO[3],
                zorder=3,
                label=f"best (epoch {history.best_epoch})",
            )
        metric_axis.set(title=f"Validation {metric_words}", ylabel=metric_words)
        keep_minimum_span(metric_axis, METRIC_MINIMUM_SPAN, *METRIC_BOUNDS.get(history.metric, (None, None)))
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


def variables_words(estimator: str, pair: str) -> str:
    """Both variables an estimate is about, as the model's documentation writes them.

    ``("club", "text")`` -> ``I(h_text; f_text)`` (CLUB: a modality's input features and its encoder's
    output); ``("cpc", "audio")`` -> ``I(fusion; audio)``; ``("mine", "text-audio")`` ->
    ``I(f_text; f_audio)``; ``("likelihood", "text_audio")`` -> ``log q(audio | text)``.
    """
    parts = [pair_words(part) for part in pair.replace("-", "_").split("_")]
    if estimator == "club" and len(parts) == 1:
        return f"I(h_{parts[0]}; f_{parts[0]})"
    if estimator == "cpc" and len(parts) == 1:
        return f"I(fusion; {parts[0]})"
    if estimator == "mine" and len(parts) == 2:
        return f"I(f_{parts[0]}; f_{parts[1]})"
    if estimator == "likelihood" and len(parts) == 2:
        return f"log q({parts[1]} | {parts[0]})"
    if estimator == "hsic" and len(parts) == 2:
        return f"HSIC({parts[0]}, {parts[1]})"
    return pair_words(pair)


def mark_negative(axis: Axes, estimator: str) -> None:
    """Shade the region below 0 of an MI panel whose estimate went there, with what that means."""
    bound = ESTIMATOR_BOUNDS.get(estimator)
    values = [v for line in axis.get_lines() for v in line.get_ydata()]
    if bound is None or min(values, default=0.0) >= 0:
        return
    if bound == "upper bound":
        meaning = "not an upper bound (MI\u00a0≥\u00a00: CLUB's q(f\u00a0|\u00a0h) lags)"  # no break in "≥ 0"
    else:
        meaning = "a lower bound that says nothing (MI\u00a0≥\u00a00)"
    low, high = axis.get_ylim()
    axis.axhspan(min(low, 0.0), 0.0, color="0.85", zorder=0, label=f"below 0: {meaning}")
    axis.axhline(0.0, color="0.4", linewidth=0.8, zorder=1)
    axis.set_ylim(low, max(high, 0.0))


def mi_figure(run_dir: Path) -> Figure:
    history = read_history(run_dir)
    # MInD's Deep InfoMax JSD is a training term (the loss holds minus the estimate): shown as estimated.
    jsd = history.train.get("info") if run_model_class(run_dir).has_component_codes else None
    if not history.diagnostics and not jsd:
        raise DataError(
            f"run {run_dir} has no MI estimates: its history.jsonl diagnostics are empty "
            "(only models with MI terms log them, e.g. mmim, mmmie, mind)",
            file=str(RunDir(run_dir).history_path),
        )
    groups: dict[str, list[tuple[str, Series]]] = {}
    for key, values in history.diagnostics.items():
        estimator, pair = estimator_and_pair(key)
        groups.setdefault(estimator, []).append((variables_words(estimator, pair), values))
    if jsd:
        groups["jsd"] = [("all code pairs", (jsd[0], [-v for v in jsd[1]]))]
    axes = grid_figure(len(groups))
    figure = axes[0].figure
    for axis, (estimator, curves) in zip(axes, groups.items(), strict=True):
        draw_lines(axis, curves)
        name = ESTIMATOR_NAMES.get(estimator, estimator.upper())
        bound = ESTIMATOR_BOUNDS.get(estimator)
        axis.set(
            title=f"{name} ({bound})" if bound else name,
            ylabel=ESTIMATE_UNITS.get(estimator, "MI estimate (nats)"),
        )
        keep_minimum_span(axis, max(0.1, RELATIVE_MINIMUM_SPAN * largest_value(axis)))
        mark_negative(axis, estimator)
        epoch_axis(axis)
        # The diagnostics are measured on the validation split; MInD's JSD is its training term.
        legend_below(axis, title="training batches" if estimator == "jsd" else "validation split")
    figure.suptitle(f"Information estimates per epoch\n{run_label(run_dir)}")
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


def row_percentages(counts: np.ndarray) -> np.ndarray:
    """Whole percentages of each row that sum to exactly 100 (largest-remainder rounding).

    Rounding each cell on its own gives rows of 99 % or 101 %; here each row's cells are floored and the
    points left over go, one each, to the cells with the largest remainders (ties: the first cell). A
    row without utterances stays 0.
    """
    counts = np.asarray(counts, dtype=np.int64)
    percentages = np.zeros(counts.shape, dtype=np.int64)
    for row, total in enumerate(counts.sum(axis=1)):
        if total <= 0:
            continue
        exact = counts[row] * 100 / total
        floored = np.floor(exact).astype(np.int64)
        missing = 100 - int(floored.sum())
        order = np.argsort(-(exact - floored), kind="stable")
        floored[order[:missing]] += 1
        percentages[row] = floored
    return percentages


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
    percentages = row_percentages(counts)
    figure = new_figure(1, height_scale=max(1.0, 0.25 * len(names)))
    axis = figure.subplots()
    image = axis.imshow(percentages / 100, cmap="Blues", vmin=0.0, vmax=1.0)
    for row in range(len(names)):
        for column in range(len(names)):
            axis.text(
                column,
                row,
                f"{counts[row, column]}\n{percentages[row, column]}%",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if percentages[row, column] > 50 else "black",
            )
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axis.set_yticks(range(len(names)), [f"{n} ({t})" for n, t in zip(names, counts.sum(axis=1), strict=True)])
    axis.set(
        xlabel="predicted class",
        ylabel="true class (utterances)",
        title=f"Confusion matrix, {split} split\n(row-normalised; counts and % of the true class)",
    )
    figure.colorbar(image, ax=axis, label="fraction of the true class")
    figure.suptitle(run_label(run_dir))
    return figure


# -- t-SNE ----------------------------------------------------------------------------------------------
COMPONENT_NAMES = {"S": "shared", "P": "private", "N": "noise"}
MODALITY_ORDER = ("text", "audio", "visual")
BACKGROUND = "0.85"  # the other codes of a component panel, for where this one lies among them
TSNE_LEGEND_BELOW = 0.1  # t-SNE axes have no tick labels: the legend sits closer
MAX_CLASS_COLOURS = len(OKABE_ITO)


def tsne_embedding(points: np.ndarray, seed: int = 0) -> np.ndarray:
    """The one 2-D t-SNE of every figure; perplexity stays below the number of points (sklearn's rule)."""
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(1.0, (len(points) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)


def tsne_axis(axis: Axes, title: str) -> None:
    """t-SNE coordinates have no unit and no meaning of their own: no ticks, equal scales."""
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set(xlabel="t-SNE 1", ylabel="t-SNE 2", title=title)
    axis.set_aspect("equal", adjustable="box")


def class_colour(index: int) -> str | tuple:
    from matplotlib import colormaps

    if index < MAX_CLASS_COLOURS:
        return OKABE_ITO[index]
    return colormaps["tab20"](index % 20)


def scatter_by_class(
    axis: Axes,
    embedded: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    legend_title: str = "true class (utterances)",
) -> None:
    """One colour per class, small translucent dots (a dense cloud stays readable), a legend of classes."""
    for index, name in enumerate(names):
        chosen = labels == index
        if chosen.any():
            # Colour by class index, so a class keeps its colour when another one is absent.
            axis.scatter(
                embedded[chosen, 0],
                embedded[chosen, 1],
                s=style().marker_size * 0.6,
                alpha=0.55,
                color=class_colour(index),
                linewidths=0,
                label=f"{name} ({int(chosen.sum())})",
            )
    legend_below(axis, below=TSNE_LEGEND_BELOW, title=legend_title, markerscale=2.0)
    for handle in axis.get_legend().legend_handles:
        handle.set_alpha(1.0)  # the legend's dots solid, though the points are not


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
    from ..training.build import trainer_for_run

    trainer = trainer_for_run(run_dir, data)
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
        scatter_by_class(axis, embedded, labels, names)
    else:
        scatter = axis.scatter(
            embedded[:, 0], embedded[:, 1], c=labels, cmap="cividis", s=style().marker_size * 0.6, alpha=0.7
        )
        figure.colorbar(scatter, ax=axis, label="true label")
    tsne_axis(axis, f"t-SNE of the fused representation\n{split} split, {len(points)} utterances")
    figure.suptitle(run_label(run_dir))
    return figure


def collect_component_codes(trainer_or_model: Any, loader: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``{"S/text": (n, d), "P/text": ..., "N/text": ...}`` over a loader's real utterances, and labels.

    Accepts a :class:`~infofusion.training.trainer.Trainer` (its ``model``) or a model with component codes.
    """
    from ..training.trainer import Trainer

    model = trainer_or_model.model if isinstance(trainer_or_model, Trainer) else trainer_or_model
    codes, labels = model.collect_codes(loader)
    wanted = {name: value.numpy() for name, value in codes.items() if name.split("/")[0] in COMPONENT_NAMES}
    return wanted, labels.numpy()


def few_classes(labels: np.ndarray | None) -> list[int]:
    """The class indices of ``labels`` when they are a few whole numbers (2 to 8), else none."""
    if labels is None or not len(labels) or not np.allclose(labels, np.round(labels)):
        return []
    classes = sorted(int(v) for v in np.unique(labels))
    return classes if 1 < len(classes) <= MAX_CLASS_COLOURS and min(classes) >= 0 else []


def codes_figure(
    representations: dict[str, np.ndarray],
    labels: np.ndarray | None,
    seed: int = 0,
    title: str = "MInD codes (t-SNE)",
    names_of_classes: list[str] | None = None,
) -> Figure:
    """One t-SNE of every ``"<component>/<modality>"`` code array, drawn as small multiples.

    A panel per component (shared, private, noise) holds its codes coloured by modality (three colours),
    the other components' codes in light grey behind them, so a panel answers one question: do the
    modalities' shared codes meet, do their private codes part? With a few classes a last panel colours
    the shared codes by true class. Nine colours in one cloud of ~1,000 points answered none.
    """
    names = sorted(
        (n for n in representations if n.split("/")[0] in COMPONENT_NAMES),
        key=lambda n: ("SPN".index(n.split("/")[0]), n),
    )
    if not names:
        raise ValueError("no S/, P/ or N/ representations to plot")
    points = np.concatenate([np.asarray(representations[n], dtype=np.float64) for n in names])
    groups = np.concatenate([np.full(len(representations[n]), i) for i, n in enumerate(names)])
    embedded = tsne_embedding(points, seed)
    components = [c for c in "SPN" if any(n.startswith(f"{c}/") for n in names)]
    # The data's own order (text, audio, visual), so a modality keeps its colour across figures.
    modalities = sorted(
        {n.split("/", 1)[1] for n in names},
        key=lambda m: (MODALITY_ORDER.index(m) if m in MODALITY_ORDER else len(MODALITY_ORDER), m),
    )
    classes = few_classes(labels)

    panels = len(components) + bool(classes)
    axes = grid_figure(panels, max_columns=2)  # near-square t-SNE panels, two by two
    figure = axes[0].figure
    for axis in axes[1:]:
        axis.sharex(axes[0])  # one embedding: the same place means the same place in every panel
        axis.sharey(axes[0])
    size = style().marker_size * 0.5
    for axis, component in zip(axes, components, strict=False):
        mine = np.isin(groups, [i for i, n in enumerate(names) if n.startswith(f"{component}/")])
        for position, modality in enumerate(modalities):
            if f"{component}/{modality}" not in names:
                continue
            axis.scatter(
                *embedded[groups == names.index(f"{component}/{modality}")].T,
                s=size,
                color=OKABE_ITO[position % len(OKABE_ITO)],
                alpha=0.6,
                linewidths=0,
                label=modality,
            )
        # Behind the panel's own codes (zorder), and last in its legend.
        axis.scatter(
            *embedded[~mine].T, s=size * 0.6, color=BACKGROUND, linewidths=0, zorder=0, label="other codes"
        )
        tsne_axis(axis, f"{COMPONENT_NAMES[component]} codes ({component})")
        legend_below(axis, below=TSNE_LEGEND_BELOW, title="modality", markerscale=2.0)
        for handle in axis.get_legend().legend_handles:
            handle.set_alpha(1.0)
    if classes:
        axis = axes[-1]
        shared = np.isin(groups, [i for i, n in enumerate(names) if n.startswith("S/")])
        tiled = np.tile(np.asarray(labels), len(names))
        axis.scatter(*embedded[~shared].T, s=size * 0.6, color=BACKGROUND, linewidths=0)
        words = names_of_classes or []
        scatter_by_class(
            axis,
            embedded[shared],
            tiled[shared],
            [words[c] if c < len(words) else f"class {c}" for c in range(max(classes) + 1)],
            legend_title="true class (codes)",
        )
        tsne_axis(axis, "shared codes (S) by true class")
    figure.suptitle(title)
    return figure


def write_codes_figure(
    representations: dict[str, np.ndarray], labels: np.ndarray | None, path: str | Path, seed: int = 0
) -> Path:
    """:func:`codes_figure` as a PNG at ``path`` (nothing is written when there are no codes)."""
    return save_figure(codes_figure(representations, labels, seed), Path(path))


def plot_codes(run_dir: Path, data: str | None, split: str, output: Path) -> Path:
    """The S/P/N t-SNE PNG of a finished run's best checkpoint on one split of its (or other) data."""
    from ..training.build import trainer_for_run

    trainer = trainer_for_run(Path(run_dir), data)
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
    if read_history(run_dir).diagnostics or run_model_class(run_dir).has_component_codes:
        kinds.append("mi")
    if "confusion_matrix" in metrics.get(default_split(run_dir), {}):
        kinds.append("confusion")
    kinds.append("tsne")
    return [plot(run_dir, kind, None, None, None, style_name) for kind in kinds]
