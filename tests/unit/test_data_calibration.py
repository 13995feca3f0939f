"""Calibration sets: class balance, the artifact, and the checks (edgekd.data.calibration)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekd.data.calibration import balanced_indices, build_calibration, check_calibration, load_calibration
from edgekd.errors import ArtifactError, DataError, UsageError

CLASSES = ["a", "b", "c"]


def test_balanced_indices_fill_from_larger_classes() -> None:
    y = np.array([0] * 50 + [1] * 3 + [2] * 20)
    idx = balanced_indices(y, 30, 3, np.random.default_rng(0))
    counts = np.bincount(y[idx], minlength=3)
    assert len(idx) == 30 and len(set(idx)) == 30
    assert counts[1] == 3 and abs(counts[0] - counts[2]) <= 1  # the small class gives all it has
    assert len(balanced_indices(y, 500, 3, np.random.default_rng(0))) == 73  # never more than exists
    with pytest.raises(UsageError):
        balanced_indices(y, 0, 3, np.random.default_rng(0))


def test_build_and_load_eye_set(tmp_path) -> None:
    out = tmp_path / "calib"
    info = build_calibration("eye", "synthetic", out, n=28, samples=70, subjects=5, size=16, frames=4)
    assert info["samples"] == 28 and set(info["class_counts"].values()) == {4}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "calibration" and manifest["params"]["n"] == 28
    x, y, classes, task = load_calibration(out)
    assert task == "eye" and x["frames"].shape == (28, 4, 1, 16, 16) and x["events"].dtype == np.float32
    assert len(classes) == 7
    # A changed file is detected.
    with open(out / "calibration.npz", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(ArtifactError, match="changed"):
        load_calibration(out)


def test_build_skeleton_set_from_msr_like_files(tmp_path) -> None:
    from tests.unit import data_writers as w

    rng = np.random.default_rng(0)
    for action in (1, 2):
        for subject in (1, 3, 5):
            w.write_msr_file(tmp_path / "msr", action, subject, 1, w.moving_skeleton(rng, 25, 20))
    info = build_calibration("skeleton", "msr-action3d", tmp_path / "out", data=str(tmp_path / "msr"), n=4, split="all")
    assert info["shapes"]["joints"] == [4, 3, 32, 20, 1]
    assert info["required_classes"] == ["high arm wave", "horizontal arm wave"]  # the classes the data holds
    assert len(info["classes_absent_from_data"]) == 18
    assert load_calibration(tmp_path / "out")[0]["joints"].shape[0] == 4
    with pytest.raises(DataError, match="class coverage"):  # one sample cannot cover two classes
        build_calibration("skeleton", "msr-action3d", tmp_path / "out1", data=str(tmp_path / "msr"), n=1, split="all")


def test_checks_catch_bad_sets() -> None:
    good = np.random.default_rng(0).random((6, 1, 8, 8)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    assert check_calibration({"image": good}, y, "face", CLASSES, "t")["class_counts"] == {"a": 2, "b": 2, "c": 2}
    with pytest.raises(DataError, match="expected within"):
        check_calibration({"image": good * 255}, y, "face", CLASSES, "t")
    rgb_last = np.random.default_rng(1).random((6, 8, 8, 3)).astype(np.float32)  # NHWC, 3 channels
    with pytest.raises(DataError, match="square"):
        check_calibration({"image": rgb_last}, y, "face", CLASSES, "t")
    with pytest.raises(DataError, match="channels-last"):
        check_calibration({"image": np.random.default_rng(1).random((6, 3, 8, 8)).astype(np.float32)}, y, "face", CLASSES, "t")
    with pytest.raises(DataError, match="float32"):
        check_calibration({"image": good.astype(np.float64)}, y, "face", CLASSES, "t")
    nan = good.copy()
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        check_calibration({"image": nan}, y, "face", CLASSES, "t")
    with pytest.raises(DataError, match="class coverage"):
        check_calibration({"image": good}, np.array([0, 1, 0, 1, 0, 1]), "face", CLASSES, "t")
    with pytest.raises(DataError, match="axes"):
        check_calibration({"image": good[:, 0]}, y, "face", CLASSES, "t")
    with pytest.raises(DataError, match="not an input"):
        check_calibration({"joints": good}, y, "face", CLASSES, "t")


def test_builtin_set_is_built_once(tmp_path) -> None:
    from edgekd.data.calibration import BUILTIN, builtin_calibration

    first = builtin_calibration("face", tmp_path / "face", samples=210, subjects=6, size=24)
    assert first["samples"] == BUILTIN["face"]["n"] and set(first["class_counts"].values()) == {20}
    again = builtin_calibration("face", tmp_path / "face", samples=210, subjects=6, size=24)
    assert again["reused"] is True and again["samples"] == first["samples"]
    with pytest.raises(UsageError):
        builtin_calibration("audio", tmp_path / "x")
