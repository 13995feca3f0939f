"""Classification metrics shared by the tasks: accuracy (= WAR), UAR (macro recall), confusion
matrix, and accuracy per group (lighting, view, subject)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgekd.errors import DataError


def _check(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true).astype(np.int64).ravel()
    y_pred = np.asarray(y_pred)
    if y_pred.ndim == 2:  # logits or probabilities
        y_pred = y_pred.argmax(axis=1)
    y_pred = y_pred.astype(np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise DataError(f"metrics: {len(y_true)} labels but {len(y_pred)} predictions")
    return y_true, y_pred


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts; row = true class, column = predicted class."""
    y_true, y_pred = _check(y_true, y_pred)
    if len(y_true) and (min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= num_classes):
        raise DataError(f"metrics: class index outside 0..{num_classes - 1}")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction correct (in SEE's terms WAR, the weighted average recall)."""
    y_true, y_pred = _check(y_true, y_pred)
    return float((y_true == y_pred).mean()) if len(y_true) else float("nan")


def uar(y_true: Any, y_pred: Any, num_classes: int | None = None) -> float:
    """Unweighted average recall: the mean of per-class recalls over classes present in y_true."""
    y_true, y_pred = _check(y_true, y_pred)
    if not len(y_true):
        return float("nan")
    k = num_classes if num_classes is not None else int(max(y_true.max(), y_pred.max())) + 1
    recalls = per_class_recall(confusion_matrix(y_true, y_pred, k))
    return float(np.nanmean(recalls))


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def accuracy_by_group(y_true: Any, y_pred: Any, groups: Any) -> dict[str, float]:
    """{group value: accuracy} for each distinct value of `groups` (e.g. lighting)."""
    y_true, y_pred = _check(y_true, y_pred)
    groups = np.asarray(groups).astype(str)
    if len(groups) != len(y_true):
        raise DataError(f"metrics: {len(groups)} group labels for {len(y_true)} samples")
    return {str(g): float((y_true[groups == g] == y_pred[groups == g]).mean()) for g in np.unique(groups)}


def classification_report(y_true: Any, y_pred: Any, classes: Sequence[str],
                          groups: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """accuracy, war, uar, per-class recall, confusion matrix, and `accuracy_by_<group>`."""
    y_true, y_pred = _check(y_true, y_pred)
    cm = confusion_matrix(y_true, y_pred, len(classes))
    recall = per_class_recall(cm)
    acc = accuracy(y_true, y_pred)
    report: dict[str, Any] = {
        "samples": int(len(y_true)),
        "accuracy": acc,
        "war": acc,
        "uar": float(np.nanmean(recall)) if len(y_true) else float("nan"),
        "recall_per_class": {c: (None if np.isnan(r) else float(r)) for c, r in zip(classes, recall)},
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
    }
    for name, values in (groups or {}).items():
        report[f"accuracy_by_{name}"] = accuracy_by_group(y_true, y_pred, values)
    return report
