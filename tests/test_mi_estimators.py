"""Estimator accuracy on Gaussians with closed-form MI, bound directions, numerics and the registry.

Tolerances (also in docs/mi.md):
* estimators that target the true MI (mine, nwj, infonce, cpc, smile, ba, l1out): |est - I| <= 0.1 + 0.1·I;
* club / club_sample target their own population value Σρ²/(1-ρ²), club_mean Σρ², within 0.1 + 0.1·value,
  and club, club_sample, l1out must stay >= I - (0.1 + 0.1·I);
* jsd targets the Monte-Carlo maximum of the JSD objective within 0.05, its density-ratio read-out the MI
  within 0.1 + 0.1·I.
Each fit: 4,000 samples (20% held out), batch 128, Adam 1e-3, hidden width 32, seed 0.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from infofusion.mi import (
    ESTIMATORS,
    MINE,
    FitResult,
    build_estimator,
    donsker_varadhan_bound,
    fit_estimator,
    infonce_bound,
    jsd_objective,
    list_estimators,
    nwj_bound,
    smile_bound,
)
from infofusion.mi.base import CriticEstimator, GaussianConditionalEstimator
from infofusion.mi.tasks import gaussian_task

torch.set_num_threads(1)  # tiny nets: a second thread mostly adds contention

TASKS = [gaussian_task(1, 0.5, "sparse"), gaussian_task(3, 1.0, "dense"), gaussian_task(2, 2.0, "sparse")]
TARGETS_TRUE_MI = ["mine", "nwj", "infonce", "cpc", "smile", "ba", "l1out"]
UPPER_BOUNDS = ["club", "club_sample", "l1out"]
# CPC on raw features needs a y embedding and a learned temperature (see the CPC docstring); its cosine
# critic also learns more slowly, hence more steps.
OPTIONS: dict[str, dict] = {
    "cpc": {"target_dim": 16, "num_layers": 2, "temperature": 0.1, "learn_temperature": True}
}
STEPS = {"cpc": 1000}


def tolerance(value: float) -> float:
    return 0.1 + 0.1 * abs(value)


@functools.cache
def fitted(name: str, task_index: int) -> FitResult:
    x, y = TASKS[task_index].sample(4000, seed=0)
    options = {"hidden_dim": 32, **OPTIONS.get(name, {})}
    return fit_estimator(
        x, y, name, steps=STEPS.get(name, 500), batch_size=128, seed=0, estimator_options=options
    )


def population_value(name: str, task_index: int) -> float:
    """What each estimator converges to on a correlated-pairs Gaussian with an exact decoder."""
    rhos = np.array(TASKS[task_index].pair_correlations)
    if name in ("club", "club_sample"):
        return float((rhos**2 / (1 - rhos**2)).sum())
    if name == "club_mean":
        return float((rhos**2).sum())
    return TASKS[task_index].mutual_information


def jsd_optimum(task_index: int, n: int = 200_000) -> float:
    """Monte-Carlo value of the JSD objective at the optimal critic log p(x,y)/p(x)p(y)."""
    rhos = np.array(TASKS[task_index].pair_correlations)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, len(rhos)))
    y = rhos * x + np.sqrt(1 - rhos**2) * rng.standard_normal(x.shape)

    def log_ratio(a: np.ndarray, b: np.ndarray) -> torch.Tensor:
        quadratic = (rhos**2 * (a**2 + b**2) - 2 * rhos * a * b) / (2 * (1 - rhos**2))
        return torch.as_tensor((-0.5 * np.log(1 - rhos**2) - quadratic).sum(axis=1))

    joint, marginal = log_ratio(x, y), log_ratio(x, y[rng.permutation(n)])
    return float(-F.softplus(-joint).mean() - F.softplus(marginal).mean())


def paired_batch(task_index: int, n: int, seed: int, dtype: torch.dtype = torch.float32):
    return tuple(torch.as_tensor(a, dtype=dtype) for a in TASKS[task_index].sample(n, seed))


@pytest.mark.parametrize("task_index", range(len(TASKS)), ids=[t.name for t in TASKS])
@pytest.mark.parametrize("name", TARGETS_TRUE_MI + ["club", "club_sample", "club_mean"])
def test_estimate_is_close_to_its_target(name: str, task_index: int) -> None:
    target = population_value(name, task_index)
    result = fitted(name, task_index)
    assert result.units == "nats"
    assert abs(result.mi - target) <= tolerance(target), (result.mi, target)


@pytest.mark.parametrize("task_index", range(len(TASKS)), ids=[t.name for t in TASKS])
@pytest.mark.parametrize("name", UPPER_BOUNDS)
def test_upper_bounds_stay_above_the_truth(name: str, task_index: int) -> None:
    truth = TASKS[task_index].mutual_information
    assert fitted(name, task_index).mi >= truth - tolerance(truth)


@pytest.mark.parametrize("task_index", range(len(TASKS)), ids=[t.name for t in TASKS])
def test_jsd_reaches_the_optimum_of_its_objective(task_index: int) -> None:
    result = fitted("jsd", task_index)
    assert result.units != "nats"
    assert abs(result.mi - jsd_optimum(task_index)) <= 0.05
    x, y = paired_batch(task_index, 2000, seed=7)
    truth = TASKS[task_index].mutual_information
    with torch.no_grad():
        assert abs(float(result.model.density_ratio_mi(x, y)) - truth) <= tolerance(truth)


def test_infonce_never_exceeds_log_batch_size() -> None:
    task = gaussian_task(2, 6.0, "dense")  # far more MI than log(16) can show
    x, y = (torch.as_tensor(a, dtype=torch.float32) for a in task.sample(4000, seed=0))
    torch.manual_seed(0)
    estimator = build_estimator("infonce", 2, 2, hidden_dim=32)
    optimiser = torch.optim.Adam(estimator.parameters(), lr=3e-3)
    values = []
    for _ in range(300):
        rows = torch.randint(0, 4000, (16,))
        optimiser.zero_grad()
        estimator.learning_loss(x[rows], y[rows]).backward()
        optimiser.step()
        with torch.no_grad():
            values.append(float(estimator.estimate(x[rows], y[rows])))
    assert max(values) <= math.log(16) + 1e-5
    assert np.mean(values[-50:]) > math.log(16) - 0.5  # and it gets close to the cap


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_gradients_reach_the_inputs(name: str) -> None:
    torch.manual_seed(0)
    x, y = (t.requires_grad_() for t in paired_batch(1, 32, seed=3))
    estimator = build_estimator(name, 3, 3, hidden_dim=16)
    estimator.estimate(x, y).backward()
    for tensor in (x, y):
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all()
        assert tensor.grad.abs().sum() > 0


def _all_finite(module: nn.Module) -> bool:
    return all(torch.isfinite(p).all() for p in module.parameters())


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_batch_size_two_stays_finite_for_hundreds_of_steps(name: str) -> None:
    torch.manual_seed(0)
    estimator = build_estimator(name, 3, 3, hidden_dim=16)
    optimiser = torch.optim.Adam(estimator.parameters(), lr=1e-3)
    for step in range(300):
        x, y = paired_batch(1, 2, seed=step)
        if step % 25 == 0:  # duplicated rows: zero variance in the batch
            x, y = x[:1].repeat(2, 1), y[:1].repeat(2, 1)
        optimiser.zero_grad()
        loss = estimator.learning_loss(x, y)
        loss.backward()
        optimiser.step()
        assert torch.isfinite(loss), step
        assert torch.isfinite(estimator.estimate(x, y)), step
    assert _all_finite(estimator)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_a_seed_makes_fitting_deterministic(name: str) -> None:
    x, y = TASKS[1].sample(600, seed=0)

    def run(seed: int) -> float:
        return fit_estimator(
            x, y, name, steps=30, batch_size=64, seed=seed, estimator_options={"hidden_dim": 8}
        ).mi

    assert run(5) == run(5)
    assert run(5) != run(6)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_float64(name: str) -> None:
    torch.manual_seed(0)
    estimator = build_estimator(name, 3, 3, hidden_dim=16, dtype=torch.float64)
    x, y = paired_batch(1, 16, seed=0, dtype=torch.float64)
    value = estimator.estimate(x, y)
    estimator.learning_loss(x, y).backward()
    assert value.dtype == torch.float64 and torch.isfinite(value)
    assert all(p.grad.dtype == torch.float64 for p in estimator.parameters() if p.grad is not None)


def test_fitting_in_float64_matches_the_truth() -> None:
    x, y = TASKS[0].sample(2000, seed=0)
    result = fit_estimator(x, y, "ba", steps=300, dtype=torch.float64, estimator_options={"hidden_dim": 16})
    assert abs(result.mi - 0.5) <= tolerance(0.5)


# --- numerics: critic outputs of ±1000 ---------------------------------------------------------------


def _extreme_scores(pattern: str, n: int = 6) -> torch.Tensor:
    eye = torch.eye(n)
    if pattern == "joint_high":
        base = 2000.0 * eye - 1000.0
    elif pattern == "joint_low":
        base = 1000.0 - 2000.0 * eye
    else:
        base = 1000.0 * torch.sign(torch.randn(n, n, generator=torch.Generator().manual_seed(0)))
    return base.clone().requires_grad_()


BOUND_FUNCTIONS = {
    "dv": donsker_varadhan_bound,
    "nwj": nwj_bound,
    "infonce": infonce_bound,
    "jsd": jsd_objective,
    "smile": lambda s: smile_bound(s, 5.0),
}


@pytest.mark.parametrize("pattern", ["joint_high", "joint_low", "random"])
@pytest.mark.parametrize("bound", list(BOUND_FUNCTIONS))
def test_bounds_are_finite_for_scores_of_plus_minus_1000(bound: str, pattern: str) -> None:
    scores = _extreme_scores(pattern)
    value = BOUND_FUNCTIONS[bound](scores)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(scores.grad).all()


def test_extreme_bound_values_are_the_right_ones() -> None:
    scores = _extreme_scores("joint_high").detach()
    assert float(donsker_varadhan_bound(scores)) == pytest.approx(2000.0)
    assert float(infonce_bound(scores)) == pytest.approx(math.log(6))
    assert float(jsd_objective(scores)) == pytest.approx(0.0, abs=1e-6)
    assert float(nwj_bound(_extreme_scores("joint_low").detach())) < -1e12  # huge but finite


class _FixedScores(nn.Module):
    """A critic whose score matrix is a parameter: lets tests set critic outputs directly."""

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.scores = nn.Parameter(scores.clone())

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.scores


@pytest.mark.parametrize("name", [n for n, c in ESTIMATORS.items() if issubclass(c, CriticEstimator)])
def test_critic_estimators_survive_outputs_of_plus_minus_1000(name: str) -> None:
    estimator = build_estimator(name, 2, 2)
    x, y = torch.randn(6, 2), torch.randn(6, 2)
    for pattern in ("joint_low", "joint_high", "random"):  # MINE's moving average sees a jump of 2000
        estimator.critic = _FixedScores(_extreme_scores(pattern).detach())
        loss = estimator.learning_loss(x, y)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(estimator.estimate(x, y))
        assert torch.isfinite(estimator.critic.scores.grad).all()


@pytest.mark.parametrize(
    "name", [n for n, c in ESTIMATORS.items() if issubclass(c, GaussianConditionalEstimator)]
)
def test_decoder_estimators_survive_inputs_far_out(name: str) -> None:
    torch.manual_seed(0)
    estimator = build_estimator(name, 2, 2)
    x, y = 1000.0 * torch.randn(8, 2), 1000.0 * torch.randn(8, 2)
    loss = estimator.learning_loss(x, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(estimator.estimate(x, y))
    assert all(torch.isfinite(p.grad).all() for p in estimator.parameters() if p.grad is not None)


# --- MINE's moving-average gradient -------------------------------------------------------------------


def test_mine_gradient_uses_the_moving_average_denominator() -> None:
    estimator = MINE(2, 2, moving_average_rate=0.1)
    x, y = torch.randn(4, 2), torch.randn(4, 2)
    off = ~torch.eye(4, dtype=torch.bool)

    first = torch.randn(4, 4, generator=torch.Generator().manual_seed(1))
    estimator.critic = _FixedScores(first)
    estimator.learning_loss(x, y).backward()
    plain = torch.softmax(first[off], dim=0)  # first step: average == batch mean, so the DV gradient
    assert torch.allclose(estimator.critic.scores.grad[off], plain, atol=1e-6)

    second = first + 2.0
    estimator.critic = _FixedScores(second)
    loss = estimator.learning_loss(x, y)
    loss.backward()
    batch_log_mean = torch.logsumexp(second[off], 0) - math.log(12)
    first_log_mean = torch.logsumexp(first[off], 0) - math.log(12)
    moving = torch.logaddexp(math.log(0.9) + first_log_mean, math.log(0.1) + batch_log_mean)
    expected = torch.softmax(second[off], 0) * torch.exp(batch_log_mean - moving)
    assert torch.allclose(estimator.critic.scores.grad[off], expected, atol=1e-5)
    assert not torch.allclose(expected, torch.softmax(second[off], 0), atol=1e-3)
    # the value is still the DV bound
    with torch.no_grad():
        dv_value = float(donsker_varadhan_bound(second))
        assert float(-loss) == pytest.approx(dv_value, abs=1e-5)
        assert float(estimator.estimate(x, y)) == pytest.approx(dv_value, abs=1e-5)


def test_smile_value_is_clipped_dv_but_gradient_is_jsd() -> None:
    scores = (torch.randn(5, 5, generator=torch.Generator().manual_seed(2)) * 8).requires_grad_()
    value = smile_bound(scores, 5.0)
    value.backward()
    reference = scores.detach().clone().requires_grad_()
    jsd_objective(reference).backward()
    assert torch.allclose(scores.grad, reference.grad)
    clipped_dv = build_estimator("smile", 1, 1, clip=5.0).bound(scores.detach())
    assert float(value.detach()) == pytest.approx(float(clipped_dv))


# --- registry ---------------------------------------------------------------------------------------------


def test_registry_lists_every_estimator_with_kind_and_description() -> None:
    infos = {info.name: info for info in list_estimators()}
    assert set(infos) == set(ESTIMATORS) | {"ksg"}  # KSG has no network, so no module in ESTIMATORS
    assert set(ESTIMATORS) == {
        "mine",
        "nwj",
        "infonce",
        "cpc",
        "jsd",
        "smile",
        "ba",
        "club",
        "club_sample",
        "club_mean",
        "l1out",
    }
    assert all(
        info.kind in {"lower", "upper", "jsd", "ba", "knn"} and info.description for info in infos.values()
    )
    assert infos["jsd"].kind == "jsd" and "not nats" in infos["jsd"].description.lower()
    assert {infos[n].kind for n in ("club", "club_sample", "club_mean", "l1out")} == {"upper"}
    with pytest.raises(ValueError, match="unknown estimator"):
        build_estimator("nope", 1, 1)


def test_constructor_sizes_the_networks() -> None:
    small = build_estimator("club", 4, 3, hidden_dim=8, num_layers=1)
    large = build_estimator("club", 4, 3, hidden_dim=64, num_layers=3)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in large.parameters())
    concat = build_estimator("infonce", 4, 3, critic="concat", hidden_dim=8)
    assert concat.scores(torch.randn(5, 4), torch.randn(5, 3)).shape == (5, 5)


def test_bad_batches_are_rejected_with_a_message() -> None:
    estimator = build_estimator("infonce", 2, 2)
    with pytest.raises(ValueError, match="at least 2"):
        estimator.estimate(torch.randn(1, 2), torch.randn(1, 2))
    with pytest.raises(ValueError, match="columns"):
        estimator.estimate(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="batch sizes"):
        estimator.estimate(torch.randn(4, 2), torch.randn(5, 2))


@pytest.mark.parametrize("name", ["club", "club_mean"])
@pytest.mark.parametrize("batch", [2, 7, 64])
def test_club_closed_form_equals_the_pairwise_mean_with_its_gradients(name, batch):
    torch.manual_seed(batch)
    estimator = build_estimator(name, 5, 3, hidden_dim=16).double()
    x = torch.randn(batch, 5, dtype=torch.float64, requires_grad=True)
    y = (torch.randn(batch, 3, dtype=torch.float64) * 4 + 10).requires_grad_(True)  # far from 0, wide
    fast = estimator.estimate(x, y)
    reference = estimator.pairwise_estimate(x, y)
    assert float(fast) == pytest.approx(float(reference), rel=1e-9, abs=1e-9)
    fast_grads = torch.autograd.grad(fast, [x, y, *estimator.parameters()])
    reference_grads = torch.autograd.grad(reference, [x, y, *estimator.parameters()])
    for got, expected in zip(fast_grads, reference_grads, strict=True):
        assert torch.allclose(got, expected, rtol=1e-7, atol=1e-9)
