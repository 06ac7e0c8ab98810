"""Upper bounds on I(X; Y) from a Gaussian variational decoder q(y|x) (CLUB family, L1Out).

Constructor options are :class:`~.base.GaussianConditionalEstimator`'s (``hidden_dim``, ``num_layers``,
``activation``, ``max_abs_log_variance``); ``learning_loss`` is the decoder's negative log-likelihood.
"""

from __future__ import annotations

import torch

from .base import GaussianConditionalEstimator
from .bounds import leave_one_out_log_ratio


class CLUB(GaussianConditionalEstimator):
    """vCLUB (Cheng et al. 2020): mean_i log q(y_i|x_i) - mean_{i,j} log q(y_j|x_i).

    An upper bound when q is close to p(y|x). It is loose: for a correlated Gaussian pair with
    correlation ρ its population value is ρ²/(1-ρ²) per pair against the true -½·log(1-ρ²).
    """

    name, kind = "club", "upper"
    bound_kind = "upper"  # when the decoder q(y|x) is close to p(y|x)
    description = "vCLUB contrastive log-ratio upper bound, Gaussian q(y|x) with learned variance (nats)"

    def estimate(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # The mean over all n² pairs in closed form, O(n·d) instead of O(n²·d): for a Gaussian q the
        # log-variance and constant terms cancel row by row, and mean_j (y_j - μ_i)² = Var(y) + (ȳ - μ_i)²
        # (population variance over the batch). Same value as the pairwise form (tested against it).
        self.check_inputs(x, y)
        mean, log_variance = self.decoder(x)
        precision = torch.exp(-log_variance)
        positive = ((y - mean) ** 2 * precision).sum(dim=-1)
        spread = y.var(dim=0, unbiased=False) + (y.mean(dim=0) - mean) ** 2
        negative = (spread * precision).sum(dim=-1)
        return 0.5 * (negative - positive).mean()

    def pairwise_estimate(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The textbook form on the (n, n) log-density matrix: the reference for :meth:`estimate`."""
        log_densities = self.pairwise_log_likelihood(x, y)
        return log_densities.diagonal().mean() - log_densities.mean()


class CLUBSample(GaussianConditionalEstimator):
    """CLUB with one random negative per sample: mean_i [log q(y_i|x_i) - log q(y_π(i)|x_i)]; O(n)."""

    name, kind = "club_sample", "upper"
    bound_kind = "upper"
    description = "CLUB with one sampled negative per row (O(n), noisier), learned variance (nats)"

    def estimate(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        permutation = torch.randperm(y.shape[0], device=y.device)
        return (self.log_likelihood(x, y) - self.log_likelihood(x, y[permutation])).mean()


class CLUBMean(CLUB):
    """The simplified CLUB with unit variance: the decoder is trained by squared error (NLL of N(mean, I)).

    Population value for a correlated Gaussian pair: ρ² per pair, which is below the truth when
    ρ² > ~0.8, so it is an upper bound only when unit variance suits the data.
    """

    name, kind = "club_mean", "upper"
    bound_kind = "estimate"  # an upper bound only if unit variance fits p(y|x)
    description = "CLUB with unit variance (mean-only decoder, MSE loss); bound only if variance fits (nats)"
    learn_variance = False


class L1Out(GaussianConditionalEstimator):
    """Leave-one-out upper bound (Poole et al. 2019): log q(y_i|x_i) - log mean_{j≠i} q(y_i|x_j).

    Tight as the batch grows when q is exact; the diagonal is excluded inside the log-sum-exp.
    """

    name, kind = "l1out", "upper"
    bound_kind = "upper"
    description = "Leave-one-out upper bound, log-sum-exp over the other rows' q(y_i|x_j) (nats)"

    def estimate(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return leave_one_out_log_ratio(self.pairwise_log_likelihood(x, y))
