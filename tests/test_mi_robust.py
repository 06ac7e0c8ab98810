"""Marginal invariance, heavy tails, KSG, honest held-out scoring and the fitting defaults of infonfusion.mi.

Tolerances (also in docs/mi.md): raw vs cubed vs arcsinh coordinates within 0.1 nats of each other and
of the truth; Student-t estimates in [-0.1, truth + 0.3]; KSG within 0.05 nats on 1-D Gaussians.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from infofusion.mi import KSG, GaussianCopula, Standardise, fit_estimator
from infofusion.mi.defaults import DEFAULT_ESTIMATOR, DEFAULT_PREPROCESSING
from infofusion.mi.progress import Progress
from infofusion.mi.tasks import gaussian_task, student_t_task

torch.set_num_threads(1)

MAPS = {"raw": lambda a: a, "cubed": lambda a: a**3, "arcsinh": lambda a: np.arcsinh(3.0 * a)}


@pytest.mark.parametrize("estimator", [DEFAULT_ESTIMATOR, "ksg"])
def test_invertible_maps_of_the_coordinates_leave_the_estimate_alone(estimator: str) -> None:
    task = gaussian_task(3, 1.0, "dense")
    x, y = task.sample(3000, seed=0)
    estimates = {
        name: fit_estimator(f(x), f(y), estimator, steps=600, seed=0, estimator_options={"hidden_dim": 32}).mi
        if estimator != "ksg"
        else fit_estimator(f(x), f(y), "ksg").mi
        for name, f in MAPS.items()
    }
    values = np.array(list(estimates.values()))
    assert values.max() - values.min() <= 0.1, estimates
    assert np.abs(values - task.mutual_information).max() <= 0.1, estimates


def test_without_the_copula_a_cube_does_change_the_estimate() -> None:
    # the reason for the default: the same fit with plain standardisation is not invariant
    x, y = gaussian_task(3, 1.0, "dense").sample(3000, seed=0)
    options = {
        "steps": 600,
        "seed": 0,
        "estimator_options": {"hidden_dim": 32},
        "preprocessing": "standardise",
    }
    raw = fit_estimator(x, y, DEFAULT_ESTIMATOR, **options).mi
    cubed = fit_estimator(x**3, y**3, DEFAULT_ESTIMATOR, **options).mi
    assert raw - cubed > 0.1, (raw, cubed)


@pytest.mark.parametrize("estimator", ["mine", "nwj", "smile", "infonce", "ba", "ksg"])
def test_student_t_gives_no_negative_and_no_runaway_estimate(estimator: str) -> None:
    task = student_t_task(5, 1.0, dof=2.0)
    x, y = task.sample(3000, seed=0)
    options = {} if estimator == "ksg" else {"hidden_dim": 32}
    result = fit_estimator(x, y, estimator, steps=400, seed=0, estimator_options=options)
    assert -0.1 <= result.mi <= task.mutual_information + 0.3, result.mi


@pytest.mark.parametrize("mutual_information", [0.1, 0.5, 1.0, 2.0])
def test_ksg_is_within_five_hundredths_of_a_nat_on_1d_gaussians(mutual_information: float) -> None:
    x, y = gaussian_task(1, mutual_information).sample(5000, seed=3)
    result = KSG(k=3).estimate(x, y)
    assert abs(result.mi - mutual_information) <= 0.05, result.mi
    assert 0 < result.standard_error < 0.05


def test_ksg_sees_independence_and_rejects_too_few_rows() -> None:
    rng = np.random.default_rng(0)
    assert abs(KSG().estimate(rng.standard_normal((3000, 2)), rng.standard_normal((3000, 2))).mi) < 0.03
    with pytest.raises(ValueError, match="more than 3 rows"):
        KSG(k=3).estimate(np.zeros((3, 1)), np.zeros((3, 1)))


class RecordingCritic(nn.Module):
    """A concat critic that remembers the first x coordinate of every row it scores, by mode."""

    def __init__(self) -> None:
        super().__init__()
        self.network = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1))
        self.seen: dict[bool, set[float]] = {True: set(), False: set()}

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.seen[self.training and torch.is_grad_enabled()].update(x[:, 0].tolist())
        n = x.shape[0]
        pairs = torch.cat([x[:, None, :].expand(n, n, -1), y[None, :, :].expand(n, n, -1)], dim=-1)
        return self.network(pairs).squeeze(-1)


def test_the_held_out_estimate_is_never_computed_on_training_rows() -> None:
    x, y = gaussian_task(1, 0.5).sample(600, seed=0)
    critic = RecordingCritic()
    result = fit_estimator(
        x, y, "nwj", steps=60, batch_size=32, preprocessing="none", estimator_options={"critic": critic}
    )
    trained_on = critic.seen[True]
    heldout = {float(np.float32(v)) for v in x[result.heldout_rows, 0]}
    assert len(heldout) == 120 and trained_on and not trained_on & heldout
    # scored outside training: the held-out rows (3 full batches of 32) and the equally large training probe
    scored_heldout, probe = critic.seen[False] & heldout, critic.seen[False] - heldout
    assert len(scored_heldout) == 96 and probe <= trained_on and len(probe) <= len(heldout)


def test_an_overfitting_critic_shows_a_train_heldout_gap() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((200, 5)), rng.standard_normal((200, 5))  # independent: I = 0
    result = fit_estimator(
        x, y, "nwj", steps=600, batch_size=64, early_stopping=False, estimator_options={"hidden_dim": 64}
    )
    assert result.gap > 0.3 and result.mi < 0.1, (result.train_mi, result.mi)


def test_early_stopping_stops_once_the_held_out_estimate_stops_improving() -> None:
    x, y = gaussian_task(1, 0.5).sample(2000, seed=0)
    early = fit_estimator(x, y, "infonce", steps=3000, estimator_options={"hidden_dim": 16})
    assert early.stopped_early and early.steps < 3000 and abs(early.mi - 0.5) <= 0.15
    full = fit_estimator(
        x, y, "infonce", steps=300, early_stopping=False, estimator_options={"hidden_dim": 16}
    )
    assert not full.stopped_early and full.steps == 300 and len(full.evaluations) == 30


def test_fitting_uses_one_thread_and_restores_the_setting() -> None:
    seen: list[int] = []

    class ThreadSpy(RecordingCritic):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            return super().forward(x, y)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x, y = gaussian_task(1, 0.5).sample(200, seed=0)
        fit_estimator(x, y, "nwj", steps=5, batch_size=16, estimator_options={"critic": ThreadSpy()})
        assert set(seen) == {1} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_copula_is_exactly_invariant_to_increasing_maps_held_out_rows_included() -> None:
    rng = np.random.default_rng(0)
    train, heldout = rng.standard_t(2, (500, 3)), rng.standard_t(2, (100, 3))
    copula = GaussianCopula().fit(train)
    cubed = GaussianCopula().fit(train**3)
    assert np.array_equal(copula.transform(heldout), cubed.transform(heldout**3))
    scores = copula.transform(train)
    assert np.allclose(scores.mean(axis=0), 0, atol=1e-9) and np.allclose(scores.std(axis=0), 1, atol=0.03)
    assert np.isfinite(copula.transform(np.array([[1e300, -1e300, 0.0]]))).all()  # beyond the training range
    constant = GaussianCopula().fit(np.ones((10, 1))).transform(np.ones((4, 1)))
    assert np.array_equal(constant, np.zeros((4, 1)))
    standard = Standardise().fit(train).transform(train)
    assert np.allclose(standard.mean(axis=0), 0) and np.allclose(standard.std(axis=0), 1)
    assert DEFAULT_PREPROCESSING == "copula"


def test_progress_writes_plain_periodic_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    bar = Progress(100, "nwj", stream=stream, delay=0.0)
    for step in range(1, 101):
        bar.update(step, 0.5 if step % 20 == 0 else None)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10 and "\r" not in stream.getvalue()
    assert lines[-1].startswith("nwj: step 100/100") and "held-out 0.500 nats" in lines[-1]


def test_peer_benchmark_report_from_a_log_needs_no_peer_library(tmp_path) -> None:
    from benchmark_scripts import load_benchmark

    peers = load_benchmark("mi_peers")
    rows = [
        {"library": "infofusion", "type": "nwj", "task": "a", "estimate": 0.9, "truth": 1.0, "seconds": 2.0},
        {"library": "bmi", "type": "nwj", "task": "a", "estimate": 0.7, "truth": 1.0, "seconds": 6.0},
        {"library": "torch_mist", "type": "nwj", "task": "a", "estimate": 0.5, "truth": 1.0, "seconds": 1.0},
        {"library": "infofusion", "type": "nwj", "task": "b", "estimate": 2.0, "truth": 2.0, "seconds": 2.0},
    ]
    log = tmp_path / "run.err"
    stream = io.StringIO()
    for row in rows:
        peers.print_row(row, row["truth"], stream=stream)
    log.write_text("peer venv: noise\n" + stream.getvalue())
    assert peers.rows_from_log(log) == rows
    table = peers.markdown_report(rows, {"a": 1.0, "b": 2.0}, ["nwj"]).splitlines()
    assert table[0] == "| task | truth | type | infofusion | bmi | torch_mist |"
    # task b was not run by the peers, so the summary covers task a only
    assert table[-1] == (
        "| nwj | 1 | 0.10 / 0.10 / 2 | 0.30 / 0.30 / 6 (3.00x infofusion's time) "
        "| 0.50 / 0.50 / 1 (0.50x infofusion's time) |"
    )
