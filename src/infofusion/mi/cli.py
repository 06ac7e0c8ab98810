"""``infofusion mi``: list the estimators, or estimate the MI between two arrays of an .npz file.

Usable two ways: the main ``infofusion`` CLI calls :func:`add_mi_parser` (each leaf command sets
``handler``, a function of the parsed arguments returning an exit code), and
``python -m infofusion.mi.cli estimators|estimate ...`` runs it standalone through :func:`main`.
torch is imported only when a command runs, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

EXIT_BAD_INPUT = 2


class InputError(Exception):
    """Bad input: the message names the file and key; reported on one line, exit code 2."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _batch_size(text: str) -> int:
    value = _positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError("must be at least 2 (one negative pair)")
    return value


def _add_commands(commands: argparse._SubParsersAction) -> None:
    from . import defaults

    listing = commands.add_parser("estimators", help="list the estimators: name, kind, description")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=command_estimators)

    estimate = commands.add_parser(
        "estimate",
        help="fit an estimator to two arrays of an .npz file and print one JSON line",
        description="Rows are samples (a 1-D array is one column); both arrays are standardised first.",
    )
    estimate.add_argument("file", help="an .npz archive (numpy.savez)")
    estimate.add_argument("--x", required=True, help="key of the first array")
    estimate.add_argument("--y", required=True, help="key of the second array")
    estimate.add_argument("--estimator", required=True, help="name from `mi estimators`")
    estimate.add_argument("--steps", type=_positive_int, default=defaults.DEFAULT_STEPS)
    estimate.add_argument("--batch-size", type=_batch_size, default=defaults.DEFAULT_BATCH_SIZE)
    estimate.add_argument("--seed", type=int, default=0)
    estimate.add_argument(
        "--lr", type=float, default=defaults.DEFAULT_LEARNING_RATE, help="Adam learning rate"
    )
    estimate.add_argument("--hidden-dim", type=_positive_int, default=None, help="critic / decoder width")
    estimate.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="torch CPU threads (default 1: the networks are small, and extra threads mostly add contention)",
    )
    estimate.set_defaults(handler=command_estimate)


def add_mi_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``mi`` with its sub-commands on the main CLI's subparsers; returns the ``mi`` parser."""
    parser = subparsers.add_parser("mi", help="mutual-information estimators", description=__doc__)
    _add_commands(parser.add_subparsers(dest="mi_command", required=True))
    return parser


def command_estimators(args: argparse.Namespace) -> int:
    from .registry import list_estimators

    infos = list_estimators()
    if args.json:
        for info in infos:
            print(json.dumps({"name": info.name, "kind": info.kind, "description": info.description}))
        return 0
    width = max(len(info.name) for info in infos)
    for info in infos:
        print(f"{info.name:<{width}}  {info.kind:<5}  {info.description}")
    return 0


def load_pair(file: str, x_key: str, y_key: str) -> tuple[np.ndarray, np.ndarray]:
    """The two arrays as float64 matrices; raises InputError naming the file and key."""
    from .fitting import as_matrix

    path = Path(file)
    if not path.is_file():
        raise InputError(f"{file}: no such file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise InputError(f"{file}: not a readable .npz file ({error})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise InputError(f"{file}: not an .npz archive (a single .npy array has no keys)")
    with archive:
        matrices = []
        for key in (x_key, y_key):
            if key not in archive.files:
                raise InputError(
                    f"{file}: no array named '{key}' (available: {', '.join(archive.files) or 'none'})"
                )
            try:
                matrices.append(as_matrix(archive[key], name=f"{file}: key '{key}'"))
            except ValueError as error:  # wrong shape, dtype, NaN/inf, or an object array needing pickle
                message = str(error)
                raise InputError(
                    message if message.startswith(file) else f"{file}: key '{key}': {message}"
                ) from None
    x, y = matrices
    if x.shape[0] != y.shape[0]:
        raise InputError(f"{file}: key '{x_key}' has {x.shape[0]} rows but key '{y_key}' has {y.shape[0]}")
    if x.shape[0] < 4:
        raise InputError(
            f"{file}: keys '{x_key}' and '{y_key}' have {x.shape[0]} rows; at least 4 are needed"
        )
    return x, y


def command_estimate(args: argparse.Namespace) -> int:
    from .fitting import fit_estimator, nats_readout
    from .registry import ESTIMATORS

    if args.estimator not in ESTIMATORS:
        return _fail(f"unknown estimator '{args.estimator}'; choose from {', '.join(ESTIMATORS)}")
    try:
        x, y = load_pair(args.file, args.x, args.y)
    except InputError as error:
        return _fail(str(error))
    import torch

    torch.set_num_threads(args.threads)
    options = {} if args.hidden_dim is None else {"hidden_dim": args.hidden_dim}
    result = fit_estimator(
        x,
        y,
        args.estimator,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        seed=args.seed,
        estimator_options=options,
        evaluation=nats_readout(args.estimator),  # JSD reports its critic's read-out, in nats
    )
    summary = result.as_dict()
    summary["seconds"] = round(summary["seconds"], 2)
    print(json.dumps(summary))
    return 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infofusion.mi.cli", description=__doc__)
    _add_commands(parser.add_subparsers(dest="mi_command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
