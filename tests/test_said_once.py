"""What is skipped is said once, in plain words: MMMIE without a modality pair, videos with few faces."""

import numpy as np
import pytest

from infofusion.config import resolve_config
from infofusion.data.synthetic import make_synthetic
from infofusion.extract.pipeline import FEW_FACES, _check_faces
from infofusion.models import DataInfo, build_model


def test_mmmie_on_text_only_data_says_it_drops_mine():
    data = make_synthetic({"dialogues": {"train": 2, "valid": 1, "test": 1}}).select_modalities(["text"])
    with pytest.warns(UserWarning, match=r"one modality \(text\), so there is no pair for MINE") as caught:
        model = build_model("mmmie", DataInfo.from_dataset(data), resolve_config("mmmie", None, []))
    assert not model.use_mine and len(caught) == 1


def test_extraction_warns_once_when_few_frames_show_a_face():
    problems = []
    media = [{"visual": np.array([share, 0.5], dtype=np.float32)} for share in (0.0, 0.0, 0.1, 0.3)]
    _check_faces(media, "manifest.csv", problems)
    assert len(problems) == 1 and problems[0].kind == "few-faces" and problems[0].field == "video"
    assert (
        "a face was found in only 10% of the sampled frames (2 of 4 videos with no face"
        in problems[0].message
    )
    problems.clear()
    _check_faces([{"visual": np.array([FEW_FACES + 0.1])}], "manifest.csv", problems)
    assert problems == []
