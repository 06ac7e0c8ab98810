"""The embedded default data set: seeded dialogues whose generating process is known.

Each utterance has a *shared* latent ``s`` (carried by all modalities, drifting along the dialogue as an
AR(1) process so context helps), a *private* latent ``p_m`` per modality and observation noise. Modality
``m`` observes ``x_m = A_m s + B_m p_m + noise_std * eps``. The label depends on the shared latent only,
plus a per-speaker offset so that speaker identity carries information too:

- classification: ``label = argmax(W s + speaker_bias)``;
- regression: ``label = 3 * tanh(w . s + speaker_shift)``, in MOSI's [-3, 3] range.

All generating parameters (mixing matrices, label weights, speaker effects) and every utterance's
latents are returned in ``Dataset.meta["generator"]`` so tests can check what a model or estimator
recovers against the truth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np

from .types import Dataset, Dialogue, Utterance

MODALITIES = ("text", "audio", "visual")


@dataclass
class SyntheticSpec:
    seed: int = 0
    dialogues: dict[str, int] = field(default_factory=lambda: {"train": 60, "valid": 15, "test": 15})
    min_utterances: int = 4
    max_utterances: int = 12
    speakers_per_dialogue: int = 2
    speaker_pool: int = 6  # global identities, so "global speaker" options have something to learn
    shared_dim: int = 4
    private_dim: int = 4
    dims: dict[str, int] = field(default_factory=lambda: {"text": 32, "audio": 16, "visual": 24})
    noise_std: float = 0.5
    context_correlation: float = 0.6  # AR(1) coefficient of the shared latent within a dialogue
    speaker_effect: float = 0.5
    num_classes: int = 4
    task: str = "classification"
    frames: int = 0  # > 0 gives (frames, dim) sequences for audio and visual
    text_frames: int = 0  # > 0 gives a text sequence too

    @classmethod
    def from_options(cls, options: dict | None) -> SyntheticSpec:
        options = dict(options or {})
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in options.items() if k in known})


def make_synthetic(options: dict | None = None) -> Dataset:
    spec = SyntheticSpec.from_options(options)
    rng = np.random.default_rng(spec.seed)
    mixing_shared = {
        m: rng.normal(size=(spec.dims[m], spec.shared_dim)) / np.sqrt(spec.shared_dim) for m in MODALITIES
    }
    mixing_private = {
        m: rng.normal(size=(spec.dims[m], spec.private_dim)) / np.sqrt(spec.private_dim) for m in MODALITIES
    }
    label_weights = rng.normal(size=(spec.num_classes, spec.shared_dim))
    regression_weights = rng.normal(size=spec.shared_dim) / np.sqrt(spec.shared_dim)
    speaker_names = [f"speaker{i}" for i in range(spec.speaker_pool)]
    speaker_bias = rng.normal(scale=spec.speaker_effect, size=(spec.speaker_pool, spec.num_classes))
    speaker_shift = rng.normal(scale=spec.speaker_effect, size=spec.speaker_pool)

    def observe(modality: str, shared: np.ndarray, private: np.ndarray, frames: int) -> np.ndarray:
        clean = mixing_shared[modality] @ shared + mixing_private[modality] @ private
        if frames <= 0:
            return (clean + spec.noise_std * rng.normal(size=clean.shape)).astype(np.float32)
        # Frames wobble around the utterance's value so sequence encoders have something to pool.
        wobble = np.sin(np.linspace(0, np.pi, frames))[:, None] * 0.3
        sequence = clean[None, :] * (1 + wobble) + spec.noise_std * rng.normal(size=(frames, clean.size))
        return sequence.astype(np.float32)

    latents: dict[str, dict] = {}
    splits: dict[str, list[Dialogue]] = {}
    for split, count in spec.dialogues.items():
        dialogues = []
        for index in range(count):
            dialogue_id = f"{split}_{index:04d}"
            cast = rng.choice(spec.speaker_pool, size=spec.speakers_per_dialogue, replace=False)
            length = int(rng.integers(spec.min_utterances, spec.max_utterances + 1))
            shared = rng.normal(size=spec.shared_dim)
            utterances = []
            for position in range(length):
                if position:
                    innovation = rng.normal(size=spec.shared_dim) * np.sqrt(1 - spec.context_correlation**2)
                    shared = spec.context_correlation * shared + innovation
                speaker = int(cast[position % len(cast)] if rng.random() < 0.8 else rng.choice(cast))
                private = {m: rng.normal(size=spec.private_dim) for m in MODALITIES}
                features = {
                    m: observe(m, shared, private[m], spec.text_frames if m == "text" else spec.frames)
                    for m in MODALITIES
                }
                if spec.task == "regression":
                    label: int | float = float(
                        3 * np.tanh(regression_weights @ shared + speaker_shift[speaker])
                    )
                else:
                    label = int(np.argmax(label_weights @ shared + speaker_bias[speaker]))
                uid = f"{dialogue_id}_{position:02d}"
                latents[uid] = {"shared": shared.copy(), "private": private}
                utterances.append(Utterance(features, speaker_names[speaker], label, None, uid))
            dialogues.append(Dialogue(dialogue_id, utterances))
        splits[split] = dialogues

    classes = [f"class{k}" for k in range(spec.num_classes)] if spec.task == "classification" else None
    generator = {
        "spec": asdict(spec),
        "mixing_shared": mixing_shared,
        "mixing_private": mixing_private,
        "label_weights": label_weights,
        "regression_weights": regression_weights,
        "speaker_bias": speaker_bias,
        "speaker_shift": speaker_shift,
        "latents": latents,
    }
    return Dataset(
        "synthetic", "synthetic", spec.task, list(MODALITIES), splits, classes, {"generator": generator}
    )


def true_mutual_information(dataset: Dataset, first: str, second: str) -> float:
    """The exact I(x_first; x_second) in nats of utterance-level synthetic features (``frames=0``).

    Each utterance's latents are standard normal (the AR(1) drift keeps unit variance), so the two
    observations are jointly Gaussian: cov(x_m) = A_m A_m' + B_m B_m' + noise_std^2 I and
    cov(x_first, x_second) = A_first A_second'. I = (log det S_1 + log det S_2 - log det S_joint) / 2.
    """
    generator = dataset.meta["generator"]
    shared, private = generator["mixing_shared"], generator["mixing_private"]
    noise = generator["spec"]["noise_std"] ** 2

    def covariance(m: str) -> np.ndarray:
        return shared[m] @ shared[m].T + private[m] @ private[m].T + noise * np.eye(len(shared[m]))

    cross = shared[first] @ shared[second].T
    joint = np.block([[covariance(first), cross], [cross.T, covariance(second)]])
    log_det = [np.linalg.slogdet(matrix)[1] for matrix in (covariance(first), covariance(second), joint)]
    return float((log_det[0] + log_det[1] - log_det[2]) / 2)
