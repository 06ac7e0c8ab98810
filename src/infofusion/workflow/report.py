"""``infofusion report RUNS_DIR``: one table of every run under a folder, with a rerun command per row.

Also the table helpers the ablation command shares: which metrics are the "main" ones of a task, and
writing one table as markdown and CSV.
"""

from __future__ import annotations

import csv
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError, config_hash, load_yaml
from ..data.types import DataError

# The columns the papers report: MELD/IEMOCAP (accuracy, weighted F1) and MOSI/MOSEI (MMSA's set).
CLASSIFICATION_METRICS = ("acc", "weighted_f1")
REGRESSION_METRICS = ("acc2_non0", "f1_non0", "mae", "corr", "acc7")
SPLITS = ("valid", "test")


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
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def rerun_command(run_dir: Path, model: str) -> str:
    """The one line that trains the run again from its saved config (seed and data included)."""
    new_dir = run_dir.parent / f"{run_dir.name}_rerun"
    return shlex.join(
        [
            "infofusion",
            "train",
            "--model",
            model,
            "--config",
            str(run_dir / "config.yaml"),
            "--output",
            str(new_dir),
        ]
    )


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

    @classmethod
    def read(cls, run_dir: Path) -> RunRecord:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        config = load_yaml(run_dir / "config.yaml") if (run_dir / "config.yaml").exists() else {}
        info_path = run_dir / "run.json"
        info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
        return cls(
            path=run_dir,
            model=str(config.get("model_name") or info.get("model") or "?"),
            data=str(config.get("data", {}).get("spec", "?")),
            settings_hash=str(info.get("config_hash") or (config_hash(config) if config else "?")),
            seed=config.get("seed", info.get("seed")),
            best_epoch=metrics.get("best_epoch"),
            metrics=metrics,
        )


def find_runs(root: Path) -> list[Path]:
    return sorted(path.parent for path in root.rglob("metrics.json"))


def build_report(root: Path) -> tuple[list[str], list[list[str]]]:
    if not root.is_dir():
        raise ConfigError(f"report: {root} is not a folder")
    records = [RunRecord.read(run_dir) for run_dir in find_runs(root)]
    if not records:
        raise DataError(f"no finished runs (metrics.json) under {root}", file=str(root))
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
                "" if record.seed is None else str(record.seed),
                "" if record.best_epoch is None else str(record.best_epoch),
                *("" if value is None else f"{value:.4f}" for value in values),
                rerun_command(record.path, record.model),
            ]
        )
    return header, rows


def command_report(runs_dir: Path) -> int:
    header, rows = build_report(runs_dir)
    table = markdown_table(header, rows)
    (runs_dir / "report.md").write_text(f"# Runs under {runs_dir}\n\n{table}", encoding="utf-8")
    write_csv(runs_dir / "report.csv", header, rows)
    print(table, end="")
    print(f"\n{len(rows)} runs; written {runs_dir / 'report.md'} and {runs_dir / 'report.csv'}")
    return 0
