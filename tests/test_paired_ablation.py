"""benchmarks/paired_ablation.py: differences seed by seed, with a t-interval, from an ablation folder."""

import json
import math
import sys

import pytest

from benchmark_scripts import load_benchmark

paired_ablation = load_benchmark("paired_ablation")


def test_the_difference_is_paired_by_seed_with_a_t_interval():
    reference = {1: 80.0, 2: 70.0, 3: 90.0}
    other = {1: 81.0, 2: 72.0, 3: 90.0, 4: 10.0}  # seed 4 has no partner: left out
    difference, half, n = paired_ablation.paired(reference, other)
    assert n == 3 and difference == pytest.approx(1.0)
    # differences 1, 2, 0: sd 1, se 1/sqrt(3), t(2) = 4.303
    assert half == pytest.approx(4.303 / math.sqrt(3))
    assert math.isnan(paired_ablation.paired({1: 1.0}, {1: 2.0})[1])


def test_it_reads_an_ablation_folder(tmp_path, monkeypatch, capsys):
    for setting, values in {"full": [0.80, 0.70], "no_mi": [0.82, 0.71]}.items():
        for seed, value in enumerate(values, start=1):
            run = tmp_path / setting / f"seed_{seed}"
            run.mkdir(parents=True)
            (run / "metrics.json").write_text(json.dumps({"valid": {"acc": value}, "test": {"acc": value}}))
    monkeypatch.setattr(sys, "argv", ["paired_ablation.py", str(tmp_path), "--splits", "valid"])
    paired_ablation.main()
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| no_mi")][0]
    assert row.startswith("| no_mi | 2 | 76.5 | 75.0 | +1.5 |")
