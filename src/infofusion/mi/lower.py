"""Lower bounds (and the JSD objective) on I(X; Y). One small class per estimator.

Constructor options not listed on a class are :class:`~.base.CriticEstimator`'s (``critic``,
``hidden_dim``, ``num_layers``, ``embed_dim``, ``activation``) or, for BA,
:class:`~.base.GaussianConditionalEstimator`'s.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .base import CriticEstimator, GaussianConditionalEstimator
from .bounds import (
    EmaCorrectedLogMeanExp,
    clipped_dv_bound,
    donsker_varadhan_bound,
    infonce_bound,
    jsd_objective,
    nwj_bound,
    smile_bound,
)
from .entropy import gaussian_entropy
from .networks import CosinePredictorCritic
from .numerics import log_mean_exp, off_diagonal


class MINE(CriticEstimator):
    """MINE (Belghazi et al. 2018): the Donsker-Varadhan bound E_p[T] - log E_{p(x)p(y)}[e^T].

    ``estimate`` returns the DV value. ``learning_loss`` has the same value but the MINE gradient: the
    minibatch E[e^T] in the denominator of ∇log E[e^T] is replaced by an exponential moving average
    (rate ``moving_average_rate``), updated with every call to ``learning_loss``.
    """

    name, kind = "mine", "lower"
    bound_kind = "lower"
    description = "Donsker-Varadhan bound with MINE's moving-average gradient correction (nats)"

    default_critic = "concat"

    def __init__(self, x_dim: int, y_dim: int, *, moving_average_rate: float = 0.01, **options: Any) -> None:
        super().__init__(x_dim, y_dim, **options)
        if not 0.0 < moving_average_rate < 1.0:
            raise ValueError(f"moving_average_rate must be in (0, 1), got {moving_average_rate}")
        self.moving_average_rate = moving_average_rate
        # log of the running E_{p(x)p(y)}[e^T]; NaN until the first learning step
        self.register_buffer("log_moving_average", torch.tensor(float("nan")))

    def bound(self, scores: torch.Tensor) -> torch.Tensor:
        return donsker_varadhan_bound(scores)

    def _update_moving_average(self, log_mean: torch.Tensor) -> None:
        with torch.no_grad():
            if torch.isnan(self.log_moving_average):
                self.log_moving_average.copy_(log_mean)
            else:
                rate = self.moving_average_rate
                kept = math.log1p(-rate) + self.log_moving_average
                self.log_moving_average.copy_(torch.logaddexp(kept, math.log(rate) + log_mean))

    def learning_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        scores = self.scores(x, y)
        marginal = off_diagonal(scores)
        self._update_moving_average(log_mean_exp(marginal.detach()))
        corrected = EmaCorrectedLogMeanExp.apply(marginal, self.log_moving_average.clone())
        return -(scores.diagonal().mean() - corrected)


class NWJ(CriticEstimator):
    """NWJ / f-divergence bound (Nguyen, Wainwright & Jordan 2010): E_p[T] - E_{p(x)p(y)}[e^{T-1}]."""

    name, kind = "nwj", "lower"
    bound_kind = "lower"
    description = "Nguyen-Wainwright-Jordan bound E_p[T] - E_q[exp(T-1)] (nats; low bias, high variance)"

    default_critic = "concat"

    def bound(self, scores: torch.Tensor) -> torch.Tensor:
        return nwj_bound(scores)


class InfoNCE(CriticEstimator):
    """InfoNCE (van den Oord et al. 2018): log n + mean_i log softmax_j T(x_i, y_j)[i]; never above log n.

    ``critic="separable"`` (default) or ``"concat"``.
    """

    name, kind = "infonce", "lower"
    bound_kind = "lower"
    description = "InfoNCE contrastive bound, separable or concat critic (nats; capped at log batch size)"

    def bound(self, scores: torch.Tensor) -> torch.Tensor:
        return infonce_bound(scores)


class CPC(InfoNCE):
    """The CPC form MMIM uses: predict y from x, score by cosine similarity, InfoNCE over the batch.

    ``num_layers=0`` (MMIM's default) makes the predictor linear; otherwise an MLP with ``hidden_dim``
    units and ``activation`` (MMIM: tanh). MMIM divides by no temperature (``temperature=1``); cosine
    scores in [-1, 1] then cap the bound near 2 nats whatever the batch size, so pass a smaller or a
    learned temperature (``learn_temperature=True``) to measure larger MI. Cosine scores also discard
    the norm of y (in 1-D only its sign is left): on raw features rather than learned representations,
    set ``target_dim`` to embed y with an MLP first.
    """

    name, kind = "cpc", "lower"
    bound_kind = "lower"
    description = "MMIM's CPC: x->y predictor, L2-normalised cosine scores, InfoNCE over the batch (nats)"

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        *,
        hidden_dim: int = 64,
        num_layers: int = 0,
        activation: str = "tanh",
        temperature: float = 1.0,
        learn_temperature: bool = False,
        target_dim: int | None = None,
    ) -> None:
        critic = CosinePredictorCritic(
            x_dim, y_dim, hidden_dim, num_layers, activation, temperature, learn_temperature, target_dim
        )
        super().__init__(x_dim, y_dim, critic=critic)


class JSD(CriticEstimator):
    """Deep InfoMax's Jensen-Shannon objective, as MInD uses it: E_p[-sp(-T)] - E_{p(x)p(y)}[sp(T)].

    The value is NOT mutual information in nats: it is 2·JSD(p(x,y) || p(x)p(y)) - 2·log 2 at the
    optimum, between -2 log 2 (independent) and 0. It is a stable objective to *maximise* MI with.
    ``density_ratio_mi`` reads an MI value off the trained critic (whose optimum is log p(x,y)/p(x)p(y)).
    """

    name, kind = "jsd", "jsd"
    bound_kind = "estimate"  # its objective is not in nats; density_ratio_mi reads an estimate
    description = "Deep InfoMax Jensen-Shannon objective (NOT nats: in [-2 log 2, 0]; for maximising MI)"
    units = "jsd objective (not nats)"

    default_critic = "concat"

    def bound(self, scores: torch.Tensor) -> torch.Tensor:
        return jsd_objective(scores)

    def density_ratio_mi(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """E_p[T]: an MI estimate in nats (not a bound) when T has converged to the log density ratio."""
        return self.scores(x, y).diagonal().mean()


class SMILE(CriticEstimator):
    """SMILE (Song & Ermon 2020): DV with the partition term clipped to [-clip, clip] (default 5).

    ``estimate`` is the clipped DV value; ``learning_loss`` trains the critic with the JS gradient, as in
    the paper, while keeping the clipped-DV value.
    """

    name, kind = "smile", "lower"
    bound_kind = "estimate"  # clipping the partition term biases it either way
    description = "SMILE: clipped Donsker-Varadhan (tau=5 by default), critic trained by JS (nats)"

    default_critic = "concat"
    stopping_criterion = "learning_loss"  # trained by JS, not on the clipped DV value

    def __init__(self, x_dim: int, y_dim: int, *, clip: float = 5.0, **options: Any) -> None:
        super().__init__(x_dim, y_dim, **options)
        if clip <= 0:
            raise ValueError(f"clip must be positive, got {clip}")
        self.clip = clip

    def bound(self, scores: torch.Tensor) -> torch.Tensor:
        return clipped_dv_bound(scores, self.clip)

    def learning_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -smile_bound(self.scores(x, y), self.clip)


class BarberAgakov(GaussianConditionalEstimator):
    """Barber-Agakov: I(X; Y) >= H(Y) + E_p[log q(y|x)] with q(y|x) = N(mean(x), diag σ²(x)).

    The Gaussian log-likelihood is complete (log-variance and log 2π included). H(Y) is ``y_entropy``
    when given; otherwise the Gaussian entropy of the whole training set's y (set by
    ``observe_dataset``, as :func:`~.fitting.fit_estimator` does) or, failing that, of the batch. A
    Gaussian H(Y) is the largest entropy for the covariance, so with non-Gaussian y the value can
    exceed the true MI: it is then an estimate, not a guaranteed bound.
    """

    name, kind = "ba", "ba"
    bound_kind = "estimate"  # a lower bound only if H(Y) is exact; a Gaussian H(Y) can overstate it
    description = "Barber-Agakov H(Y) + E log q(y|x), Gaussian decoder; H(Y) given or Gaussian (nats)"
    stopping_criterion = "estimate"  # H(Y) is fixed, so the estimate is minus the loss plus a constant

    def __init__(self, x_dim: int, y_dim: int, *, y_entropy: float | None = None, **options: Any) -> None:
        super().__init__(x_dim, y_dim, **options)
        self.y_entropy = y_entropy

    def observe_dataset(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.y_entropy is None:
            self.y_entropy = float(gaussian_entropy(y.detach()))

    def estimate(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        log_likelihood = self.log_likelihood(x, y).mean()
        entropy = gaussian_entropy(y) if self.y_entropy is None else self.y_entropy
        return entropy + log_likelihood
