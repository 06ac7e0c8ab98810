"""A linear probe of the frozen text front end: which window and pooling carry the most emotion.

For each setting the frozen encoder's pooled vectors of every utterance are computed (and cached like
a training run would), a logistic regression is fit on the training split and scored on the dev split
(weighted F1, %). Run from the repository root::

    .venv/bin/python benchmarks/text_frontend_probe.py ../shared/data/iemocap ../shared/data/meld \\
        --settings p0-target p3-target p3-window p3-target-noseg p8-target-256

A setting is ``p<past>[f<future>]-<pooling>[-noseg][-noname][-<max tokens>]``.
"""

from __future__ import annotations

import argparse
import re
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from infofusion.data import load_dataset
from infofusion.text import (
    FrontEndSpec,
    TextFrontEnd,
    WindowSpec,
    attach_windows,
    encode_frozen,
    load_transformer,
    special_tokens,
)
from infofusion.text.encoders import load_tokenizer


def parse_setting(name: str) -> tuple[WindowSpec, FrontEndSpec]:
    match = re.fullmatch(r"p(\d+)(?:f(\d+))?-(target|cls|window)((?:-noseg|-noname|-\d+)*)", name)
    if not match:
        raise SystemExit(f"bad setting {name!r}")
    past, future, pooling, flags = match.groups()
    tokens = re.findall(r"-(\d+)", flags)
    window = WindowSpec(
        past=int(past),
        future=int(future or 0),
        max_tokens=int(tokens[0]) if tokens else 128,
        speaker_names="-noname" not in flags,
    )
    return window, FrontEndSpec(mode="frozen", pooling=pooling, segments="-noseg" not in flags)


def probe(data: str, setting: str, transformer: torch.nn.Module, tokenizer: object) -> dict[str, float]:
    window, spec = parse_setting(setting)
    dataset = load_dataset(data, {"encoder": "hashing-8"})  # the sentence vectors are replaced below
    special = special_tokens(tokenizer)
    started = time.perf_counter()
    attach_windows(dataset, tokenizer, special, window)
    hidden = int(transformer.config.hidden_size)
    encode_frozen(dataset, spec, hidden, lambda: TextFrontEnd(spec, transformer), special.pad, window.key())
    seconds = time.perf_counter() - started

    def split(name: str) -> tuple[np.ndarray, np.ndarray]:
        rows = [u for d in dataset.splits[name] for u in d.utterances]
        return np.stack([u.features["text"] for u in rows]), np.array([u.label for u in rows])

    (x_train, y_train), (x_valid, y_valid) = split("train"), split("valid")
    classifier = LogisticRegression(max_iter=2000, C=1.0).fit(x_train, y_train)
    predicted = classifier.predict(x_valid)
    return {
        "weighted_f1": 100 * f1_score(y_valid, predicted, average="weighted"),
        "accuracy": 100 * float((predicted == y_valid).mean()),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("data", nargs="+")
    parser.add_argument("--settings", nargs="+", default=["p0-target", "p3-target", "p3-window"])
    parser.add_argument("--encoder", default="all-MiniLM-L6-v2")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer, transformer = load_tokenizer(args.encoder), load_transformer(args.encoder)
    print("| data | setting | dev weighted F1 | dev accuracy | encode s |\n|---|---|---|---|---|")
    for data in args.data:
        for setting in args.settings:
            result = probe(data, setting, transformer, tokenizer)
            print(
                f"| {data} | {setting} | {result['weighted_f1']:.1f} | {result['accuracy']:.1f} "
                f"| {result['seconds']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
