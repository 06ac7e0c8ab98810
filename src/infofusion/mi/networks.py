"""Critics and variational networks shared by the estimators.

A *critic* maps a batch of paired samples to the full score matrix ``scores[i, j] = T(x_i, y_j)``:
the diagonal holds samples of the joint, the off-diagonal entries samples of the product of marginals.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .numerics import soft_clamp

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU}


def activation_class(name: str) -> type[nn.Module]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}") from None


def mlp(
    in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, activation: str = "relu"
) -> nn.Sequential:
    """``num_layers`` hidden layers of ``hidden_dim`` units; ``num_layers=0`` is a single linear map."""
    act = activation_class(activation)
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(num_layers):
        layers += [nn.Linear(width, hidden_dim), act()]
        width = hidden_dim
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class SeparableCritic(nn.Module):
    """T(x, y) = g(x)·h(y): all n² scores from 2n network passes."""

    def __init__(
        self, x_dim: int, y_dim: int, hidden_dim: int, num_layers: int, embed_dim: int, activation: str
    ) -> None:
        super().__init__()
        self.x_net = mlp(x_dim, hidden_dim, embed_dim, num_layers, activation)
        self.y_net = mlp(y_dim, hidden_dim, embed_dim, num_layers, activation)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.x_net(x) @ self.y_net(y).T


class ConcatCritic(nn.Module):
    """T(x, y) = MLP([x; y]) evaluated on all n² pairs (MINE's statistics network, DIM's discriminator).

    The first linear layer is split into an x part and a y part so it costs O(n) rather than O(n²).
    """

    def __init__(self, x_dim: int, y_dim: int, hidden_dim: int, num_layers: int, activation: str) -> None:
        super().__init__()
        self.x_in = nn.Linear(x_dim, hidden_dim)
        self.y_in = nn.Linear(y_dim, hidden_dim, bias=False)
        self.head = nn.Sequential(
            activation_class(activation)(), mlp(hidden_dim, hidden_dim, 1, max(num_layers - 1, 0), activation)
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pairs = self.x_in(x)[:, None, :] + self.y_in(y)[None, :, :]
        return self.head(pairs).squeeze(-1)


class CosinePredictorCritic(nn.Module):
    """MMIM's CPC critic: predict y from x, then cosine similarity of prediction and target, / temperature.

    With ``target_dim`` set, y is first embedded by an MLP into ``target_dim`` units (not in MMIM, where
    y is already a learned representation); the predictor then predicts that embedding.
    """

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        hidden_dim: int,
        num_layers: int,
        activation: str,
        temperature: float,
        learn_temperature: bool,
        target_dim: int | None = None,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.target_net = (
            None if target_dim is None else mlp(y_dim, hidden_dim, target_dim, max(num_layers, 1), activation)
        )
        self.predictor = mlp(
            x_dim, hidden_dim, y_dim if target_dim is None else target_dim, num_layers, activation
        )
        log_temperature = torch.tensor(math.log(temperature))
        if learn_temperature:
            self.log_temperature = nn.Parameter(log_temperature)
        else:
            self.register_buffer("log_temperature", log_temperature)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        prediction = F.normalize(self.predictor(x), dim=-1)
        target = F.normalize(y if self.target_net is None else self.target_net(y), dim=-1)
        return prediction @ target.T * torch.exp(-self.log_temperature)


def build_critic(
    kind: str, x_dim: int, y_dim: int, hidden_dim: int, num_layers: int, embed_dim: int, activation: str
) -> nn.Module:
    if kind == "separable":
        return SeparableCritic(x_dim, y_dim, hidden_dim, num_layers, embed_dim, activation)
    if kind == "concat":
        return ConcatCritic(x_dim, y_dim, hidden_dim, num_layers, activation)
    raise ValueError(f"unknown critic {kind!r}; choose 'separable' or 'concat'")


class GaussianDecoder(nn.Module):
    """q(y|x) = N(mean(x), diag exp(log_variance(x))); with ``learn_variance=False`` the variance is 1.

    The log-variance is soft-clamped to ±``max_abs_log_variance`` so a batch of two cannot drive it to -inf.
    """

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        hidden_dim: int,
        num_layers: int,
        activation: str,
        learn_variance: bool = True,
        max_abs_log_variance: float = 12.0,
    ) -> None:
        super().__init__()
        self.mean_net = mlp(x_dim, hidden_dim, y_dim, num_layers, activation)
        self.log_variance_net = (
            mlp(x_dim, hidden_dim, y_dim, num_layers, activation) if learn_variance else None
        )
        self.max_abs_log_variance = max_abs_log_variance

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.mean_net(x)
        if self.log_variance_net is None:
            return mean, torch.zeros_like(mean)
        return mean, soft_clamp(self.log_variance_net(x), self.max_abs_log_variance)
