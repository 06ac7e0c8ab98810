"""infofusion.mi side by side with BMI (`benchmark-mi`, Czyż et al. 2023) and torch-mist, on BMI's own tasks.

The peers live in their own virtual environment (``--peer-venv``, default ``.cache/mi_peers_venv``, git
-ignored), created and filled by this script on first use: torch 2.13.0 (CPU) first, then the two
packages with torch held at that version, then a JAX old enough for BMI's tensorflow-probability. A peer
that cannot be installed or imported is skipped with a message.

One run, three phases, one after the other on the same machine so the seconds compare:
1. the peer venv samples every task with BMI's own sampler (``bmi.benchmark.BENCHMARK_TASKS``) and
   writes the samples and the true MI to a temporary folder;
2. infofusion (this interpreter) estimates on those samples, each estimator with its defaults;
3. the peer venv runs BMI's and torch-mist's estimators, each with its library's defaults (torch-mist
   is given the same 80 / 20 split as held-out test data: by default it would score on its training data).

Prints one line per (library, estimator, task) as it goes, then a markdown table: estimate / truth /
|error| / seconds, the mean absolute error per library and estimator type, and the time ratio
peer / infofusion measured in this run. Every process uses one CPU thread.

    python benchmarks/mi_peers.py                         # default: 8 tasks, 5,000 samples
    python benchmarks/mi_peers.py --samples 10000 --types infonce,nwj,dv,smile,ksg
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VENV = ROOT / ".cache" / "mi_peers_venv"
PEER_PACKAGES = {"bmi": "benchmark-mi==0.1.3", "torch_mist": "torch-mist==0.2.17"}
# BMI 0.1.3 needs tensorflow-probability 0.20, which uses JAX internals removed in JAX 0.4.34.
PEER_PINS = ["jax==0.4.30", "jaxlib==0.4.30"]
TORCH_PIN = "torch==2.13.0"

DEFAULT_TASKS = (
    "1v1-normal-0.75",
    "1v1-additive-0.75",
    "multinormal-dense-5-5-0.5",
    "multinormal-sparse-25-25-2-2.0",
    "student-identity-5-5-2",
    "asinh-student-identity-3-3-2",
    "half_cube-multinormal-sparse-5-5-2-2.0",
    "spiral-multinormal-sparse-5-5-2-2.0",
)
# estimator type -> each library's estimator of that type (None: the library has none)
ESTIMATORS = {
    "infonce": {"infofusion": "infonce", "bmi": "InfoNCEEstimator", "torch_mist": "infonce"},
    "nwj": {"infofusion": "nwj", "bmi": "NWJEstimator", "torch_mist": "nwj"},
    "dv": {"infofusion": "mine", "bmi": "DonskerVaradhanEstimator", "torch_mist": "mine"},
    "smile": {"infofusion": "smile", "bmi": None, "torch_mist": "smile"},
    "ksg": {"infofusion": "ksg", "bmi": "KSGEnsembleFirstEstimator", "torch_mist": None},
}
LIBRARIES = ("infofusion", "bmi", "torch_mist")
ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "JAX_PLATFORMS": "cpu",
}


# --- the peer environment --------------------------------------------------------------------------------


def peer_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_peer_venv(venv: Path) -> None:
    """Create the venv and install the peers unless already there; failures are reported, not raised."""
    python = peer_python(venv)
    marker = venv / ".peers-installed"
    if marker.exists():
        return
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    constraints = venv / "torch-constraint.txt"
    constraints.write_text(TORCH_PIN + "\n")
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    steps = [
        [*pip, TORCH_PIN],
        [*pip, "-c", str(constraints), *PEER_PACKAGES.values()],
        [*pip, "-c", str(constraints), *PEER_PINS],
    ]
    for command in steps:
        print("peer venv: " + " ".join(command[3:]), file=sys.stderr, flush=True)
        if subprocess.run(command).returncode != 0:
            print(f"peer venv: '{' '.join(command[3:])}' failed; peers that import will run", file=sys.stderr)
            return
    marker.touch()


def run_worker(venv: Path, arguments: list[str]) -> list[dict]:
    """Run this file's worker mode under the peer venv; its JSON lines, read as they come."""
    rows = []
    with subprocess.Popen(
        [str(peer_python(venv)), __file__, "--worker", *arguments],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **ONE_THREAD},
    ) as worker:
        for line in worker.stdout:
            if line.startswith("{"):
                rows.append(json.loads(line))
                if "estimate" in rows[-1]:
                    print_row(rows[-1], rows[-1]["truth"])
    if worker.returncode != 0:
        raise RuntimeError(f"peer worker exited with {worker.returncode} (its messages are above)")
    return rows


# --- worker mode (runs in the peer venv) -----------------------------------------------------------------


def worker_sample(tasks: list[str], samples: int, seed: int, folder: Path) -> None:
    import numpy as np
    from bmi.benchmark import BENCHMARK_TASKS

    for name in tasks:
        task = BENCHMARK_TASKS[name]
        x, y = task.sample(samples, seed=seed)
        np.savez(folder / f"{name}.npz", x=np.asarray(x), y=np.asarray(y), truth=task.mutual_information)
        print(json.dumps({"task": name, "truth": task.mutual_information, "dims": [task.dim_x, task.dim_y]}))


def _bmi_estimate(estimator: str, x, y, seed: int) -> float:
    import bmi

    cls = getattr(bmi.estimators, estimator)
    options = {} if estimator.startswith("KSG") else {"verbose": False, "seed": seed}
    return float(cls(**options).estimate(x, y))


def _torch_mist_estimate(estimator: str, x, y, seed: int) -> float:
    import torch
    from torch_mist import estimate_mi

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    n_train = int(0.8 * len(x))
    as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    train = {"x": as_tensor(x[:n_train]), "y": as_tensor(y[:n_train])}
    test = {"x": as_tensor(x[n_train:]), "y": as_tensor(y[n_train:])}
    result = estimate_mi(train, estimator=estimator, test_data=test, verbose=False)
    return float(result[0] if isinstance(result, tuple) else result)  # (value, training log) by default


def worker_estimate(folder: Path, tasks: list[str], types: list[str], seed: int) -> None:
    import contextlib
    import io

    import numpy as np

    runners = {}
    for library, runner in (("bmi", _bmi_estimate), ("torch_mist", _torch_mist_estimate)):
        try:
            __import__(library)
            runners[library] = runner
        except Exception as error:  # a broken install shows up as any import error
            print(json.dumps({"skip": library, "reason": f"{type(error).__name__}: {error}"}))
    for name in tasks:
        data = np.load(folder / f"{name}.npz")
        x, y, truth = data["x"], data["y"], float(data["truth"])
        for kind in types:
            for library, runner in runners.items():
                estimator = ESTIMATORS[kind][library]
                if estimator is None:
                    continue
                started = time.perf_counter()
                try:
                    with contextlib.redirect_stdout(io.StringIO()):  # peers print progress on stdout
                        estimate = runner(estimator, x, y, seed)
                except Exception as error:  # a peer failing on a task is a result, not a crash
                    estimate = float("nan")
                    print(
                        f"{library} {estimator} on {name}: {type(error).__name__}: {error}", file=sys.stderr
                    )
                row = {"library": library, "type": kind, "task": name, "estimate": estimate, "truth": truth}
                print(json.dumps({**row, "seconds": time.perf_counter() - started}), flush=True)


# --- infofusion and the report ---------------------------------------------------------------------------


def infofusion_rows(folder: Path, tasks: list[str], types: list[str], seed: int) -> list[dict]:
    import numpy as np
    import torch

    from infofusion.mi import fit_estimator

    torch.set_num_threads(1)
    rows = []
    for name in tasks:
        data = np.load(folder / f"{name}.npz")
        for kind in types:
            started = time.perf_counter()
            result = fit_estimator(data["x"], data["y"], ESTIMATORS[kind]["infofusion"], seed=seed)
            row = {"library": "infofusion", "type": kind, "task": name, "estimate": result.mi}
            rows.append({**row, "truth": float(data["truth"]), "seconds": time.perf_counter() - started})
            print_row(rows[-1], rows[-1]["truth"])
    return rows


def print_row(row: dict, truth: float, stream: TextIO | None = None) -> None:
    """One progress line on stderr; ``rows_from_log`` reads these back."""
    error = abs(row["estimate"] - truth)
    print(
        f"  {row['library']:<10} {row['type']:<7} {row['task']:<40} estimate {row['estimate']:7.3f}  "
        f"truth {truth:.3f}  |error| {error:.3f}  {row['seconds']:6.1f}s",
        file=stream or sys.stderr,
        flush=True,
    )


def rows_from_log(path: Path) -> list[dict]:
    """The rows of a run's progress lines (its stderr), e.g. to report a run that was stopped part-way."""
    rows = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) == 10 and fields[3] == "estimate" and fields[5] == "truth" and fields[1] in ESTIMATORS:
            row = {"library": fields[0], "type": fields[1], "task": fields[2], "estimate": float(fields[4])}
            rows.append({**row, "truth": float(fields[6]), "seconds": float(fields[9].rstrip("s"))})
    return rows


def markdown_report(rows: list[dict], truths: dict[str, float], types: list[str]) -> str:
    import math

    cell = {(r["library"], r["type"], r["task"]): r for r in rows}
    libraries = [lib for lib in LIBRARIES if any(r["library"] == lib for r in rows)]
    lines = ["| task | truth | type | " + " | ".join(libraries) + " |", "|" + "---|" * (3 + len(libraries))]
    for task, truth in truths.items():
        for kind in types:
            entries = []
            for library in libraries:
                row = cell.get((library, kind, task))
                if row is None:
                    entries.append("–")
                else:
                    error = abs(row["estimate"] - truth)
                    entries.append(f"{row['estimate']:.2f} (err {error:.2f}, {row['seconds']:.1f}s)")
            lines.append(f"| {task} | {truth:.2f} | {kind} | " + " | ".join(entries) + " |")
    # Summaries only over the tasks every library with that type finished, so a stopped run compares fairly.
    lines += ["", "| type | tasks | " + " | ".join(f"{lib}: MAE / max err / s" for lib in libraries) + " |"]
    lines.append("|" + "---|" * (2 + len(libraries)))
    for kind in types:
        present = [lib for lib in libraries if ESTIMATORS[kind][lib] is not None]
        common = [t for t in truths if all((lib, kind, t) in cell for lib in present)]
        entries = []
        for library in libraries:
            if library not in present or not common:
                entries.append("–")
                continue
            errors = [abs(cell[library, kind, t]["estimate"] - truths[t]) for t in common]
            total = sum(cell[library, kind, t]["seconds"] for t in common)
            mae = sum(errors) / len(errors)
            text = "nan" if math.isnan(mae) else f"{mae:.2f} / {max(errors):.2f}"
            if library != "infofusion" and "infofusion" in present:
                reference = sum(cell["infofusion", kind, t]["seconds"] for t in common)
                text += f" / {total:.0f} ({total / reference:.2f}x infofusion's time)"
            else:
                text += f" / {total:.0f}"
            entries.append(text)
        lines.append(f"| {kind} | {len(common)} | " + " | ".join(entries) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS), help="BMI task ids, comma-separated")
    parser.add_argument("--types", default="infonce,nwj,dv,ksg", help=f"from {', '.join(ESTIMATORS)}")
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peer-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--no-peers", action="store_true", help="infofusion only (samples still from BMI)")
    parser.add_argument(
        "--report-from", type=Path, default=None, help="print the table of a run's saved stderr (no fitting)"
    )
    parser.add_argument("--worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.report_from is not None:
        rows = rows_from_log(args.report_from)
        types = [t for t in ESTIMATORS if any(r["type"] == t for r in rows)]
        truths = {r["task"]: r["truth"] for r in rows}
        print(markdown_report(rows, truths, types))
        return 0
    if args.worker is not None:
        mode, folder, rest = args.worker[0], Path(args.worker[1]), args.worker[2:]
        if mode == "sample":
            worker_sample(rest[0].split(","), int(rest[1]), int(rest[2]), folder)
        else:
            worker_estimate(folder, rest[0].split(","), rest[1].split(","), int(rest[2]))
        return 0

    tasks, types = args.tasks.split(","), args.types.split(",")
    unknown = [t for t in types if t not in ESTIMATORS]
    if unknown:
        parser.error(f"unknown types {unknown}; choose from {', '.join(ESTIMATORS)}")
    ensure_peer_venv(args.peer_venv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        try:
            sampled = run_worker(
                args.peer_venv, ["sample", temporary, args.tasks, str(args.samples), str(args.seed)]
            )
        except (RuntimeError, OSError) as error:
            print(f"cannot sample BMI's tasks without benchmark-mi: {error}", file=sys.stderr)
            return 1
        truths = {row["task"]: row["truth"] for row in sampled}
        print(
            f"{len(tasks)} BMI tasks x {len(types)} types, {args.samples} samples, seed {args.seed}",
            file=sys.stderr,
        )
        rows = infofusion_rows(folder, tasks, types, args.seed)
        if not args.no_peers:
            for row in run_worker(
                args.peer_venv, ["estimate", temporary, args.tasks, args.types, str(args.seed)]
            ):
                if "skip" in row:
                    print(f"skipping {row['skip']}: {row['reason']}", file=sys.stderr)
                    continue
                rows.append(row)
    print(markdown_report(rows, truths, types))
    print(f"\ntotal {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
