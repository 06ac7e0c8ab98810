"""benchmarks/text_encoding_speed.py on a tiny BERT and MELD-layout CSVs: every path gets its row, the
fp32 row is its own reference, and the reduced-precision rows report how far they moved."""

import sys

from benchmark_scripts import load_benchmark
from data_factories import write_dialogue_csvs

text_encoding_speed = load_benchmark("text_encoding_speed")


def test_it_prints_a_row_per_path_with_cosines_and_counts(tmp_path, tiny_encoder, monkeypatch, capsys):
    write_dialogue_csvs(tmp_path, "meld", dialogues={"train": 1, "valid": 3, "test": 1}, utterances=4)
    arguments = ["--data", str(tmp_path), "--encoders", tiny_encoder, "--threads", "1", "--utterances", "10"]
    monkeypatch.setattr(sys, "argv", ["text_encoding_speed.py", *arguments])
    assert text_encoding_speed.main() == 0
    rows = {
        cells[3]: cells
        for line in capsys.readouterr().out.splitlines()
        if line.startswith(f"| {tiny_encoder} ")
        for cells in [[cell.strip() for cell in line.split("|")]]
    }
    paths = ["sentence-transformers", "ours fp32", "ours bf16", "ours bf16-feedforward", "int8 (rejected)"]
    assert list(rows) == paths
    assert rows["sentence-transformers"][5] == "1.00" and rows["sentence-transformers"][6] == "–"
    assert rows["ours fp32"][6] == "1.0000" and rows["ours fp32"][7] == "0"
    for path in ("ours bf16", "ours bf16-feedforward"):
        assert float(rows[path][6]) >= 0.99 and rows[path][7] == "0"
        assert float(rows[path][4]) > 0  # windows per second
