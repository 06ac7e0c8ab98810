"""``infofusion demo``: the seed models beside a baseline, one table with the MI truth, figures written."""

from infofusion.cli import main


def test_demo_prints_one_table_with_the_true_mi_and_says_where_it_wrote(tmp_path, capsys):
    assert main(["demo", "--epochs", "1", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    assert table[0] == (
        "| model | valid acc | valid weighted F1 | test acc | test weighted F1 | best epoch | seconds |"
    )
    models = [row.split(" | ")[0].lstrip("| ") for row in table[1:5]]
    assert models == ["late fusion (baseline)", "MMIM", "MMMIE", "MInD"]
    assert all(row.split(" | ")[5] == "1" for row in table[1:5])  # best epoch counted from 1
    mi_rows = {row.split(" | ")[0].lstrip("| "): row.split(" | ")[1:] for row in table[6:]}
    assert set(mi_rows) == {"text & audio", "text & visual", "audio & visual"}
    for truth, estimate in (cells[:2] for cells in mi_rows.values()):
        assert 3.0 < float(truth) < 6.0 and float(estimate.rstrip(" |")) < float(truth)
    assert f"Runs (config, checkpoints, history, metrics) in {tmp_path}/<model>/" in out
    for model in ("late_fusion", "mmim", "mmmie", "mind"):
        assert f"{tmp_path}/{model}/curves.png" in out and (tmp_path / model / "curves.svg").exists()
    assert f"{tmp_path}/mind/mi.png" in out and f"{tmp_path}/mind/tsne_test.png" in out
