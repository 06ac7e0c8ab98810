"""Gaussian entropy estimates: the closed form, the CCA mutual information, and MMIM's memory version.

All log-determinants go through :func:`stable_logdet`: a Cholesky of ``Σ + jitter·I`` whose jitter is
multiplied by 10 until the factorisation succeeds, falling back to the diagonal of Σ. The result is
finite for any input, including a batch of one or two samples.
"""

from __future__ import annotations

import math
from collections import deque
from typing import overload

import numpy as np
import torch
from torch import nn

LOG_2PI_E = math.log(2.0 * math.pi * math.e)


def stable_logdet(covariance: torch.Tensor, jitter: float = 1e-6, max_tries: int = 8) -> torch.Tensor:
    """log det(Σ + ε·I) with ε = jitter·10^k for the first k whose Cholesky succeeds; else the diagonal."""
    eye = torch.eye(covariance.shape[0], dtype=covariance.dtype, device=covariance.device)
    for attempt in range(max_tries):
        factor, info = torch.linalg.cholesky_ex(covariance + jitter * 10.0**attempt * eye)
        diagonal = factor.diagonal()
        if int(info) == 0 and bool(torch.isfinite(diagonal).all()) and bool((diagonal > 0).all()):
            return 2.0 * torch.log(diagonal).sum()
    # Not positive definite even with a large jitter (e.g. NaN-free but wildly scaled): use the diagonal.
    variances = torch.nan_to_num(covariance.diagonal(), nan=jitter, posinf=1.0 / jitter)
    return torch.log(variances.clamp_min(jitter)).sum()


def sample_covariance(samples: torch.Tensor) -> torch.Tensor:
    """Unbiased covariance of the rows; a zero matrix with fewer than 2 rows (logdet then adds jitter·I)."""
    n, dim = samples.shape
    if n < 2:
        return samples.new_zeros(dim, dim)
    centred = samples - samples.mean(dim=0, keepdim=True)
    return centred.T @ centred / (n - 1)


def gaussian_entropy(samples: torch.Tensor, jitter: float = 1e-6) -> torch.Tensor:
    """Entropy in nats of the Gaussian fitted to the rows: 0.5·logdet(2πe Σ).

    With fewer than 2 rows Σ is taken as jitter·I (a finite, documented fallback).
    """
    dim = samples.shape[1]
    return 0.5 * (dim * LOG_2PI_E + stable_logdet(sample_covariance(samples), jitter))


def _columns(values: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    """Rows are samples; a 1-D input is one column (as ``fit_estimator`` reads it)."""
    tensor = values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values, np.float64))
    if tensor.dim() == 1:
        tensor = tensor[:, None]
    if tensor.dim() != 2:
        raise ValueError(f"{name} must be 1-D or 2-D (samples x features), got shape {tuple(tensor.shape)}")
    return tensor


@overload
def gaussian_mutual_information(x: torch.Tensor, y: torch.Tensor, jitter: float = 1e-9) -> torch.Tensor: ...


@overload
def gaussian_mutual_information(x: np.ndarray, y: np.ndarray, jitter: float = 1e-9) -> float: ...


def gaussian_mutual_information(
    x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, jitter: float = 1e-9
) -> torch.Tensor | float:
    """The closed-form Gaussian (CCA) estimate H(X) + H(Y) - H(X, Y) of the sample covariance, in nats.

    Takes NumPy arrays (read in float64; the result is a ``float``) or tensors (the result is a tensor,
    differentiable), rows as samples and a 1-D input as one column, as ``fit_estimator`` does. Exact in
    the limit for jointly Gaussian data; blind to any dependence that is not linear.
    """
    as_float = not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor))
    x_rows, y_rows = _columns(x, "x"), _columns(y, "y")
    if x_rows.shape[0] != y_rows.shape[0]:
        raise ValueError(f"x and y have different numbers of rows: {x_rows.shape[0]} and {y_rows.shape[0]}")
    if as_float:  # one NumPy input: both in float64, as fit_estimator reads them
        x_rows, y_rows = x_rows.double(), y_rows.double()
    joint = torch.cat([x_rows, y_rows], dim=1)
    value = (
        gaussian_entropy(x_rows, jitter) + gaussian_entropy(y_rows, jitter) - gaussian_entropy(joint, jitter)
    )
    return float(value) if as_float else value


def sentiment_groups(labels: torch.Tensor) -> torch.Tensor:
    """MMIM's grouping: 0 for positive labels, 1 for negative ones, -1 (ignored) for exactly neutral."""
    labels = labels.reshape(-1)
    groups = torch.full(labels.shape, -1, dtype=torch.long, device=labels.device)
    groups[labels > 0] = 0
    groups[labels < 0] = 1
    return groups


class GaussianMemoryEntropy(nn.Module):
    """MMIM's entropy estimate (Han et al. 2021): a Gaussian fitted to recent batches, per group.

    For each group (MMIM: positive / negative sentiment) the module keeps a deque of the last
    ``memory_size`` batches' rows of that group, detached. ``entropy`` fits a Gaussian to memory + the
    current batch's rows of the group and returns 0.5·logdet(2πe Σ), averaged over the groups that have at
    least one sample; gradients flow into the current batch only. A group with fewer than 2 samples gets
    Σ = jitter·I; if no group has any sample the result is the entropy of N(0, jitter·I). Group id -1 rows
    are ignored. Call ``update`` after the step to push the batch into memory.
    """

    def __init__(self, dim: int, memory_size: int = 1, jitter: float = 1e-4, num_groups: int = 2) -> None:
        super().__init__()
        if dim < 1 or memory_size < 0 or num_groups < 1 or jitter <= 0:
            raise ValueError("need dim >= 1, memory_size >= 0, num_groups >= 1 and jitter > 0")
        self.dim, self.memory_size, self.jitter, self.num_groups = dim, memory_size, jitter, num_groups
        self.memories: list[deque[torch.Tensor]] = [deque(maxlen=memory_size) for _ in range(num_groups)]

    def _check(self, x: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (batch, {self.dim}), got {tuple(x.shape)}")
        groups = groups.reshape(-1).to(device=x.device, dtype=torch.long)
        if groups.shape[0] != x.shape[0]:
            raise ValueError(f"groups has {groups.shape[0]} entries for {x.shape[0]} rows")
        if bool((groups >= self.num_groups).any()) or bool((groups < -1).any()):
            raise ValueError(f"group ids must be in -1..{self.num_groups - 1}")
        return groups

    def group_samples(self, x: torch.Tensor, groups: torch.Tensor, group: int) -> torch.Tensor:
        remembered = [rows.to(x) for rows in self.memories[group]]
        return torch.cat([*remembered, x[groups == group]], dim=0)

    def group_entropies(self, x: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(entropy per group, number of samples per group) from memory + current batch."""
        groups = self._check(x, groups)
        samples = [self.group_samples(x, groups, g) for g in range(self.num_groups)]
        entropies = torch.stack([gaussian_entropy(s, self.jitter) for s in samples])
        counts = torch.tensor([s.shape[0] for s in samples], device=x.device)
        return entropies, counts

    def entropy(self, x: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        entropies, counts = self.group_entropies(x, groups)
        present = counts > 0
        if not bool(present.any()):
            return entropies[0]  # every group empty: the entropy of N(0, jitter·I), finite by construction
        return entropies[present].mean()

    def update(self, x: torch.Tensor, groups: torch.Tensor) -> None:
        groups = self._check(x, groups)
        for group, memory in enumerate(self.memories):
            rows = x[groups == group].detach()
            if rows.shape[0] > 0:
                memory.append(rows)

    def reset(self) -> None:
        for memory in self.memories:
            memory.clear()

    def forward(self, x: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        return self.entropy(x, groups)
