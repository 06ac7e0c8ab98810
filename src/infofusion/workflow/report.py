"""``infofusion report RUNS_DIR``: one table of every run under a folder, with a rerun command per row,
and above it the runs grouped by model, data and config (all but the seed): mean ± std over seeds.

Also what the ablation command and ``train --seeds`` share: the mean and std of metrics over seeds
(:func:`summarise_seeds`), which metrics are the "main" ones of a task, and writing one table as markdown
and CSV.
"""

from __future__ import annotations

import csv
import io
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ConfigError, config_hash
from ..data.types import DataError
from ..metrics import scalar_metrics, spread_over_runs
from ..training.runs import RunDir, atomic_write_text

# The columns the papers report: MELD/IEMOCAP (accuracy, weighted F1) and MOSI/MOSEI (MMSA's set).
CLASSIFICATION_METRICS = ("acc", "weighted_f1")
REGRESSION_METRICS = ("acc2_non0", "f1_non0", "mae", "corr", "acc7")
SPLITS = ("valid", "test")


def summarise_seeds(per_seed: dict[int, dict]) -> dict:
    """Mean and standard deviation (population, ddof=0) of every scalar metric over seeds."""
    summary: dict = {"seeds": sorted(per_seed), "splits": {}}
    for split in ("valid", "test"):
        rows = [scalar_metrics(m[split]) for m in per_seed.values() if split in m]
        if not rows:
            continue
        summary["splits"][split] = spread_over_runs(rows)
    summary["seconds_per_run"] = float(np.mean([m.get("seconds", 0.0) for m in per_seed.values()]))
    return summary


def mean_and_spread(stats: dict, seeds: int) -> str:
    """``0.8123 ± 0.0100`` over several seeds; one seed has no spread to show, so just ``0.8123``."""
    return f"{stats['mean']:.4f} ± {stats['std']:.4f}" if seeds > 1 else f"{stats['mean']:.4f}"


def metrics_table(metrics: dict) -> str:
    """A finished run's numbers (``valid`` and ``test`` rows, one column per scalar metric), markdown."""
    splits = [split for split in ("valid", "test") if isinstance(metrics.get(split), dict)]
    columns = [name for name in scalar_metrics(metrics[splits[0]])] if splits else []
    rows = [
        [split, *(f"{scalar_metrics(metrics[split]).get(c, float('nan')):.4f}" for c in columns)]
        for split in splits
    ]
    table = markdown_table(["split", *columns], rows)
    return (
        f"{table}best epoch {metrics.get('best_epoch')} (counted from 1), {metrics.get('seconds', 0):.1f} s\n"
    )


def summary_markdown(summary: dict, title: str) -> str:
    lines = [
        f"# {title}",
        "",
        f"seeds: {summary['seeds']}",
        "",
        "| split | metric | mean ± std |" if len(summary["seeds"]) > 1 else "| split | metric | value |",
        "| --- | --- | --- |",
    ]
    for split, metrics in summary["splits"].items():
        for name, stats in metrics.items():
            lines.append(f"| {split} | {name} | {mean_and_spread(stats, len(summary['seeds']))} |")
    return "\n".join(lines) + "\n"


def main_metric_names(split_metrics: dict) -> tuple[str, ...]:
    return CLASSIFICATION_METRICS if "weighted_f1" in split_metrics else REGRESSION_METRICS


def metric_columns(metrics_list: list[dict]) -> list[tuple[str, str]]:
    """``(split, metric)`` pairs present in any of the runs' metrics, in the papers' order."""
    columns: list[tuple[str, str]] = []
    for split in SPLITS:
        for names in (CLASSIFICATION_METRICS, REGRESSION_METRICS):
            for name in names:
                if any(name in metrics.get(split, {}) for metrics in metrics_list):
                    columns.append((split, name))
    return columns


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines.extend("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows)
    return "\n".join(lines) + "\n"


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    """The table as CSV, written by the one atomic writer (a planted link is replaced, never followed)."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


def rerun_command(run_dir: Path, model: str, ensemble: list[tuple[str, int | None]] | None = None) -> str:
    """The one line that trains the run again from its saved config (seed and data included); a seed
    ensemble's: its members again from the first one's config, with their seeds."""
    new_dir = run_dir.parent / f"{run_dir.name}_rerun"
    config = RunDir(run_dir / ensemble[0][0] if ensemble else run_dir).config_path
    command = ["infofusion", "train", "--model", model, "--config", str(config), "--output", str(new_dir)]
    if ensemble:
        command += ["--seeds", ",".join(str(seed) for _, seed in ensemble), "--ensemble"]
    return shlex.join(command)


@dataclass
class RunRecord:
    """What a finished run folder says about itself."""

    path: Path
    model: str
    data: str
    settings_hash: str
    seed: int | None
    best_epoch: int | None
    metrics: dict
    train_seconds: float | None = None  # the epochs' wall time from history.jsonl
    ensemble: list[tuple[str, int | None]] | None = None  # a seed ensemble's members (folder, seed)

    @property
    def seed_label(self) -> str:
        """The seed, or a seed ensemble's seeds joined by ``+``: one row of its own, not one of its seeds."""
        if self.ensemble is not None:
            return "+".join("?" if seed is None else str(seed) for _, seed in self.ensemble)
        return "?" if self.seed is None else str(self.seed)

    @classmethod
    def read(cls, run_dir: Path) -> RunRecord:
        run = RunDir(run_dir)
        if run.is_ensemble():
            # Its members' model, data and settings; grouped apart from them (the model reads "ensemble").
            entries = run.ensemble_entries()
            first = cls.read(run_dir / entries[0][0])
            return cls(
                path=run_dir,
                model=first.model,
                data=first.data,
                settings_hash=f"{first.settings_hash} ensemble",
                seed=None,
                best_epoch=None,
                metrics=run.metrics() or {},
                ensemble=entries,
            )
        metrics = run.metrics() or {}
        config = run.config() if run.is_run() else {}
        info = run.run_info()
        train_seconds = None
        if run.history_path.exists():
            # Streamed: a history of any length costs one line's memory; each line's seconds is checked.
            train_seconds = sum(record["seconds"] for record in run.iter_history())
        return cls(
            path=run_dir,
            model=str(config.get("model_name") or info.get("model") or "?"),
            data=str(config.get("data", {}).get("spec", "?")),
            settings_hash=str(info.get("config_hash") or (config_hash(config) if config else "?")),
            seed=config.get("seed", info.get("seed")),
            best_epoch=metrics.get("best_epoch"),
            metrics=metrics,
            train_seconds=train_seconds,
        )


def find_runs(root: Path) -> list[Path]:
    return [run.path for run in RunDir.find(root)]


def read_records(root: Path) -> list[RunRecord]:
    if not root.is_dir():
        raise ConfigError(f"report: {root} is not a folder")
    records = [RunRecord.read(run_dir) for run_dir in find_runs(root)]
    if not records:
        raise DataError(f"no finished runs (metrics.json) under {root}", file=str(root))
    return records


def build_summary(records: list[RunRecord]) -> tuple[list[str], list[list[str]]]:
    """One row per (model, data, config without the seed): mean ± std (population) over its seeds."""
    groups: dict[tuple[str, str, str], list[RunRecord]] = {}
    for record in records:
        groups.setdefault((record.model, record.data, record.settings_hash), []).append(record)
    columns = metric_columns([record.metrics for record in records])
    header = ["model", "data", "config hash", "seeds"]
    header += [f"{split} {name}" for split, name in columns] + ["train s / run"]
    rows = []
    for (model, data, settings_hash), members in groups.items():
        per_seed = {index: record.metrics for index, record in enumerate(members)}
        summary = summarise_seeds(per_seed)
        cells = []
        for split, name in columns:
            stats = summary["splits"].get(split, {}).get(name)
            cells.append("" if stats is None else mean_and_spread(stats, len(members)))
        seconds = [r.train_seconds for r in members if r.train_seconds is not None]
        seeds = ",".join(sorted(r.seed_label for r in members))
        mean_seconds = f"{sum(seconds) / len(seconds):.0f}" if seconds else ""
        rows.append([model, data, settings_hash, seeds, *cells, mean_seconds])
    return header, rows


def build_report(root: Path, records: list[RunRecord] | None = None) -> tuple[list[str], list[list[str]]]:
    records = records if records is not None else read_records(root)
    columns = metric_columns([record.metrics for record in records])
    header = ["run", "model", "data", "config hash", "seed", "best epoch"]
    header += [f"{split} {name}" for split, name in columns] + ["rerun"]
    rows = []
    for record in records:
        values = [record.metrics.get(split, {}).get(name) for split, name in columns]
        rows.append(
            [
                str(record.path.relative_to(root)) if record.path != root else ".",
                record.model,
                record.data,
                record.settings_hash,
                "" if record.seed is None and record.ensemble is None else record.seed_label,
                "" if record.best_epoch is None else str(record.best_epoch),
                *("" if value is None else f"{value:.4f}" for value in values),
                rerun_command(record.path, record.model, record.ensemble),
            ]
        )
    return header, rows


def command_report(runs_dir: Path) -> int:
    records = read_records(runs_dir)
    summary_header, summary_rows = build_summary(records)
    header, rows = build_report(runs_dir, records)
    summary_table = markdown_table(summary_header, summary_rows)
    table = markdown_table(header, rows)
    atomic_write_text(
        runs_dir / "report.md",
        f"# Runs under {runs_dir}\n\n## Mean ± std (population) over seeds\n\n{summary_table}\n"
        f"## Every run\n\n{table}",
    )
    write_csv(runs_dir / "report.csv", header, rows)
    write_csv(runs_dir / "summary.csv", summary_header, summary_rows)
    print(summary_table)
    print(table, end="")
    print(
        f"\n{len(rows)} runs in {len(summary_rows)} groups; written {runs_dir / 'report.md'}, "
        f"{runs_dir / 'report.csv'} and {runs_dir / 'summary.csv'}"
    )
    return 0
