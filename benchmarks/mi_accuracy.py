"""Accuracy of the MI estimators on tasks with known mutual information (in the spirit of BMI).

Two separate concerns: *tasks* sample ``(x, y)`` with a known MI (``infofusion.mi.tasks``: correlated
Gaussians, dense and sparse, the same through invertible maps, Student-t), and *estimators* come from
the library (``fit_estimator``) plus the closed-form Gaussian (CCA) baseline. Prints a markdown table:
one row per task, one column per estimator, then the mean absolute error and the seconds per fit.

    python benchmarks/mi_accuracy.py            # default set, < 10 minutes on 2 CPU cores
    python benchmarks/mi_accuracy.py --quick    # a smoke run of about a minute
    python benchmarks/mi_accuracy.py --full     # every task, more steps (long)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from infofusion.mi import PREPROCESSING, fit_estimator, gaussian_mutual_information
from infofusion.mi.defaults import DEFAULT_PREPROCESSING
from infofusion.mi.fitting import nats_readout
from infofusion.mi.registry import estimator_names
from infofusion.mi.tasks import Task, gaussian_task, student_t_task, transformed_task

# --- tasks -------------------------------------------------------------------------------------------------


def default_tasks() -> list[Task]:
    """Dims 1, 5, 25; MI 0.5 to 4 nats; dense and sparse; cubic and asinh maps; Student-t."""
    return [
        gaussian_task(1, 0.5),
        gaussian_task(1, 2.0),
        gaussian_task(5, 1.0, "sparse"),
        gaussian_task(5, 2.0, "dense"),
        gaussian_task(5, 4.0, "dense"),
        gaussian_task(25, 1.0, "sparse"),
        gaussian_task(25, 2.0, "dense"),
        gaussian_task(25, 4.0, "dense"),
        transformed_task(gaussian_task(5, 1.0, "dense"), "cubic"),
        transformed_task(gaussian_task(5, 1.0, "dense"), "asinh"),
        student_t_task(1, 1.0, dof=3.0),
        student_t_task(5, 2.0, dof=5.0),
    ]


def full_tasks() -> list[Task]:
    tasks = [
        gaussian_task(dim, mi, structure)
        for dim in (1, 5, 25)
        for structure in (("sparse",) if dim == 1 else ("sparse", "dense"))
        for mi in (0.5, 1.0, 2.0, 4.0)
    ]
    for transform in ("cubic", "asinh"):
        tasks += [transformed_task(gaussian_task(dim, 1.0, "dense"), transform) for dim in (1, 5, 25)]
        tasks.append(transformed_task(student_t_task(5, 2.0, dof=3.0), transform))
    tasks += [student_t_task(dim, mi, dof) for dim in (1, 5) for mi in (1.0, 2.0) for dof in (3.0, 5.0)]
    return tasks


def quick_tasks() -> list[Task]:
    return [
        gaussian_task(1, 0.5),
        gaussian_task(5, 2.0, "dense"),
        transformed_task(gaussian_task(5, 1.0, "dense"), "cubic"),
        student_t_task(1, 1.0, dof=3.0),
    ]


# --- estimators --------------------------------------------------------------------------------------------

DEFAULT_ESTIMATORS = ("cca", "mine", "nwj", "infonce", "smile", "ba", "l1out", "club")


@dataclass
class Cell:
    estimate: float
    seconds: float


def cca_baseline(x: np.ndarray, y: np.ndarray) -> float:
    return float(gaussian_mutual_information(torch.as_tensor(x), torch.as_tensor(y)))


def make_runner(
    name: str, steps: int, batch_size: int, seed: int, preprocessing: str = DEFAULT_PREPROCESSING
) -> Callable[[np.ndarray, np.ndarray], float]:
    if name == "cca":
        return cca_baseline
    evaluation = nats_readout(name)  # JSD: its critic's density-ratio read-out, its objective is not in nats

    def run(x: np.ndarray, y: np.ndarray) -> float:
        result = fit_estimator(
            x,
            y,
            name,
            steps=steps,
            batch_size=batch_size,
            seed=seed,
            evaluation=evaluation,
            preprocessing=preprocessing,
        )
        return result.mi

    return run


def measure(runner: Callable[[np.ndarray, np.ndarray], float], x: np.ndarray, y: np.ndarray) -> Cell:
    started = time.perf_counter()
    estimate = runner(x, y)
    return Cell(estimate, time.perf_counter() - started)


# --- report ------------------------------------------------------------------------------------------------


def markdown_table(tasks: list[Task], names: list[str], cells: dict[tuple[str, str], Cell]) -> str:
    header = "| task | true MI | " + " | ".join(names) + " |"
    lines = [header, "|" + "---|" * (len(names) + 2)]
    for task in tasks:
        row = " | ".join(f"{cells[task.name, name].estimate:.2f}" for name in names)
        lines.append(f"| {task.name} | {task.mutual_information:.2f} | {row} |")
    errors = [np.mean([abs(cells[t.name, n].estimate - t.mutual_information) for t in tasks]) for n in names]
    seconds = [np.mean([cells[t.name, n].seconds for t in tasks]) for n in names]
    lines.append("| **mean abs. error** | | " + " | ".join(f"{e:.2f}" for e in errors) + " |")
    lines.append("| **seconds per task** | | " + " | ".join(f"{s:.1f}" for s in seconds) + " |")
    return "\n".join(lines)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="4 tasks, 300 steps, 2,000 samples")
    size.add_argument("--full", action="store_true", help="every task, 3,000 steps")
    parser.add_argument("--steps", type=int, default=None, help="training steps per fit")
    parser.add_argument(
        "--estimators", default=",".join(DEFAULT_ESTIMATORS), help="comma-separated; 'cca' too"
    )
    parser.add_argument(
        "--tasks", default=None, help="only tasks whose name contains one of these (comma-sep.)"
    )
    parser.add_argument("--samples", type=int, default=None, help="samples per task (default 5,000)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (small nets: 1 is best)")
    parser.add_argument("--preprocessing", choices=list(PREPROCESSING), default=DEFAULT_PREPROCESSING)
    args = parser.parse_args(argv)
    names = estimator_names()
    unknown = [n for n in args.estimators.split(",") if n != "cca" and n not in names]
    if unknown:
        parser.error(f"unknown estimators {unknown}; choose from cca, {', '.join(names)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    torch.set_num_threads(args.threads)
    tasks = quick_tasks() if args.quick else full_tasks() if args.full else default_tasks()
    if args.tasks:
        wanted = args.tasks.split(",")
        tasks = [t for t in tasks if any(w in t.name for w in wanted)]
    steps = args.steps or (300 if args.quick else 3000 if args.full else 1000)
    samples = args.samples or (2000 if args.quick else 5000)
    names = args.estimators.split(",")
    print(
        f"{len(tasks)} tasks x {len(names)} estimators, {samples} samples, {steps} steps, "
        f"preprocessing {args.preprocessing}",
        file=sys.stderr,
    )

    cells: dict[tuple[str, str], Cell] = {}
    for task in tasks:
        x, y = task.sample(samples, seed=args.seed)
        for name in names:
            cells[task.name, name] = measure(
                make_runner(name, steps, args.batch_size, args.seed, args.preprocessing), x, y
            )
            cell = cells[task.name, name]
            print(
                f"  {task.name} {name}: {cell.estimate:.3f} ({cell.seconds:.1f}s)",
                file=sys.stderr,
                flush=True,
            )
    print(markdown_table(tasks, names, cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
