"""``infofusion mi``: list the estimators, or estimate the MI between two variables stored in a file.

Usable two ways: the main ``infofusion`` CLI calls :func:`add_mi_parser` (each leaf command sets
``handler``, a function of the parsed arguments returning an exit code), and
``python -m infofusion.mi.cli estimators|estimate ...`` runs it standalone through :func:`main`.
torch is imported only when a command runs, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

EXIT_BAD_INPUT = 2


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


USAGE = """\
Estimate the mutual information I(X; Y), in nats, between two variables stored in a file.

  infofusion mi estimate data.npz --x features --y labels    arrays of an .npz archive
  infofusion mi estimate table.csv --x age,income --y score  columns of a CSV (first line: names)
  infofusion mi estimate table.parquet --x a,b --y c         columns of a Parquet file (needs pyarrow)
  infofusion mi estimate matrix.npy --x 0:3 --y 3:           column ranges of one 2-D .npy array
  infofusion mi estimators                                   every estimator, with what it returns

Rows are samples. By default each variable is mapped to normal scores by its ranks (a Gaussian copula
fitted on the training rows: MI does not change under invertible per-column maps, and the estimate
then does not either), a critic is trained on 80 % of the rows and the estimate is read on the other
20 %. The output is one JSON line: "mi" (held-out value), "bound_kind" (lower: the true MI is at or
above it; upper: at or below; estimate: either side), "standard_error" with "uncertainty": "sampling
only" (the held-out rows' noise, not the bound's gap to the truth), "std" (its spread over the last
evaluations), "train_mi", "gap" (train minus held-out: large means over-fitting) and "summary", which
says all that in one line. The default estimator, InfoNCE, is a lower bound.
"""

ESTIMATE_HELP = """\
Fit an estimator and print one JSON line. --x and --y name the data: keys of an .npz, column names
of a .csv / .parquet (comma-separated), or column indices of a 2-D .npy (0,2 or 0:3 or 3:).
"""


def _add_commands(commands: argparse._SubParsersAction) -> None:
    from . import defaults  # not .preprocessing: it imports numpy, and the parser must stay light

    listing = commands.add_parser(
        "estimators",
        help="list the estimators: name, kind, bound (lower, upper or estimate), description",
        description="List the estimators.",
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=command_estimators)

    estimate = commands.add_parser(
        "estimate",
        help="estimate I(X; Y) from a .npz, .npy, .csv or .parquet file; prints one JSON line",
        description=ESTIMATE_HELP,
    )
    estimate.add_argument("file", help="a .npz, .npy, .csv or .parquet file")
    estimate.add_argument("--x", required=True, help="the first variable: key, column names or indices")
    estimate.add_argument("--y", required=True, help="the second variable: key, column names or indices")
    estimate.add_argument(
        "--estimator",
        default=defaults.DEFAULT_ESTIMATOR,
        help="name from `mi estimators`; default %(default)s, chosen by the benchmark in docs/mi.md",
    )
    estimate.add_argument(
        "--preprocessing",
        choices=defaults.PREPROCESSING_NAMES,
        default=defaults.DEFAULT_PREPROCESSING,
        help="per-column transform fitted on the training rows: copula (rank to normal score), "
        "standardise (mean 0, std 1) or none (default %(default)s)",
    )
    estimate.add_argument(
        "--steps",
        type=_positive_int,
        default=defaults.DEFAULT_STEPS,
        help="training steps at most (default %(default)s)",
    )
    estimate.add_argument(
        "--batch-size",
        type=_batch_size,
        default=defaults.DEFAULT_BATCH_SIZE,
        help="rows per batch (default %(default)s)",
    )
    estimate.add_argument(
        "--seed", type=int, default=0, help="for the split, the batches and the network (default %(default)s)"
    )
    estimate.add_argument(
        "--lr",
        type=float,
        default=defaults.DEFAULT_LEARNING_RATE,
        help="Adam learning rate (default %(default)s)",
    )
    estimate.add_argument(
        "--hidden-dim",
        type=_positive_int,
        default=None,
        help="critic / decoder width (default: the estimator's, 64)",
    )
    estimate.add_argument(
        "--no-early-stopping",
        dest="early_stopping",
        action="store_false",
        help="run every step instead of stopping once the held-out estimate stops improving",
    )
    estimate.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="torch CPU threads (default %(default)s: the networks are small, more threads add contention)",
    )
    estimate.add_argument("--quiet", action="store_true", help="no progress on stderr")
    estimate.set_defaults(handler=command_estimate)


def add_mi_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``mi`` with its sub-commands on the main CLI's subparsers; returns the ``mi`` parser."""
    parser = subparsers.add_parser(
        "mi",
        help="estimate mutual information between two variables in a file",
        description=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_commands(parser.add_subparsers(dest="mi_command", required=True, metavar="{estimate,estimators}"))
    return parser


def command_estimators(args: argparse.Namespace) -> int:
    from .registry import list_estimators

    infos = list_estimators()
    if args.json:
        for info in infos:
            row = {"name": info.name, "kind": info.kind, "bound_kind": info.bound_kind}
            print(json.dumps({**row, "description": info.description}))
        return 0
    width = max(len(info.name) for info in infos)
    for info in infos:
        print(f"{info.name:<{width}}  {info.kind:<5}  {info.bound_kind:<8}  {info.description}")
    return 0


def command_estimate(args: argparse.Namespace) -> int:
    from .data_files import InputError, load_pair
    from .fitting import fit_estimator, nats_readout
    from .registry import estimator_names

    names = estimator_names()
    if args.estimator not in names:
        return _fail(f"unknown estimator '{args.estimator}'; choose from {', '.join(names)}")
    try:
        x, y = load_pair(args.file, args.x, args.y)
    except InputError as error:
        return _fail(str(error))
    options = {} if args.hidden_dim is None else {"hidden_dim": args.hidden_dim}
    result = fit_estimator(
        x,
        y,
        args.estimator,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        seed=args.seed,
        preprocessing=args.preprocessing,
        early_stopping=args.early_stopping,
        threads=args.threads,
        progress=not args.quiet,
        estimator_options=options if args.estimator != "ksg" else {},
        evaluation=nats_readout(args.estimator),  # JSD reports its critic's read-out, in nats
    )
    if not math.isfinite(result.mi):  # never a "mi": null with exit 0
        return _fail(
            f"{args.file}: the {args.estimator} estimate came out NaN or infinite (with preprocessing "
            f"{args.preprocessing}, the values' scale or the learning rate overflowed its arithmetic): "
            "try --preprocessing copula or a smaller --lr"
        )
    print(json.dumps(result.as_dict()))
    return 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infofusion.mi.cli",
        description=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_commands(parser.add_subparsers(dest="mi_command", required=True, metavar="{estimate,estimators}"))
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
