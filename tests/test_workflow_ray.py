"""``infofusion sweep --backend ray``: Ray Tune's Optuna search on a single-node local Ray instance.

Ray 2.x no longer has the in-process ``local_mode``; a local instance with two CPUs is the closest test of
what a cluster runs. One instance is shared by the tests of this module and shut down at the end.
"""

import json

import pytest
import yaml

ray = pytest.importorskip("ray")

from test_cli import run_cli  # noqa: E402
from test_workflow_sweep import FAST, SPACE  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def ray_sweep(capsys, tmp_path, trials, *extra):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    output = tmp_path / "sweep"
    arguments = ["--model", "late_fusion", "--space", str(space), "--trials", str(trials), "--epochs", "2"]
    return (
        run_cli(capsys, "sweep", *arguments, "--output", str(output), "--backend", "ray", *FAST, *extra),
        output,
    )


def test_ray_sweep_writes_best_yaml_from_validation_and_refuses_to_resume(tmp_path, capsys):
    (code, out, err), output = ray_sweep(capsys, tmp_path, 3, "--no-prune")
    assert code == 0, err
    summary = json.loads((output / "sweep.json").read_text())
    done = [t for t in summary["trials"] if t["state"] == "DONE"]
    assert len(done) == 3
    assert summary["best"]["value"] == max(t["value"] for t in done)
    best = yaml.safe_load((output / "best.yaml").read_text())
    assert best["train"]["lr"] == pytest.approx(summary["best"]["params"]["train.lr"])
    assert best["model"]["hidden"] in (16, 32) and 0.0 <= best["model"]["dropout"] <= 0.5
    # Every trial trained without the test split: its metrics.json has no test entry.
    runs = list((output / "trials").glob("*/metrics.json"))
    assert len(runs) == 3
    assert all("test" not in json.loads(run.read_text()) for run in runs)
    # A rerun with the same output is refused: resuming would unpickle Ray's state (issue 14).
    (code, out, err), _ = ray_sweep(capsys, tmp_path, 3, "--no-prune")
    assert code == 2 and "would unpickle" in err and len(err.strip().splitlines()) == 1
    assert len(list((output / "trials").glob("*/metrics.json"))) == 3


def test_ray_sweep_with_median_stopping(tmp_path, capsys):
    (code, out, err), output = ray_sweep(capsys, tmp_path, 2, "--prune-startup", "1")
    assert code == 0, err
    assert "MedianStoppingRule" in out  # Ray's table of the experiment names the scheduler
    assert (output / "best.yaml").exists()
