"""The representative (calibration) data for int8, and its checks before any conversion.

Where it comes from, in order: a calibration set directory given by the user (built by
`edgekd calibration build`, see edgekd.data.calibration), else a class-balanced sample of the
recipe's *training* split (never the held-out samples the ledger is measured on).

What is checked before converting, each failure a DataError with the numbers: the inputs the
model needs are there; enough samples; each sample's shape is the model's static input shape
(channel-last data is recognised and named); the task's layout and value range
(`edgekd.data.calibration.check_calibration`); and the value range against the held-out data
(a set scaled differently from what the model sees, e.g. 0..255 against 0..1, is caught even
for modalities without a fixed range).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import DataError

MIN_SAMPLES = 32


@dataclass
class Representative:
    inputs: dict[str, np.ndarray]  # model layout, float32
    labels: np.ndarray | None
    source: str
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values()))) if self.inputs else 0

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "samples": len(self),
                "shapes": {k: list(v.shape) for k, v in self.inputs.items()},
                "value_range": {k: [float(v.min()), float(v.max())] for k, v in self.inputs.items()},
                "layout": "model layout (as the torch model takes it); transposed to the TFLite layout when fed",
                "notes": list(self.notes)}


def from_directory(directory: str | Path, names: Sequence[str], task: str) -> Representative:
    """A calibration set artifact directory (edgekd.data.calibration), checked on load."""
    from edgekd.data.calibration import load_calibration

    x, y, _classes, cal_task = load_calibration(directory)
    if cal_task != task:
        raise DataError(f"calibration set '{directory}' is for task '{cal_task}', the model is a '{task}' model",
                        hint="build one for this task: edgekd calibration build")
    return Representative(_derive(x, names, directory), y, f"calibration set {directory}")


def from_training_split(dataset: Any, names: Sequence[str], n: int, seed: int = 0) -> Representative:
    """A class-balanced sample of `n` training samples (edgekd.data.calibration.balanced_indices)."""
    from edgekd.data.calibration import balanced_indices, check_calibration
    from edgekd.distill.trainer import tensors_for

    idx = balanced_indices(dataset.y, n, len(dataset.classes), np.random.default_rng(seed))
    sub = dataset.subset(idx)
    # the data's own modalities are checked against the task (layout, dtype, range, classes)
    check_calibration({k: np.ascontiguousarray(v, np.float32) for k, v in sub.x.items()}, sub.y, dataset.task,
                      list(dataset.classes), f"calibration sample of the {dataset.source or dataset.task} training split")
    data = tensors_for(sub, names)
    inputs = {k: v.numpy() for k, v in data.inputs.items()}
    notes = [] if len(idx) >= n else [f"the training split has {len(idx)} samples, fewer than the {n} asked for"]
    return Representative(inputs, np.asarray(sub.y), f"training split ({len(idx)} class-balanced samples, seed {seed})", notes)


def _derive(x: Mapping[str, np.ndarray], names: Sequence[str], where: Any) -> dict[str, np.ndarray]:
    """The model's inputs from a set's modalities (skeleton bones/motions from the joints)."""
    missing = [n for n in names if n not in x]
    if not missing:
        return {n: np.ascontiguousarray(x[n], np.float32) for n in names}
    if "joints" in x:
        from edgekd.data.graphs import skeleton_modalities

        layout = "ntu25" if x["joints"].shape[3] == 25 else "kinect20"
        derived = skeleton_modalities(x["joints"], layout)
        full = {**derived, **x}
        if all(n in full for n in names):
            return {n: np.ascontiguousarray(full[n], np.float32) for n in names}
    raise DataError(f"calibration set {where} has {sorted(x)}, the model needs {list(names)}",
                    hint="build the calibration set from the same task and data as the model")


def diagnose(cal: Mapping[str, np.ndarray], model_shapes: Mapping[str, Sequence[int]],
             reference: Mapping[str, np.ndarray] | None = None, min_samples: int = MIN_SAMPLES) -> list[str]:
    """Raise DataError for a calibration set that would quantize the model wrongly; return notes.

    model_shapes: input name -> shape with batch 1 in the model's layout."""
    notes: list[str] = []
    missing = [n for n in model_shapes if n not in cal]
    if missing:
        raise DataError(f"the calibration data has no '{missing[0]}' (it has {sorted(cal)}); the model takes {list(model_shapes)}",
                        hint="give one array per model input, named like the model's inputs")
    counts = {n: len(cal[n]) for n in model_shapes}
    if len(set(counts.values())) != 1:
        raise DataError(f"calibration arrays differ in length: {counts}")
    n = next(iter(counts.values()))
    if n < min_samples:
        raise DataError(f"the calibration data has {n} samples; at least {min_samples} are needed for stable int8 ranges",
                        hint="use a larger calibration set (a few hundred class-balanced training samples is typical)")
    for name, shape in model_shapes.items():
        arr = np.asarray(cal[name])
        want = tuple(shape[1:])
        got = tuple(arr.shape[1:])
        if got != want:
            raise DataError(layout_message(name, got, want),
                            hint="give calibration arrays in the model's own layout (as the torch model takes them); "
                                 "edgekd transposes them to the TFLite layout itself")
        if arr.dtype.kind != "f":
            raise DataError(f"calibration '{name}' is {arr.dtype}; the model takes float32",
                            hint="scale integer data (e.g. 0..255 pixels) the way the model's training data was scaled")
        bad = int((~np.isfinite(arr)).sum())
        if bad:
            raise DataError(f"calibration '{name}' holds {bad} NaN/infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo == hi:
            raise DataError(f"calibration '{name}' is constant ({lo:.4g}): it says nothing about the activation ranges")
        if reference is not None and name in reference:
            ref = np.asarray(reference[name], np.float32)
            rlo, rhi = float(ref.min()), float(ref.max())
            ref_span, cal_span = max(rhi - rlo, 1e-12), hi - lo
            ratio = cal_span / ref_span
            if ratio > 4.0 or ratio < 0.25:
                raise DataError(
                    f"calibration '{name}' spans [{lo:.4g}, {hi:.4g}] but the data the model is evaluated on spans "
                    f"[{rlo:.4g}, {rhi:.4g}] ({ratio:.3g}x): a different scaling",
                    hint="apply the model's own preprocessing to the calibration data (e.g. divide 0..255 pixels by 255)",
                )
            if ratio > 1.5 or ratio < 0.67:
                notes.append(f"calibration '{name}' spans {ratio:.2f}x the evaluation data's range")
    return notes


def layout_message(name: str, got: tuple[int, ...], want: tuple[int, ...]) -> str:
    if len(got) == len(want) and sorted(got) == sorted(want):
        channel_last = (*want[1:], want[0]) if want else want
        if got == channel_last:
            return (f"calibration '{name}' is channel-last {list(got)}; the model takes {list(want)} "
                    f"(channel-first, as in torch)")
        return f"calibration '{name}' has its axes in another order: per-sample shape {list(got)}, the model takes {list(want)}"
    return f"calibration '{name}' has per-sample shape {list(got)}; the model takes {list(want)}"
