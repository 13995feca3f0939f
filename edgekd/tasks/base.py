"""What a task is: its inputs (modalities with shape, layout, dtype, value range), its classes
and how it is scored."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekd.tasks.metrics import classification_report


@dataclass(frozen=True)
class ModalitySpec:
    name: str
    shape: tuple[int | None, ...]  # per sample (no batch axis); None = depends on the data
    layout: str  # axis letters per sample, e.g. "TCHW"
    dtype: str = "float32"
    value_range: tuple[float | None, float | None] = (None, None)  # inclusive bounds; None = unbounded
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "layout": self.layout, "dtype": self.dtype,
                "value_range": list(self.value_range), "description": self.description}


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str
    classes: tuple[str, ...]  # default (synthetic / canonical) class names; real sets may differ
    modalities: Mapping[str, ModalitySpec]
    student_modalities: tuple[str, ...]  # what the deployed student sees
    group_keys: tuple[str, ...] = ()  # meta keys reported per group (lighting, view, ...)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def evaluate(self, y_true: Any, y_pred: Any, meta: Mapping[str, np.ndarray] | None = None,
                 classes: Sequence[str] | None = None) -> dict[str, Any]:
        """Task metrics: accuracy (WAR), UAR, confusion matrix, and accuracy per group key present in meta."""
        groups = {k: meta[k] for k in self.group_keys if meta is not None and k in meta}
        return classification_report(y_true, y_pred, list(classes or self.classes), groups)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "classes": list(self.classes),
                "modalities": {k: v.to_dict() for k, v in self.modalities.items()},
                "student_modalities": list(self.student_modalities), "group_keys": list(self.group_keys)}
