"""The one progress helper (infofusion.progress): periodic plain lines off a terminal, a bar on one."""

import io

from infofusion.progress import StepProgress, track


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_periodic_lines_with_counts_and_eta_then_a_closing_line():
    clock, stream = FakeClock(), io.StringIO()
    with StepProgress(100, "encoding transcripts", "sentences", stream, 2.0, 10.0, clock=clock) as bar:
        for _ in range(100):
            clock.now += 1.0  # one second per sentence: 100 s in all
            bar.advance()
    lines = stream.getvalue().splitlines()
    # One line per 10 s while running (the first after 10 s), and one at the end.
    assert lines[0] == "encoding transcripts: 10/100 sentences (10%), 10s elapsed, ~1m30s left"
    assert len(lines) == 10
    assert lines[1] == "encoding transcripts: 20/100 sentences (20%), 20s elapsed, ~1m20s left"
    assert lines[-1] == "encoding transcripts: 100 sentences done in 1m40s"
    assert "\r" not in stream.getvalue()


def test_a_quick_step_prints_nothing():
    stream = io.StringIO()
    assert list(track(range(5), "quick", stream=stream)) == [0, 1, 2, 3, 4]
    assert stream.getvalue() == ""


def test_a_terminal_gets_one_redrawn_bar():
    clock, stream = FakeClock(), FakeTerminal()
    items = []
    for item in track(range(10), "epoch 1/3", unit="batches", stream=stream, delay=0.0, clock=clock):
        clock.now += 1.0
        items.append(item)
    text = stream.getvalue()
    assert items == list(range(10))
    assert text.count("\r") == 10 and text.endswith("\n")
    assert "[########################] epoch 1/3: 10/10 batches (100%), 10s elapsed, ~0s left" in text


def test_trainer_epochs_report_batches_on_a_log(tmp_path, capsys, monkeypatch):
    """A long epoch of a real training run writes periodic batch lines to stderr (not a log's stdout)."""
    import infofusion.progress as progress_module
    from infofusion.config import resolve_config
    from infofusion.training.build import train

    monkeypatch.setattr(progress_module, "QUIET_SECONDS", 0.0)
    monkeypatch.setattr(progress_module, "LINE_SECONDS", 0.0)
    config = resolve_config("late_fusion", None, ["train.epochs=1", "train.threads=1"])
    train(config, tmp_path / "run")
    err = capsys.readouterr().err
    assert "epoch 1/1: 1/" in err and " batches (" in err and "left" in err
    assert "epoch 1/1: " in err.splitlines()[-1] and " batches done in " in err.splitlines()[-1]
