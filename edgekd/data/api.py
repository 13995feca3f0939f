"""The data API every other stage uses: `load_dataset(task, source, path, split, seed, **options)`.

A reader returns every usable sample it found (with `meta["subset"]` = "train" or "test" where
the source has an official test side); this module cuts the requested split from it:

- "train" / "validation": cut deterministically from the training side, by subject for `eye`
  and `skeleton` (subject-disjoint), stratified by class for `face`; fraction
  `validation_fraction` (0.2). The cut uses `split_seed` (default 0), not `seed`, so changing the
  training seed never moves samples between training and validation.
- "test": the source's official test side (FER2013 csv PrivateTest, SEE "testing", NTU X-Sub /
  X-View); an error where the source has none.
- "all": everything read.

`seed` drives synthetic generation and random windows only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekd.data.options import positive_int
from edgekd.errors import DataError, UsageError, did_you_mean

TASKS = ("eye", "skeleton", "face")
SOURCES = ("synthetic", "fer2013", "imagefolder", "rafdb", "msr-action3d", "ntu", "see")
SPLITS = ("train", "validation", "test", "all")
FACE_SOURCES = ("fer2013", "imagefolder", "rafdb")


@dataclass
class SkippedItem:
    """An input the reader could not use, and why (reported, never silently dropped)."""

    item: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"item": self.item, "reason": self.reason}


@dataclass
class Dataset:
    task: str  # "eye" | "skeleton" | "face"
    x: dict[str, np.ndarray]  # modality -> array, first axis = sample
    y: np.ndarray  # (N,) int64 class index
    classes: list[str]
    meta: dict[str, np.ndarray]  # per-sample arrays: "subject", "lighting", "view", "name", ...
    layout: str | None = None  # skeleton joint layout: "ntu25" | "kinect20"
    skipped: list[SkippedItem] = field(default_factory=list)  # inputs left out, with the reason
    source: str = ""
    notes: list[str] = field(default_factory=list)  # facts about how the data was made/split

    def __len__(self) -> int:
        return int(len(self.y))

    def subset(self, idx: Any) -> Dataset:
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return Dataset(
            task=self.task,
            x={k: v[idx] for k, v in self.x.items()},
            y=self.y[idx],
            classes=list(self.classes),
            meta={k: v[idx] for k, v in self.meta.items()},
            layout=self.layout,
            skipped=list(self.skipped),
            source=self.source,
            notes=list(self.notes),
        )

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.y, minlength=len(self.classes)) if len(self.y) else np.zeros(len(self.classes), int)
        return {c: int(n) for c, n in zip(self.classes, counts)}

    def validate(self) -> None:
        """Raise DataError if the arrays disagree with each other (a reader bug or a bad file)."""
        n = len(self.y)
        for name, arr in list(self.x.items()) + list(self.meta.items()):
            if len(arr) != n:
                raise DataError(f"{self.source or self.task}: '{name}' has {len(arr)} samples but y has {n}")
        if n and (self.y.min() < 0 or self.y.max() >= len(self.classes)):
            raise DataError(f"{self.source}: labels outside 0..{len(self.classes) - 1}")


# ---------------------------------------------------------------- readers by (task, source)

Reader = Callable[..., Dataset]


def _reader(task: str, source: str) -> Reader:
    # Imported here: each reader pulls in only what it needs (Pillow for images, nothing else).
    if source == "synthetic":
        if task == "eye":
            from edgekd.data.synthetic_eye import load_synthetic_eye

            return load_synthetic_eye
        if task == "skeleton":
            from edgekd.data.synthetic_skeleton import load_synthetic_skeleton

            return load_synthetic_skeleton
        from edgekd.data.synthetic_face import load_synthetic_face

        return load_synthetic_face
    if source == "msr-action3d" and task == "skeleton":
        from edgekd.data.msr_action3d import load_msr_action3d

        return load_msr_action3d
    if source == "ntu" and task == "skeleton":
        from edgekd.data.ntu import load_ntu

        return load_ntu
    if source == "see" and task == "eye":
        from edgekd.data.see import load_see

        return load_see
    if source in ("fer2013", "imagefolder", "rafdb") and task == "face":
        from edgekd.data.faces import load_face_source

        return lambda path, seed=0, **options: load_face_source(source, path, **options)
    if source in ("fer2013", "imagefolder", "rafdb") and task == "eye":
        from edgekd.data.periocular import load_periocular

        return lambda path, seed=0, **options: load_periocular(source, path, seed=seed, **options)
    by_task = {
        "eye": ["synthetic", "see", "fer2013 (periocular crops)", "imagefolder (periocular)", "rafdb (periocular)"],
        "skeleton": ["synthetic", "msr-action3d", "ntu"],
        "face": ["synthetic", "fer2013", "imagefolder", "rafdb"],
    }
    raise UsageError(
        f"source '{source}' has no data for task '{task}'",
        hint=f"sources for {task}: {', '.join(by_task[task])}",
    )


def _check_names(task: str, source: str, split: str) -> None:
    if task not in TASKS:
        raise UsageError(f"unknown task '{task}'{did_you_mean(task, TASKS)}", hint=f"tasks: {', '.join(TASKS)}")
    if source not in SOURCES:
        raise UsageError(f"unknown data source '{source}'{did_you_mean(source, SOURCES)}",
                         hint=f"sources: {', '.join(SOURCES)}")
    if split not in SPLITS:
        raise UsageError(f"unknown split '{split}'{did_you_mean(split, SPLITS)}", hint=f"splits: {', '.join(SPLITS)}")


def read_all(task: str, source: str, path: str | None = None, seed: int = 0, **options: Any) -> Dataset:
    """Everything a source holds, before any split (what `data summary` reports on)."""
    _check_names(task, source, "all")
    _check_path(source, path)
    ds = _reader(task, source)(path, seed=seed, **options)
    ds.source = ds.source or source
    ds.validate()
    if len(ds) == 0:
        reasons = "; ".join(f"{s.item}: {s.reason}" for s in ds.skipped[:5])
        raise DataError(
            f"{source} at '{path}': no usable samples" + (f" ({len(ds.skipped)} skipped: {reasons})" if ds.skipped else ""),
            hint="check the path and the layout the reader expects (see `edgekd data summary --help`)",
        )
    return ds


def load_dataset(task: str, source: str, path: str | None = None, split: str = "train", seed: int = 0,
                 **options: Any) -> Dataset:
    """Load one split of a task's dataset; see the module docstring for the split rules."""
    _check_names(task, source, split)
    fraction = float(options.pop("validation_fraction", 0.2))
    split_seed = int(options.pop("split_seed", 0))
    if not 0.0 < fraction < 1.0:
        raise UsageError(f"validation_fraction must be between 0 and 1, got {fraction}")
    # Skeleton training sets: `augment` more copies of every training sequence, each turned and
    # scaled at random (validation and test are never augmented).
    augment = 0
    if task == "skeleton" and "augment" in options:
        augment = positive_int(options, "augment", f"{source} (skeleton)", minimum=0)
        options.pop("augment")
    if task == "eye" and source in FACE_SOURCES:
        # Crop only the faces of the split: cropping and events are the slow part.
        from edgekd.data.periocular import load_periocular

        _check_path(source, path)
        ds = load_periocular(source, path, seed=seed, select=lambda faces: split_indices(faces, split, fraction, split_seed),
                             **options)
        return _nonempty_split(ds, split, source)
    ds = read_all(task, source, path, seed=seed, **options)
    idx = split_indices(ds, split, fraction, split_seed)
    ds = _nonempty_split(ds.subset(idx), split, source, len(ds))
    if augment and split == "train":
        ds = _augmented(ds, augment, seed)
    return ds


def _augmented(ds: Dataset, copies: int, seed: int) -> Dataset:
    from edgekd.data.graphs import augment_views

    reps = 1 + copies
    joints = augment_views(ds.x["joints"], copies, np.random.default_rng([seed, 7]))
    return Dataset(task=ds.task, x={"joints": joints}, y=np.tile(ds.y, reps), classes=list(ds.classes),
                   meta={k: np.tile(v, reps) for k, v in ds.meta.items()}, layout=ds.layout,
                   skipped=list(ds.skipped), source=ds.source,
                   notes=[*ds.notes, f"training sequences augmented: {copies} randomly turned and scaled "
                                     f"copies of each ({len(ds)} -> {len(ds) * reps})"])


def _nonempty_split(ds: Dataset, split: str, source: str, total: int | None = None) -> Dataset:
    if len(ds) == 0:
        raise DataError(
            f"{source}: split '{split}' is empty" + (f" ({total} samples in all)" if total is not None else ""),
            hint="use a larger validation_fraction or more data, or split='all'",
        )
    return ds


def _check_path(source: str, path: str | None) -> None:
    if source != "synthetic" and path is None:
        raise UsageError(f"source '{source}' needs a PATH to the data", hint="pass the dataset's folder or file")
    if source == "synthetic" and path is not None:
        raise UsageError("the synthetic source takes no PATH", hint="drop the path, or name the source it belongs to")


# ---------------------------------------------------------------- splits


def split_indices(ds: Dataset, split: str, fraction: float = 0.2, split_seed: int = 0) -> np.ndarray:
    """Sample indices of `split` in `ds` (which holds everything a reader returned)."""
    subset = ds.meta.get("subset")
    n = len(ds)
    if split == "all":
        return np.arange(n)
    if split == "test":
        if subset is None or not np.any(subset == "test"):
            raise DataError(
                f"{ds.source}: this data has no official test side",
                hint="use split='validation' (cut from the training side) and report it as validation",
            )
        return np.flatnonzero(subset == "test")
    train_side = np.flatnonzero(subset == "train") if subset is not None else np.arange(n)
    val_mask = validation_mask(ds, train_side, fraction, split_seed)
    return train_side[val_mask] if split == "validation" else train_side[~val_mask]


def validation_mask(ds: Dataset, candidates: np.ndarray, fraction: float, split_seed: int) -> np.ndarray:
    """Boolean mask over `candidates`: by subject when subjects are known (eye, skeleton),
    else stratified by class."""
    rng = np.random.default_rng(split_seed)
    subjects = ds.meta.get("subject")
    if ds.task in ("eye", "skeleton") and subjects is not None:
        subj = subjects[candidates]
        unique = np.unique(subj)
        if len(unique) < 2:
            raise DataError(
                f"{ds.source}: only one subject ({unique[0] if len(unique) else '-'}) on the training side; "
                "cannot cut a subject-disjoint validation split",
                hint="add data from more subjects, or use split='all'",
            )
        n_val = min(len(unique) - 1, max(1, int(round(fraction * len(unique)))))
        chosen = rng.permutation(unique)[:n_val]
        return np.isin(subj, chosen)
    return stratified_mask(ds.y[candidates], fraction, rng)


def stratified_mask(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """About `fraction` of each class (at least one where a class has two or more samples).
    One random key per sample, drawn before looking at labels, orders each class: the cut does
    not depend on how classes are numbered (face and eye label orders differ)."""
    keys = rng.random(len(y))
    mask = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        k = int(round(fraction * len(members)))
        k = min(max(k, 1), len(members) - 1) if len(members) > 1 else 0
        mask[members[np.argsort(keys[members], kind="stable")[:k]]] = True
    return mask


def split_of_each(ds: Dataset, fraction: float = 0.2, split_seed: int = 0) -> np.ndarray:
    """Per-sample split name ("train", "validation", "test") of `ds` as read."""
    names = np.empty(len(ds), dtype=object)
    for split in ("train", "validation", "test"):
        try:
            names[split_indices(ds, split, fraction, split_seed)] = split
        except DataError:
            if split != "test":
                raise
    return names.astype(str)


def parse_option_values(items: Sequence[str]) -> dict[str, Any]:
    """KEY=VALUE strings (from --option) to a dict, values parsed as JSON where they parse."""
    import json

    options: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"option '{item}' is not KEY=VALUE", hint="e.g. --option size=64")
        key, value = item.split("=", 1)
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options
