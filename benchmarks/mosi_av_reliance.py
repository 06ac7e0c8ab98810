"""How much a MOSI run leans on the bc-LSTM audio and visual vectors, which were fit to the labels of
every video in the shared file (a linear model reaches 92 % on those videos' visual vectors and 52 % on
new ones), so that no split of the file can say how a model does on new videos.

For each run folder (a ``seed_*`` folder, or a folder of them), its best checkpoint scores the file's
validation and test splits twice: as they are, and with the audio and visual vectors shuffled across the
split's utterances (seeded), which leaves them as uninformative as a near-chance modality is on new
videos while keeping their distribution. A model whose accuracy falls far on the shuffled rows reads its
sentiment off the leaked vectors; one that keeps it reads the transcripts. Prints a markdown table.

    python benchmarks/mosi_av_reliance.py runs/results/mosi/mmmie runs/results/mosi/bc_lstm
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from infofusion.training.build import trainer_for_run
from infofusion.training.trainer import Trainer

SHUFFLED = ("audio", "visual")


def run_folders(paths: list[str]) -> list[Path]:
    folders = []
    for path in map(Path, paths):
        seeds = sorted(path.glob("seed_*/best.pt"))
        folders += [seed.parent for seed in seeds] if seeds else [path]
    return folders


def shuffle_across_utterances(trainer: Trainer, split: str, seed: int) -> None:
    """Permute each of ``SHUFFLED``'s vectors across the split's utterances, in place."""
    utterances = [u for d in trainer.dataset.splits[split] for u in d.utterances]
    generator = np.random.default_rng(seed)
    for modality in SHUFFLED:
        if modality not in trainer.info.modalities:
            continue
        vectors = [u.features[modality] for u in utterances]
        for utterance, index in zip(utterances, generator.permutation(len(vectors)), strict=True):
            utterance.features[modality] = vectors[index]
    # The loaders collate batches as they are read: they see the shuffled vectors.


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", help="run folders (seed_* folders or their parent)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffle")
    args = parser.parse_args()
    print("| run | modalities | valid acc | valid acc, a/v shuffled | test acc | test acc, a/v shuffled |")
    print("| --- | --- | --- | --- | --- | --- |")
    for folder in run_folders(args.runs):
        trainer = trainer_for_run(folder)
        scores = []
        for split in ("valid", "test"):
            scores.append(trainer.evaluate(split)["acc"])
            shuffle_across_utterances(trainer, split, args.seed)
            scores.append(trainer.evaluate(split)["acc"])
        cells = " | ".join(f"{100 * score:.1f}" for score in scores)
        print(f"| {folder} | {','.join(trainer.info.modalities)} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
