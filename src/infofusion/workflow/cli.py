"""The workflow subcommands of ``infofusion``: ``ablate``, ``sweep``, ``cross-validate``, ``report`` and
``plot``.

The main CLI calls :func:`add_workflow_parsers` with its subparsers object; every leaf command sets
``handler`` (a function of the parsed arguments returning an exit code). Heavy imports (torch, Optuna,
matplotlib) happen only when a command runs. Bad input raises ``ConfigError`` or ``DataError``, which the
main CLI prints as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..extras import require_extra
from . import PLOT_KINDS


def _at_least_one(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def _experiment_arguments(parser: argparse.ArgumentParser) -> None:
    """What decides the runs of an experiment: the same meaning as for ``infofusion train``."""
    parser.add_argument("--model", required=True, help="registered model name")
    parser.add_argument("--data", default=None, help="synthetic (default) | FILE.pkl | DIR of dialogue CSVs")
    parser.add_argument("--output", required=True, help="experiment folder (rerun it to resume)")
    parser.add_argument(
        "--epochs", type=_at_least_one, default=None, help="epochs of every run (default: the config's)"
    )
    parser.add_argument(
        "--recipe",
        default=None,
        help="a corpus's measured settings (configs/recipes/CORPUS/MODEL.yaml) (default: none)",
    )
    parser.add_argument("--config", default=None, help="YAML merged over the model's defaults for every run")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="for every run"
    )


def command_ablate(args: argparse.Namespace) -> int:
    from .ablate import command_ablate as run

    return run(args)


def command_sweep(args: argparse.Namespace) -> int:
    """The backend is chosen here, so the two sweep modules never import each other's entry points."""
    from .sweep import prepare_sweep

    sweep, source = prepare_sweep(args)
    if args.backend == "ray":
        require_extra("ray", "sweep --backend ray")
        from .ray_sweep import run_ray_sweep

        return run_ray_sweep(sweep, source, args)
    from .sweep import run_optuna_sweep

    return run_optuna_sweep(sweep, source, args)


def command_cross_validate(args: argparse.Namespace) -> int:
    from .cross_validate import command_cross_validate as run

    return run(args)


CROSS_VALIDATE_EXAMPLES = """\
examples:
  infofusion cross-validate --model mmmie --recipe iemocap --data IEMOCAP_features.pkl --output cv/mmmie
  infofusion cross-validate --model mmim --recipe meld --data meld_csvs/ --folds 5 --output cv/mmim_meld
  infofusion cross-validate --model mmim --recipe mosi --data mosi.pkl --output cv/mmim_lr --set train.lr=5e-4
  infofusion cross-validate --model late_fusion --folds 3 --epochs 5 --output cv/demo     synthetic data
"""


def command_report(args: argparse.Namespace) -> int:
    from .report import command_report as run

    return run(Path(args.runs_dir))


def command_plot(args: argparse.Namespace) -> int:
    from .plots import plot

    output = Path(args.output) if args.output else None
    png = plot(Path(args.run_dir), args.kind, args.data, args.split, output, args.style)
    print(png)  # the SVG and PDF are beside it
    print(f"(also {png.with_suffix('.svg').name} and {png.with_suffix('.pdf').name})", file=sys.stderr)
    return 0


def command_demo(args: argparse.Namespace) -> int:
    """Train the seed models beside a baseline on the embedded synthetic data; tables and figures."""
    from .demo import run_demo

    result = run_demo(Path(args.output), args.epochs)
    print("\nResults on the synthetic data (validation selects the best epoch; test is scored once):\n")
    print(result.results_table())
    print("Mutual information between modalities: the truth the generator knows, and MMMIE's estimate.")
    print("Estimates on learned representations stay at or below the truth (data processing).\n")
    print(result.mi_table())
    print(f"Runs (config, checkpoints, history, metrics) in {result.output}/<model>/")
    print("Figures (PNG; the same as SVG and PDF beside each):")
    for path in result.figures:
        print(f"  {path}")
    return 0


def add_workflow_parsers(commands: argparse._SubParsersAction) -> None:
    ablate = commands.add_parser(
        "ablate",
        help="run every setting of an ablation grid over seeds; paper-style table",
        description="Runs go to OUTPUT/<setting>/seed_<s>; finished runs are reused on a rerun.",
    )
    _experiment_arguments(ablate)
    ablate.add_argument(
        "--grid",
        required=True,
        help="grid YAML file, or a packaged grid name (e.g. modalities, mmmie_table5)",
    )
    ablate.add_argument(
        "--seeds", default="3", help="N for seeds 1..N, or a comma list such as 1,2,7 (default 3)"
    )
    ablate.set_defaults(handler=command_ablate, seed=None)

    sweep = commands.add_parser(
        "sweep",
        help="Optuna hyper-parameter search on the validation split",
        description="TPE sampling, median pruning on validation curves; OUTPUT/study.db resumes.",
    )
    _experiment_arguments(sweep)
    sweep.add_argument(
        "--space", default=None, help="search space YAML, or a packaged name (default: the model's)"
    )
    sweep.add_argument("--trials", type=_at_least_one, required=True, help="total trials wanted in the study")
    sweep.add_argument(
        "--seed", type=int, default=None, help="training seed of every trial (default: the config's)"
    )
    sweep.add_argument("--sampler-seed", type=int, default=0, help="seed of the TPE sampler")
    sweep.add_argument("--prune-startup", type=int, default=3, help="trials before pruning starts")
    sweep.add_argument(
        "--prune-warmup", type=int, default=1, help="epochs of a trial before it can be pruned"
    )
    sweep.add_argument("--no-prune", action="store_true", help="never prune a trial")
    sweep.add_argument(
        "--backend",
        choices=("optuna", "ray"),
        default="optuna",
        help="optuna: trials in this process, study in OUTPUT/study.db; ray: Ray Tune's Optuna search",
    )
    sweep.add_argument(
        "--ray-address",
        default=None,
        help="join a Ray cluster: auto, ray://HOST:PORT (default: start a local one)",
    )
    sweep.add_argument("--ray-cpus", type=_at_least_one, default=2, help="CPUs of a local Ray instance")
    sweep.set_defaults(handler=command_sweep)

    cross_validate = commands.add_parser(
        "cross-validate",
        help="score a setting on K grouped folds of the training dialogues; the dev split once at the end",
        description="Fold k trains on the other folds' dialogues (its epoch chosen on an inner part of\n"
        "them) and scores fold k once; then OUTPUT/final trains as `infofusion train` does and scores the\n"
        "dev split once. Runs: OUTPUT/fold_<k>, OUTPUT/final; summary: OUTPUT/cv.json; a rerun resumes.",
        epilog=CROSS_VALIDATE_EXAMPLES,
    )
    _experiment_arguments(cross_validate)
    cross_validate.add_argument(
        "--folds",
        type=_at_least_one,
        default=None,
        help="K, at least 2 (default: 5 by dialogue; one fold per session by session, 4 on IEMOCAP)",
    )
    cross_validate.add_argument(
        "--groups",
        choices=("auto", "dialogue", "session"),
        default="auto",
        help="what a fold never splits: each dialogue (MELD, MOSI's videos) or each IEMOCAP session "
        "(the SesNN of Ses01F_impro01); auto: session when every training dialogue id has one",
    )
    cross_validate.add_argument(
        "--seed", type=int, default=None, help="training seed of every run (default: the config's)"
    )
    cross_validate.set_defaults(handler=command_cross_validate)

    report = commands.add_parser("report", help="one table (markdown and CSV) of every run under a folder")
    report.add_argument("runs_dir", help="folder searched for run folders, at any depth")
    report.set_defaults(handler=command_report)

    plot = commands.add_parser("plot", help=f"figures of a run (PNG, SVG, PDF): {', '.join(PLOT_KINDS)}")
    plot.add_argument("run_dir", help="run folder written by `infofusion train`")
    plot.add_argument(
        "kind", nargs="?", default="curves", choices=PLOT_KINDS, help="the figure (default: %(default)s)"
    )
    plot.add_argument("--data", default=None, help="other data for tsne (default: the run's)")
    plot.add_argument(
        "--split", default=None, help="confusion/tsne split (default: test if present, else valid)"
    )
    plot.add_argument(
        "--output", default=None, help="PNG path (default: RUN_DIR/<kind>[_<split>].png); SVG and PDF beside"
    )
    plot.add_argument(
        "--style",
        choices=("screen", "paper"),
        default="screen",
        help="paper: a 3.4 in column per panel (7 in at most), 8 pt text, 300 dpi",
    )
    plot.set_defaults(handler=command_plot)

    demo = commands.add_parser("demo", help="MMIM, MMMIE and MInD beside a baseline on synthetic data")
    demo.add_argument("--output", default="runs/demo", help="folder of the runs, tables and figures")
    demo.add_argument("--epochs", type=int, default=15, help="epochs of each model")
    demo.set_defaults(handler=command_demo)
