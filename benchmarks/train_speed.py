"""Training speed and memory of every registered model, and the cost of the MI terms.

For each data set (the bc-LSTM MOSI file when present, and a synthetic set in MMSA's layout: regression,
20-frame sequences for every modality) and every model in the registry, one training run in its own
subprocess (so peak memory is that model's alone) reports:

- seconds per epoch: the trainer's per-epoch time (training step plus validation), the fastest of the
  epochs after the first (the first pays one-off costs; on a shared machine the fastest epoch is the one
  least disturbed by other processes, as ``timeit`` reports its best);
- peak RSS: the process's maximum resident memory (``resource.getrusage``), and how much of it training
  added over the process before the trainer was built (imports and data).

Then, for each model with MI terms (mmim, mmmie, mind: those registered), the ratio of seconds per epoch
with the MI terms on over off (the aim: at most 1.5x), from two runs made back to back so both see the
same machine load. Prints markdown tables.

    python benchmarks/train_speed.py            # 5 epochs per run
    python benchmarks/train_speed.py --quick    # 2 epochs, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MOSI_FILE = Path("/work/shared/data/mosi-bclstm/mosi_bclstm_dev.pkl")
SYNTHETIC_MMSA = ["data.task=regression", "data.frames=20", "data.text_frames=20"]
# The switches that turn each model's MI terms off (the model itself stays the same).
MI_OFF = {
    "mmim": ["mmim.cpc=false", "mmim.mmilb=false"],
    "mmmie": ["mmmie.mine=false", "mmmie.club=false"],
    "mind": ["mind.info=false", "mind.cons=false", "mind.diff=false"],
}
OVERHEAD_AIM = 1.5


def current_rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def worker(model: str, spec: str, overrides: list[str], epochs: int, threads: int) -> dict:
    """One training run in this process; returns its timing and memory."""
    from infofusion.config import resolve_config
    from infofusion.training.build import build_trainer, load_data_for_config

    settings = [f"train.epochs={epochs}", f"train.patience={epochs}", f"train.threads={threads}", *overrides]
    config = resolve_config(model, None, settings, {"data": {"spec": spec}})
    prepare_started = time.perf_counter()
    dataset = load_data_for_config(config)  # with a text front end: windows, and frozen vectors
    prepare_seconds = time.perf_counter() - prepare_started
    before = current_rss_mb()
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = build_trainer(config, run_dir, dataset=dataset, echo=lambda _: None)
        cpu_started = time.process_time()
        trainer.fit()
        cpu_seconds = time.process_time() - cpu_started
        history = [json.loads(line) for line in (Path(run_dir) / "history.jsonl").read_text().splitlines()]
    seconds = [record["seconds"] for record in history]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    return {
        "seconds_per_epoch": min(seconds[1:] or seconds),
        # CPU time of this process (one torch thread): barely moved by other jobs on a shared machine.
        "cpu_seconds_per_epoch": cpu_seconds / len(seconds),
        "peak_rss_mb": peak,
        "training_rss_mb": peak - before,
        "train_utterances": sum(len(d) for d in dataset.splits["train"]),
        "prepare_seconds": prepare_seconds,
    }


def measure(model: str, spec: str, overrides: list[str], args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", model, "--spec", spec, "--epochs", str(args.epochs)]
    command += ["--threads", str(args.threads), *[f"--set={o}" for o in overrides]]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        return {"error": lines[-1] if lines else f"exit code {result.returncode}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def data_sets() -> list[tuple[str, str, list[str]]]:
    sets = []
    if MOSI_FILE.exists():
        sets.append(("MOSI (bc-LSTM features)", str(MOSI_FILE), []))
    else:
        print(f"note: {MOSI_FILE} is absent; the MOSI rows are skipped\n")
    sets.append(("synthetic MMSA layout (regression, 20 frames)", "synthetic", SYNTHETIC_MMSA))
    return sets


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2 epochs per run")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default 5, quick 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--models", default=None, help="comma list (default: every registered model)")
    parser.add_argument(
        "--paper-setting",
        action="store_true",
        help="also MMIM with its fine-tuned transformer text encoder on the MOSI transcripts (slow)",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.epochs = args.epochs or (2 if args.quick else 5)
    if args.worker:
        print(json.dumps(worker(args.worker, args.spec, args.overrides, args.epochs, args.threads)))
        return 0

    from infofusion.models import MODELS

    models = args.models.split(",") if args.models else sorted(MODELS)
    print(f"{args.epochs} epochs per run, {args.threads} torch thread(s); s / epoch: fastest after epoch 1\n")
    print("| data | model | train utterances | s / epoch | peak RSS (MB) | added by training (MB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    sets = data_sets()
    for name, spec, overrides in sets:
        for model in models:
            result = measure(model, spec, overrides, args)
            if "error" in result:
                print(f"| {name} | {model} | failed: {result['error'][:90]} | | | |", flush=True)
                continue
            print(
                f"| {name} | {model} | {result['train_utterances']} | {result['seconds_per_epoch']:.3f} | "
                f"{result['peak_rss_mb']:.0f} | {result['training_rss_mb']:.0f} |",
                flush=True,
            )

    mi_models = [m for m in MI_OFF if m in models and m in MODELS]
    print(f"\nMI-term overhead (aim: at most {OVERHEAD_AIM}x)\n")
    print(
        "| data | model | MI off | s / epoch, MI on | s / epoch, MI off | ratio on/off "
        "| CPU s / epoch on / off | CPU ratio |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    runs = [(name, spec, overrides, model) for name, spec, overrides in sets for model in mi_models]
    if args.paper_setting and MOSI_FILE.exists():
        paper = ["text.mode=finetune"]
        runs.append(("MOSI transcripts, MiniLM fine-tuned", str(MOSI_FILE), paper, "mmim"))
    for name, spec, overrides, model in runs:
        on = measure(model, spec, overrides, args)
        off = measure(model, spec, [*overrides, *MI_OFF[model]], args)
        switches = " ".join(MI_OFF[model])
        if "error" in on or "error" in off:
            error = on.get("error") or off["error"]
            print(f"| {name} | {model} | {switches} | failed: {error[:90]} | | | | |")
            continue
        ratio = on["seconds_per_epoch"] / max(off["seconds_per_epoch"], 1e-9)
        cpu_ratio = on["cpu_seconds_per_epoch"] / max(off["cpu_seconds_per_epoch"], 1e-9)
        mark = "" if cpu_ratio <= OVERHEAD_AIM else " (over the aim)"
        print(
            f"| {name} | {model} | {switches} | {on['seconds_per_epoch']:.3f} | "
            f"{off['seconds_per_epoch']:.3f} | {ratio:.2f}x | {on['cpu_seconds_per_epoch']:.3f} / "
            f"{off['cpu_seconds_per_epoch']:.3f} | {cpu_ratio:.2f}x{mark} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
