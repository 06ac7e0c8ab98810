"""What ``infofusion extract`` offers and defaults to, importable without numpy (the parser shows them)."""

AUDIO_PARTS = ("egemaps", "mfcc", "energy")
VISUAL_BACKENDS = ("opencv", "none")
DEFAULT_AUDIO = ("egemaps", "mfcc")
DEFAULT_FRAMES = 8
# infofusion.text.encoders.DEFAULT_ENCODER, spelled again because that module imports numpy;
# tests/test_cli_help.py keeps the two equal.
DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"
