"""The MI API says what its number is: which side of the true MI it lies on (``bound_kind``), what its
standard error covers ("sampling only"), the same in the CLI's JSON, NumPy into the closed form, and the
one-call snippet that opens docs/mi.md runs and says what the docs say it does."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from infofusion.mi import (
    BOUND_KINDS,
    ESTIMATORS,
    bound_kind,
    fit_estimator,
    gaussian_mutual_information,
    list_estimators,
)
from infofusion.mi.cli import main as mi_main
from infofusion.mi.fitting import nats_readout

DOCS = Path(__file__).resolve().parents[1] / "docs" / "mi.md"
RHO = 0.9


def correlated_pairs(rows: int, pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """``pairs`` coordinate pairs of correlation RHO, and their MI in nats."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, pairs))
    y = RHO * x + math.sqrt(1 - RHO**2) * rng.standard_normal((rows, pairs))
    return x, y, -0.5 * pairs * math.log(1 - RHO**2)


def test_every_estimator_says_which_side_of_the_truth_it_lies_on():
    kinds = {info.name: info.bound_kind for info in list_estimators()}
    assert set(kinds.values()) <= set(BOUND_KINDS)
    assert {name for name, kind in kinds.items() if kind == "lower"} == {"mine", "nwj", "infonce", "cpc"}
    assert {name for name, kind in kinds.items() if kind == "upper"} == {"club", "club_sample", "l1out"}
    for name in kinds:
        assert bound_kind(name) == kinds[name]
    assert all(cls.bound_kind == kinds[name] for name, cls in ESTIMATORS.items())
    with pytest.raises(ValueError, match="unknown estimator 'mmi'"):
        bound_kind("mmi")


def test_the_default_fit_is_a_lower_bound_and_its_error_is_sampling_only():
    x, y, truth = correlated_pairs(2000, 3)
    result = fit_estimator(x, y, steps=300)
    assert result.bound_kind == "lower" and result.uncertainty == "sampling only"
    # What a lower bound claims, with its sampling noise allowed for: never above the truth.
    assert result.mi - 3 * result.standard_error < truth
    summary = result.summary()
    assert summary.startswith(f"I(X; Y) >= {result.mi:.3f} nats: a lower bound")
    assert f"standard error {result.standard_error:.3f} (sampling only)" in summary
    row = result.as_dict()
    assert (row["bound_kind"], row["uncertainty"], row["summary"]) == ("lower", "sampling only", summary)


@pytest.mark.parametrize(
    ("estimator", "kind", "sign"),
    [("club", "upper", "<="), ("ksg", "estimate", "~"), ("jsd", "estimate", "~")],
)
def test_other_fits_carry_their_own_kind(estimator, kind, sign):
    x, y, _ = correlated_pairs(600, 1)
    result = fit_estimator(x, y, estimator, steps=40, evaluation=nats_readout(estimator))
    assert result.bound_kind == kind
    assert result.summary().startswith(f"I(X; Y) {sign} {result.mi:.3f} nats")


def test_an_objective_that_is_not_mi_is_not_read_as_one():
    x, y, _ = correlated_pairs(600, 1)
    result = fit_estimator(x, y, "jsd", steps=40)  # its own objective, not the density-ratio read-out
    assert result.bound_kind == "estimate"
    assert "not a value of I(X; Y)" in result.summary()


def test_the_cli_json_names_the_kind_and_what_the_error_covers(tmp_path, capsys):
    x, y, _ = correlated_pairs(600, 1)
    np.savez(tmp_path / "pairs.npz", x=x, y=y)
    assert (
        mi_main(["estimate", str(tmp_path / "pairs.npz"), "--x", "x", "--y", "y", "--steps", "40", "--quiet"])
        == 0
    )
    row = json.loads(capsys.readouterr().out)
    assert row["bound_kind"] == "lower" and row["uncertainty"] == "sampling only"
    assert row["summary"].startswith("I(X; Y) >= ")
    assert mi_main(["estimators", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {row["name"]: row["bound_kind"] for row in rows}["club"] == "upper"


def test_gaussian_mutual_information_takes_numpy_as_fit_estimator_does():
    x, y, truth = correlated_pairs(20000, 2)
    from_numpy = gaussian_mutual_information(x, y)
    assert isinstance(from_numpy, float) and from_numpy == pytest.approx(truth, abs=0.03)
    from_tensors = gaussian_mutual_information(torch.as_tensor(x), torch.as_tensor(y))
    assert isinstance(from_tensors, torch.Tensor) and float(from_tensors) == pytest.approx(
        from_numpy, abs=1e-9
    )
    # 1-D arrays are one column each; a list works as any array-like does.
    one = gaussian_mutual_information(x[:, 0], y[:, 0].tolist())
    assert one == pytest.approx(truth / 2, abs=0.03)
    with pytest.raises(ValueError, match="different numbers of rows"):
        gaussian_mutual_information(x, y[:-1])


def test_the_docs_open_with_a_one_call_snippet_that_runs_as_described(capsys):
    text = DOCS.read_text(encoding="utf-8")
    first_section = text.split("\n## ")[1]
    assert first_section.startswith("One call") and "lower bound" in first_section
    snippet = re.search(r"```python\n(.*?)```", first_section, re.S).group(1)
    namespace: dict = {}
    exec(compile(snippet, str(DOCS), "exec"), namespace)  # the docs' own example
    result = namespace["result"]
    assert result.bound_kind == "lower" and result.mi < -1.5 * math.log(1 - RHO**2)
    assert capsys.readouterr().out.startswith(f"I(X; Y) >= {result.mi:.3f} nats: a lower bound")
    assert f"{result.mi:.2f}" in first_section  # the number the docs quote is the one it gives
