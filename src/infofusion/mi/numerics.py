"""Numerically safe building blocks shared by every estimator.

Everything that averages exponentials goes through ``logsumexp`` so that critic outputs of ±1000
stay finite in float32; everything that *must* exponentiate (NWJ) uses :func:`linearised_exp`.
"""

from __future__ import annotations

import math

import torch

# Above this exponent ``linearised_exp`` continues as a straight line instead of exp: e^30 ~ 1e13 is far
# beyond any useful critic value and far below float32 overflow (~e^88).
LINEARISE_EXP_ABOVE = 30.0
LOG_2PI = math.log(2.0 * math.pi)


def log_mean_exp(values: torch.Tensor, dim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """``log(mean(exp(values)))`` computed with logsumexp; ``dim=None`` reduces over every element."""
    if dim is None:
        values, dim = values.reshape(-1), 0
    dims = (dim,) if isinstance(dim, int) else dim
    count = math.prod(values.shape[d] for d in dims)
    return torch.logsumexp(values, dim=dims) - math.log(count)


def off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """The n(n-1) off-diagonal entries of a square matrix, flattened (pairs from the product of marginals)."""
    n = matrix.shape[0]
    keep = ~torch.eye(n, dtype=torch.bool, device=matrix.device)
    return matrix[keep]


def mask_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """The matrix with its diagonal set to -inf, so logsumexp leaves the diagonal out."""
    eye = torch.eye(matrix.shape[0], dtype=torch.bool, device=matrix.device)
    return matrix.masked_fill(eye, float("-inf"))


def linearised_exp(values: torch.Tensor, threshold: float = LINEARISE_EXP_ABOVE) -> torch.Tensor:
    """exp(t) below ``threshold``, continued by its tangent line above it.

    Continuous with a continuous, non-zero gradient, so a critic that has blown up still gets pushed
    back instead of producing inf (a hard clamp would give a zero gradient).
    """
    clipped = values.clamp(max=threshold)
    return torch.exp(clipped) * (1.0 + (values - clipped))


def soft_clamp(values: torch.Tensor, bound: float) -> torch.Tensor:
    """Smoothly squash ``values`` into (-bound, bound); the identity near zero."""
    return bound * torch.tanh(values / bound)


def gaussian_log_density(y: torch.Tensor, mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """log N(y; mean, diag(exp(log_variance))) summed over the last axis, constants included."""
    squared = (y - mean) ** 2 * torch.exp(-log_variance)
    return -0.5 * (squared + log_variance + LOG_2PI).sum(dim=-1)


def check_pair(x: torch.Tensor, y: torch.Tensor, x_dim: int | None = None, y_dim: int | None = None) -> None:
    """Raise a ValueError that says what is wrong with a batch of paired samples."""
    for name, tensor, dim in (("x", x, x_dim), ("y", y, y_dim)):
        if tensor.dim() != 2:
            raise ValueError(f"{name} must be a 2-D (batch, dim) tensor, got shape {tuple(tensor.shape)}")
        if dim is not None and tensor.shape[1] != dim:
            raise ValueError(f"{name} has {tensor.shape[1]} columns, the estimator was built for {dim}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y have different batch sizes: {x.shape[0]} and {y.shape[0]}")
    if x.shape[0] < 2:
        raise ValueError("mutual-information bounds need at least 2 samples per batch (one negative pair)")
