"""`face`: facial expression recognition from one grayscale face (FER2013 style)."""

from __future__ import annotations

from edgekd.tasks.base import ModalitySpec, TaskSpec

# FER2013's label order (emotion 0..6 in fer2013.csv); other face sources are mapped onto it.
CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

# Folder / label names seen in face datasets, mapped to CLASSES.
ALIASES = {
    "angry": "angry", "anger": "angry", "disgust": "disgust", "disgusted": "disgust", "fear": "fear",
    "fearful": "fear", "happy": "happy", "happiness": "happy", "sad": "sad", "sadness": "sad",
    "surprise": "surprise", "surprised": "surprise", "neutral": "neutral",
}


def spec(size: int = 48) -> TaskSpec:
    return TaskSpec(
        name="face",
        description="facial expression: one grayscale face image",
        classes=CLASSES,
        modalities={"image": ModalitySpec("image", (1, size, size), "CHW", "float32", (0.0, 1.0), "grayscale in [0, 1]")},
        student_modalities=("image",),
        group_keys=(),
        extra={"metrics": ("accuracy", "uar")},
    )


SPEC = spec()
