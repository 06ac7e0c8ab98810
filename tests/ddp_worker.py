"""Run by tests/test_distributed.py under torchrun: trains a model with an auxiliary stage (MMIM), then each
process writes a checksum of its weights and the training dialogues it saw, for the test to compare."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from infofusion.config import resolve_config
from infofusion.training.build import trainer_for_config


def main(output: str, model: str) -> None:
    torch.set_num_threads(1)
    config = resolve_config(
        model,
        None,
        ["train.epochs=2", "train.batch_size=4", "train.threads=1"],
        {
            "data": {
                "spec": "synthetic",
                "dialogues": {"train": 9, "valid": 3, "test": 3},
                "max_utterances": 5,
            }
        },
    )
    trainer = trainer_for_config(config, output)
    seen: list[str] = []
    for epoch in range(2):
        trainer.loaders["train"].set_epoch(epoch)
        seen.append(sorted({d for batch in trainer.loaders["train"] for d in batch.dialogue_ids}))
    metrics = trainer.fit()
    digest = hashlib.sha256()
    for name, tensor in sorted(trainer.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    rank = int(os.environ["RANK"])
    report = {
        "rank": rank,
        "world_size": int(os.environ["WORLD_SIZE"]),
        "weights": digest.hexdigest(),
        "seen": seen,
        "batches": len(trainer.loaders["train"]),
        "units": len(trainer.loaders["train"].dialogues),  # utterances for utterance-level models
        "valid_acc": metrics["valid"]["acc"],
    }
    Path(output, f"rank_{rank}.json").write_text(json.dumps(report), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
