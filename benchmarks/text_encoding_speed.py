"""Windows per second of the frozen text front end against sentence-transformers' own ``encode``.

Per encoder (MiniLM, mpnet) and torch thread count, on the context windows of the first utterances of
MELD's dev transcripts (``--data``: a folder holding ``dev_sent_emo.csv``; no labels are read), in this
one process:

- ``ours fp32``: from the dialogues' text to pooled vectors: tokenising, building the windows and
  ``encode_windows`` (what ``prepare_text`` does on a cache miss);
- ``ours bf16``: the same with ``text.precision=bf16`` (matrix products in bfloat16 under autocast);
- ``ours bf16-feedforward``: ``text.precision=bf16-feedforward`` (only the feed-forward blocks' products
  in bfloat16, attention in fp32);
- ``int8 (rejected)``: ``torch.ao.quantization.quantize_dynamic`` of every ``nn.Linear`` (per-channel
  int8 weights), shown for its cosine: it is not a setting;
- ``sentence-transformers``: ``SentenceTransformer(folder).encode(texts)`` of the same windows as text
  (each window's ids decoded: the context turns, the separator and the target, ``batch_size=32``).

``ratio`` is the row's windows per second over sentence-transformers' at the same thread count;
``min cos`` the lowest cosine of a window's vector to ``ours fp32``, ``< 0.99`` how many windows fall
below that bar; ``peak RSS`` the process's resident
high-water mark (``VmHWM``) while the row ran, reset before it (``/proc/self/clear_refs``), including the
model it loaded; every row loads its own copy.

    python benchmarks/text_encoding_speed.py --data ../shared/data/meld
    python benchmarks/text_encoding_speed.py --encoders all-MiniLM-L6-v2 --threads 1 --utterances 200
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from infofusion.data.csv_dialogues import read_table
from infofusion.text.encoders import load_tokenizer, model_directory
from infofusion.text.frontend import FrontEndSpec, TextFrontEnd, load_transformer, special_tokens
from infofusion.text.prepare import encode_windows, memoized_tokenizer
from infofusion.text.windows import WindowSpec, build_dialogue_windows

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "meld"
Dialogues = list[tuple[list[str], list[str]]]  # (speakers, texts) per dialogue


def dev_dialogues(folder: Path, utterances: int) -> Dialogues:
    """Whole dialogues of ``dev_sent_emo.csv`` in file order, the last one cut at ``utterances``."""
    rows = read_table(folder / "dev_sent_emo.csv", "Emotion", label_required=False).rows
    dialogues: Dialogues = []
    taken = 0
    for _, turns in rows.groupby("Dialogue_ID", sort=False):
        turns = turns.sort_values("Utterance_ID", key=lambda column: column.astype(int))
        keep = min(len(turns), utterances - taken)
        dialogues.append((turns["Speaker"].tolist()[:keep], turns["Utterance"].tolist()[:keep]))
        taken += keep
        if taken >= utterances:
            break
    return dialogues


def windows_of(encoder: str, dialogues: Dialogues) -> tuple[list[np.ndarray], int]:
    """The windows of every utterance (a fresh tokeniser memo, as a first run has) and the pad id."""
    tokenizer = load_tokenizer(encoder)
    special = special_tokens(tokenizer)
    tokenize = memoized_tokenizer(tokenizer)
    windows = [
        window
        for speakers, texts in dialogues
        for window in build_dialogue_windows(speakers, texts, tokenize, special, WindowSpec())
    ]
    return windows, special.pad


def reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM starts again from the current RSS
    except OSError:
        pass


def peak_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the whole process's peak


def timed(run: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    vectors = run()
    return vectors, time.perf_counter() - start


def ours(encoder: str, dialogues: Dialogues, precision: str, int8: bool = False) -> Callable[[], np.ndarray]:
    transformer = load_transformer(encoder)
    if int8:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        transformer = quantize_dynamic(
            transformer, {torch.nn.Linear: per_channel_dynamic_qconfig}, torch.qint8
        )
    front_end = TextFrontEnd(FrontEndSpec(encoder, precision=precision), transformer)
    warm, pad = windows_of(encoder, dialogues[:1])
    encode_windows(front_end, warm[:8], pad)  # kernels are chosen on the first call: not timed

    def run() -> np.ndarray:
        windows, pad_id = windows_of(encoder, dialogues)
        return encode_windows(front_end, windows, pad_id)

    return run


def theirs(encoder: str, texts: list[str]) -> Callable[[], np.ndarray]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_directory(encoder), device="cpu")
    model.encode(texts[:8], batch_size=32)
    return lambda: model.encode(texts, batch_size=32, show_progress_bar=False)


def window_texts(encoder: str, windows: list[np.ndarray]) -> list[str]:
    """Each window as text: its ids between [CLS] and the final [SEP], decoded (the inner separator
    stays, as the tokeniser's own special token)."""
    tokenizer = load_tokenizer(encoder)
    return [tokenizer.decode(window[0, 1:-1].tolist()) for window in windows]


def cosines(reference: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    dot = (reference * vectors).sum(1)
    return dot / np.linalg.norm(reference, axis=1) / np.linalg.norm(vectors, axis=1)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=SHARED, help="folder holding dev_sent_emo.csv")
    parser.add_argument("--encoders", default="all-MiniLM-L6-v2,all-mpnet-base-v2")
    parser.add_argument("--threads", default="1,2", help="comma list of torch thread counts")
    parser.add_argument("--utterances", type=int, default=300, help="windows: the first N dev utterances")
    parser.add_argument("--no-int8", action="store_true", help="leave out the rejected int8 row")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
    warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
    dialogues = dev_dialogues(args.data, args.utterances)
    print(f"load average before: {Path('/proc/loadavg').read_text().strip()}")
    print(
        "| encoder | threads | path | windows / s | ratio to sentence-transformers | min cos to fp32 "
        "| < 0.99 | peak RSS (MB) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for encoder in args.encoders.split(","):
        windows, _ = windows_of(encoder, dialogues)
        texts = window_texts(encoder, windows)
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            paths: dict[str, Callable[[], Callable[[], np.ndarray]]] = {
                "sentence-transformers": partial(theirs, encoder, texts),
                "ours fp32": partial(ours, encoder, dialogues, "fp32"),
                "ours bf16": partial(ours, encoder, dialogues, "bf16"),
                "ours bf16-feedforward": partial(ours, encoder, dialogues, "bf16-feedforward"),
            }
            if not args.no_int8:
                paths["int8 (rejected)"] = partial(ours, encoder, dialogues, "fp32", int8=True)
            results: dict[str, tuple[np.ndarray, float, float]] = {}
            for name, prepare in paths.items():
                gc.collect()
                reset_peak()
                vectors, seconds = timed(prepare())
                results[name] = (vectors, len(windows) / seconds, peak_mb())
            base_rate = results["sentence-transformers"][1]
            reference = results["ours fp32"][0]
            for name, (vectors, rate, peak) in results.items():
                similarity, below = "–", "–"
                if name != "sentence-transformers":
                    cosine = cosines(reference, vectors)
                    similarity, below = f"{cosine.min():.4f}", str(int((cosine < 0.99).sum()))
                print(
                    f"| {encoder} | {threads} | {name} | {rate:.1f} | {rate / base_rate:.2f} | {similarity} "
                    f"| {below} | {peak:.0f} |",
                    flush=True,
                )
    print(f"\n{len(windows)} windows; load average after: {Path('/proc/loadavg').read_text().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
