"""Paired differences of an ablation: each setting against a reference, seed by seed, with a 95 % interval.

`infofusion ablate` trains every setting of a grid on the same seeds (`OUTPUT/<setting>/seed_<s>/`). A
seed fixes the initial weights and the data order, so comparing two settings seed by seed removes the
part of the spread that the seed alone makes. For every setting this prints the reference's and the
setting's mean, the mean of the per-seed differences (setting minus reference) and its 95 % t-interval
(n - 1 degrees of freedom): an interval that excludes 0 says the term changes the score on this data.

    python benchmarks/paired_ablation.py runs/mi/mmim --reference full --metric acc
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

# Two-sided 95 % quantiles of Student's t for 1-9 degrees of freedom (more seeds: the normal's 1.96).
T_95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def scores(setting: Path, split: str, metric: str) -> dict[int, float]:
    """``metric`` on ``split`` of every finished seed run below ``setting``, by seed."""
    found = {}
    for run in sorted(setting.glob("seed_*")):
        metrics_file = run / "metrics.json"
        if metrics_file.is_file():
            value = json.loads(metrics_file.read_text(encoding="utf-8")).get(split, {}).get(metric)
            if isinstance(value, int | float):
                found[int(run.name.removeprefix("seed_"))] = 100.0 * float(value)
    return found


def paired(reference: dict[int, float], other: dict[int, float]) -> tuple[float, float, int]:
    """Mean difference (other - reference) over the seeds both have, its 95 % half-width, and n."""
    seeds = sorted(reference.keys() & other.keys())
    differences = [other[s] - reference[s] for s in seeds]
    if len(differences) < 2:
        return (differences[0] if differences else math.nan), math.nan, len(differences)
    spread = statistics.stdev(differences) / math.sqrt(len(differences))
    return statistics.mean(differences), T_95.get(len(differences) - 1, 1.96) * spread, len(differences)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ablation", type=Path, help="an `infofusion ablate` output folder")
    parser.add_argument("--reference", default="full", help="the setting every other is compared with")
    parser.add_argument("--metric", default="acc", help="a metric of metrics.json (acc, weighted_f1, ...)")
    parser.add_argument("--splits", default="valid,test", help="splits of metrics.json to compare")
    args = parser.parse_args()
    settings = sorted(p for p in args.ablation.iterdir() if p.is_dir() and any(p.glob("seed_*")))
    if not any(s.name == args.reference for s in settings):
        parser.error(
            f"no setting {args.reference!r} in {args.ablation} ({', '.join(s.name for s in settings)})"
        )
    for split in args.splits.split(","):
        reference = scores(args.ablation / args.reference, split, args.metric)
        print(f"\n{args.metric} on {split}, %: each setting against {args.reference}, paired by seed")
        print(f"| setting | seeds | mean | {args.reference} | difference | 95 % interval |")
        print("| --- | --- | --- | --- | --- | --- |")
        for setting in settings:
            if setting.name == args.reference:
                continue
            own = scores(setting, split, args.metric)
            difference, half, n = paired(reference, own)
            both = sorted(reference.keys() & own.keys())
            mean = statistics.mean(own[s] for s in both) if both else math.nan
            base = statistics.mean(reference[s] for s in both) if both else math.nan
            interval = f"[{difference - half:+.1f}, {difference + half:+.1f}]" if n >= 2 else "n < 2"
            print(f"| {setting.name} | {n} | {mean:.1f} | {base:.1f} | {difference:+.1f} | {interval} |")


if __name__ == "__main__":
    main()
