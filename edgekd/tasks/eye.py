"""`eye`: single-eye emotion recognition from T grayscale eye frames (+ event frames for the teacher)."""

from __future__ import annotations

from edgekd.tasks.base import ModalitySpec, TaskSpec

CLASSES = ("angry", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")  # SEE order
LIGHTINGS = ("normal", "overexposed", "low-light", "hdr")


def spec(frames: int = 8, size: int = 32) -> TaskSpec:
    return TaskSpec(
        name="eye",
        description="single-eye emotion: T grayscale eye frames; event frames for the teacher only",
        classes=CLASSES,
        modalities={
            "frames": ModalitySpec("frames", (frames, 1, size, size), "TCHW", "float32", (0.0, 1.0),
                                   "intensity frames in [0, 1]"),
            "events": ModalitySpec("events", (frames, 2, size, size), "TCHW", "float32", (0.0, 1.0),
                                   "ON/OFF event-count frames, normalised to [0, 1]"),
        },
        student_modalities=("frames",),
        group_keys=("lighting",),
        extra={"lightings": LIGHTINGS, "metrics": ("war", "uar", "accuracy_by_lighting")},
    )


SPEC = spec()
