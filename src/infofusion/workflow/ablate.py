"""``infofusion ablate``: every setting of a grid of ``--set`` switches, over seeds, as a paper-style table.

A grid file (see ``infofusion/configs/ablations/README.md``)::

    settings:
      full: []
      w/o CPC: ["mmim.cpc=false"]

Each run goes to ``DIR/<setting>/seed_<s>``. A run whose ``metrics.json`` exists is read, not retrained, so
a rerun (after a kill, or with one more setting) only trains what is missing; a started but unfinished run
resumes from its last checkpoint. A folder holding a run of another config is an error, never reused.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError, parse_override
from ..config.command import config_from_options, settable_config
from ..models import model_params
from ..progress import StepProgress
from ..training.build import train
from ..training.runs import RunDir, atomic_write_text
from . import load_named_yaml, parse_seeds, safe_folder_name, same_run_config, setting_kind
from .report import markdown_table, mean_and_spread, metric_columns, summarise_seeds, write_csv


@dataclass
class Setting:
    name: str
    overrides: list[str]

    @property
    def folder(self) -> str:
        return safe_folder_name(self.name)


def load_grid(name_or_path: str) -> tuple[list[Setting], str]:
    """The settings of a grid file, or of a packaged grid (``mmmie_table5``), in file order."""
    raw, source = load_named_yaml(name_or_path, "ablations", "grid")
    settings = raw.get("settings")
    if not isinstance(settings, dict) or not settings:
        raise ConfigError(
            f"grid {source}: expected 'settings: {{name: [\"key=value\", ...]}}' with a setting"
        )
    grid = []
    for name, overrides in settings.items():
        overrides = [] if overrides is None else overrides
        if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
            raise ConfigError(f"grid {source}: setting {name!r} must be a list of 'key=value' strings")
        grid.append(Setting(str(name), list(overrides)))
    folders = [setting.folder for setting in grid]
    clashing = sorted({folder for folder in folders if folders.count(folder) > 1})
    if clashing:
        raise ConfigError(f"grid {source}: setting names map to the same folder: {', '.join(clashing)}")
    return grid, source


def check_setting_keys(settings: list[Setting], base: dict) -> None:
    """A mistyped switch would silently ablate nothing: every key must exist in the model's config.

    Keys under ``data`` are exempt: data options pass through to the loaders (e.g. synthetic ``frames``).
    """
    base = settable_config(base)  # the model's parameters complete: their defaults live in dataclasses
    for setting in settings:
        for assignment in setting.overrides:
            key = ".".join(parse_override(assignment)[0])
            if not key.startswith("data.") and setting_kind(base, key) != "setting":
                raise ConfigError(
                    f"grid setting {setting.name!r}: {key} is not a setting of {base['model_name']}'s config"
                )


def finished_metrics(run_dir: Path, config: dict) -> dict | None:
    """The metrics of a finished run of exactly ``config`` in ``run_dir``; None when it must (re)train."""
    run = RunDir(run_dir)
    if not run.is_run():
        return None
    saved = run.config()
    if not same_run_config(saved, config) or saved.get("seed") != config.get("seed"):
        raise ConfigError(
            f"{run_dir} holds a run of another config (grid, --set, --config, --data or --epochs changed); "
            "use another --output or delete that folder"
        )
    return run.metrics()


def setting_options(args: argparse.Namespace, setting: Setting) -> argparse.Namespace:
    """The command line of one setting: its switches come after the user's --set, so the grid decides
    what it ablates."""
    return argparse.Namespace(**{**vars(args), "overrides": [*args.overrides, *setting.overrides]})


def check_setting_values(args: argparse.Namespace, settings: list[Setting]) -> None:
    """Every setting's model parameters are typed and valid, before the first one trains."""
    for setting in settings:
        try:
            model_params(config_from_options(setting_options(args, setting)))
        except ConfigError as error:
            raise ConfigError(f"grid setting {setting.name!r}: {error}") from None


def run_setting(
    args: argparse.Namespace, setting: Setting, seeds: list[int], output: Path, progress: StepProgress
) -> dict[int, dict]:
    setting_args = setting_options(args, setting)
    per_seed = {}
    for seed in seeds:
        config = config_from_options(setting_args, seed)
        run_dir = output / setting.folder / f"seed_{seed}"
        metrics = finished_metrics(run_dir, config)
        # The runs so far, with the time they took and an ETA, before each run's own epoch lines.
        where = f"{progress.status()}; next: {setting.name}, seed {seed}"
        if metrics is None:
            print(f"== {where}: training in {run_dir} ==", flush=True)
            metrics = train(config, run_dir, resume=True)
        else:
            print(f"== {where}: reusing {run_dir} ==", flush=True)
        progress.advance()
        per_seed[seed] = metrics
    return per_seed


def ablation_table(settings: list[Setting], summaries: list[dict], per_seed_runs: list[dict]) -> tuple:
    """Markdown rows (``mean ± std``) and CSV rows (separate numbers) with rows = settings."""
    columns = metric_columns([metrics for runs in per_seed_runs for metrics in runs.values()])
    header = ["setting", "seeds", *(f"{split} {name}" for split, name in columns)]
    csv_header = ["setting", "overrides", "seeds"]
    csv_header += [f"{split}_{name}_{stat}" for split, name in columns for stat in ("mean", "std")]
    rows, csv_rows = [], []
    for setting, summary in zip(settings, summaries, strict=True):
        stats = [summary["splits"].get(split, {}).get(name) for split, name in columns]
        rows.append(
            [setting.name, str(len(summary["seeds"]))]
            + [mean_and_spread(s, len(summary["seeds"])) if s else "" for s in stats]
        )
        csv_rows.append(
            [setting.name, " ".join(setting.overrides), ";".join(map(str, summary["seeds"]))]
            + [s[stat] if s else "" for s in stats for stat in ("mean", "std")]
        )
    return header, rows, csv_header, csv_rows


def command_ablate(args: argparse.Namespace) -> int:
    settings, source = load_grid(args.grid)
    seeds = parse_seeds(args.seeds)
    check_setting_keys(settings, config_from_options(args))
    check_setting_values(args, settings)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    progress = StepProgress(len(settings) * len(seeds), "ablation", "runs", delay=float("inf"))
    per_seed_runs = [run_setting(args, setting, seeds, output, progress) for setting in settings]
    summaries = [summarise_seeds(runs) for runs in per_seed_runs]
    header, rows, csv_header, csv_rows = ablation_table(settings, summaries, per_seed_runs)
    title = f"Ablation of {args.model} on {args.data or 'synthetic'} ({source}, seeds {seeds})"
    table = markdown_table(header, rows)
    atomic_write_text(
        output / "ablation.md",
        f"# {title}\n\nmean ± std (population) over seeds; selection on validation.\n\n{table}",
    )
    write_csv(output / "ablation.csv", csv_header, csv_rows)
    summary = {
        "grid": source,
        "seeds": seeds,
        "settings": {
            s.name: {"overrides": s.overrides, **sm} for s, sm in zip(settings, summaries, strict=True)
        },
    }
    atomic_write_text(output / "ablation.json", json.dumps(summary, indent=2))
    print(f"\n{title}\n\n{table}", end="")
    return 0
