"""`skeleton`: action recognition from skeleton sequences (N, 3, T, V, M); cross-subject and
cross-view splits."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from edgekd.data.synthetic_skeleton import CLASSES as SYNTHETIC_CLASSES
from edgekd.tasks.base import ModalitySpec, TaskSpec

# NTU RGB+D cross-subject training performers (SEEDS.md); X-View trains on cameras 2 and 3.
NTU_XSUB_TRAIN = (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38)
NTU_XVIEW_TRAIN = (2, 3)
MODALITIES = ("joints", "bones", "joint_motion", "bone_motion")


def spec(frames: int = 32, joints: int | None = None, persons: int | None = None) -> TaskSpec:
    shape = (3, frames, joints, persons)
    return TaskSpec(
        name="skeleton",
        description="skeleton action recognition: joints (+ bones and motions from edgekd.data.graphs)",
        classes=tuple(SYNTHETIC_CLASSES),
        modalities={m: ModalitySpec(m, shape, "CTVM", "float32", (None, None), f"{m}, centred and torso-normalised")
                    for m in MODALITIES},
        student_modalities=MODALITIES,
        group_keys=("view", "subject"),
        extra={"layouts": ("ntu25", "kinect20"), "metrics": ("accuracy", "uar", "accuracy_by_view")},
    )


SPEC = spec()


def cross_subject_mask(subjects: Iterable, train_subjects: Iterable) -> np.ndarray:
    """True where a sample's subject is a training subject (compared as strings or integers)."""
    subjects = np.asarray(list(subjects))
    wanted = {str(s) for s in train_subjects} | {_digits(s) for s in train_subjects}
    return np.array([str(s) in wanted or _digits(s) in wanted for s in subjects], dtype=bool)


def cross_view_mask(views: Iterable, train_views: Iterable) -> np.ndarray:
    views = np.asarray(list(views))
    wanted = {str(v) for v in train_views} | {_digits(v) for v in train_views}
    return np.array([str(v) in wanted or _digits(v) in wanted for v in views], dtype=bool)


def _digits(value: object) -> str:
    digits = "".join(ch for ch in str(value) if ch.isdigit())
    return str(int(digits)) if digits else str(value)
