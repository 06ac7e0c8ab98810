"""Fitting defaults, kept free of torch so the CLI parser can show them without importing it.

Chosen so that 10,000 samples take well under a minute on 2 CPU cores (measured in docs/mi.md).
"""

DEFAULT_STEPS = 1500
DEFAULT_BATCH_SIZE = 128
DEFAULT_LEARNING_RATE = 1e-3
