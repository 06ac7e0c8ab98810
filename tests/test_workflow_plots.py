"""``infofusion plot``: real PNG files, and figures with the expected axes, titles and legends, that a
reviewer would accept: no line hidden under an identical one, one unit per axis, no zoom onto noise,
estimators naming both variables, negative CLUB values annotated, confusion rows of 100 %, t-SNE without
ticks; and every figure file written through the atomic writer (a planted symlink is never followed)."""

import json
import shutil

import numpy as np
import pytest

from infofusion.cli import main
from infofusion.workflow import plots
from test_cli import SMALL, run_cli

FAST = [*SMALL, "--set", "train.threads=1"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An MMIM run (it logs MI estimates), a plain late-fusion run and a regression run."""
    root = tmp_path_factory.mktemp("plot_runs")
    trainings = {
        "mmim": ["--model", "mmim", "--epochs", "2"],
        "plain": ["--model", "late_fusion", "--epochs", "1"],
        "regression": ["--model", "late_fusion", "--epochs", "1", "--set", "data.task=regression"],
    }
    for name, arguments in trainings.items():
        assert main(["train", *arguments, "--output", str(root / name), *FAST]) == 0
    return root


def axis_texts(figure):
    return [(axis.get_title(), axis.get_xlabel(), axis.get_ylabel()) for axis in figure.axes]


def assert_png(path):
    assert path.exists() and path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000


@pytest.mark.parametrize("kind", ["curves", "mi", "confusion", "tsne"])
def test_every_kind_writes_a_png(runs, capsys, kind):
    code, out, _ = run_cli(capsys, "plot", str(runs / "mmim"), kind)
    assert code == 0
    assert_png(runs / "mmim" / out.strip().rsplit("/", 1)[-1])
    target = runs / f"{kind}_elsewhere.png"
    code, _, _ = run_cli(
        capsys, "plot", str(runs / "mmim"), kind, "--output", str(target), "--split", "valid"
    )
    assert code == 0
    assert_png(target)


def legend_texts(axis):
    # Wrapped labels read back as one line.
    return [text.get_text().replace("\n", " ") for text in axis.get_legend().get_texts()]


def test_curves_figure_axes(runs):
    figure = plots.curves_figure(runs / "mmim")
    titles = axis_texts(figure)
    assert titles[0] == ("Loss", "epoch", "mean loss per utterance batch")
    # MMIM's CPC and MMILB terms in nats, apart from the MMILB stage's own loss: one unit per panel.
    assert [t[0] for t in titles[1:3]] == ["Terms in nats", "Estimators' own training losses"]
    assert titles[-1] == ("Validation weighted F1", "epoch", "weighted F1")
    losses = legend_texts(figure.axes[0])
    assert "validation task loss" in losses and "training total loss" in losses
    nats, stage = legend_texts(figure.axes[1]), legend_texts(figure.axes[2])
    # Words, not internal names; CPC names both of its variables.
    assert {"CPC term: minus InfoNCE of I(fusion; modality)", "MMILB likelihood term"} <= set(nats)
    assert stage == ["MMILB stage (likelihood fit)"]
    assert not {"cpc", "stage_mmilb", "likelihood"} & set(nats + stage)
    assert all(axis.get_yscale() == "linear" for axis in figure.axes)  # no symlog mixture of units
    assert figure.get_suptitle() == "Training curves: MMIM on synthetic"
    assert len(plots.curves_figure(runs / "plain").axes) == 2  # no auxiliary terms, no empty panel


def test_mi_figure_one_panel_per_estimator(runs):
    figure = plots.mi_figure(runs / "mmim")
    # The kind of bound in the title; a log-likelihood is no bound of its own.
    assert [axis.get_title() for axis in figure.axes] == ["CPC (lower bound)", "MMILB log-likelihood"]
    assert [axis.get_ylabel() for axis in figure.axes] == [
        "MI estimate (nats)",
        "log-likelihood per utterance",
    ]
    # Both variables of every estimate: the fusion vector and the modality, the anchor and the other.
    cpc = legend_texts(figure.axes[0])
    assert cpc == ["I(fusion; text)", "I(fusion; audio)", "I(fusion; visual)"]
    assert legend_texts(figure.axes[1]) == ["log q(audio | text)", "log q(visual | text)"]
    assert plots.variables_words("club", "text") == "I(h_text; f_text)"
    assert plots.variables_words("mine", "text-audio") == "I(f_text; f_audio)"
    assert plots.estimator_and_pair("mine/text-audio") == ("mine", "text-audio")
    assert plots.estimator_and_pair("club/text") == ("club", "text")


def test_mi_of_a_run_without_estimates_is_a_clear_error(runs, capsys):
    code, _, err = run_cli(capsys, "plot", str(runs / "plain"), "mi")
    assert code == 2 and "no MI estimates" in err and len(err.strip().splitlines()) == 1


def test_confusion_figure_names_classes(runs):
    figure = plots.confusion_figure(runs / "mmim")
    axis = figure.axes[0]
    assert axis.get_xlabel() == "predicted class" and axis.get_ylabel() == "true class (utterances)"
    assert "test split" in axis.get_title() and "row-normalised" in axis.get_title()
    assert [t.get_text() for t in axis.get_xticklabels()] == ["class0", "class1", "class2", "class3"]
    assert figure.axes[1].get_ylabel() == "fraction of the true class"  # the colour bar
    assert len(axis.texts) == 16  # every cell annotated with its count
    percentages = np.array([int(t.get_text().split("\n")[1].rstrip("%")) for t in axis.texts]).reshape(4, 4)
    counts = np.array([int(t.get_text().split("\n")[0]) for t in axis.texts]).reshape(4, 4)
    assert all(row.sum() == 100 for row, total in zip(percentages, counts.sum(axis=1), strict=True) if total)
    assert "valid split" in plots.confusion_figure(runs / "mmim", "valid").axes[0].get_title()
    with pytest.raises(plots.DataError, match="regression"):
        plots.confusion_figure(runs / "regression")


def test_tsne_figure_of_fused_representations(runs):
    figure = plots.tsne_figure(runs / "plain", None, "valid")
    axis = figure.axes[0]
    assert (axis.get_xlabel(), axis.get_ylabel()) == ("t-SNE 1", "t-SNE 2")
    # t-SNE coordinates mean nothing on their own: no numbers on the axes.
    assert len(axis.get_xticks()) == 0 and len(axis.get_yticks()) == 0
    assert "fused representation\nvalid split" in axis.get_title()
    assert axis.get_legend().get_title().get_text() == "true class (utterances)"
    # One encoding: a colour per class (one marker shape), translucent points, solid legend dots.
    colours = [tuple(c.get_facecolor()[0][:3]) for c in axis.collections]
    assert len(set(colours)) == len(colours) and all(c.get_alpha() < 1 for c in axis.collections)
    assert all(handle.get_alpha() == 1.0 for handle in axis.get_legend().legend_handles)
    regression = plots.tsne_figure(runs / "regression", None, "test")
    assert regression.axes[1].get_ylabel() == "true label"  # a colour bar instead of a class legend
    assert len(regression.axes[0].get_xticks()) == 0 and len(regression.axes[0].get_yticks()) == 0
    with pytest.raises(plots.DataError, match="nope"):
        plots.tsne_figure(runs / "plain", None, "nope")


def test_tsne_of_a_model_without_component_codes_is_the_fused_one(runs):
    # The model declares its capabilities (has_component_codes); nothing is probed or imported by name.
    assert not plots.has_component_codes(runs / "plain")
    output = plots.plot(runs / "plain", "tsne", None, "valid", runs / "fallback.png")
    assert_png(output)


def test_plot_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    code, _, err = run_cli(capsys, "plot", str(tmp_path), "curves")
    assert code == 2 and "not a run folder" in err


def test_saved_figures_have_svg_and_pdf_beside_with_readable_text(runs, capsys):
    code = main(["plot", str(runs / "mmim"), "curves", "--style", "paper"])
    png = runs / "mmim" / "curves.png"
    assert code == 0 and capsys.readouterr().out.strip() == str(png)
    svg = png.with_suffix(".svg").read_text(encoding="utf-8")
    assert png.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
    # Text stays text in the SVG: the title names the data set, never a path; legends are words.
    assert "Training curves: MMIM on synthetic" in svg and "validation task loss" in svg
    assert "stage_mmilb" not in svg and "/" not in svg.split("Training curves:")[1].split("<")[0]
    assert "#0072b2" in svg.lower()  # the colour-blind-safe palette (Okabe-Ito blue)


def test_paper_style_fits_a_two_column_page(runs):
    with plots.figure_style("paper"):
        figure = plots.curves_figure(runs / "mmim")
    width, _ = figure.get_size_inches()
    assert width <= 7.0 and figure.axes[0].title.get_fontsize() == 9.0


def test_class_names_come_from_the_run_and_hsic_is_not_in_nats():
    from infofusion.workflow.figure_style import ESTIMATE_UNITS, term_words

    assert "nats" not in ESTIMATE_UNITS["hsic"] and "nats" not in ESTIMATE_UNITS["likelihood"]
    assert term_words("np") == "noise predicts the label (reversed)"
    assert term_words("cyr") == "cyclic reconstruction (reversed)"
    assert term_words("stage_estimators") == "MINE and CLUB stage"
    assert term_words("msi") == "CLUB in the loss: Σ I(h_m; f_m)"


# -- what a reviewer checks ------------------------------------------------------------------------------
def fake_run(runs, tmp_path, name, train, diagnostics=None, scores=None):
    """A copy of the plain run whose history.jsonl holds the given per-epoch terms."""
    run = tmp_path / name
    shutil.copytree(runs / "plain", run, ignore=shutil.ignore_patterns("*.png", "*.svg", "*.pdf", ".lock"))
    epochs = len(next(iter(train.values())))
    scores = scores or [0.8 + 0.001 * epoch for epoch in range(epochs)]
    lines = []
    for epoch in range(epochs):
        record = {
            "epoch": epoch,
            "seconds": 1.0,
            "train": {key: values[epoch] for key, values in train.items()},
            "valid": {"task_loss": 1.0 - 0.1 * epoch},
            "select": {"weighted_f1": scores[epoch], "best": max(scores[: epoch + 1]), "improved": True},
            "diagnostics": {key: values[epoch] for key, values in (diagnostics or {}).items()},
        }
        lines.append(json.dumps(record) + "\n")
    (run / "history.jsonl").write_text("".join(lines), encoding="utf-8")
    return run


def assert_no_hidden_lines(figure):
    """No two lines of a panel draw the same points while the legend lists both."""
    for axis in figure.axes:
        lines = [line for line in axis.get_lines() if not line.get_label().startswith("_")]
        for index, first in enumerate(lines):
            for second in lines[index + 1 :]:
                same_x = list(first.get_xdata()) == list(second.get_xdata())
                assert not (same_x and np.allclose(first.get_ydata(), second.get_ydata())), (
                    axis.get_title(),
                    first.get_label(),
                    second.get_label(),
                )
        labels = [text.get_text() for text in axis.get_legend().get_texts()] if axis.get_legend() else []
        assert len(labels) == len(set(labels))


def test_identical_series_are_drawn_once_and_the_legend_says_so(runs, tmp_path):
    # Text-only data: the total loss is the task loss; an unfloored CLUB term equals its estimate.
    task = [1.3, 1.2, 1.1]
    run = fake_run(
        runs,
        tmp_path,
        "text_only",
        {"loss": task, "task": task, "msi": [0.5, -0.2, 0.4], "msi_estimate": [0.5, -0.2, 0.4]},
    )
    figure = plots.curves_figure(run)
    assert_no_hidden_lines(figure)
    assert legend_texts(figure.axes[0]) == [
        "training total loss = training task loss",
        "validation task loss",
    ]
    # Merged once, and the negative CLUB value is annotated once.
    assert legend_texts(figure.axes[1]) == [
        "CLUB in the loss: Σ I(h_m; f_m) = CLUB estimate, unfloored (below 0: not an upper bound)"
    ]
    # A term that weighs 2e-4 of the loss cannot be seen apart from it: drawn once, marked ≈.
    close = fake_run(runs, tmp_path, "close", {"loss": [t + 2e-4 for t in task], "task": task})
    assert legend_texts(plots.curves_figure(close).axes[0])[0] == "training total loss ≈ training task loss"
    different = fake_run(runs, tmp_path, "different", {"loss": [t + 0.3 for t in task], "task": task})
    assert len(plots.curves_figure(different).axes[0].get_lines()) == 3


def test_every_real_figure_has_no_hidden_line(runs):
    for figure in (plots.curves_figure(runs / "mmim"), plots.mi_figure(runs / "mmim")):
        assert_no_hidden_lines(figure)


def test_terms_of_different_units_never_share_an_axis(runs, tmp_path):
    three = [1.0, 0.9, 0.8]
    train = {
        "loss": three,
        "task": [0.5, 0.4, 0.3],
        "stage_estimators": [310.0, 120.0, 160.0],  # the estimators' own loss, ~1e2
        "mi": [-0.5, -2.5, -5.0],  # nats
        "msi": [0.1, 4.0, 6.0],
        "cons": [130.0, 125.0, 120.0],  # Barlow Twins: no unit
        "recon": [0.15, 0.1, 0.06],  # squared error
    }
    figure = plots.curves_figure(fake_run(runs, tmp_path, "units", train))
    titles = [axis.get_title() for axis in figure.axes]
    assert titles == [
        "Loss",
        "Terms in nats",
        "Estimators' own training losses",
        "Reconstruction terms",
        "Consistency term",
        "Validation weighted F1",
    ]
    units = {
        "mi": "nats",
        "msi": "nats",
        "stage_estimators": "stage",
        "recon": "squared",
        "cons": "correlation",
    }
    for axis in figure.axes[1:-1]:
        words = set(legend_texts(axis))
        assert len({unit for name, unit in units.items() if plots.term_words(name) in words}) == 1
    assert all(axis.get_yscale() == "linear" for axis in figure.axes)


def test_a_tiny_change_does_not_fill_the_panel(runs, tmp_path):
    # Weighted F1 moving by 0.004 over the run: the axis spans at least 0.1, inside [0, 1].
    run = fake_run(runs, tmp_path, "flat", {"loss": [1.0, 0.99, 0.98]}, scores=[0.996, 0.998, 1.0])
    low, high = plots.curves_figure(run).axes[-1].get_ylim()
    assert high - low >= 0.1 and high <= 1.0 + 0.01 and low >= 0.89
    loss_low, loss_high = plots.curves_figure(run).axes[0].get_ylim()
    assert loss_high - loss_low >= 0.1 * 1.0  # a loss panel spans at least 10 % of its largest value
    wide = fake_run(runs, tmp_path, "wide", {"loss": [1.0, 0.5, 0.1]}, scores=[0.2, 0.5, 0.9])
    low, high = plots.curves_figure(wide).axes[-1].get_ylim()
    assert low < 0.2 and high > 0.9 and high - low < 0.9  # a real change is left to matplotlib


def test_negative_club_upper_bounds_are_annotated(runs, tmp_path):
    diagnostics = {
        "mine/text-audio": [0.4, 1.0, 1.5],
        "club/text": [0.3, -1.5, 2.0],
        "club/audio": [0.2, 0.4, 0.6],
    }
    run = fake_run(runs, tmp_path, "club", {"loss": [1.0, 0.9, 0.8]}, diagnostics)
    figure = plots.mi_figure(run)
    mine, club = figure.axes
    assert (mine.get_title(), club.get_title()) == ("MINE (lower bound)", "CLUB (upper bound)")
    assert legend_texts(mine) == ["I(f_text; f_audio)"]
    assert legend_texts(club)[:2] == ["I(h_text; f_text)", "I(h_audio; f_audio)"]
    assert any("below 0: not an upper bound" in text for text in legend_texts(club))
    assert not any("below 0" in text for text in legend_texts(mine))  # nothing negative, no note
    assert club.get_ylim()[0] < -1.5  # the negative value stays in view


def test_confusion_rows_sum_to_100_percent():
    # Rounded cell by cell these rows read 99 % and 101 % (three thirds; 62.5 + 12.5 + 12.5 + 12.5).
    counts = np.array([[1, 1, 1, 0], [5, 1, 1, 1], [0, 0, 0, 0], [2, 1, 3, 1]])
    percentages = plots.row_percentages(counts)
    assert percentages[0].tolist() == [34, 33, 33, 0]
    assert percentages[1].sum() == 100 and percentages[3].sum() == 100
    assert percentages[2].tolist() == [0, 0, 0, 0]  # a class with no utterances
    rows = np.random.default_rng(0).integers(0, 50, size=(200, 7))
    sums = plots.row_percentages(rows).sum(axis=1)
    assert set(sums[rows.sum(axis=1) > 0]) == {100}
    # Each cell is within one point of its exact share.
    exact = rows * 100 / np.maximum(rows.sum(axis=1, keepdims=True), 1)
    assert np.abs(plots.row_percentages(rows) - exact).max() < 1


def test_component_codes_figure_is_small_multiples_without_ticks():
    rng = np.random.default_rng(0)
    modalities = ("text", "audio", "visual")
    codes = {f"{c}/{m}": rng.normal(size=(40, 6)) + 3 * i for i, c in enumerate("SPN") for m in modalities}
    labels = rng.integers(0, 3, size=40)
    with plots.figure_style("screen"):
        figure = plots.codes_figure(codes, labels, names_of_classes=["anger", "joy", "neutral"])
    titles = [axis.get_title() for axis in figure.axes]
    assert titles == [
        "shared codes (S)",
        "private codes (P)",
        "noise codes (N)",
        "shared codes (S) by true class",
    ]
    for axis in figure.axes:
        assert len(axis.get_xticks()) == 0 and len(axis.get_yticks()) == 0
    # A panel per component, three colours (the modalities) and the other codes in grey behind them.
    assert legend_texts(figure.axes[0]) == ["text", "audio", "visual", "other codes"]
    assert [t.split(" (")[0] for t in legend_texts(figure.axes[-1])] == ["anger", "joy", "neutral"]


@pytest.mark.parametrize("kind", ["curves", "confusion"])
def test_a_symlink_planted_at_a_figure_name_is_replaced_not_followed(runs, tmp_path, capsys, kind):
    run = tmp_path / "run"
    shutil.copytree(runs / "mmim", run, ignore=shutil.ignore_patterns("*.png", "*.svg", "*.pdf", ".lock"))
    stem = "curves" if kind == "curves" else "confusion_test"
    victims = {}
    for suffix in ("png", "svg", "pdf"):
        victim = tmp_path / f"victim.{suffix}"
        victim.write_text("precious", encoding="utf-8")
        (run / f"{stem}.{suffix}").symlink_to(victim)
        victims[suffix] = victim
    code, out, _ = run_cli(capsys, "plot", str(run), kind)
    assert code == 0 and out.strip() == str(run / f"{stem}.png")
    for suffix, victim in victims.items():
        assert victim.read_text(encoding="utf-8") == "precious"  # the link's target is untouched
        written = run / f"{stem}.{suffix}"
        assert written.is_file() and not written.is_symlink()
    assert_png(run / f"{stem}.png")
    assert not list(run.glob(".*.tmp"))  # no temporary file left behind
