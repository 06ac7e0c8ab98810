"""Distributed data parallel training under torchrun (gloo on CPU, 2 processes on this machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from infofusion.data.batching import DialogueLoader
from infofusion.data.synthetic import make_synthetic
from infofusion.training.distributed import DistributedContext

HERE = Path(__file__).parent


def torchrun(*arguments: str, timeout: int = 240) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        environment.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.run(
        [*command, *arguments], capture_output=True, text=True, timeout=timeout, env=environment
    )


def test_shards_are_disjoint_cover_the_epoch_and_have_equal_batches():
    dataset = make_synthetic({"dialogues": {"train": 11, "valid": 2, "test": 2}, "max_utterances": 4})
    dialogues = dataset.splits["train"]
    loaders = [
        DialogueLoader(dialogues, 2, dataset.modalities, dataset.task, {}, True, 5, num_shards=3, shard=s)
        for s in range(3)
    ]
    for epoch in (0, 1):
        orders = []
        for loader in loaders:
            loader.set_epoch(epoch)
            orders.append(list(loader.order()))
        assert {len(order) for order in orders} == {4}  # 11 dialogues padded to 12
        assert {len(loader) for loader in loaders} == {2}
        covered = [index for order in orders for index in order]
        assert set(covered) == set(range(11))
        assert len(covered) - len(set(covered)) == 1  # exactly the padding repeats
    whole = DialogueLoader(dialogues, 2, dataset.modalities, dataset.task, {}, True, 5)
    assert sorted(whole.order()) == list(range(11)) and len(whole) == 6  # unsharded: the whole permutation
    with pytest.raises(ValueError, match="shard 3"):
        DialogueLoader(dialogues, 2, dataset.modalities, dataset.task, {}, num_shards=3, shard=3)


def test_context_outside_torchrun_is_a_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    context = DistributedContext.from_environment()
    assert not context.enabled and context.is_main
    context.barrier()  # no process group: nothing to wait for
    assert context.average_scalars({"loss": 2.0}) == {"loss": 2.0}
    assert not dist.is_initialized()


@pytest.mark.parametrize("model", ["mmim", "mmmie"])  # utterance / dialogue units, both with MI stages
def test_two_processes_keep_identical_weights_on_disjoint_shards(tmp_path, model):
    result = torchrun(str(HERE / "ddp_worker.py"), str(tmp_path), model)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank_{rank}.json").read_text()) for rank in (0, 1)]
    assert all(report["world_size"] == 2 for report in reports)
    # DDP averaged the main step and the trainer averaged the MI estimator stage: the same weights.
    assert reports[0]["weights"] == reports[1]["weights"]
    assert reports[0]["valid_acc"] == reports[1]["valid_acc"]
    units = reports[0]["units"]  # utterances (MMIM) or dialogues (MMMIE): what the processes share out
    per_process = -(-units // 2)
    assert reports[0]["batches"] == reports[1]["batches"] == -(-per_process // 4)
    for epoch in (0, 1):
        first, second = set(reports[0]["seen"][epoch]), set(reports[1]["seen"][epoch])
        assert len(first | second) == units  # together they cover the training split
        assert len(first & second) <= 1  # only the padding dialogue may be seen twice
    # Only rank 0 wrote the run files: one history line per epoch, not two.
    history = (tmp_path / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in history] == [0, 1]
    assert (tmp_path / "metrics.json").exists() and (tmp_path / "best.pt").exists()


def test_cli_train_under_torchrun(tmp_path):
    output = tmp_path / "run"
    result = torchrun(
        "-m",
        "infofusion",
        "train",
        "--model",
        "late_fusion",
        "--data",
        "synthetic",
        "--epochs",
        "2",
        "--set",
        "train.threads=1",
        "--output",
        str(output),
        "--json",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count('"valid"') == 1  # the metrics line is printed once, by rank 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert 0.0 <= metrics["valid"]["acc"] <= 1.0
