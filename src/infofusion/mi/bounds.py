"""Variational bounds as functions of a critic's score matrix ``scores[i, j] = T(x_i, y_j)``.

The diagonal are joint samples, the n(n-1) off-diagonal entries samples of p(x)p(y). Every function is
overflow-free for scores of any magnitude (logsumexp / softplus / linearised exp).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from .numerics import linearised_exp, log_mean_exp, mask_diagonal, off_diagonal


def donsker_varadhan_bound(scores: torch.Tensor) -> torch.Tensor:
    """DV / MINE: E_p[T] - log E_{p(x)p(y)}[e^T]  (nats, lower bound)."""
    return scores.diagonal().mean() - log_mean_exp(off_diagonal(scores))


def nwj_bound(scores: torch.Tensor) -> torch.Tensor:
    """NWJ / f-GAN KL: E_p[T] - E_{p(x)p(y)}[e^{T-1}]  (nats, lower bound)."""
    return scores.diagonal().mean() - linearised_exp(log_mean_exp(off_diagonal(scores)) - 1.0)


def infonce_bound(scores: torch.Tensor) -> torch.Tensor:
    """InfoNCE: log n + mean_i [T_ii - logsumexp_j T_ij]; never above log n."""
    n = scores.shape[0]
    return math.log(n) + (scores.diagonal() - torch.logsumexp(scores, dim=1)).mean()


def jsd_objective(scores: torch.Tensor) -> torch.Tensor:
    """Deep InfoMax's Jensen-Shannon objective E_p[-sp(-T)] - E_{p(x)p(y)}[sp(T)].

    Its maximum is 2·JSD(p(x,y) || p(x)p(y)) - 2·log 2, in [-2 log 2, 0]: NOT a value in nats of MI.
    """
    return -F.softplus(-scores.diagonal()).mean() - F.softplus(off_diagonal(scores)).mean()


def clipped_dv_bound(scores: torch.Tensor, clip: float) -> torch.Tensor:
    """SMILE's value: DV with the partition term computed from scores clipped to [-clip, clip]."""
    clipped = scores.clamp(-clip, clip)
    return scores.diagonal().mean() - log_mean_exp(off_diagonal(clipped))


def smile_bound(scores: torch.Tensor, clip: float) -> torch.Tensor:
    """SMILE (Song & Ermon 2020): value of the clipped DV bound, gradient of the JS objective."""
    js = jsd_objective(scores)
    return js + (clipped_dv_bound(scores, clip) - js).detach()


def leave_one_out_log_ratio(log_densities: torch.Tensor) -> torch.Tensor:
    """L1Out: mean_i [L_ii - log mean_{j != i} exp(L_ji)] with ``L[j, i] = log q(y_i | x_j)``."""
    n = log_densities.shape[0]
    leave_one_out = torch.logsumexp(mask_diagonal(log_densities), dim=0) - math.log(n - 1)
    return (log_densities.diagonal() - leave_one_out).mean()


class EmaCorrectedLogMeanExp(torch.autograd.Function):
    """log mean exp(values) whose *gradient* uses a moving average in the denominator (MINE, §3.2).

    ∇ log E[e^T] = E[∇T e^T] / E[e^T]; MINE replaces the minibatch E[e^T] in the denominator with an
    exponential moving average to reduce the bias of the minibatch gradient. Everything is kept in log
    space: the gradient weight is softmax(values) · exp(log_mean - log_moving_average), which is bounded
    by 1/rate when the average has already been updated with this batch.
    """

    @staticmethod
    def forward(ctx, values: torch.Tensor, log_moving_average: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        log_mean = log_mean_exp(values)
        ctx.save_for_backward(values, log_mean, log_moving_average)
        return log_mean

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        values, log_mean, log_moving_average = ctx.saved_tensors
        weights = torch.softmax(values, dim=0) * torch.exp(log_mean - log_moving_average)
        return grad_output * weights, None
