"""Cross-fitted adaptation (``text.adapt_folds`` K > 1): what the model reads from the K classifiers.

The training split is always read fold by fold, each fold by the classifier that did not learn it. The
readings compared here:

- ``mean``: the pooled vectors; the other splits read as the mean of the K classifiers' vectors (what the
  library does, and what inference does);
- ``soup``: the other splits read by one transformer whose weights are the mean of the K classifiers'
  (one forward pass);
- ``head``: the classifiers' head outputs (one score per class) in place of the pooled vectors, each
  training fold's from its classifier, the other splits' the mean over the classifiers;
- ``concat``: the pooled vectors and the head outputs side by side.

The data set is read by the library itself (``load_data_for_config``, the adaptation's cache), so a later
``infofusion train`` with the same seed reuses its classifiers; the soup reading reads the other splits
again through the inference path (``WindowReader``). Each listed model then trains on each
reading, with its YAML's settings. Dev splits only. Run from the repository root::

    .venv/bin/python benchmarks/adaptation_readings.py ../shared/data/iemocap --seed 1 \\
        --models mmmie,mmim,mind --readings mean,soup,head,concat
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from infofusion.config import resolve_config
from infofusion.data.types import Dataset
from infofusion.text import ADAPTED_STATE_KEY, WindowReader, text_settings
from infofusion.text.adaptation import adaptation_config, adaptation_folder, fold_key, training_folds
from infofusion.training.build import build_trainer, load_data_for_config


def head_outputs(config: dict, dataset: Dataset, dialogues: list, folds: int) -> np.ndarray:
    """Every utterance's head outputs (``dialogues`` in split order): each training fold's from the
    classifier that did not learn it, the other splits' the mean over the classifiers."""
    text = text_settings(config)
    classifier = adaptation_config(config)
    key = dataset.text_provenance.adaptation
    train_fold = training_folds(len(dataset.splits["train"]), folds, int(config["seed"]))
    # Each utterance's reader: its training dialogue's fold, -1 (every classifier) in the other splits.
    reader = np.concatenate(
        [
            np.repeat(
                train_fold if name == "train" else [-1] * len(split), [len(d.utterances) for d in split]
            )
            for name, split in dataset.splits.items()
        ]
    )
    outputs = []
    for fold, state in enumerate(dataset.meta[ADAPTED_STATE_KEY]):
        WindowReader(text, False, [state]).fill(dialogues)  # this classifier's vectors, as inference reads
        vectors = np.stack([u.features["text"] for d in dialogues for u in d.utterances])
        weights = adaptation_folder(classifier, fold_key(key, fold, folds)).load_best_state("cpu")["model"]
        outputs.append(vectors @ weights["head.weight"].numpy().T + weights["head.bias"].numpy())
    read = np.mean(outputs, axis=0)
    for fold, values in enumerate(outputs):
        read[reader == fold] = values[reader == fold]
    return read.astype(np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--models", default="mmmie,mmim,mind")
    parser.add_argument("--readings", default="mean,soup")
    parser.add_argument("--output", default="runs/adaptation_readings")
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = ["train.threads=1", f"text.adapt_folds={args.folds}"]
    extra = {"data": {"spec": args.data}, "seed": args.seed}
    config = resolve_config("mmmie", None, overrides, extra)
    start = time.time()
    # The library's own reading (what `infofusion train` trains on): each training fold by the classifier
    # that did not learn it, the other splits by the mean of the classifiers' vectors.
    dataset = load_data_for_config(config)
    dialogues = [d for split in dataset.splits.values() for d in split]
    others = [d for name, split in dataset.splits.items() if name != "train" for d in split]
    utterances = [u for d in dialogues for u in d.utterances]
    library = np.stack([u.features["text"] for u in utterances])
    readings = {}
    for reading in args.readings.split(","):
        if reading == "mean":
            readings[reading] = library
        elif reading == "soup":
            states = dataset.meta[ADAPTED_STATE_KEY]
            soup = {name: torch.stack([s[name] for s in states]).mean(0) for name in states[0]}
            WindowReader(text_settings(config), False, [soup]).fill(others)  # as inference would read
            readings[reading] = np.stack([u.features["text"] for u in utterances])
        elif reading in ("head", "concat"):
            if "head" not in readings:
                readings["head"] = head_outputs(config, dataset, dialogues, args.folds)
            if reading == "concat":
                readings[reading] = np.hstack([library, readings["head"]])
        else:
            parser.error(f"unknown reading {reading!r} (mean, soup, head, concat)")
    readings = {name: readings[name] for name in args.readings.split(",")}
    print(f"adaptation and readings: {time.time() - start:.0f} s\n")
    print("| data | seed | reading | model | valid weighted F1 | valid accuracy | best epoch | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    results = []
    for reading, vectors in readings.items():
        for utterance, vector in zip(utterances, vectors, strict=True):
            utterance.features["text"] = vector
        for model in args.models.split(","):
            began = time.time()
            model_config = resolve_config(model, None, ["text.mode=frozen", *overrides], extra)
            output = Path(args.output) / Path(args.data).name / f"seed_{args.seed}" / reading / model
            metrics = build_trainer(model_config, output, dataset=dataset, echo=lambda _: None).fit()
            valid, seconds = metrics["valid"], time.time() - began
            print(
                f"| {Path(args.data).name} | {args.seed} | {reading} | {model} "
                f"| {100 * valid['weighted_f1']:.1f} | {100 * valid['acc']:.1f} | {metrics['best_epoch']} "
                f"| {seconds:.0f} |",
                flush=True,
            )
            results.append({"reading": reading, "model": model, "valid": valid, "seconds": seconds})
    (Path(args.output) / "results.jsonl").open("a").write("".join(json.dumps(r) + "\n" for r in results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
