"""HSIC, Barlow Twins, CMD, gradient reversal, Gaussian (memory) entropy and the benchmark's task truths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from infofusion.mi import (
    GaussianMemoryEntropy,
    GradientReversal,
    barlow_twins_loss,
    cmd,
    gaussian_entropy,
    gaussian_mutual_information,
    grad_reverse,
    hsic,
    sentiment_groups,
    stable_logdet,
)
from infofusion.mi.tasks import gaussian_task, pair_correlation, student_t_dependence, student_t_task
from infofusion.mi.terms import median_bandwidth

torch.set_num_threads(1)  # tiny nets: a second thread mostly adds contention
HSIC_VARIANTS = [(k, e) for k in ("linear", "rbf") for e in ("biased", "unbiased")]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- HSIC -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kernel", "estimator"), HSIC_VARIANTS)
def test_hsic_is_near_zero_when_independent_and_clearly_positive_when_dependent(kernel, estimator) -> None:
    x = torch.randn(400, 3, generator=_generator(0))
    independent = torch.randn(400, 3, generator=_generator(1))
    dependent = x + 0.5 * torch.randn(400, 3, generator=_generator(2))
    dependent_value = float(hsic(x, dependent, kernel, estimator))
    independent_value = float(hsic(x, independent, kernel, estimator))
    assert dependent_value > 0
    assert abs(independent_value) < 0.05 * dependent_value


def test_linear_biased_hsic_is_the_squared_cross_covariance() -> None:
    x, y = torch.randn(50, 3, generator=_generator(3)), torch.randn(50, 2, generator=_generator(4))
    centred_x, centred_y = x - x.mean(0), y - y.mean(0)
    cross_covariance = centred_x.T @ centred_y / 49
    assert float(hsic(x, y)) == pytest.approx(float((cross_covariance**2).sum()), rel=1e-5)


def test_unbiased_hsic_averages_to_zero_under_independence_unlike_the_biased_one() -> None:
    draws = {"biased": [], "unbiased": []}
    for seed in range(40):
        x, y = (
            torch.randn(20, 2, generator=_generator(seed)),
            torch.randn(20, 2, generator=_generator(seed + 100)),
        )
        for estimator in draws:
            draws[estimator].append(float(hsic(x, y, "rbf", estimator)))
    unbiased = np.array(draws["unbiased"])
    assert abs(unbiased.mean()) < 3 * unbiased.std() / math.sqrt(len(unbiased))
    assert np.mean(draws["biased"]) > 5 * unbiased.std() / math.sqrt(len(unbiased))  # biased: positive offset


def test_rbf_hsic_sees_dependence_that_is_not_correlation() -> None:
    x = torch.randn(300, 1, generator=_generator(5))
    y = x**2  # uncorrelated with x, but a function of it
    assert float(hsic(x, y, "rbf")) > 10 * abs(
        float(hsic(x, torch.randn(300, 1, generator=_generator(6)), "rbf"))
    )


def test_median_heuristic_bandwidth() -> None:
    x = torch.tensor([[0.0], [1.0], [3.0]])
    assert float(median_bandwidth(x)) == pytest.approx(2.0)  # distances 1, 2, 3
    assert float(median_bandwidth(torch.zeros(2, 2))) == 1.0  # all equal: a safe fallback


def test_hsic_gradients_and_small_batches() -> None:
    x = torch.randn(2, 3, requires_grad=True)
    value = hsic(x, torch.randn(2, 3), "rbf")
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="at least 4"):
        hsic(torch.randn(3, 2), torch.randn(3, 2), estimator="unbiased")


# --- Barlow Twins and CMD ------------------------------------------------------------------------------


def _whitened(n: int, dim: int, seed: int) -> torch.Tensor:
    """Columns with mean 0, unit variance and exactly zero correlation with each other."""
    data = torch.randn(n, dim, generator=_generator(seed), dtype=torch.float64)
    orthonormal, _ = torch.linalg.qr(data - data.mean(0))
    return orthonormal * math.sqrt(n)


def test_barlow_twins_is_zero_for_identical_standardised_inputs_and_large_for_independent_ones() -> None:
    a = _whitened(256, 8, seed=0)
    assert float(barlow_twins_loss(a, a.clone())) == pytest.approx(0.0, abs=1e-6)
    independent = float(barlow_twins_loss(a, _whitened(256, 8, seed=1)))
    assert independent > 7.0  # the diagonal alone contributes about dim = 8


def test_barlow_twins_default_off_diagonal_weight_is_the_dimension() -> None:
    a, b = torch.randn(64, 5, generator=_generator(2)), torch.randn(64, 5, generator=_generator(3))
    centred_a, centred_b = a - a.mean(0), b - b.mean(0)
    correlation = (centred_a / centred_a.norm(dim=0)).T @ (centred_b / centred_b.norm(dim=0))
    diagonal = ((1 - correlation.diagonal()) ** 2).sum()
    off_diagonal = (correlation**2).sum() - (correlation.diagonal() ** 2).sum()
    assert float(barlow_twins_loss(a, b)) == pytest.approx(float(diagonal + 5 * off_diagonal), rel=1e-4)
    assert float(barlow_twins_loss(a, b, off_diagonal_weight=0.005)) == pytest.approx(
        float(diagonal + 0.005 * off_diagonal), rel=1e-4
    )


def test_barlow_twins_and_cmd_are_finite_with_two_samples_and_identical_inputs() -> None:
    a = torch.randn(2, 4, requires_grad=True)
    for value in (barlow_twins_loss(a, a), cmd(a, a), barlow_twins_loss(a[:1], a[:1])):
        (grad,) = torch.autograd.grad(value, a)
        assert torch.isfinite(value) and torch.isfinite(grad).all()


def test_cmd() -> None:
    x = torch.rand(500, 3, generator=_generator(4))
    assert float(cmd(x, x.clone())) == 0.0
    shift = torch.tensor([0.1, -0.2, 0.0])
    assert float(cmd(x, x + shift)) == pytest.approx(float(shift.norm()), rel=1e-4)  # central moments equal
    squeezed = 0.5 * x
    assert float(cmd(x, squeezed, n_moments=1)) < float(cmd(x, squeezed, n_moments=5))
    assert float(cmd(x, x + shift, interval_width=2.0)) == pytest.approx(float(shift.norm()) / 2, rel=1e-4)


# --- gradient reversal -----------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1.0, 0.5, 3.0])
def test_gradient_reversal_flips_and_scales_gradients(scale: float) -> None:
    x = torch.randn(4, 3, requires_grad=True)
    upstream = torch.randn(4, 3)
    out = grad_reverse(x, scale)
    assert torch.equal(out, x)
    out.backward(upstream)
    assert torch.allclose(x.grad, -scale * upstream)

    layer = GradientReversal(scale)
    x.grad = None
    (layer(x) * upstream).sum().backward()
    assert torch.allclose(x.grad, -scale * upstream)
    layer.scale = 0.0  # schedules change the scale in place
    x.grad = None
    (layer(x) * upstream).sum().backward()
    assert torch.count_nonzero(x.grad) == 0


# --- Gaussian entropy ------------------------------------------------------------------------------

COVARIANCE = torch.tensor([[2.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 0.5]], dtype=torch.float64)


def closed_form_entropy(covariance: torch.Tensor) -> float:
    dim = covariance.shape[0]
    return 0.5 * (dim * math.log(2 * math.pi * math.e) + float(torch.logdet(covariance)))


def _gaussian_rows(n: int, seed: int, covariance: torch.Tensor = COVARIANCE) -> torch.Tensor:
    factor = torch.linalg.cholesky(covariance)
    return torch.randn(n, covariance.shape[0], generator=_generator(seed), dtype=torch.float64) @ factor.T


def test_gaussian_memory_entropy_matches_the_closed_form() -> None:
    entropy = GaussianMemoryEntropy(dim=3, memory_size=7, jitter=1e-6, num_groups=1)
    groups = torch.zeros(500, dtype=torch.long)
    for seed in range(7):
        entropy.update(_gaussian_rows(500, seed), groups)
    assert len(entropy.memories[0]) == 7
    estimate = float(entropy.entropy(_gaussian_rows(500, 99), groups))  # memory 3,500 rows + 500
    assert estimate == pytest.approx(closed_form_entropy(COVARIANCE), abs=0.05)
    entropy.update(_gaussian_rows(500, 100), groups)
    assert len(entropy.memories[0]) == 7  # the deque drops the oldest batch


def test_gaussian_memory_entropy_averages_groups_and_keeps_gradients_for_the_current_batch() -> None:
    scaled = 4.0 * COVARIANCE
    entropy = GaussianMemoryEntropy(dim=3, memory_size=4, jitter=1e-6)
    labels = torch.cat([torch.ones(2000), -torch.ones(2000), torch.zeros(5)])
    groups = sentiment_groups(labels)
    assert groups.tolist()[-6:] == [1, -1, -1, -1, -1, -1]
    rows = torch.cat([_gaussian_rows(2000, 1), _gaussian_rows(2000, 2, scaled), torch.full((5, 3), 50.0)])
    rows = rows.requires_grad_()
    value = entropy.entropy(rows, groups)
    expected = 0.5 * (closed_form_entropy(COVARIANCE) + closed_form_entropy(scaled))
    assert float(value.detach()) == pytest.approx(expected, abs=0.05)  # neutral rows (group -1) are ignored
    value.backward()
    assert torch.isfinite(rows.grad).all() and rows.grad[:4000].abs().sum() > 0
    entropy.update(rows, groups)
    assert not entropy.memories[0][0].requires_grad


@pytest.mark.parametrize("count", [0, 1, 2])
def test_gaussian_memory_entropy_is_finite_with_few_samples(count: int) -> None:
    jitter = 1e-4
    entropy = GaussianMemoryEntropy(dim=3, memory_size=2, jitter=jitter)
    rows = torch.randn(count + 3, 3, requires_grad=True)
    groups = torch.tensor([0] * count + [1, 1, 1])
    per_group, counts = entropy.group_entropies(rows, groups)
    value = entropy.entropy(rows, groups)
    value.backward()
    assert torch.isfinite(per_group).all() and torch.isfinite(value) and torch.isfinite(rows.grad).all()
    assert counts.tolist() == [count, 3]
    if count < 2:  # documented fallback: covariance = jitter · I
        fallback = 1.5 * math.log(2 * math.pi * math.e * jitter)
        assert float(per_group[0].detach()) == pytest.approx(fallback, rel=1e-4)


def test_empty_memory_entropy_and_stable_logdet_fallbacks() -> None:
    entropy = GaussianMemoryEntropy(dim=2, jitter=1e-4)
    nothing = entropy.entropy(torch.randn(3, 2), torch.tensor([-1, -1, -1]))
    assert float(nothing) == pytest.approx(math.log(2 * math.pi * math.e * 1e-4), rel=1e-4)
    singular = torch.ones(3, 3)
    assert torch.isfinite(stable_logdet(singular))
    broken = torch.tensor([[float("nan"), 0.0], [0.0, 1.0]])
    assert torch.isfinite(stable_logdet(broken))


def test_gaussian_entropy_and_cca_mutual_information() -> None:
    rows = _gaussian_rows(20000, 5)
    assert float(gaussian_entropy(rows)) == pytest.approx(closed_form_entropy(COVARIANCE), abs=0.03)
    task = gaussian_task(5, 1.5, "dense")
    x, y = (torch.as_tensor(a) for a in task.sample(20000, seed=1))
    assert float(gaussian_mutual_information(x, y)) == pytest.approx(1.5, abs=0.03)


# --- the benchmark's ground truth ------------------------------------------------------------------------


def test_pair_correlation_inverts_the_gaussian_formula() -> None:
    for mi in (0.1, 1.0, 4.0):
        assert -0.5 * math.log(1 - pair_correlation(mi) ** 2) == pytest.approx(mi)


@pytest.mark.parametrize(("dim", "dof"), [(1, 3.0), (2, 5.0)])
def test_student_t_mutual_information_matches_monte_carlo(dim: int, dof: float) -> None:
    task = student_t_task(dim, 1.0, dof)
    x, y = task.sample(100_000, seed=0)
    rho = pair_correlation((1.0 - student_t_dependence(dof, dim, dim)) / dim)
    dispersion = np.eye(2 * dim) + rho * (np.eye(2 * dim, k=dim) + np.eye(2 * dim, k=-dim))
    joint = stats.multivariate_t(np.zeros(2 * dim), dispersion, df=dof)
    marginal = stats.multivariate_t(np.zeros(dim), np.eye(dim), df=dof)
    log_ratio = joint.logpdf(np.hstack([x, y])) - marginal.logpdf(x) - marginal.logpdf(y)
    assert log_ratio.mean() == pytest.approx(1.0, abs=4 * log_ratio.std() / math.sqrt(len(log_ratio)) + 0.005)
    assert student_t_dependence(1e6, dim, dim) == pytest.approx(0.0, abs=1e-5)
