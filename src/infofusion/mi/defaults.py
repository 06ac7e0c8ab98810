"""Fitting defaults, kept free of torch so the CLI parser can show them without importing it.

Chosen from measurements (docs/mi.md, "Choosing the defaults"): 10,000 samples take well under a minute
on one CPU thread.
"""

DEFAULT_ESTIMATOR = "infonce"
DEFAULT_PREPROCESSING = "copula"
DEFAULT_STEPS = 1500
DEFAULT_BATCH_SIZE = 128
DEFAULT_LEARNING_RATE = 1e-3
# The names of infofusion.mi.preprocessing.PREPROCESSING, in its order (tests/test_cli_help.py checks).
PREPROCESSING_NAMES = ("copula", "standardise", "none")
