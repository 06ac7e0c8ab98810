"""The ``infofusion extract`` subcommand: a manifest CSV of raw media to a conversation feature pickle.

The main CLI calls :func:`add_extract_parser` with its subparsers object; the command sets ``handler``
(a function of the parsed arguments returning an exit code). The media libraries are imported only when
the command runs. Bad input raises ``DataError``, which the main CLI prints as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from .defaults import DEFAULT_AUDIO, DEFAULT_FRAMES, DEFAULT_TEXT_ENCODER, VISUAL_BACKENDS


def _at_least_one(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def command_extract(args: argparse.Namespace) -> int:
    from . import ExtractOptions, extract_dialogues, sidecar_path, write_conversation_pickle

    options = ExtractOptions(
        text_encoder=args.text_encoder,
        audio=args.audio,
        visual=args.visual,
        frames_per_utterance=args.frames_per_utterance,
    )
    result = extract_dialogues(args.manifest, options)
    for problem in result.problems:
        print(f"problem: {problem}", file=sys.stderr)
    path = write_conversation_pickle(result, args.output)
    for line in summary_lines(result):
        print(line)
    print(f"wrote {path} and {sidecar_path(path).name}")
    return 0


def summary_lines(result) -> list[str]:
    """What the run produced, how long each modality took, and the problems per kind."""
    info = result.feature_info
    dims = []
    for modality, entry in info["modalities"].items():
        if entry["present"]:
            parts = "+".join(f"{part['name']} {part['dim']}" for part in entry.get("parts", [])) or entry.get(
                "encoder", ""
            )
            dims.append(f"{modality} {entry['dim']}-d ({parts})")
        else:
            dims.append(f"{modality} absent (1-column zero placeholder)")
    splits = ", ".join(f"{len(ids)} {name}" for name, ids in result.splits.items())
    lines = [
        f"extracted {result.utterance_count} utterances in {len(result.dialogues)} dialogues ({splits})",
        "features: " + "; ".join(dims),
    ]
    timing = info.get("timing", {})
    speeds = []
    for modality in ("text", "audio", "visual"):
        entry = timing.get(modality)
        if entry:
            count = entry.get("utterances") or entry.get("files") or 0
            per = entry["seconds"] / count if count else 0.0
            speeds.append(f"{modality} {per:.3f} s/utterance")
    if speeds:
        lines.append("speed: " + ", ".join(speeds))
    summary = result.problem_summary
    if summary:
        lines.append(
            f"problems: {sum(summary.values())} ("
            + ", ".join(f"{count} {kind}" for kind, count in summary.items())
            + "; listed above on stderr and in the .json)"
        )
    else:
        lines.append("problems: none")
    return lines


def add_extract_parser(commands: argparse._SubParsersAction) -> None:
    extract = commands.add_parser(
        "extract",
        help="raw media (manifest CSV of transcripts, WAVs, videos) to a conversation feature pickle",
        description=(
            "Reads a manifest CSV (columns dialogue_id, utterance_id, speaker, transcript; optional audio, "
            "video, label, split) and writes the conversation 9-tuple pickle the loaders read, plus "
            "OUTPUT.json describing the features and every problem met. See docs/extract.md."
        ),
    )
    extract.add_argument("--manifest", required=True, help="manifest CSV; media paths relative to its folder")
    extract.add_argument("--output", required=True, help="FEATURES.pkl to write (and FEATURES.pkl.json)")
    extract.add_argument(
        "--text-encoder",
        default=DEFAULT_TEXT_ENCODER,
        help=f"sentence encoder: {DEFAULT_TEXT_ENCODER} (default, offline), a Hugging Face name, a local "
        "model folder, or hashing[-DIM]",
    )
    extract.add_argument(
        "--audio",
        default=",".join(DEFAULT_AUDIO),
        help="comma list of egemaps (88), mfcc (160), energy (4); or none (default: %(default)s)",
    )
    extract.add_argument(
        "--visual", choices=VISUAL_BACKENDS, default="opencv", help="face features (opencv) or none"
    )
    extract.add_argument(
        "--frames-per-utterance",
        type=_at_least_one,
        default=DEFAULT_FRAMES,
        help="video frames sampled per utterance (default: %(default)s)",
    )
    extract.set_defaults(handler=command_extract)
