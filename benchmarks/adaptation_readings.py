"""Cross-fitted adaptation (``text.adapt_folds`` K > 1): how the validation and test splits are read.

The training split is always read fold by fold, each fold by the classifier that did not learn it. The
other splits can be read two ways, compared here:

- ``mean``: the mean of the K classifiers' vectors (what the library does, and what inference does);
- ``soup``: one transformer whose weights are the mean of the K classifiers' (one forward pass).

The fold classifiers come from the library's own adaptation (``adapt_text_front_end``, the run's cache),
so a later ``infofusion train`` with the same seed reuses them. Each listed model then trains on each
reading, with its YAML's settings. Dev splits only. Run from the repository root::

    .venv/bin/python benchmarks/adaptation_readings.py ../shared/data/iemocap --seed 1 \\
        --models mmmie,mmim,mind --readings mean,soup
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from infofusion.config import resolve_config
from infofusion.data.text_encoder import load_tokenizer
from infofusion.text import TextFrontEnd, adapted_transformer, front_end_spec, special_tokens, text_settings
from infofusion.text.prepare import encode_windows, mean_reading
from infofusion.text_adaptation import adapt_text_front_end
from infofusion.trainer import Trainer, load_data_for_config


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
    windowed = copy.deepcopy(config)
    windowed["text"]["mode"] = "finetune"  # the windows stay on the utterances
    dataset = load_data_for_config(windowed)
    start = time.time()
    adapted = adapt_text_front_end(config, dataset, Trainer)
    text = text_settings(config)
    spec = front_end_spec(text)
    pad = special_tokens(load_tokenizer(text.encoder)).pad
    folds = [TextFrontEnd(spec, adapted_transformer(text.encoder, state)) for state in adapted.states]
    # Each fold in one pass, as the library reads it (batches of similar length: the same padding).
    train = dataset.splits["train"]
    for fold, front_end in enumerate(folds):
        held = [u for d, k in zip(train, adapted.train_fold, strict=True) if k == fold for u in d.utterances]
        vectors = encode_windows(front_end, [u.window for u in held], pad)
        for utterance, vector in zip(held, vectors, strict=True):
            utterance.features["text"] = vector
    others = [
        u for name, split in dataset.splits.items() if name != "train" for d in split for u in d.utterances
    ]
    windows = [u.window for u in others]
    readings = {}
    for reading in args.readings.split(","):
        if reading == "mean":
            readings[reading] = mean_reading(folds, windows, pad)
        elif reading == "soup":
            soup = {
                name: torch.stack([s[name] for s in adapted.states]).mean(0) for name in adapted.states[0]
            }
            readings[reading] = encode_windows(
                TextFrontEnd(spec, adapted_transformer(text.encoder, soup)), windows, pad
            )
        else:
            parser.error(f"unknown reading {reading!r} (mean, soup)")
    for split in dataset.splits.values():
        for dialogue in split:
            for utterance in dialogue.utterances:
                utterance.window = None
    print(f"adaptation and readings: {time.time() - start:.0f} s\n")
    print("| data | seed | reading | model | valid weighted F1 | valid accuracy | best epoch | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    results = []
    for reading, vectors in readings.items():
        for utterance, vector in zip(others, vectors, strict=True):
            utterance.features["text"] = vector
        for model in args.models.split(","):
            began = time.time()
            model_config = resolve_config(model, None, ["text.mode=frozen", *overrides], extra)
            output = Path(args.output) / Path(args.data).name / f"seed_{args.seed}" / reading / model
            metrics = Trainer(model_config, output, dataset=dataset, echo=lambda _: None).fit()
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
