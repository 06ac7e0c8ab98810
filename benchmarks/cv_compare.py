"""Settings compared on the same cross-validation folds: a Markdown table for choosing a recipe.

Each argument is an ``infofusion cross-validate`` output folder (its ``cv.json``); folders that differ
only by the model seed (``NAME``, ``NAME-s2``, ``NAME-s3``: a trailing ``-s<seed>``) are one setting.
Every experiment drawn with the same ``data.split_seed`` and fold count scores the same dialogues in each
fold, so a setting is compared with the reference fold by fold and seed by seed (paired): the mean of
those differences and its 95 % t-interval say whether the difference is more than the runs' spread. A
setting's CV figure is the mean over its seeds of the mean over folds; ± is the std over folds (of the
seed-averaged fold scores). The dev figure (the final runs, whose epoch was chosen on the dev split
itself) is shown beside, never used to choose.

    python benchmarks/cv_compare.py runs/cv/iemocap-mmmie-* --reference runs/cv/iemocap-mmmie-recipe
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

from scipy import stats

SEED_SUFFIX = re.compile(r"-s\d+$")


def held_out(folder: Path, summary: dict) -> object:
    """What makes two cross-validations' folds the same: the dialogues each fold holds out (from
    ``folds.json``), not how the data's path was spelled (``../data`` and ``/abs/data`` are one data set)."""
    folds = folder / "folds.json"
    if not folds.is_file():
        return summary["data"]
    plan = json.loads(folds.read_text(encoding="utf-8"))["plan"]
    return tuple(tuple(sorted(str(name) for name in fold["test"])) for fold in plan)


def read(folder: Path, metric: str | None) -> dict:
    summary = json.loads((folder / "cv.json").read_text(encoding="utf-8"))
    metric = metric or summary["metric"]
    return {
        "setting": SEED_SUFFIX.sub("", folder.name),
        "seed": summary["seed"],
        "metric": metric,
        "folds": [float(result["metrics"][metric]) for result in summary["fold_results"]],
        "plan": (summary["folds"], summary["groups"], summary["split_seed"], held_out(folder, summary)),
        "dev": (summary.get("final") or {}).get("dev", {}).get(metric, summary.get("dev")),
    }


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def std(values: list[float]) -> float:
    centre = mean(values)
    return math.sqrt(sum((v - centre) ** 2 for v in values) / len(values))


def paired(differences: list[float]) -> str:
    centre = mean(differences)
    if len(differences) < 2:
        return f"{100 * centre:+.1f}"
    spread = math.sqrt(sum((d - centre) ** 2 for d in differences) / (len(differences) - 1))
    half = stats.t.ppf(0.975, len(differences) - 1) * spread / math.sqrt(len(differences))
    low, high = 100 * (centre - half), 100 * (centre + half)
    return f"{100 * centre:+.1f} [{low:+.1f}, {high:+.1f}] (n={len(differences)})"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("experiments", nargs="+", type=Path, help="cross-validate output folders")
    parser.add_argument(
        "--reference", type=Path, required=True, help="the setting the others are paired with"
    )
    parser.add_argument("--metric", help="a held-out fold's metric (default: the one the runs selected on)")
    args = parser.parse_args()
    runs = [read(folder, args.metric) for folder in args.experiments if (folder / "cv.json").is_file()]
    reference_name = SEED_SUFFIX.sub("", args.reference.name)
    reference = {r["seed"]: r for r in runs if r["setting"] == reference_name}
    if not reference:
        parser.error(f"{args.reference} is not among the finished experiments")
    first = next(iter(reference.values()))
    metric, plan = first["metric"], first["plan"]
    settings: dict[str, dict[int, dict]] = {}
    for run in runs:
        if run["plan"] == plan and run["metric"] == metric:
            settings.setdefault(run["setting"], {})[run["seed"]] = run
        else:
            print(f"{run['setting']} (seed {run['seed']}): other folds or metric, left out")

    def figure(seeds: dict[int, dict]) -> float:
        return mean([mean(run["folds"]) for run in seeds.values()])

    print(
        f"| setting | seeds | CV {metric}, mean ± std over folds | per fold (seed mean) "
        f"| paired with {reference_name} [95 % CI] | dev (seed mean) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name, seeds in sorted(settings.items(), key=lambda item: -figure(item[1])):
        per_fold = [mean(column) for column in zip(*(run["folds"] for run in seeds.values()), strict=True)]
        shown = ", ".join(f"{100 * v:.1f}" for v in per_fold)
        differences = [
            a - b
            for seed, run in seeds.items()
            if seed in reference
            for a, b in zip(run["folds"], reference[seed]["folds"], strict=True)
        ]
        versus = (
            "reference"
            if name == reference_name
            else (paired(differences) if differences else "no common seed")
        )
        devs = [run["dev"] for run in seeds.values() if run["dev"] is not None]
        dev = f"{100 * mean(devs):.1f}" if devs else ""
        seed_list = ",".join(str(s) for s in sorted(seeds))
        print(
            f"| {name} | {seed_list} | {100 * figure(seeds):.1f} ± {100 * std(per_fold):.1f} | {shown} "
            f"| {versus} | {dev} |"
        )
    print(f"\n{len(settings)} settings, {len(runs)} cross-validations; folds: {plan[0]} by {plan[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
