"""The optional parts of infofusion and the one message for a missing one.

The core (train, evaluate, predict, plots, sweeps, the MI library) installs alone; each extra of
``pyproject.toml`` brings the packages of one feature. A feature calls :func:`require_extra` before it
imports them, so a missing package is one line naming the extra to install, never a traceback.
"""

from __future__ import annotations

import importlib.util

from .config import ConfigError

# extra -> the importable modules it provides (as ``import`` spells them).
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "media": ("opensmile", "librosa", "soundfile", "cv2"),
    "serve": ("fastapi", "uvicorn", "fastapi_offline"),
    "export": ("onnx", "onnxruntime", "onnxscript"),
    "ray": ("ray",),
    "loggers": ("tensorboard", "mlflow"),
}


class MissingExtraError(ConfigError):
    """A feature whose optional packages are not installed (the CLI prints it as one line, exit 2)."""


def install_command(extra: str) -> str:
    return f'pip install -e ".[{extra}]"'


def require_extra(extra: str, feature: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise :class:`MissingExtraError` unless ``modules`` (default: all of ``extra``'s) are importable."""
    wanted = modules if modules is not None else EXTRA_MODULES[extra]
    missing = [name for name in wanted if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(
            f"{feature} needs the optional '{extra}' packages ({', '.join(missing)} not installed): "
            f"{install_command(extra)}"
        )
