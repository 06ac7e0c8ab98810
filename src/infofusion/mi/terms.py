"""Dependence and alignment terms used by the models: HSIC, Barlow Twins, CMD and gradient reversal."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Kernel = Literal["linear", "rbf"]


def squared_distances(x: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances, smooth everywhere (torch.cdist has NaN gradients at 0)."""
    norms = (x * x).sum(dim=1)
    return (norms[:, None] + norms[None, :] - 2.0 * x @ x.T).clamp_min(0.0)


def median_bandwidth(x: torch.Tensor) -> torch.Tensor:
    """Median heuristic: the median distance between distinct rows (1 when that is 0), no gradient."""
    with torch.no_grad():
        distances = squared_distances(x).sqrt()
        mask = ~torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
        pairs = distances[mask]
        median = pairs.median() if pairs.numel() else distances.new_tensor(1.0)
        return torch.where(median > 0, median, median.new_tensor(1.0))


def gram_matrix(x: torch.Tensor, kernel: Kernel = "linear", bandwidth: float | None = None) -> torch.Tensor:
    """Linear kernel x·x' or RBF exp(-|x-x'|² / 2σ²) with σ from the median heuristic by default."""
    if kernel == "linear":
        return x @ x.T
    if kernel == "rbf":
        sigma = median_bandwidth(x) if bandwidth is None else torch.as_tensor(bandwidth, dtype=x.dtype)
        return torch.exp(-squared_distances(x) / (2.0 * sigma**2))
    raise ValueError(f"unknown kernel {kernel!r}; choose 'linear' or 'rbf'")


def hsic(
    x: torch.Tensor,
    y: torch.Tensor,
    kernel: Kernel = "linear",
    estimator: Literal["biased", "unbiased"] = "biased",
    bandwidth_x: float | None = None,
    bandwidth_y: float | None = None,
) -> torch.Tensor:
    """Hilbert-Schmidt Independence Criterion of paired rows of ``x`` and ``y``.

    ``biased``: Gretton et al. (2005), (n-1)^-2 tr(K H L H) with H = I - 11ᵀ/n (MInD's eq. 10; n >= 2).
    ``unbiased``: Song et al. (2012), needs n >= 4.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"hsic needs two 2-D tensors with equal rows, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    n = x.shape[0]
    k = gram_matrix(x, kernel, bandwidth_x)
    l = gram_matrix(y, kernel, bandwidth_y)
    if estimator == "biased":
        if n < 2:
            raise ValueError("biased HSIC needs at least 2 samples")
        centred = k - k.mean(dim=0, keepdim=True) - k.mean(dim=1, keepdim=True) + k.mean()
        return (centred * l).sum() / (n - 1) ** 2
    if estimator == "unbiased":
        if n < 4:
            raise ValueError("unbiased HSIC needs at least 4 samples")
        k_tilde = k - torch.diag_embed(k.diagonal())
        l_tilde = l - torch.diag_embed(l.diagonal())
        trace_term = (k_tilde * l_tilde).sum()
        sums_term = k_tilde.sum() * l_tilde.sum() / ((n - 1) * (n - 2))
        cross_term = 2.0 * (k_tilde.sum(dim=0) @ l_tilde.sum(dim=1)) / (n - 2)
        return (trace_term + sums_term - cross_term) / (n * (n - 3))
    raise ValueError(f"unknown HSIC estimator {estimator!r}; choose 'biased' or 'unbiased'")


def cross_correlation(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """C[i, j] = Σ_b a_bi b_bj / (|a_:i| |b_:j|) of batch-centred columns (MInD eq. 7)."""
    a_centred = a - a.mean(dim=0, keepdim=True)
    b_centred = b - b.mean(dim=0, keepdim=True)
    a_unit = a_centred * torch.rsqrt((a_centred**2).sum(dim=0, keepdim=True) + eps)
    b_unit = b_centred * torch.rsqrt((b_centred**2).sum(dim=0, keepdim=True) + eps)
    return a_unit.T @ b_unit


def barlow_twins_loss(
    a: torch.Tensor, b: torch.Tensor, off_diagonal_weight: float | None = None, eps: float = 1e-8
) -> torch.Tensor:
    """Σ_i (1 - C_ii)² + λ Σ_{i≠j} C_ij² of the batch-normalised cross-correlation C of ``a`` and ``b``.

    ``off_diagonal_weight=None`` uses λ = embedding dimension, MInD's setting (Dai et al. 2024, §3.3.2,
    citing Tsai et al. 2021). The original Barlow Twins used λ = 5e-3.
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(
            f"barlow_twins_loss needs two (batch, dim) tensors of one shape, got {a.shape}, {b.shape}"
        )
    correlation = cross_correlation(a, b, eps)
    weight = float(a.shape[1]) if off_diagonal_weight is None else off_diagonal_weight
    on_diagonal = ((1.0 - correlation.diagonal()) ** 2).sum()
    off_diagonal = (correlation**2).sum() - (correlation.diagonal() ** 2).sum()
    return on_diagonal + weight * off_diagonal


def cmd(x1: torch.Tensor, x2: torch.Tensor, n_moments: int = 5, interval_width: float = 1.0) -> torch.Tensor:
    """Central moment discrepancy (Zellinger et al. 2017) as MISA uses it, K = ``n_moments`` moments.

    ‖E x1 - E x2‖/w + Σ_{k=2..K} ‖c_k(x1) - c_k(x2)‖/w^k, c_k the k-th central moment per column and w
    the width of the features' interval (MISA: 1). The norm has a zero (not NaN) gradient at 0.
    """
    if n_moments < 1:
        raise ValueError(f"n_moments must be >= 1, got {n_moments}")
    mean1, mean2 = x1.mean(dim=0), x2.mean(dim=0)
    centred1, centred2 = x1 - mean1, x2 - mean2
    total = torch.linalg.vector_norm(mean1 - mean2) / interval_width
    for order in range(2, n_moments + 1):
        moment_gap = (centred1**order).mean(dim=0) - (centred2**order).mean(dim=0)
        total = total + torch.linalg.vector_norm(moment_gap) / interval_width**order
    return total


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.scale * grad_output, None


def grad_reverse(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Identity forward; multiplies the gradient by -``scale`` backward (Ganin & Lempitsky 2015)."""
    return _ReverseGradient.apply(x, scale)


class GradientReversal(nn.Module):
    """Module form of :func:`grad_reverse`; ``scale`` may be changed during training (schedules)."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"
