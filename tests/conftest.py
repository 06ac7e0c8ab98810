"""Fixtures shared by the text tests: a tiny BERT saved as a model folder, and a small folder of dialogue
CSVs (a test module may define its own of either name to use another size)."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_factories import write_dialogue_csvs
from text_fixtures import save_tiny_bert


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> str:
    return str(save_tiny_bert(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture(scope="module")
def dialogue_csvs(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("csv")
    write_dialogue_csvs(directory, "plain", dialogues={"train": 6, "valid": 2, "test": 2}, utterances=5)
    return directory
