"""The README's "Your own dialogues in one minute", run as written: the files its shell block writes, the
commands it shows, and what it says they print."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from infofusion import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def quickstart() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Your own dialogues in one minute")
    return text[start : text.index("\n## ", start + 1)]


def shell_blocks(section: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)


def run_block(block: str, folder: Path, capsys) -> list[str]:
    """Each ``cat > FILE <<'EOF'`` writes FILE, ``cp``/``mkdir`` copy and make, each ``infofusion``
    command runs in-process (exit 0 expected); returns what the commands printed, one entry each."""
    printed = []
    lines = iter(block.splitlines())
    for line in lines:
        command = line.split("#", 1)[0].strip()
        if not command:
            continue
        words = shlex.split(command.replace("<<'EOF'", ""))
        if words[0] == "cat":
            content = []
            for body in lines:
                if body == "EOF":
                    break
                content.append(body)
            (folder / words[-1]).write_text("\n".join(content) + "\n", encoding="utf-8")
        elif words[0] == "mkdir":
            (folder / words[-1]).mkdir(parents=True, exist_ok=True)
        elif words[0] == "cp":
            (folder / words[2]).write_bytes((folder / words[1]).read_bytes())
        else:
            assert words[0] == ".venv/bin/infofusion", line
            capsys.readouterr()
            assert cli.main(words[1:]) == 0, line
            printed.append(capsys.readouterr().out)
    return printed


def test_the_readme_quickstart_runs_as_written_and_prints_what_it_shows(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INFOFUSION_CACHE", str(tmp_path / "cache"))
    # The README shows a CPU with native bf16 (`read in bf16-feedforward (auto)`), this project's machine.
    monkeypatch.setattr("infofusion.text.frontend.native_bf16", lambda: True)
    section = quickstart()
    train_block, predict_block = shell_blocks(section)
    (trained,) = run_block(train_block, tmp_path, capsys)
    header = (tmp_path / "mydata" / "train.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == "Dialogue_ID,Utterance_ID,Speaker,Utterance,Emotion"
    # The first line the README shows is the first line the run prints (its duration aside).
    shown_first = re.search(r"```text\n(.*?)\n", section).group(1)
    assert trained.splitlines()[0] == shown_first
    assert "| split | acc | weighted_f1 | macro_f1 |" in trained and "run folder: runs/mine" in trained

    run_block(predict_block, tmp_path, capsys)
    written = json.loads((tmp_path / "predictions.json").read_text(encoding="utf-8"))
    (dialogue,) = written["dialogues"]
    shown = json.loads(re.search(r"```json\n(.*?)```", section, flags=re.DOTALL).group(1))
    first = dialogue["utterances"][0]
    assert set(first) == set(shown) and first["uid"] == shown["uid"] and first["text"] == shown["text"]
    assert set(first["probabilities"]) == set(shown["probabilities"]) == set(written["classes"])
    assert first["probabilities"][first["label"]] == pytest.approx(first["probability"])
    assert (tmp_path / "runs" / "mine" / "curves.png").is_file()

    # The Python lines the README shows, on the same run.
    python = re.findall(r"```python\n(.*?)```", section + README.read_text(encoding="utf-8"), flags=re.DOTALL)
    (four_lines,) = [block for block in python if "Predictor.from_run" in block]
    exec(compile(four_lines, "README.md", "exec"), {})
    assert "('Cleo', " in capsys.readouterr().out
