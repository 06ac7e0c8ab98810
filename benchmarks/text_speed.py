"""Seconds per epoch and peak memory of the seed models reading text through the text front end.

For each data set (IEMOCAP and MELD dialogue CSVs, the MOSI transcripts of the bc-LSTM pickle, where
present under ../shared/data) and each model (mmmie, mmim, mind by default), one training run per
``text.mode`` (``frozen``, ``finetune``) in its own subprocess (``benchmarks/train_speed.py``'s worker),
reporting the data preparation (windows, and for a frozen front end the one pass that computes and caches
its vectors; a second run reads the cache), the seconds per epoch (training and validation) and the
process's peak resident memory. Prints a markdown table.

    python benchmarks/text_speed.py                      # every data set present, 1 epoch per run
    python benchmarks/text_speed.py --data iemocap --models mmmie --modes finetune
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import measure  # noqa: E402  (a sibling script)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATA = {
    "iemocap": SHARED / "iemocap",
    "meld": SHARED / "meld",
    "mosi": SHARED / "mosi-bclstm" / "mosi_bclstm_dev.pkl",
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="iemocap,meld,mosi", help="comma list of iemocap, meld, mosi")
    parser.add_argument("--models", default="mmmie,mmim,mind")
    parser.add_argument("--modes", default="frozen,finetune")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra key=value")
    args = parser.parse_args()
    print(f"{args.epochs} epoch(s) per run, {args.threads} torch thread(s)\n")
    # CPU seconds (this process, one torch thread) barely move when other jobs share the cores; wall
    # seconds do. The first epoch of a top-N fine-tuning run also fills the memo of the frozen layers.
    print(
        "| data | model | text.mode | train utterances | preparation s | s / epoch | CPU s / epoch "
        "| peak RSS (MB) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.data.split(","):
        path = DATA[name]
        if not path.exists():
            print(f"| {name} | skipped: {path} is absent | | | | | | |", flush=True)
            continue
        for model in args.models.split(","):
            for mode in args.modes.split(","):
                result = measure(model, str(path), [f"text.mode={mode}", *args.overrides], args)
                if "error" in result:
                    failure = result["error"][:80]
                    print(f"| {name} | {model} | {mode} | failed: {failure} | | | | |", flush=True)
                    continue
                print(
                    f"| {name} | {model} | {mode} | {result['train_utterances']} | "
                    f"{result['prepare_seconds']:.0f} | {result['seconds_per_epoch']:.0f} | "
                    f"{result['cpu_seconds_per_epoch']:.0f} | {result['peak_rss_mb']:.0f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
