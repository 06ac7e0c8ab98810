"""Does a moving average of the weights (``train.ema_epochs``) pick epochs that hold up on new dialogues?

The trainer keeps the epoch whose validation score is best. On a small validation split whose curve jumps
by points from epoch to epoch, that score is partly the luck of the draw, and the split that chose the
epoch cannot say by how much. This script measures it by cross-selection: the validation dialogues are
dealt into two halves, the epoch is chosen on one half and scored on the other (both ways, averaged), so
the score it prints was never used to choose anything. It prints, for each ``train.ema_epochs`` value and
model seed, the trainer's own figure (best epoch on the whole validation split) next to the
cross-selected one. ``--rules`` adds other ways to choose the epoch on the choosing half (a smoothed
weighted F1, the lowest loss), each cross-selected the same way.

The data set is read once (with ``--set seed=S`` choosing the text adaptation, which is cached), and every
model seed trains on those same vectors, so the rows differ only in the model's initialisation and data
order and in the averaging. The config is the one ``infofusion train`` resolves for the same options
(``--recipe iemocap``: MMMIE reads the frozen all-mpnet-base-v2); ``--set text.mode=adapted`` measures
the adapted MiniLM instead.

    python benchmarks/weight_averaging.py --data ../shared/data/iemocap --model mmmie --recipe iemocap \\
        --ema 0,1,3 --model-seeds 1,2,3 --set seed=1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from infofusion import metrics
from infofusion.config import resolve_config
from infofusion.training.build import build_trainer, load_data_for_config
from infofusion.training.trainer import Trainer


class RecordingTrainer(Trainer):
    """The one Trainer, keeping every validation pass's predictions while it fits."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.valid_passes: list[dict[str, np.ndarray]] = []

    def predict(self, split: str) -> dict[str, np.ndarray]:
        result = super().predict(split)
        if split == "valid":
            self.valid_passes.append(result)
        return result


def utterance_dialogues(trainer: Trainer) -> np.ndarray:
    """The dialogue index of each validation utterance, in the order ``Trainer.predict`` returns them."""
    names: list[str] = []
    for batch in trainer.loader("valid"):
        for row, dialogue in enumerate(batch.dialogue_ids):
            names += [dialogue] * int(batch.mask[row].sum())
    order = {name: index for index, name in enumerate(dict.fromkeys(names))}
    return np.array([order[name] for name in names])


def weighted_f1(passed: dict[str, np.ndarray], chosen: np.ndarray, classes: int) -> float:
    return 100 * metrics.weighted_f1(passed["predictions"][chosen], passed["labels"][chosen], classes)


def log_loss(passed: dict[str, np.ndarray], chosen: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels (lower is better)."""
    chances = passed["probabilities"][chosen][np.arange(int(chosen.sum())), passed["labels"][chosen]]
    return float(-np.log(np.clip(chances, 1e-12, None)).mean())


def smoothed(curve: list[float], width: int = 3) -> list[float]:
    """Each epoch's score averaged with its neighbours (a window of ``width`` epochs, cut at the ends)."""
    half = width // 2
    return [statistics.fmean(curve[max(0, i - half) : i + half + 1]) for i in range(len(curve))]


# How an epoch is chosen from one set of validation utterances: the index of the chosen pass.
SELECTION_RULES = {
    "wf1": lambda passes, rows, classes: int(np.argmax([weighted_f1(p, rows, classes) for p in passes])),
    "wf1-smooth3": lambda passes, rows, classes: int(
        np.argmax(smoothed([weighted_f1(p, rows, classes) for p in passes]))
    ),
    "loss": lambda passes, rows, classes: int(np.argmin([log_loss(p, rows) for p in passes])),
}


def cross_selected(
    passes: list[dict[str, np.ndarray]], dialogues: np.ndarray, classes: int, rule: str = "wf1"
) -> float:
    """Mean over the two halves of: the score on one half at the epoch the rule chose on the other."""
    halves = [dialogues % 2 == 0, dialogues % 2 == 1]
    results = []
    for choose, score in (halves, halves[::-1]):
        results.append(weighted_f1(passes[SELECTION_RULES[rule](passes, choose, classes)], score, classes))
    return statistics.fmean(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="mmmie")
    parser.add_argument("--recipe", default=None, help="a corpus's recipe (configs/recipes), e.g. iemocap")
    parser.add_argument("--ema", default="0,1,3", help="train.ema_epochs values")
    parser.add_argument("--model-seeds", default="1,2,3")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument(
        "--rules",
        default="wf1",
        help=f"epoch-selection rules to cross-select with, of {', '.join(SELECTION_RULES)} "
        "(loss: the lowest negative log-likelihood; wf1-smooth3: wF1 averaged over 3 neighbouring epochs)",
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    rules = args.rules.split(",")
    unknown = [rule for rule in rules if rule not in SELECTION_RULES]
    if unknown:
        parser.error(f"--rules: unknown {', '.join(unknown)}; known: {', '.join(SELECTION_RULES)}")
    torch.set_num_threads(args.threads)

    overrides = [f"data.spec={args.data}", f"train.threads={args.threads}", *args.overrides]
    # Resolved once, then each run's seed and averaging on top.
    base = resolve_config(args.model, None, overrides, recipe=args.recipe)
    dataset = load_data_for_config(base)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for ema in [float(v) for v in args.ema.split(",")]:
            for seed in [int(v) for v in args.model_seeds.split(",")]:
                config = resolve_config(args.model, None, [f"seed={seed}", f"train.ema_epochs={ema}"], base)
                folder = Path(scratch) / f"ema{ema}-seed{seed}"
                trainer = build_trainer(
                    config, folder, dataset=dataset, echo=lambda _: None, trainer_class=RecordingTrainer
                )
                metrics = trainer.fit()
                passes = trainer.valid_passes[:-1]  # the last pass is finish()'s, on the best epoch
                classes = trainer.info.num_classes
                dialogues = utterance_dialogues(trainer)
                row = {
                    "ema": ema,
                    "seed": seed,
                    "best": 100 * metrics["valid"]["weighted_f1"],
                    "best_epoch": metrics["best_epoch"],
                    "epochs": len(passes),
                    **{rule: cross_selected(passes, dialogues, classes, rule) for rule in rules},
                }
                rows.append(row)
                crossed = "  ".join(f"cross-selected by {rule} {row[rule]:.1f}" for rule in rules)
                print(
                    f"ema_epochs {ema:g}  seed {seed}: best epoch {row['best_epoch']:>2} "
                    f"of {row['epochs']:>2}  valid wF1 {row['best']:.1f}  {crossed}",
                    flush=True,
                )
    columns = " | ".join(f"cross-selected wF1, by {rule}" for rule in rules)
    print(f"\n| train.ema_epochs | valid wF1, best epoch (mean ± std) | {columns} | seeds |")
    print("| --- | --- | " + "--- | " * len(rules) + "--- |")
    for ema in dict.fromkeys(r["ema"] for r in rows):
        chosen = [r for r in rows if r["ema"] == ema]
        cells = [mean_std([r[key] for r in chosen]) for key in ["best", *rules]]
        print(f"| {ema:g} | {' | '.join(cells)} | {len(chosen)} |")


def mean_std(values: list[float]) -> str:
    return f"{statistics.fmean(values):.1f} ± {statistics.pstdev(values):.1f}"


if __name__ == "__main__":
    main()
