"""infofusion: information-theoretic multimodal sentiment and emotion analysis."""

__version__ = "0.1.0"
