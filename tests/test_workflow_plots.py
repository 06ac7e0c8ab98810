"""``infofusion plot``: real PNG files, and figures with the expected axes, titles and legends."""

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


def test_curves_figure_axes(runs):
    figure = plots.curves_figure(runs / "mmim")
    titles = axis_texts(figure)
    assert titles[0] == ("Loss", "epoch", "mean loss per utterance batch")
    assert titles[1][0] == "Auxiliary training terms"  # MMIM's CPC and MMILB terms
    assert titles[-1] == ("Validation weighted F1", "epoch", "weighted F1")
    losses = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert "validation task loss" in losses and "training total loss" in losses
    legend = [text.get_text() for text in figure.axes[1].get_legend().get_texts()]
    # Words, not internal names.
    assert {"CPC term (fusion, modality)", "MMILB likelihood term", "MMILB stage (likelihood fit)"} <= set(
        legend
    )
    assert not {"cpc", "stage_mmilb", "likelihood"} & set(legend)
    assert figure.get_suptitle() == "Training curves: MMIM on synthetic"
    assert len(plots.curves_figure(runs / "plain").axes) == 2  # no auxiliary terms, no empty panel


def test_mi_figure_one_panel_per_estimator(runs):
    figure = plots.mi_figure(runs / "mmim")
    assert [axis.get_title() for axis in figure.axes] == ["CPC", "MMILB log-likelihood"]
    assert [axis.get_ylabel() for axis in figure.axes] == [
        "MI estimate (nats)",
        "log-likelihood per utterance",
    ]
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == ["text", "audio", "visual"]
    pairs = [t.get_text() for t in figure.axes[1].get_legend().get_texts()]
    assert pairs == ["text & audio", "text & visual"]
    assert plots.estimator_and_pair("mine/text-audio") == ("mine", "text-audio")
    assert plots.estimator_and_pair("club/text") == ("club", "text")


def test_mi_of_a_run_without_estimates_is_a_clear_error(runs, capsys):
    code, _, err = run_cli(capsys, "plot", str(runs / "plain"), "mi")
    assert code == 2 and "no MI estimates" in err and len(err.strip().splitlines()) == 1


def test_confusion_figure_names_classes(runs):
    figure = plots.confusion_figure(runs / "mmim")
    axis = figure.axes[0]
    assert axis.get_xlabel() == "predicted class" and axis.get_ylabel() == "true class"
    assert "test split" in axis.get_title() and "row-normalised" in axis.get_title()
    assert [t.get_text() for t in axis.get_xticklabels()] == ["class0", "class1", "class2", "class3"]
    assert figure.axes[1].get_ylabel() == "fraction of the true class"  # the colour bar
    assert len(axis.texts) == 16  # every cell annotated with its count
    assert "valid split" in plots.confusion_figure(runs / "mmim", "valid").axes[0].get_title()
    with pytest.raises(plots.DataError, match="regression"):
        plots.confusion_figure(runs / "regression")


def test_tsne_figure_of_fused_representations(runs):
    figure = plots.tsne_figure(runs / "plain", None, "valid")
    axis = figure.axes[0]
    assert (axis.get_xlabel(), axis.get_ylabel()) == ("t-SNE 1", "t-SNE 2")
    assert "fused representation\nvalid split" in axis.get_title()
    assert axis.get_legend().get_title().get_text() == "true class"
    regression = plots.tsne_figure(runs / "regression", None, "test")
    assert regression.axes[1].get_ylabel() == "true label"  # a colour bar instead of a class legend
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
    assert term_words("msi") == "CLUB (modality-specific information)"
