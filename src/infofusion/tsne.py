"""t-SNE pictures of MInD's shared (S), private (P) and noise (N) codes, as in the paper's Fig. 2.

One t-SNE of every code of every utterance of a split: colour family by component (S blue, P red,
N green, the paper's colours), shade by modality, marker by class when the labels are a few classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

COMPONENT_COLOURMAPS = {"S": "Blues", "P": "Reds", "N": "Greens"}
COMPONENT_NAMES = {"S": "shared", "P": "private", "N": "noise"}
MARKERS = ("o", "^", "s", "D", "v", "P")


def collect_mind_representations(
    trainer_or_model: Any, loader: Any
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``{"S/text": (n, d), "P/text": ..., "N/text": ...}`` over a loader's real utterances, and labels.

    Accepts a :class:`~infofusion.trainer.Trainer` (its ``model``) or a MInD model; runs in eval mode.
    """
    model = getattr(trainer_or_model, "model", trainer_or_model)
    codes, labels = model.collect_codes(loader)
    wanted = {name: value.numpy() for name, value in codes.items() if name.split("/")[0] in COMPONENT_NAMES}
    return wanted, labels.numpy()


def tsne_figure(
    representations: dict[str, np.ndarray],
    labels: np.ndarray | None,
    path: str | Path,
    seed: int = 0,
    title: str = "MInD codes (t-SNE)",
) -> Path:
    """Write a PNG of a 2-D t-SNE of every ``"<component>/<modality>"`` code array; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    names = sorted(
        (n for n in representations if n.split("/")[0] in COMPONENT_NAMES),
        key=lambda n: ("SPN".index(n.split("/")[0]), n),
    )
    if not names:
        raise ValueError("no S/, P/ or N/ representations to plot")
    points = np.concatenate([np.asarray(representations[n], dtype=np.float64) for n in names])
    groups = np.concatenate([np.full(len(representations[n]), i) for i, n in enumerate(names)])
    # Perplexity must stay below the number of points; t-SNE's default of 30 otherwise.
    perplexity = float(min(30.0, max(2.0, (len(points) - 1) / 3)))
    embedded = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        points
    )

    label_values = np.asarray(labels) if labels is not None else None
    classes: list = []
    if label_values is not None and np.allclose(label_values, np.round(label_values)):
        classes = sorted(np.unique(label_values).tolist())
    if not 1 < len(classes) <= len(MARKERS):
        classes = []
    tiled_labels = np.tile(label_values, len(names)) if classes else None

    modalities = sorted({n.split("/", 1)[1] for n in names})
    figure, axis = plt.subplots(figsize=(8, 6.5), dpi=120)
    for index, name in enumerate(names):
        component, modality = name.split("/", 1)
        shade = 0.45 + 0.45 * modalities.index(modality) / max(len(modalities) - 1, 1)
        colour = plt.get_cmap(COMPONENT_COLOURMAPS[component])(shade)
        chosen = groups == index
        for class_index, value in enumerate(classes or [None]):
            mask = chosen if value is None else chosen & (tiled_labels == value)
            axis.scatter(
                embedded[mask, 0],
                embedded[mask, 1],
                s=7,
                color=colour,
                marker=MARKERS[class_index],
                alpha=0.7,
                linewidths=0,
                label=f"{component} ({COMPONENT_NAMES[component]}) {modality}" if class_index == 0 else None,
            )
    legend = axis.legend(loc="best", fontsize=7, markerscale=2, title="component / modality")
    if classes:
        axis.add_artist(legend)
        handles = [
            axis.scatter([], [], marker=MARKERS[i], color="grey", s=20, label=f"class {value:g}")
            for i, value in enumerate(classes)
        ]
        axis.legend(handles=handles, loc="lower right", fontsize=7, title="label")
    axis.set_title(title)
    axis.set_xticks([])
    axis.set_yticks([])
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    plt.close(figure)
    return path


def plot_tsne(run_dir: Path, data: str | None, split: str, output: Path) -> Path:
    """The t-SNE PNG of a finished MInD run's best checkpoint on one split of its (or other) data."""
    from .cli import load_run

    trainer = load_run(Path(run_dir), data)
    representations, labels = collect_mind_representations(trainer, trainer.loader(split))
    return tsne_figure(representations, labels, output, title=f"MInD S/P/N codes, {split} split (t-SNE)")
