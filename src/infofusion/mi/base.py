"""The estimator interface and the two families every estimator belongs to.

* :class:`CriticEstimator`: a critic T(x, y) scores every pair in the batch; a bound turns the score
  matrix into a number (MINE, NWJ, InfoNCE, CPC, JSD, SMILE).
* :class:`GaussianConditionalEstimator`: a variational decoder q(y|x) = N(mean(x), diag σ²(x)) is fitted
  by maximum likelihood; a bound is built from its log-densities (BA, CLUB and variants, L1Out).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import nn

from .networks import GaussianDecoder, build_critic
from .numerics import check_pair, gaussian_log_density


class MIEstimator(nn.Module, ABC):
    """One mutual-information estimator with its own trainable critic or variational network.

    ``estimate(x, y)`` is the bound on a batch (a scalar, in nats unless ``units`` says otherwise,
    differentiable with respect to the inputs); ``learning_loss(x, y)`` is what to minimise to train the
    estimator's own network. ``x`` is (batch, x_dim), ``y`` is (batch, y_dim), batch >= 2. The module
    works in whatever dtype it and its inputs are converted to (e.g. ``.double()``).
    """

    name: ClassVar[str]
    kind: ClassVar[str]  # "lower", "upper", "jsd" or "ba"
    # What ``estimate`` is relative to the true I(X; Y): "lower" (at or below it, up to sampling), "upper"
    # (at or above it) or "estimate" (either side: no bound holds). FitResult.bound_kind reports it.
    bound_kind: ClassVar[str] = "estimate"
    description: ClassVar[str]
    units: ClassVar[str] = "nats"
    # What early stopping watches on held-out rows: "estimate" (maximised) when the network is trained on
    # the estimate itself, else "learning_loss" (minimised), the objective it is actually trained on.
    stopping_criterion: ClassVar[str] = "estimate"

    def __init__(self, x_dim: int, y_dim: int) -> None:
        super().__init__()
        if x_dim < 1 or y_dim < 1:
            raise ValueError(f"x_dim and y_dim must be positive, got {x_dim} and {y_dim}")
        self.x_dim, self.y_dim = x_dim, y_dim

    @abstractmethod
    def estimate(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def learning_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.estimate(x, y)

    def observe_dataset(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Hook for statistics of the whole training set (BA's H(Y)); nothing by default."""

    def check_inputs(self, x: torch.Tensor, y: torch.Tensor) -> None:
        check_pair(x, y, self.x_dim, self.y_dim)


class CriticEstimator(MIEstimator):
    """Bounds computed from the score matrix of a critic.

    ``critic`` is ``"separable"`` (T = g(x)·h(y), cheap), ``"concat"`` (T = MLP([x; y]) on all pairs)
    or a ready ``nn.Module`` returning the (batch, batch) score matrix; ``None`` takes the class's
    ``default_critic`` (concat for MINE, NWJ, JSD and SMILE as in their papers, separable for InfoNCE).
    ``hidden_dim`` and ``num_layers`` size the MLPs, ``embed_dim`` is the separable critic's embedding
    width.
    """

    default_critic: ClassVar[str] = "separable"

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        critic: str | nn.Module | None = None,
        hidden_dim: int = 64,
        num_layers: int = 2,
        embed_dim: int = 32,
        activation: str = "relu",
    ) -> None:
        super().__init__(x_dim, y_dim)
        if isinstance(critic, nn.Module):
            self.critic = critic
        else:
            kind = self.default_critic if critic is None else critic
            self.critic = build_critic(kind, x_dim, y_dim, hidden_dim, num_layers, embed_dim, activation)

    def scores(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``scores[i, j] = T(x_i, y_j)``."""
        self.check_inputs(x, y)
        return self.critic(x, y)

    @abstractmethod
    def bound(self, scores: torch.Tensor) -> torch.Tensor: ...

    def estimate(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.bound(self.scores(x, y))

    def learning_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -self.estimate(x, y)


class GaussianConditionalEstimator(MIEstimator):
    """Bounds built from a Gaussian variational decoder q(y|x), trained by negative log-likelihood.

    ``hidden_dim`` and ``num_layers`` size the mean and log-variance MLPs; ``max_abs_log_variance``
    soft-clamps the log-variance (keeps tiny batches finite).
    """

    learn_variance: ClassVar[bool] = True
    stopping_criterion: ClassVar[str] = "learning_loss"

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        hidden_dim: int = 64,
        num_layers: int = 2,
        activation: str = "relu",
        max_abs_log_variance: float = 12.0,
    ) -> None:
        super().__init__(x_dim, y_dim)
        self.decoder = GaussianDecoder(
            x_dim, y_dim, hidden_dim, num_layers, activation, self.learn_variance, max_abs_log_variance
        )

    def log_likelihood(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log q(y_i | x_i) per row, Gaussian constants included."""
        self.check_inputs(x, y)
        mean, log_variance = self.decoder(x)
        return gaussian_log_density(y, mean, log_variance)

    def pairwise_log_likelihood(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``L[i, j] = log q(y_j | x_i)`` for every pair in the batch."""
        self.check_inputs(x, y)
        mean, log_variance = self.decoder(x)
        return gaussian_log_density(y[None, :, :], mean[:, None, :], log_variance[:, None, :])

    def learning_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -self.log_likelihood(x, y).mean()
