"""Utterance-level audio features from a WAV file.

The signal is read with soundfile, mixed to mono and resampled to 16 kHz with librosa. Parts (chosen
with ``--audio``, concatenated in the order given):

- ``egemaps``: the 88 eGeMAPSv02 functionals of openSMILE (pitch, jitter/shimmer, loudness, formants,
  spectral slopes... summarised over the utterance by openSMILE itself);
- ``mfcc``: 40 MFCCs and their deltas per 10 ms frame (25 ms window), each summarised by mean and
  standard deviation over the frames: 160 values;
- ``energy``: RMS energy and zero-crossing rate per frame, mean and standard deviation: 4 values.

Unreadable or empty files raise :class:`AudioError`; the caller zero-fills the utterance and reports it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..extras import require_extra

SAMPLE_RATE = 16_000
N_MFCC = 40
WINDOW = 400  # 25 ms at 16 kHz
HOP = 160  # 10 ms
N_FFT = 512


class AudioError(Exception):
    """A WAV file that cannot be turned into features (unreadable, empty)."""


def read_wav(path: Path) -> np.ndarray:
    """Mono float32 samples at :data:`SAMPLE_RATE`."""
    import librosa
    import soundfile

    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises its own LibsndfileError, RuntimeError, OSError...
        raise AudioError(f"cannot read audio: {error}") from None
    if samples.shape[0] == 0:
        raise AudioError("the file holds no audio samples")
    mono = samples.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = librosa.resample(mono, orig_sr=rate, target_sr=SAMPLE_RATE)
    return np.ascontiguousarray(mono, dtype=np.float32)


class AudioFeatures:
    """Computes the chosen parts; built once per extraction (openSMILE takes a moment to set up)."""

    def __init__(self, parts: tuple[str, ...]) -> None:
        self.parts = tuple(parts)
        self._smile = None
        names: dict[str, list[str]] = {}
        for part in self.parts:
            if part == "egemaps":
                require_extra("media", "eGeMAPS audio features", ("opensmile",))
                import opensmile

                self._smile = opensmile.Smile(
                    feature_set=opensmile.FeatureSet.eGeMAPSv02,
                    feature_level=opensmile.FeatureLevel.Functionals,
                )
                names[part] = list(self._smile.feature_names)
            elif part == "mfcc":
                frame_names = [f"mfcc{k}" for k in range(N_MFCC)] + [f"delta_mfcc{k}" for k in range(N_MFCC)]
                names[part] = _summary_names(frame_names)
            elif part == "energy":
                names[part] = _summary_names(["rms", "zcr"])
            else:
                raise ValueError(f"unknown audio part {part!r}")
        self.names = names
        self.dim = sum(len(part_names) for part_names in names.values())

    def info(self) -> dict:
        return {
            "sample_rate": SAMPLE_RATE,
            "parts": [{"name": part, "dim": len(self.names[part])} for part in self.parts],
            "feature_names": [name for part in self.parts for name in self.names[part]],
        }

    def from_file(self, path: Path, notes: list[str] | None = None) -> np.ndarray:
        """The utterance vector (``notes``: for the same call as the video extractor; unused)."""
        return self.from_signal(read_wav(path))

    def from_signal(self, signal: np.ndarray) -> np.ndarray:
        """One float32 vector of :attr:`dim` values (non-finite values are left for the caller to see)."""
        # librosa wants one whole FFT window; zeros at the end change no frame that had samples.
        padded = np.pad(signal, (0, max(0, N_FFT - signal.size)))
        vectors = []
        for part in self.parts:
            if part == "egemaps":
                vectors.append(self._egemaps(signal))
            elif part == "mfcc":
                vectors.append(_mfcc(padded))
            else:
                vectors.append(_energy(padded))
        return np.concatenate(vectors).astype(np.float32)

    def _egemaps(self, signal: np.ndarray) -> np.ndarray:
        try:
            with warnings.catch_warnings():
                # "Segment too short, filling with NaN": the caller zeroes and reports NaNs itself.
                warnings.filterwarnings("ignore", message="Segment too short", category=UserWarning)
                table = self._smile.process_signal(signal, SAMPLE_RATE)
        except Exception as error:  # openSMILE refuses some degenerate signals
            raise AudioError(f"openSMILE failed: {error}") from None
        return table.to_numpy(dtype=np.float32).reshape(-1)


def _summary_names(frame_names: list[str]) -> list[str]:
    return [f"{name}_mean" for name in frame_names] + [f"{name}_std" for name in frame_names]


def _mean_std(frames: np.ndarray) -> np.ndarray:
    """(features, frames) -> means then standard deviations over frames."""
    return np.concatenate([frames.mean(axis=1), frames.std(axis=1)])


def _mfcc(signal: np.ndarray) -> np.ndarray:
    import librosa

    coefficients = librosa.feature.mfcc(
        y=signal, sr=SAMPLE_RATE, n_mfcc=N_MFCC, n_fft=N_FFT, win_length=WINDOW, hop_length=HOP
    )
    # "nearest" padding: the default interpolation needs at least 9 frames (90 ms) of audio.
    deltas = librosa.feature.delta(coefficients, mode="nearest")
    return _mean_std(np.concatenate([coefficients, deltas]))


def _energy(signal: np.ndarray) -> np.ndarray:
    import librosa

    rms = librosa.feature.rms(y=signal, frame_length=WINDOW, hop_length=HOP)
    zcr = librosa.feature.zero_crossing_rate(signal, frame_length=WINDOW, hop_length=HOP)
    return _mean_std(np.concatenate([rms, zcr]))
