"""How the figures of :mod:`infofusion.workflow.plots` look: palette, sizes, fonts and the words for
internal term names, so a figure can go into a paper as it is.

- The palette is Okabe and Ito's, which stays distinguishable under the common colour-vision deficiencies.
- ``screen`` is sized for reading on a monitor; ``paper`` for a two-column article (a 3.4 in column per
  panel, 7 in across both columns at most, 8 pt text).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import matplotlib
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
    "screen": FigureStyle(5.2, 4.2, 16.0, 10.0, 120, 28.0),
    "paper": FigureStyle(3.4, 3.6, 7.0, 8.0, 300, 14.0),
}

# Words for the internal names that appear as training terms and diagnostics.
TERM_WORDS = {
    "loss": "total loss",
    "task": "task loss",
    "task_loss": "task loss",
    # MMIM
    "stage_mmilb": "MMILB stage (likelihood fit)",
    "cpc": "CPC term (fusion, modality)",
    "likelihood": "MMILB likelihood term",
    "entropy": "entropy estimate",
    # MMMIE
    "stage_estimators": "MINE and CLUB stage",
    "mi": "minus MINE (shared information)",
    "msi": "CLUB (modality-specific information)",
    # MInD
    "np": "noise predicts the label (reversed)",
    "info": "minus Deep InfoMax JSD",
    "cons": "Barlow Twins consistency",
    "diff": "HSIC between codes",
    "recon": "reconstruction (MSE)",
    "cyr": "cyclic reconstruction (reversed)",
    "hsic": "HSIC",
}
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


def new_figure(panels: int = 1, height_scale: float = 1.0) -> Figure:
    # Constrained layout keeps titles, legends outside the axes and colour bars inside the canvas.
    figure = Figure(figsize=style().size(panels, height_scale), dpi=style().dpi, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def legend_below(axis, **options) -> None:
    """A legend under the axes, where it never covers a line."""
    columns = 2 if style().panel_width > 4 else 1  # narrow paper panels: one column of labels
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=columns, frameon=False, **options)


def epoch_axis(axis) -> None:
    axis.set_xlabel("epoch")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))


def save_figure(figure: Figure, path: Path) -> Path:
    """The PNG at ``path`` and, beside it, the same figure as SVG and PDF; returns the PNG's path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    for kind in VECTOR_FORMATS:
        figure.savefig(path.with_suffix(f".{kind}"), format=kind)
    return path
