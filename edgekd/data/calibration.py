"""Calibration (representative) sets for full-integer quantization.

A calibration set is an artifact directory (manifest.json + calibration.npz) holding a
class-balanced sample of a task's training split: one array per modality, the labels and the
class names. Before it is written, and whenever it is loaded, it is checked: layout (rank and
per-sample shape of the task's spec), dtype (float32), value range (finite; [0, 1] for images
and event frames) and class coverage (every class present).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import ArtifactError, DataError, UsageError

FILE = "calibration.npz"
STAGE = "calibration"


def balanced_indices(y: np.ndarray, n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """n indices with classes as equal as the data allows: each class gets n // k, and what a
    small class cannot fill goes to the others, largest first."""
    if n < 1:
        raise UsageError(f"calibration: -n must be at least 1, got {n}")
    pools = [rng.permutation(np.flatnonzero(y == c)) for c in range(num_classes)]
    available = np.array([len(p) for p in pools])
    n = min(n, int(available.sum()))
    take = np.zeros(num_classes, dtype=int)
    remaining = n
    while remaining > 0:
        open_classes = np.flatnonzero(take < available)
        share = max(1, remaining // len(open_classes))
        for c in open_classes[np.argsort(-(available - take)[open_classes], kind="stable")]:
            add = min(share, available[c] - take[c], remaining)
            take[c] += add
            remaining -= add
            if remaining == 0:
                break
    idx = np.concatenate([pools[c][: take[c]] for c in range(num_classes)]) if n else np.zeros(0, int)
    return np.sort(idx)


def check_calibration(x: dict[str, np.ndarray], y: np.ndarray, task: str, classes: list[str], where: str,
                      required: list[str] | None = None) -> dict[str, Any]:
    """Raise DataError on the first problem; return the per-modality value ranges and class counts.
    `required`: the classes that must appear (default all; a source may hold fewer classes than
    its class list, e.g. part of MSR Action3D)."""
    from edgekd.tasks import get_task

    spec = get_task(task)
    if not x:
        raise DataError(f"{where}: no input arrays")
    ranges = {}
    for name, arr in x.items():
        if name not in spec.modalities:
            raise DataError(f"{where}: modality '{name}' is not an input of task '{task}'",
                            hint=f"inputs of {task}: {', '.join(spec.modalities)}")
        m = spec.modalities[name]
        if arr.ndim != len(m.shape) + 1:
            raise DataError(f"{where}: '{name}' has shape {tuple(arr.shape)}; task '{task}' expects "
                            f"(N, {', '.join(m.layout)}) = {len(m.shape) + 1} axes",
                            hint=f"layout N{m.layout}")
        if name in ("frames", "events", "image") and arr.shape[-1] != arr.shape[-2]:
            raise DataError(f"{where}: '{name}' is {arr.shape[-2]}x{arr.shape[-1]}; images must be square (layout N{m.layout})")
        channel_axis = m.layout.index("C") + 1
        expected_c = m.shape[m.layout.index("C")]
        if arr.shape[channel_axis] != expected_c:
            raise DataError(f"{where}: '{name}' has {arr.shape[channel_axis]} channels on axis {channel_axis}; "
                            f"expected {expected_c} (layout N{m.layout}) — channels-last data?",
                            hint="edgekd arrays are channels-first; transpose before building the set")
        if arr.dtype != np.dtype(m.dtype):
            raise DataError(f"{where}: '{name}' is {arr.dtype}; expected {m.dtype}")
        if not np.isfinite(arr).all():
            raise DataError(f"{where}: '{name}' holds {int((~np.isfinite(arr)).sum())} NaN/infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if (m.value_range[0] is not None and lo < m.value_range[0] - 1e-6) or \
                (m.value_range[1] is not None and hi > m.value_range[1] + 1e-6):
            raise DataError(f"{where}: '{name}' values span [{lo:.4g}, {hi:.4g}]; expected within "
                            f"[{m.value_range[0]}, {m.value_range[1]}]",
                            hint="images are scaled to [0, 1]; 0..255 data must be divided by 255")
        if hi == lo:
            raise DataError(f"{where}: '{name}' is constant ({lo:.4g}): useless for calibration")
        ranges[name] = [lo, hi]
    n = len(y)
    if any(len(a) != n for a in x.values()):
        raise DataError(f"{where}: arrays and labels differ in length ({', '.join(f'{k} {len(v)}' for k, v in x.items())}, y {n})")
    counts = np.bincount(y, minlength=len(classes)) if n else np.zeros(len(classes), int)
    required = list(classes) if required is None else list(required)
    missing = [c for c, k in zip(classes, counts) if k == 0 and c in required]
    if missing:
        raise DataError(f"{where}: class coverage: {len(missing)} of {len(required)} classes have no sample "
                        f"({', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}) in {n} samples",
                        hint="use a larger -n or data that holds every class")
    return {"value_range": ranges, "class_counts": {c: int(k) for c, k in zip(classes, counts)},
            "required_classes": required}


def build_calibration(task: str, source: str, out: str | Path, data: str | None = None, n: int = 500,
                      split: str = "train", seed: int = 0, **options: Any) -> dict[str, Any]:
    """Write a class-balanced calibration set of `n` samples to the artifact directory `out`."""
    from edgekd.artifacts import stage_dir
    from edgekd.data.api import load_dataset

    ds = load_dataset(task, source, data, split=split, seed=seed, **options)
    idx = balanced_indices(ds.y, n, len(ds.classes), np.random.default_rng(seed))
    x = {k: np.ascontiguousarray(v[idx]) for k, v in ds.x.items()}
    y = ds.y[idx]
    where = f"calibration set from {source}" + (f" '{data}'" if data else "")
    present = [c for c, k in ds.class_counts().items() if k > 0]
    report = check_calibration(x, y, task, ds.classes, where, required=present)
    absent = [c for c in ds.classes if c not in present]
    if absent:
        report["classes_absent_from_data"] = absent
    params = {"task": task, "source": source, "split": split, "n": int(n), "seed": seed, "options": options,
              "layout": ds.layout}
    inputs = {"data": data} if data else {}
    with stage_dir(out, STAGE, params=params, inputs=inputs) as sd:
        path = sd.file(FILE)
        with open(path, "wb") as fh:
            np.savez_compressed(fh, y=y, classes=np.array(json.dumps(ds.classes)),
                                layout=np.array(ds.layout or ""), **{f"x_{k}": v for k, v in x.items()})
        sd.set_metrics(samples=int(len(y)), requested=int(n), **report)
    return {"out": str(out), "samples": int(len(y)), "requested": int(n), "shapes": {k: list(v.shape) for k, v in x.items()},
            **report}


def load_calibration(directory: str | Path) -> tuple[dict[str, np.ndarray], np.ndarray, list[str], str]:
    """(arrays per modality, labels, class names, task) of a calibration directory, checked again."""
    from edgekd.artifacts import read_manifest, sha256_file

    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest.stage != STAGE:
        raise ArtifactError(f"'{directory}' is a '{manifest.stage}' artifact, not a calibration set",
                            hint="build one with `edgekd calibration build`")
    path = directory / FILE
    recorded = manifest.outputs.get(FILE, {}).get("sha256")
    if not path.is_file() or (recorded and sha256_file(path) != recorded):
        raise ArtifactError(f"{path}: missing or changed since it was built", hint="rebuild it with `edgekd calibration build`")
    with np.load(path, allow_pickle=False) as z:
        x = {k[2:]: z[k] for k in z.files if k.startswith("x_")}
        y = z["y"]
        classes = json.loads(str(z["classes"]))
    task = manifest.params["task"]
    check_calibration(x, y, task, classes, str(path), required=manifest.metrics.get("required_classes"))
    return x, y, classes, task


def describe_calibration(directory: str | Path) -> dict[str, Any]:
    """What `edgekd calibration check` prints: the set loaded and checked."""
    x, y, classes, task = load_calibration(directory)
    counts = np.bincount(y, minlength=len(classes))
    return {"task": task, "samples": int(len(y)), "shapes": {k: list(v.shape) for k, v in x.items()},
            "class_counts": {c: int(k) for c, k in zip(classes, counts)}}


# The built-in calibration sets: rebuilt deterministically from the synthetic generators (they
# weigh nothing in the repository and always match the generator's current version).
BUILTIN: dict[str, dict[str, Any]] = {
    "eye": {"source": "synthetic", "n": 140, "seed": 0, "split": "train"},
    "skeleton": {"source": "synthetic", "n": 120, "seed": 0, "split": "train"},
    "face": {"source": "synthetic", "n": 140, "seed": 0, "split": "train"},
}


def builtin_calibration(task: str, out: str | Path, **options: Any) -> dict[str, Any]:
    """Build (or reuse, when up to date) the built-in calibration set of `task` in `out`.
    `options` are reader options that must match the model's input (e.g. frames, size)."""
    from edgekd.artifacts import is_up_to_date

    if task not in BUILTIN:
        raise UsageError(f"no built-in calibration set for task '{task}'", hint=f"tasks: {', '.join(BUILTIN)}")
    spec = BUILTIN[task]
    params = {"task": task, "source": spec["source"], "split": spec["split"], "n": spec["n"], "seed": spec["seed"],
              "options": options, "layout": "ntu25" if task == "skeleton" else None}
    if is_up_to_date(out, params):
        return {"out": str(out), "reused": True, **describe_calibration(out)}
    return build_calibration(task, spec["source"], out, n=spec["n"], split=spec["split"], seed=spec["seed"], **options)
