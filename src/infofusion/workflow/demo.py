"""``infofusion demo``: the seed models beside a baseline on the embedded synthetic data, in minutes.

MMIM, MMMIE and MInD train next to ``late_fusion`` on the same seeded dialogues. The synthetic generator
knows its mixing matrices, so the exact mutual information between two modalities' features is known
(:func:`~infofusion.data.synthetic.true_mutual_information`); MMMIE's MINE estimates between the
modalities' learned representations are shown against it. By the data-processing inequality an
estimate on representations can only be at or below the truth on the raw features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

from ..config import resolve_config
from ..data.synthetic import true_mutual_information
from ..training.build import load_data_for_config, train
from ..training.runs import RunDir
from .report import markdown_table

DEMO_MODELS = ("late_fusion", "mmim", "mmmie", "mind")
MODEL_TITLES = {
    "late_fusion": "late fusion (baseline)",
    "mmim": "MMIM",
    "mmmie": "MMMIE",
    "mind": "MInD",
}


@dataclass
class DemoResult:
    output: Path
    metrics: dict[str, dict] = field(default_factory=dict)
    true_mi: dict[str, float] = field(default_factory=dict)  # "text-audio" -> nats
    estimated_mi: dict[str, float] = field(default_factory=dict)  # MMMIE's MINE at the best epoch
    figures: list[Path] = field(default_factory=list)

    def results_table(self) -> str:
        header = ["model", "valid acc", "valid weighted F1", "test acc", "test weighted F1", "best epoch"]
        rows = []
        for model, metrics in self.metrics.items():
            valid, test = metrics["valid"], metrics.get("test", {})
            rows.append(
                [
                    MODEL_TITLES.get(model, model),
                    f"{valid['acc']:.3f}",
                    f"{valid['weighted_f1']:.3f}",
                    f"{test['acc']:.3f}" if test else "",
                    f"{test['weighted_f1']:.3f}" if test else "",
                    str(metrics["best_epoch"]),
                ]
            )
            rows[-1].append(f"{metrics['seconds']:.1f}")
        return markdown_table([*header, "seconds"], rows)

    def mi_table(self) -> str:
        header = ["modality pair", "true I(x_a; x_b), nats", "MMMIE MINE on representations, nats"]
        rows = [
            [pair.replace("-", " & "), f"{truth:.2f}", _number(self.estimated_mi.get(pair))]
            for pair, truth in self.true_mi.items()
        ]
        return markdown_table(header, rows)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def run_demo(output: Path, epochs: int, echo: Callable[[str], None] = print) -> DemoResult:
    """Train :data:`DEMO_MODELS` into ``output/<model>``, write their figures; the collected results."""
    from .plots import write_run_figures

    result = DemoResult(Path(output))
    for model in DEMO_MODELS:
        config = resolve_config(model, None, [f"train.epochs={epochs}"])
        echo(f"== training {MODEL_TITLES[model]} ({model}) on synthetic data, {epochs} epochs ==")
        result.metrics[model] = train(config, result.output / model, overwrite=True)
        result.figures += write_run_figures(result.output / model)
    dataset = load_data_for_config(resolve_config(DEMO_MODELS[0], None, []))
    for first, second in combinations(dataset.modalities, 2):
        result.true_mi[f"{first}-{second}"] = true_mutual_information(dataset, first, second)
    history = RunDir(result.output / "mmmie").history()
    best = max(result.metrics["mmmie"]["best_epoch"] - 1, 0)
    diagnostics = next((r["diagnostics"] for r in history if r["epoch"] == best), {})
    result.estimated_mi = {
        key.split("/", 1)[1]: value for key, value in diagnostics.items() if key.startswith("mine/")
    }
    return result
