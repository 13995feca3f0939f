"""The readers on the real data in ../shared/data (skipped when it is absent)."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.data.summary import summarize


def test_msr_action3d_real(shared_data) -> None:
    path = shared_data / "msr-action3d"
    if not path.is_dir():
        pytest.skip(f"no {path}")
    info = summarize("skeleton", "msr-action3d", str(path))
    assert info["inputs"] == 292 and info["usable"] == 291
    assert [s["item"] for s in info["skipped"]] == ["a13_s09_e02"] and "zero" in info["skipped"][0]["reason"]
    assert info["num_classes"] == 20 and info["layout"] == "kinect20"
    assert info["groups"]["subject"]["distinct"] == 5
    assert np.isfinite([info["modalities"]["joints"]["min"], info["modalities"]["joints"]["max"]]).all()


def test_fer2013_folder_real(shared_data, tmp_path, monkeypatch) -> None:
    path = shared_data / "fer2013" / "train"
    if not path.is_dir():
        pytest.skip(f"no {path}")
    info = summarize("face", "fer2013", str(path))
    assert info["usable"] == 28709 and info["num_classes"] == 7 and info["skipped_count"] == 0
    counts = {c: sum(info["counts"][s][c] for s in info["counts"]) for c in info["classes"]}
    assert counts == {"angry": 3995, "disgust": 436, "fear": 4097, "happy": 7215, "sad": 4830, "surprise": 3171,
                      "neutral": 4965}
    assert info["modalities"]["image"]["shape"] == [28709, 1, 48, 48]
