"""Data-parallel training across processes: ``torchrun --nproc_per_node N -m infofusion train ...``.

torchrun sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; with ``WORLD_SIZE > 1`` the trainer joins a
process group (gloo on CPU, NCCL on GPU), wraps the main loss in ``DistributedDataParallel`` and gives each
process its own shard of every epoch's training dialogues. Auxiliary stages (the MI estimators' own steps)
run outside DDP, so their gradients are averaged here with one ``all_reduce`` per step. Every process
evaluates the whole validation split with the same weights, so they all take the same early-stopping
decisions; only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistributedContext:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> DistributedContext:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        return cls(world_size, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")))

    def device(self, requested: str | None) -> torch.device:
        if requested:
            return torch.device(requested)
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank) if self.enabled else torch.device("cuda")
        return torch.device("cpu")

    def join(self, device: torch.device) -> None:
        """Join torchrun's process group once (the rendezvous comes from its environment variables)."""
        if not self.enabled or dist.is_initialized():
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def average_gradients(self, parameters: list[nn.Parameter]) -> None:
        if not self.enabled:
            return
        for parameter in parameters:
            if parameter.grad is not None:
                dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)
                parameter.grad /= self.world_size

    def average_scalars(self, values: dict[str, float]) -> dict[str, float]:
        """Mean over processes of per-process epoch averages (every process has as many batches)."""
        if not self.enabled or not values:
            return values
        names = sorted(values)
        tensor = torch.tensor([values[name] for name in names], dtype=torch.float64)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        totals = tensor.tolist()
        return {name: float(total) / self.world_size for name, total in zip(names, totals, strict=True)}


class LossModule(nn.Module):
    """The model's training loss as a module's forward, so DDP's gradient hooks see the main step."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch):  # noqa: ANN001 - a data.batching.Batch
        return self.model.training_loss(batch)


def wrap_for_training(model: nn.Module, context: DistributedContext, device: torch.device) -> nn.Module:
    """``LossModule(model)``, inside DistributedDataParallel when running under torchrun."""
    loss_module = LossModule(model)
    if not context.enabled:
        return loss_module
    from torch.nn.parallel import DistributedDataParallel

    # Unused parameters: MI estimator networks are trained by their own stages, not by the main loss.
    return DistributedDataParallel(
        loss_module,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True,
    )
