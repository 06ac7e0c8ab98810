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
    """The moving average of ``model``'s state (learning parameters and floating buffers) over about
    ``horizon_steps`` optimiser steps; integer buffers (counters) follow the model. Frozen parameters
    (a frozen transformer inside the model, set at construction) never change: they are neither copied
    nor averaged, which keeps a step and the memory free of them."""

    def __init__(self, model: nn.Module, horizon_steps: float) -> None:
        if horizon_steps < 1:
            raise ValueError(f"an average over {horizon_steps} steps is no average")
        self.decay = 1.0 - 1.0 / horizon_steps
        self.steps = 0
        frozen = {name for name, parameter in model.named_parameters() if not parameter.requires_grad}
        self.average = {
            name: value.detach().clone() for name, value in model.state_dict().items() if name not in frozen
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (WARMUP + self.steps))
        state = model.state_dict()
        for name, average in self.average.items():
            if average.is_floating_point():
                average.lerp_(state[name], 1.0 - decay)
            else:
                average.copy_(state[name])

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """``model`` holds the averaged weights inside the block and its own again after it."""
        state = model.state_dict()
        own = {name: state[name].clone() for name in self.average}
        # Not strict: the frozen parameters the average leaves out keep their (unchanging) values.
        model.load_state_dict(self.average, strict=False)
        try:
            yield
        finally:
            model.load_state_dict(own, strict=False)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "average": self.average}

    def load_state_dict(self, saved: dict) -> None:
        self.steps = int(saved["steps"])
        for name, value in saved["average"].items():
            self.average[name].copy_(value)
