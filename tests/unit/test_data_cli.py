"""`edgekd data summary` and `edgekd calibration build|check`, run as a user would."""

from __future__ import annotations

import json

import numpy as np

from tests.helpers import run_cli
from tests.unit import data_writers as w


def _msr(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "msr"
    for action in (1, 2):
        for subject in (1, 3, 5):
            w.write_msr_file(root, action, subject, 1, w.moving_skeleton(rng, 20, 20))
    w.write_msr_file(root, 13, 9, 2, np.zeros((38, 20, 3)))
    return root


def test_summary_json_counts_and_skipped(tmp_path) -> None:
    root = _msr(tmp_path)
    res = run_cli("data", "summary", "--task", "skeleton", "--source", "msr-action3d", str(root), "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["inputs"] == 7 and info["usable"] == 6 and info["skipped"][0]["item"] == "a13_s09_e02"
    assert info["modalities"]["joints"]["shape"] == [6, 3, 32, 20, 1]
    assert info["split_totals"] == {"train": 4, "validation": 2}
    assert "a13_s09_e02" in res.stderr  # the warning


def test_summary_table_and_options(tmp_path) -> None:
    res = run_cli("data", "summary", "--task", "eye", "--source", "synthetic", "-o", "samples=28", "-o", "subjects=4",
                  "-o", "size=16")
    assert res.returncode == 0, res.stderr
    assert "samples per class and split" in res.stdout and "28x8x1x16x16" in res.stdout
    assert "lighting: 4 distinct" in res.stdout


def test_summary_errors_are_clean(tmp_path) -> None:
    res = run_cli("data", "summary", "--task", "skeleton", "--source", "msr", str(tmp_path))
    assert res.returncode == 2 and "unknown data source 'msr'" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("data", "summary", "--task", "skeleton", "--source", "msr-action3d", str(tmp_path / "nope"))
    assert res.returncode == 4 and "no folder" in res.stderr
    res = run_cli("data", "summary", "--task", "eye", "--source", "synthetic", "-o", "sizes=3")
    assert res.returncode == 2 and "did you mean 'size'" in res.stderr


def test_calibration_build_and_check(tmp_path) -> None:
    out = tmp_path / "calib"
    res = run_cli("calibration", "build", "--task", "skeleton", "--source", "synthetic", "-n", "24", "--out", str(out),
                  "-o", "samples=120", "-o", "subjects=10", "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["samples"] == 24 and set(info["class_counts"].values()) == {2}
    res = run_cli("calibration", "check", str(out))
    assert res.returncode == 0 and "24 samples" in res.stdout
    res = run_cli("calibration", "build", "--task", "skeleton", "--source", "msr-action3d", "--out", str(tmp_path / "c2"))
    assert res.returncode == 2 and "needs a PATH" in res.stderr
