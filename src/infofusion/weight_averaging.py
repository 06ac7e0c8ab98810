"""An exponential moving average of a model's weights (Polyak averaging), for ``train.ema_epochs``.

The trainer updates it after every optimiser step and evaluates, selects and checkpoints the averaged
weights instead of the last step's. On small validation splits a dialogue model's score jumps by
several points from one epoch to the next (IEMOCAP dev: 647 utterances), and the best epoch of such a
curve is partly a lucky draw; the average moves smoothly. Off by default: on MMMIE and IEMOCAP it
narrowed the spread on one adaptation seed and gave no level over six runs (``docs/workflow.md``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

# The decay starts low and rises to its target, (1 + t) / (WARMUP + t) at step t, so the first steps do
# not leave the random initialisation in the average for a whole horizon.
WARMUP = 10


class WeightAverage:
    """The moving average of ``model``'s state (parameters and floating buffers) over about
    ``horizon_steps`` optimiser steps; integer buffers (counters) follow the model."""

    def __init__(self, model: nn.Module, horizon_steps: float) -> None:
        if horizon_steps < 1:
            raise ValueError(f"an average over {horizon_steps} steps is no average")
        self.decay = 1.0 - 1.0 / horizon_steps
        self.steps = 0
        self.average = {name: value.detach().clone() for name, value in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (WARMUP + self.steps))
        for name, value in model.state_dict().items():
            average = self.average[name]
            if average.is_floating_point():
                average.lerp_(value.detach(), 1.0 - decay)
            else:
                average.copy_(value)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """``model`` holds the averaged weights inside the block and its own again after it."""
        own = {name: value.detach().clone() for name, value in model.state_dict().items()}
        model.load_state_dict(self.average)
        try:
            yield
        finally:
            model.load_state_dict(own)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "average": self.average}

    def load_state_dict(self, saved: dict) -> None:
        self.steps = int(saved["steps"])
        for name, value in saved["average"].items():
            self.average[name].copy_(value)
