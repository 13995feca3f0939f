"""Task specs and metrics (edgekd.tasks)."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.errors import DataError, UsageError
from edgekd.tasks import get_task
from edgekd.tasks.metrics import accuracy, accuracy_by_group, confusion_matrix, uar
from edgekd.tasks.skeleton import NTU_XSUB_TRAIN, cross_subject_mask, cross_view_mask


def test_accuracy_uar_confusion_by_hand() -> None:
    y = [0, 0, 0, 0, 1, 2]
    p = [0, 0, 0, 1, 1, 0]
    assert accuracy(y, p) == pytest.approx(4 / 6)
    # recalls: class 0 3/4, class 1 1/1, class 2 0/1 -> UAR 0.5833
    assert uar(y, p, 3) == pytest.approx((0.75 + 1 + 0) / 3)
    cm = confusion_matrix(y, p, 3)
    assert cm.tolist() == [[3, 1, 0], [0, 1, 0], [1, 0, 0]]
    logits = np.eye(3)[p] * 5.0
    assert accuracy(y, logits) == pytest.approx(4 / 6)  # logits are argmaxed


def test_metric_errors() -> None:
    with pytest.raises(DataError, match="3 labels but 2"):
        accuracy([0, 1, 2], [0, 1])
    with pytest.raises(DataError, match="outside"):
        confusion_matrix([0, 5], [0, 1], 3)


def test_eye_report_has_war_uar_and_lighting() -> None:
    spec = get_task("eye")
    assert spec.classes[3] == "happiness" and spec.modalities["events"].shape == (8, 2, 32, 32)
    y = np.array([0, 1, 2, 3, 4, 5, 6, 6])
    pred = np.array([0, 1, 2, 3, 4, 5, 6, 0])
    light = np.array(["normal", "normal", "hdr", "hdr", "low-light", "low-light", "overexposed", "overexposed"])
    report = spec.evaluate(y, pred, {"lighting": light})
    assert report["war"] == report["accuracy"] == pytest.approx(7 / 8)
    assert report["uar"] == pytest.approx((6 + 0.5) / 7)
    assert report["accuracy_by_lighting"] == {"hdr": 1.0, "low-light": 1.0, "normal": 1.0, "overexposed": 0.5}
    assert accuracy_by_group(y, pred, light)["overexposed"] == 0.5


def test_specs_and_skeleton_splits() -> None:
    assert get_task("face").modalities["image"].shape == (1, 48, 48)
    assert get_task("face", size=64).modalities["image"].shape == (1, 64, 64)
    assert get_task("skeleton", frames=16, joints=25, persons=2).modalities["bones"].shape == (3, 16, 25, 2)
    with pytest.raises(UsageError, match="did you mean 'face'"):
        get_task("faces")
    mask = cross_subject_mask(["P001", "P003", "P038", "P040"], NTU_XSUB_TRAIN)
    assert mask.tolist() == [True, False, True, False]
    assert cross_view_mask(["C001", "C002", "C003"], (2, 3)).tolist() == [False, True, True]
