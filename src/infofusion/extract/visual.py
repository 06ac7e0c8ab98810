"""Utterance-level visual features from a video file with OpenCV's bundled Haar cascades.

``N`` frames are sampled evenly over the clip. In each frame the largest frontal face is found and
described by :data:`FRAME_FEATURES` values:

- ``face_found`` (1/0), the face box centre and size divided by the frame's width/height (4),
- ``eyes`` (eye detections in the face's upper half, at most 2), ``smile`` (the smile cascade's
  strongest final-stage score in the face's lower half, 0 when none),
- grey level mean and standard deviation (/255) and sharpness (log of 1 + variance of the Laplacian) of
  the face crop, and a 144-bin HOG of the crop resized to 64x64 (2x2 blocks of 2x2 cells, 9 bins).

A frame without a face gives all zeros (so ``face_found`` is 0) and still counts. The utterance vector
is the mean and then the standard deviation of the frame vectors: ``2 * FRAME_FEATURES`` values; the
mean of ``face_found`` is the share of sampled frames with a face.

The cascades come with the ``opencv-python-headless`` 4.x wheels (``cv2.data.haarcascades``). OpenCV 5
wheels ship neither the cascades nor ``cv2.CascadeClassifier``; then :class:`VisualFeatures` raises a
:class:`DataError` saying so (``--visual none`` still works).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.types import DataError

FACE_SIZE = 64  # the crop HOG and grey statistics see
PARTS_SIZE = 128  # the crop the eye and smile cascades search (they need more pixels than 64)
MAX_SIDE = 640  # frames are shrunk to this before face detection, for speed
HOG_DIM = 144
_CASCADES = {
    "face": "haarcascade_frontalface_default.xml",
    "eye": "haarcascade_eye.xml",
    "smile": "haarcascade_smile.xml",
}
FRAME_NAMES = [
    "face_found",
    "face_cx",
    "face_cy",
    "face_w",
    "face_h",
    "eyes",
    "smile",
    "grey_mean",
    "grey_std",
    "sharpness",
    *(f"hog{k}" for k in range(HOG_DIM)),
]
FRAME_FEATURES = len(FRAME_NAMES)


class VideoError(Exception):
    """A video file that cannot be read (missing codec, damaged, no frames)."""


def _cascade_directory() -> Path:
    import cv2

    missing = "" if hasattr(cv2, "CascadeClassifier") else "cv2.CascadeClassifier"
    directory = Path(getattr(getattr(cv2, "data", None), "haarcascades", "") or ".")
    absent = [name for name in _CASCADES.values() if not (directory / name).is_file()]
    if missing or absent:
        raise DataError(
            f"OpenCV {cv2.__version__} lacks the Haar face cascades ({missing or ', '.join(absent)} not "
            f"found); install opencv-python-headless>=4.8,<5 (OpenCV 5 wheels do not ship them) or use "
            "--visual none",
            field="visual",
        )
    return directory


class VisualFeatures:
    """Face features of sampled video frames; the cascades are loaded once per extraction."""

    def __init__(self, frames_per_utterance: int) -> None:
        import cv2

        directory = _cascade_directory()
        self.frames = int(frames_per_utterance)
        self._face, self._eye, self._smile = (
            cv2.CascadeClassifier(str(directory / _CASCADES[kind])) for kind in ("face", "eye", "smile")
        )
        self._hog = cv2.HOGDescriptor((FACE_SIZE, FACE_SIZE), (32, 32), (32, 32), (16, 16), 9)
        self.names = [f"{name}_mean" for name in FRAME_NAMES] + [f"{name}_std" for name in FRAME_NAMES]
        self.dim = len(self.names)

    def info(self) -> dict:
        import cv2

        return {
            "backend": f"opencv {cv2.__version__} Haar cascades",
            "frames_per_utterance": self.frames,
            "parts": [{"name": "face", "dim": self.dim}],
            "feature_names": self.names,
        }

    def from_file(self, path: Path, notes: list[str] | None = None) -> np.ndarray:
        """The utterance vector; a damaged-but-usable file adds a sentence to ``notes``."""
        import cv2

        try:
            frames = sample_frames(path, self.frames, notes)
            per_frame = np.stack([self.frame_features(frame) for frame in frames])
        except cv2.error as error:  # a frame OpenCV decoded but cannot process (odd depth, size 0...)
            raise VideoError(f"OpenCV error: {error}") from None
        return np.concatenate([per_frame.mean(axis=0), per_frame.std(axis=0)]).astype(np.float32)

    def frame_features(self, frame: np.ndarray) -> np.ndarray:
        """:data:`FRAME_FEATURES` values for one BGR (or grey) frame; zeros when no face is found."""
        import cv2

        grey = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        height, width = grey.shape
        scale = min(1.0, MAX_SIDE / max(height, width))
        if scale < 1.0:
            grey = cv2.resize(
                grey, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA
            )
        features = np.zeros(FRAME_FEATURES, dtype=np.float32)
        box = self._largest_face(grey)
        if box is None:
            return features
        x, y, w, h = box
        small_h, small_w = grey.shape
        face = grey[y : y + h, x : x + w]
        crop = cv2.resize(face, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)
        parts = cv2.equalizeHist(cv2.resize(face, (PARTS_SIZE, PARTS_SIZE), interpolation=cv2.INTER_AREA))
        features[:10] = (
            1.0,
            (x + w / 2) / small_w,
            (y + h / 2) / small_h,
            w / small_w,
            h / small_h,
            self._eye_count(parts),
            self._smile_score(parts),
            crop.mean() / 255.0,
            crop.std() / 255.0,
            np.log1p(cv2.Laplacian(crop, cv2.CV_64F).var()),
        )
        features[10:] = self._hog.compute(crop).reshape(-1)
        return features

    def _largest_face(self, grey: np.ndarray) -> tuple[int, int, int, int] | None:
        import cv2

        smallest = max(24, round(0.08 * min(grey.shape)))
        faces = self._face.detectMultiScale(
            cv2.equalizeHist(grey), scaleFactor=1.1, minNeighbors=5, minSize=(smallest, smallest)
        )
        if len(faces) == 0:
            return None
        return tuple(int(v) for v in max(faces, key=lambda box: box[2] * box[3]))

    def _eye_count(self, parts: np.ndarray) -> float:
        upper = parts[: int(PARTS_SIZE * 0.6)]
        eyes = self._eye.detectMultiScale(upper, scaleFactor=1.1, minNeighbors=5, minSize=(12, 12))
        return float(min(len(eyes), 2))

    def _smile_score(self, parts: np.ndarray) -> float:
        lower = parts[PARTS_SIZE // 2 :]
        _, _, weights = self._smile.detectMultiScale3(
            lower, scaleFactor=1.1, minNeighbors=10, minSize=(24, 12), outputRejectLevels=True
        )
        return max(0.0, float(np.max(weights))) if len(weights) else 0.0


def sample_frames(path: Path, count: int, notes: list[str] | None = None) -> list[np.ndarray]:
    """``count`` frames spread evenly over the video (fewer when it is shorter).

    A file that ends before the frame count its header declares (cut short while copying) gives the
    wanted frames it has, and says so in ``notes``.
    """
    import cv2

    total = _frame_count(path)
    wanted = set(np.unique(np.linspace(0, total - 1, num=min(count, total)).round().astype(int)).tolist())
    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        # Reading forwards, decoding only the wanted frames: seeking is unreliable in some containers.
        for index in range(max(wanted) + 1):
            if not capture.grab():
                if notes is not None:
                    notes.append(
                        f"the video declares {total} frames but only {index} could be decoded; "
                        f"features from {len(frames)} of {len(wanted)} sampled frames"
                    )
                break
            if index in wanted:
                ok, frame = capture.retrieve()
                if ok and frame is not None:
                    frames.append(frame)
    finally:
        capture.release()
    if not frames:
        raise VideoError("no frame could be decoded")
    return frames


def _frame_count(path: Path) -> int:
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise VideoError("OpenCV cannot open the video (damaged, or an unsupported codec)")
        reported = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if reported > 0:
            return reported
        counted = 0  # some containers do not store the count: count by reading through
        while capture.grab():
            counted += 1
    finally:
        capture.release()
    if counted == 0:
        raise VideoError("the video holds no frames")
    return counted
