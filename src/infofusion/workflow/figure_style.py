"""How the figures of :mod:`infofusion.workflow.plots` look: palette, sizes, fonts and the words for
internal term names, so a figure can go into a paper as it is.

- The palette is Okabe and Ito's, which stays distinguishable under the common colour-vision deficiencies.
- ``screen`` is sized for reading on a monitor; ``paper`` for a two-column article (a 3.4 in column per
  panel, 7 in across both columns at most, 8 pt text).
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from cycler import cycler
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
VECTOR_FORMATS = ("svg", "pdf")  # written beside every PNG


@dataclass(frozen=True)
class FigureStyle:
    panel_width: float  # inches per panel
    panel_height: float
    max_width: float  # inches across all panels
    font_size: float
    dpi: int
    marker_size: float  # scatter points (t-SNE), in points^2
    max_columns: int  # panels side by side; more go to further rows

    def size(self, panels: int = 1, height_scale: float = 1.0) -> tuple[float, float]:
        return min(self.panel_width * panels, self.max_width), self.panel_height * height_scale

    def rc(self) -> dict:
        return {
            "font.size": self.font_size,
            "axes.titlesize": self.font_size + 1,
            "axes.labelsize": self.font_size,
            "legend.fontsize": self.font_size - 1,
            "legend.title_fontsize": self.font_size - 1,
            "xtick.labelsize": self.font_size - 1,
            "ytick.labelsize": self.font_size - 1,
            "figure.titlesize": self.font_size + 2,
            "axes.prop_cycle": cycler(color=OKABE_ITO),
            "svg.fonttype": "none",  # text stays text in the SVG: searchable, editable
            "pdf.fonttype": 42,
        }


STYLES = {
    "screen": FigureStyle(5.2, 4.2, 16.0, 10.0, 120, 28.0, 4),
    "paper": FigureStyle(3.4, 3.6, 7.0, 8.0, 300, 14.0, 3),
}

# Words for the internal names that appear as training terms and diagnostics.
TERM_WORDS = {
    "loss": "total loss",
    "task": "task loss",
    "task_loss": "task loss",
    # MMIM
    "stage_mmilb": "MMILB stage (likelihood fit)",
    "cpc": "CPC term: minus InfoNCE of I(fusion; modality)",
    "likelihood": "MMILB likelihood term",
    "entropy": "entropy estimate",
    # MMMIE
    "stage_estimators": "MINE and CLUB stage",
    "mi": "minus MINE: -Σ I(f_a; f_b), shared information",
    "msi": "CLUB in the loss: Σ I(h_m; f_m)",
    "msi_estimate": "CLUB estimate, unfloored",
    # MInD
    "np": "noise predicts the label (reversed)",
    "info": "minus Deep InfoMax JSD",
    "cons": "Barlow Twins consistency",
    "diff": "HSIC between codes",
    "recon": "reconstruction (MSE)",
    "cyr": "cyclic reconstruction (reversed)",
    "hsic": "HSIC",
}


@dataclass(frozen=True)
class Unit:
    """One panel of training terms: only terms in the same unit share an axis (no symlog mixtures)."""

    title: str
    ylabel: str
    minimum_span: float  # the y-axis never zooms in further than this (see ``keep_minimum_span``)


UNITS = {
    "nats": Unit("Terms in nats", "nats, mean per batch", 0.1),
    "stage": Unit("Estimators' own training losses", "stage loss, mean per batch", 0.1),
    "squared": Unit("Reconstruction terms", "mean squared error", 0.05),
    "hsic": Unit("Independence term", "HSIC (linear kernel)", 0.01),
    "correlation": Unit("Consistency term", "Barlow Twins loss (no unit)", 0.05),
    "none": Unit("Other terms (no unit)", "value, mean per batch", 0.05),
}
# The unit of each training term (``stage_*`` terms are always "stage"); unknown terms: "none".
TERM_UNITS = {
    "cpc": "nats",
    "likelihood": "nats",
    "entropy": "nats",
    "mi": "nats",
    "msi": "nats",
    "msi_estimate": "nats",
    "np": "nats",  # a cross-entropy
    "recon": "squared",
    "cyr": "squared",
    "diff": "hsic",
    "info": "none",  # Jensen-Shannon objective: a bound-like score, not nats
    "cons": "correlation",
}


def term_unit(name: str) -> str:
    return "stage" if name.startswith("stage_") else TERM_UNITS.get(name, "none")


# The quantity an estimator reports, for axis labels: only true MI estimates are in nats.
ESTIMATE_UNITS = {
    "hsic": "HSIC (linear kernel)",
    "jsd": "JSD objective (no unit)",
    "likelihood": "log-likelihood per utterance",
}
ESTIMATOR_NAMES = {
    "mine": "MINE",
    "club": "CLUB",
    "cpc": "CPC",
    "hsic": "HSIC",
    "likelihood": "MMILB log-likelihood",
    "jsd": "Deep InfoMax JSD",
}
# What each estimator's number is (issue 32 §4: every value says its kind of bound).
ESTIMATOR_BOUNDS = {
    "mine": "lower bound",
    "cpc": "lower bound",
    "club": "upper bound",
}
# Training terms that are CLUB values: below 0 they bound nothing, and the legend says so.
CLUB_TERMS = ("msi", "msi_estimate")
MODALITY_WORDS = {"t": "text", "a": "audio", "v": "visual"}  # short names; full names stay


def term_words(name: str) -> str:
    """``stage_mmilb`` -> ``MMILB stage (likelihood fit)``; unknown names keep their parts, spaced."""
    if name in TERM_WORDS:
        return TERM_WORDS[name]
    head, _, tail = name.partition("_")
    if head in TERM_WORDS and tail:
        return f"{TERM_WORDS[head]}: {pair_words(tail)}"
    return name.replace("_", " ")


def pair_words(pair: str) -> str:
    """``text-audio`` -> ``text & audio``; ``S_P`` -> ``S & P``; ``text`` -> ``text``."""
    for separator in ("-", "_", "/"):
        if separator in pair:
            return " & ".join(MODALITY_WORDS.get(part, part) for part in pair.split(separator))
    return MODALITY_WORDS.get(pair, pair)


_current_style: list[FigureStyle] = [STYLES["screen"]]


@contextmanager
def figure_style(name: str = "screen") -> Iterator[FigureStyle]:
    """Figures made (and saved) inside use the named style of ``figure_style.STYLES``."""
    style = STYLES[name]
    _current_style.append(style)
    try:
        with matplotlib.rc_context(style.rc()):
            yield style
    finally:
        _current_style.pop()


def style() -> FigureStyle:
    return _current_style[-1]


def new_figure(panels: int = 1, height_scale: float = 1.0, rows: int = 1) -> Figure:
    """A blank figure for ``panels`` columns of ``rows`` rows of panels."""
    # Constrained layout keeps titles, legends outside the axes and colour bars inside the canvas.
    figure = Figure(figsize=style().size(panels, height_scale * rows), dpi=style().dpi, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


LEGEND_LINE = 34  # characters: a longer label wraps, so neighbouring panels' legends never overlap


def legend_below(axis, below: float = 0.2, **options) -> None:
    """A legend under the axes, where it never covers a line; long labels wrap, one column if any does.

    ``below``: how far under the axes it starts, as a fraction of their height (less without tick labels).
    """
    handles, labels = axis.get_legend_handles_labels()
    wrapped = [textwrap.fill(label, LEGEND_LINE) for label in labels]
    # Narrow paper panels, and labels that needed wrapping: one column of labels.
    columns = (
        2 if style().panel_width > 4 and all(len(label) <= LEGEND_LINE // 2 + 4 for label in labels) else 1
    )
    axis.legend(
        handles,
        wrapped,
        loc="upper center",
        bbox_to_anchor=(0.5, -below),
        ncols=columns,
        frameon=False,
        **options,
    )


def epoch_axis(axis) -> None:
    axis.set_xlabel("epoch")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))


def keep_minimum_span(axis, minimum: float, lower: float | None = None, upper: float | None = None) -> None:
    """Widen the y-axis to at least ``minimum`` around its lines, so a tiny change never fills the panel.

    ``lower``/``upper`` are the quantity's own bounds (F1 lies in [0, 1]): the widened range is moved
    inside them, never across.
    """
    values = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in axis.get_lines()] or [[]])
    values = values[np.isfinite(values)]
    if not len(values):
        return
    low, high = float(values.min()), float(values.max())
    if high - low >= minimum:
        return
    centre = (low + high) / 2
    low, high = centre - minimum / 2, centre + minimum / 2
    if lower is not None and low < lower:
        low, high = lower, lower + minimum
    if upper is not None and high > upper:
        low, high = upper - minimum, upper
    margin = 0.05 * minimum  # matplotlib's own margin, so markers at the edge stay whole
    axis.set_ylim(low - margin, high + margin)


def render(figure: Figure, kind: str) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format=kind)
    return buffer.getvalue()


def save_figure(figure: Figure, path: Path) -> Path:
    """The PNG at ``path`` and, beside it, the same figure as SVG and PDF; returns the PNG's path.

    Every file is rendered to bytes first and then written by the one atomic writer
    (:func:`infofusion.atomic.atomic_write_bytes`): a symlink planted at a figure's name is replaced, never
    followed, and a failed render leaves no file changed.
    """
    from ..training.runs import atomic_write_bytes

    path = Path(path)
    rendered = {path: render(figure, "png")}
    rendered.update({path.with_suffix(f".{kind}"): render(figure, kind) for kind in VECTOR_FORMATS})
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, data in rendered.items():
        atomic_write_bytes(target, data)
    return path
