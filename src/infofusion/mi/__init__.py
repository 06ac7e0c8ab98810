"""Mutual-information estimators (being written)."""
